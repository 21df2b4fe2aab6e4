"""One cell end to end: check out (revision, variant), build, deploy, run the job for each
repeat, judge, and record everything in the results store.

Failures land where they belong: a variant that does not apply is SKIP; a kernel that does not
build is FAIL (a kernel failure, never hidden); a host that cannot be deployed to or that dies
without kernel evidence is ERROR. Every outcome is recorded, so a cell is never silently missing.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from kbisect.build.builder import BuildOutcome
from kbisect.build.builder import build as build_kernel
from kbisect.build.store import Artifact
from kbisect.config import BuildProfile, Job, Project
from kbisect.errors import InfraError
from kbisect.jobs.program import program_of
from kbisect.jobs.runner import run_job
from kbisect.lab.lab import Lab
from kbisect.lab.protocol import Deployment, KernelDidNotBoot, LabHost
from kbisect.progress import Say
from kbisect.results.model import (
    BuildRecord,
    CellRecord,
    Evidence,
    LogKind,
    LogRef,
    ResultStatus,
    SubtestRecord,
)
from kbisect.results.store import ResultsStore
from kbisect.tree import repos
from kbisect.tree.checkout import Checkout, checkout, slot
from kbisect.tree.variants import find_variant

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class CellSpec:
    """What to run: everything but the repeat number."""

    tree: str
    rev: str
    variant: str | None
    profile: BuildProfile
    host: str
    job: Job

    @property
    def variant_name(self) -> str:
        return self.variant or ""


def cell_dir(results_dir: Path, run_id: int, spec: CellSpec, repeat: int) -> Path:
    """results/runs/RUN/TREE/REV/VARIANT/HOST/JOB/rN: readable, and unique per cell."""
    parts = [
        spec.tree,
        spec.rev,
        spec.variant_name or "base",
        spec.host,
        spec.job.name,
        f"r{repeat}",
    ]
    return results_dir.joinpath("runs", str(run_id), *(_UNSAFE.sub("_", p) for p in parts))


@dataclass(frozen=True)
class Provenance:
    """Where a cell's kernel came from (what the results store keeps about it)."""

    variant: str
    commit: str | None = None
    patch_hash: str | None = None
    build_key: str | None = None
    build_logs: tuple[LogRef, ...] = ()


@dataclass(eq=False)
class CellRunner:
    """Runs cells of one run against one lab and one results store."""

    project: Project
    lab: Lab
    store: ResultsStore
    run_id: int
    say: Say = print

    # -- stages ------------------------------------------------------------------------------

    def prepare(self, spec: CellSpec) -> tuple[Checkout, BuildOutcome | None]:
        """Check out and build; the outcome is None when the variant does not apply."""
        handle = repos.open_tree(self.project, spec.tree)
        ref = find_variant(self.project, spec.variant)
        with slot(self.project, handle) as path:
            co = checkout(self.project, handle, spec.rev, ref, path)
            if not co.usable:
                return co, None
            self.say(f"building {spec.tree}:{spec.rev} {co.variant} ({spec.profile.name})")
            outcome = build_kernel(self.project, co, spec.profile)
        self._record_build(outcome)
        return co, outcome

    def run(self, spec: CellSpec, repeats: int | None = None) -> list[CellRecord]:
        """The whole cell: prepare, deploy, then each repeat of the job."""
        co, outcome = self.prepare(spec)
        numbers = list(range(1, (repeats or spec.job.repeat) + 1))
        return self.run_prepared(spec, numbers, co, outcome)

    def run_prepared(
        self,
        spec: CellSpec,
        repeat_numbers: list[int],
        co: Checkout,
        outcome: BuildOutcome | None,
        *,
        lease: bool = True,
        next_build: Callable[[], Artifact | None] | None = None,
    ) -> list[CellRecord]:
        """After `prepare`: deploy and run the given repeats (a resumed run skips some).

        `lease=False` when the caller already holds the host's lease (a nightly's worker).
        `next_build` names the build this host deploys after this cell, if known by then: the
        host stages it (boots it on the side) while the jobs run."""
        prov = Provenance(
            co.variant,
            co.commit,
            co.patch_hash,
            outcome.key if outcome else None,
            self._build_log(outcome) if outcome else (),
        )
        if outcome is None:
            reason = f"{co.variant} does not apply to {spec.rev}: {co.detail}"
            return self.record_each(spec, repeat_numbers, prov, ResultStatus.SKIP, reason)
        if outcome.artifact is None:
            first = outcome.errors[0] if outcome.errors else "see the build log"
            sub = SubtestRecord("build", ResultStatus.FAIL, detail=first)
            return self.record_each(
                spec, repeat_numbers, prov, ResultStatus.FAIL, f"build failed: {first}", (sub,)
            )
        host = self.lab.host(spec.host)
        held = (
            self.lab.lease(host, f"{spec.tree}:{spec.rev} {co.variant} {spec.job.name}")
            if lease
            else contextlib.nullcontext()
        )
        with held:
            try:
                deployed, booted = self.ensure_deployed(host, outcome.artifact)
            except KernelDidNotBoot as exc:  # the kernel's failure: FAIL, with its console
                reason = str(exc).splitlines()[0]
                sub = SubtestRecord("boot", ResultStatus.FAIL, detail=reason)
                return self.record_each(
                    spec, repeat_numbers, prov, ResultStatus.FAIL, reason, (sub,),
                    logs=self._keep_console(spec, host),
                )  # fmt: skip
            except InfraError as exc:
                return self.record_each(
                    spec, repeat_numbers, prov, ResultStatus.ERROR, f"deploy failed: {exc}",
                    logs=self._keep_console(spec, host),
                )  # fmt: skip
            upcoming = next_build() if next_build else None
            if upcoming is not None and upcoming.key != deployed.build_key:
                host.stage(upcoming)
            # the boot goes with the first repeat, so that trends count each boot once
            boot = deployed.boot_seconds if booted else None
            return [
                self.run_repeat(spec, r, host, prov, deployed, boot if i == 0 else None)
                for i, r in enumerate(repeat_numbers)
            ]

    def provenance_of(self, artifact: Artifact) -> Provenance:
        """For a build found in the store (e.g. what a host runs): its recorded origin."""
        meta = artifact.meta
        log = artifact.path / "build.log"
        logs = self._copy_build_log(artifact.key, log) if log.exists() else ()
        return Provenance(
            str(meta.get("variant", "")),
            meta.get("commit"),
            meta.get("patch_hash") or None,
            artifact.key,
            logs,
        )

    def ensure_deployed(self, host: LabHost, artifact: Artifact) -> tuple[Deployment, bool]:
        """Deploy unless the host already runs this build and answers; True if it booted."""
        current = host.deployment()
        if current is not None and current.build_key == artifact.key:
            try:
                host.check_alive()
                return current, False
            except InfraError:
                pass
        self.say(f"deploying {artifact.key} to {host.name}")
        return host.deploy(artifact), True

    def run_repeat(
        self,
        spec: CellSpec,
        repeat: int,
        host: LabHost,
        prov: Provenance,
        deployed: Deployment,
        boot_seconds: float | None = None,
    ) -> CellRecord:
        """One repeat of the job on the deployed kernel; ``boot_seconds`` when this repeat's
        deploy booted it (recorded with the cell)."""
        out = cell_dir(self.store.results_dir, self.run_id, spec, repeat)
        shutil.rmtree(out, ignore_errors=True)  # a resumed cell starts clean
        binary = program_of(spec.job).binary(self.project.cache_dir)
        try:
            result = run_job(host, spec.job, repeat, binary, out, self.say)
        except InfraError as exc:
            return self.record(
                spec, repeat, prov, ResultStatus.ERROR, f"job could not run: {exc}",
                deployed=deployed, boot_seconds=boot_seconds,
            )  # fmt: skip
        if result.facts:  # what the job's own boot said (a LAVA host: its job id, its probe)
            deployed = replace(deployed, fingerprint={**deployed.fingerprint, **result.facts})
        logs = tuple(
            LogRef(kind, str(path.relative_to(self.store.results_dir)))
            for kind, path in result.logs.items()
        )
        v = result.verdict
        return self.record(
            spec, repeat, prov, v.status, v.reason, v.subtests,
            evidence=v.evidence, logs=logs, deployed=deployed, started=result.started,
            boot_seconds=boot_seconds,
        )  # fmt: skip

    # -- recording ---------------------------------------------------------------------------

    def record(
        self,
        spec: CellSpec,
        repeat: int,
        prov: Provenance,
        status: ResultStatus,
        reason: str,
        subtests: tuple[SubtestRecord, ...] = (),
        *,
        evidence: tuple[Evidence, ...] = (),
        logs: tuple[LogRef, ...] = (),
        deployed: Deployment | None = None,
        started: datetime | None = None,
        boot_seconds: float | None = None,
    ) -> CellRecord:
        cell = CellRecord(
            tree=spec.tree,
            rev=spec.rev,
            variant=prov.variant,
            profile=spec.profile.name,
            host=spec.host,
            job=spec.job.name,
            repeat=repeat,
            status=status,
            reason=reason,
            commit=prov.commit,
            patch_hash=prov.patch_hash,
            build_key=prov.build_key,
            started=started or datetime.now(UTC),
            finished=datetime.now(UTC),
            fingerprint=dict(deployed.fingerprint) if deployed else {},
            subtests=subtests,
            logs=(*logs, *prov.build_logs),
            evidence=evidence,
            boot_seconds=boot_seconds,
        )
        cell_id = self.store.record_cell(self.run_id, cell)
        self.say(f"  {spec.rev} {cell.variant} {spec.host} {spec.job.name} r{repeat}: {status}")
        return self.store.get_cell(cell_id) or cell

    def record_each(
        self,
        spec: CellSpec,
        repeats: list[int],
        prov: Provenance,
        status: ResultStatus,
        reason: str,
        subtests: tuple[SubtestRecord, ...] = (),
        *,
        logs: tuple[LogRef, ...] = (),
    ) -> list[CellRecord]:
        """The same verdict for each repeat of a cell that never reached its job."""
        return [self.record(spec, r, prov, status, reason, subtests, logs=logs) for r in repeats]

    def _record_build(self, outcome: BuildOutcome) -> None:
        logs = self._build_log(outcome)
        self.store.record_build(
            BuildRecord(
                key=outcome.key,
                status=outcome.status,
                log=logs[0].path if logs else None,
                errors=tuple(outcome.errors),
                meta=dict(outcome.meta),
            )
        )

    def _build_log(self, outcome: BuildOutcome) -> tuple[LogRef, ...]:
        source = outcome.log
        if outcome.artifact is not None and (outcome.artifact.path / "build.log").exists():
            source = outcome.artifact.path / "build.log"
        return self._copy_build_log(outcome.key, source) if source.exists() else ()

    def _copy_build_log(self, key: str, source: Path) -> tuple[LogRef, ...]:
        """The build log, copied once into results/builds/ (the cache may be pruned)."""
        target = self.store.results_dir / "builds" / f"{key}.log"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return (LogRef(LogKind.BUILD_LOG, str(target.relative_to(self.store.results_dir))),)

    def _keep_console(self, spec: CellSpec, host: LabHost) -> tuple[LogRef, ...]:
        console = host.console_log()
        if console is None or not console.exists():
            return ()
        out = cell_dir(self.store.results_dir, self.run_id, spec, 1)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(console, out / "console.log")
        return (
            LogRef(LogKind.CONSOLE, str((out / "console.log").relative_to(self.store.results_dir))),
        )
