"""A LAVA host: a device type of a LAVA lab, driven through the server's REST API.

login:   none; LAVA owns the device and its console, kbisect never logs in.
boot:    a LAVA job per cell: deploy (Xen, the build's bzImage, kbisect's initramfs with a shell
         on the console), boot, then the job's commands as LAVA interactive test commands. A
         deploy here only checks that the lab can take the job; the boot is the job's.
power:   LAVA's: kbisect never power-cycles; a job that cannot boot is LAVA's to report.
console: the `target` lines of the last job's LAVA log, written to a file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kbisect.build.store import Artifact
from kbisect.config.model import Host, LavaOptions
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.initramfs import CONSOLE_PROMPT, InitramfsInputs, build_initramfs
from kbisect.lab.lava.api import LavaServer
from kbisect.lab.lava.definition import BootFiles, ConsoleCommand, JobRequest, render
from kbisect.lab.probe import BUILD_PARAM, Probe
from kbisect.lab.protocol import Deployment, LabHost, LabPaths, quiet
from kbisect.lab.qemu import QemuHost, xen_cmdline, xen_image
from kbisect.lab.ssh import KnownHosts, SshTarget
from kbisect.progress import Say

FINISHED = "Finished"
_POLL_SECONDS = 2.0
_CANCEL_SECONDS = 60.0
_USABLE = ("Good", "Unknown")  # device health that takes jobs


@dataclass
class LavaOutcome:
    """A finished (or abandoned) LAVA job as kbisect reads it back."""

    job_id: int
    url: str
    state: str  # LAVA's: Submitted, Scheduled, Running, Canceling, Finished
    health: str  # Unknown, Complete, Incomplete, Canceled
    failure_comment: str
    cases: list[dict[str, Any]] = field(default_factory=list)  # LAVA test cases
    log: list[dict[str, Any]] = field(default_factory=list)  # {dt, lvl, msg} lines
    abandoned: str = ""  # why kbisect stopped following it (and canceled it)

    @classmethod
    def of(
        cls,
        url: str,
        job: dict[str, Any],
        cases: list[dict[str, Any]],
        log: list[dict[str, Any]],
        abandoned: str = "",
    ) -> LavaOutcome:
        """From the API's answers: the job, its test cases, its log."""
        return cls(
            job_id=int(job.get("id", 0)),
            url=url,
            state=str(job.get("state", "")),
            health=str(job.get("health", "")),
            failure_comment=str(job.get("failure_comment") or ""),
            cases=cases,
            log=log,
            abandoned=abandoned,
        )

    def log_text(self) -> str:
        """The whole LAVA log, one line per entry: time, level, message."""
        return "".join(
            f"{line.get('dt', '')} {line.get('lvl', '')} {line.get('msg', '')}\n"
            for line in self.log
        )

    def console(self) -> str:
        """What the device printed (the log's `target` lines)."""
        return "".join(f"{line.get('msg', '')}\n" for line in self.log if _is_target(line))

    def error(self) -> tuple[str, str]:
        """LAVA's own error type and message for an incomplete job ("" when none)."""
        for case in self.suite("lava"):
            if case.get("name") == "job":
                meta = _metadata(case)
                return str(meta.get("error_type", "")), str(meta.get("error_msg", ""))
        return "", ""

    def suite(self, name: str) -> list[dict[str, Any]]:
        """The test cases of one suite (the API names a case's suite by id; its metadata
        names the definition, which is the suite's name)."""
        return [c for c in self.cases if _metadata(c).get("definition") == name]


class LavaHost(LabHost):
    """A device type of a LAVA lab, one job per cell."""

    kind = "lava"

    def __init__(self, config: Host, paths: LabPaths, say: Say = quiet) -> None:
        super().__init__(config, paths, say)
        assert config.lava is not None  # the configuration's check
        self.lava: LavaOptions = config.lava
        self.opts = config.qemu_options()
        self._known = KnownHosts(self.dir / "known_hosts")
        self._running: tuple[LavaServer, int] | None = None
        self._artifact: Artifact | None = None

    def server(self) -> LavaServer:
        return LavaServer.of(self.lava)

    # -- login: none ------------------------------------------------------------------------

    @property
    def known_hosts(self) -> KnownHosts:
        return self._known

    def target(self) -> SshTarget:
        raise InfraError(f"{self.name} is a LAVA device type: kbisect does not log in to it")

    # -- boot -------------------------------------------------------------------------------

    def deployment(self) -> Deployment | None:
        return None  # nothing stays booted between LAVA jobs

    def deploy(self, artifact: Artifact) -> Deployment:
        """Check that the lab can take jobs for this build; the boot is part of each job."""
        devices = self.server().devices(self.lava.device_type)
        usable = [d for d in devices if d.get("health") in _USABLE]
        if not usable:
            states = ", ".join(f"{d.get('hostname')}: {d.get('health')}" for d in devices)
            raise InfraError(
                f"{self.name}: LAVA {self.lava.url} has no usable {self.lava.device_type} "
                f"device ({states or 'none'})"
            )
        self._artifact = artifact
        return Deployment(
            host=self.name,
            build_key=artifact.key,
            release=str(artifact.meta.get("kernel_release", "")),
            boot_id="",
            booted_at=time.time(),
            boot_seconds=0.0,
            power_cycles=0,
            fingerprint=self.known_facts(artifact),
        )

    def known_facts(self, artifact: Artifact) -> dict[str, str]:
        """Fingerprint facts the job's probe cannot tell (a dom0 without `xl`)."""
        return {"boot": self.boot_method(artifact), "xen_cmdline": xen_cmdline(self.opts)}

    def deployed_artifact(self) -> Artifact:
        """The build the next job boots (the last `deploy`)."""
        if self._artifact is None:
            raise InfraError(f"{self.name}: nothing deployed (a LAVA job boots what was deployed)")
        return self._artifact

    def verify(self, probe: Probe, artifact: Artifact) -> None:
        """What the job's probe said about its boot, checked like any deploy."""
        self._verify(probe, artifact)

    def boot_method(self, artifact: Artifact) -> str:
        return f"LAVA {self.lava.device_type} job (Xen multiboot through image_arg)"

    def _boot(self, artifact: Artifact, deadline: Deadline) -> str | None:
        raise InfraError(f"{self.name}: a LAVA host boots within each job")

    def boot_files(self, artifact: Artifact, extra_files: dict[str, Path]) -> BootFiles:
        """Xen, the build's kernel and an initramfs with a console shell and `extra_files`."""
        host_key, _ = QemuHost(self.config, self.paths.lab_dir).host_key()
        initrd = self.dir / "initramfs.gz"
        build_initramfs(
            InitramfsInputs(
                modules=artifact.modules,
                host_key=host_key,
                authorized_key=self.paths.public_key,
                build_identity=artifact.key,
                extra_files=extra_files,
                console_shell=True,
            ),
            initrd,
            self.dir,
        )
        return BootFiles(xen_image(self.opts, self.paths.lab_dir), artifact.bzimage, initrd)

    def run(
        self,
        artifact: Artifact,
        name: str,
        files: BootFiles,
        commands: tuple[ConsoleCommand, ...],
        test_seconds: int,
    ) -> LavaOutcome:
        """Submit one job that boots `artifact` and types `commands`; follow it to its end."""
        request = JobRequest(
            name=name,
            files=files,
            dom0_extra=f"{BUILD_PARAM}={artifact.key}",
            prompt=CONSOLE_PROMPT,
            commands=commands,
            boot_seconds=self.config.boot_timeout,
            test_seconds=test_seconds,
        )
        definition = render(request, self.lava, self.opts)
        (self.dir / "job.yaml").write_text(definition)
        server = self.server()
        job_id = server.submit(definition)
        self._running = (server, job_id)
        self.say(f"{self.name}: LAVA job {job_id} submitted ({server.job_url(job_id)})")
        try:
            budget = self.lava.queue_timeout + self.config.boot_timeout + test_seconds + 300
            outcome = self.follow(server, job_id, Deadline(budget))
        finally:
            self._running = None
        self.console_log_path().write_text(outcome.console())
        return outcome

    def follow(self, server: LavaServer, job_id: int, deadline: Deadline) -> LavaOutcome:
        """Poll the job until it finishes; past the deadline (or queued longer than
        `queue_timeout`), cancel it and say why."""
        queued = Deadline(self.lava.queue_timeout)
        while True:
            job = server.job(job_id)
            if job.get("state") == FINISHED:
                return self._read(server, job_id, job, "")
            if job.get("state") in ("Submitted", "Scheduling") and queued.expired:
                device = self.lava.device_type
                why = f"no {device} device took it within {self.lava.queue_timeout} s"
                return self._abandon(server, job_id, why)
            if deadline.expired:
                return self._abandon(server, job_id, f"not finished within {deadline.seconds:g} s")
            time.sleep(_POLL_SECONDS)

    def _abandon(self, server: LavaServer, job_id: int, why: str) -> LavaOutcome:
        self.say(f"{self.name}: LAVA job {job_id} {why}: canceling it")
        server.cancel(job_id)
        wait = Deadline(_CANCEL_SECONDS)
        job = server.job(job_id)
        while job.get("state") != FINISHED and not wait.expired:
            time.sleep(_POLL_SECONDS)
            job = server.job(job_id)
        return self._read(server, job_id, job, why)

    def _read(self, server: LavaServer, job_id: int, job: dict[str, Any], why: str) -> LavaOutcome:
        cases, log = server.tests(job_id), server.log(job_id)
        return LavaOutcome.of(server.job_url(job_id), job, cases, log, why)

    # -- power: LAVA's ----------------------------------------------------------------------

    def _power_cycle(self, artifact: Artifact) -> bool:
        return False

    def shutdown(self) -> bool:
        """Cancel the job this host is following, if any (the command is ending)."""
        if self._running is None:
            return False
        server, job_id = self._running
        self._running = None
        server.cancel(job_id)
        return True

    # -- console ----------------------------------------------------------------------------

    def console_log_path(self) -> Path:
        return self.dir / "console.log"

    def console_log(self) -> Path | None:
        return self.console_log_path()


def _is_target(line: dict[str, Any]) -> bool:
    return line.get("lvl") == "target"


def _metadata(case: dict[str, Any]) -> dict[str, Any]:
    meta = case.get("metadata")
    if isinstance(meta, str):
        try:
            meta = yaml.safe_load(meta)
        except yaml.YAMLError:
            return {}
    return meta if isinstance(meta, dict) else {}
