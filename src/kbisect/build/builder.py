"""Building a checkout with a profile into the artifact store.

The build directory belongs to the worktree slot (one per slot and profile), so switching
variants on a built revision recompiles only what the patches touched: for gntdev, one module.
A key already in the store is a hit that compiles nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kbisect import processes
from kbisect.build import distributed
from kbisect.build.kconfig import configure
from kbisect.build.key import build_key, profile_identity, toolchain_version
from kbisect.build.runner import CommandFailed, Runner
from kbisect.build.store import Artifact, ArtifactStore
from kbisect.config import BuildProfile, Project
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.processes import CommandError
from kbisect.progress import line_progress
from kbisect.tree.checkout import Checkout
from kbisect.tree.git import Git

Status = Literal["hit", "built", "failed"]
STAMP = ".kbisect-configured.json"
_COMPILER_ERROR = re.compile(
    r"^(?P<where>[^\s:$][^:\n]*:\d+(?::\d+)?): (?:fatal )?error: (?P<msg>.*)$", re.MULTILINE
)
_LINK_ERROR = re.compile(
    r"^(?:.*undefined reference to .*|ld: .*error.*|ERROR: modpost: .*"
    r"|make.*No rule to make target.*)$",
    re.MULTILINE,
)
_DISK_FULL = "No space left on device"


@dataclass
class BuildOutcome:
    key: str
    status: Status
    artifact: Artifact | None
    log: Path
    errors: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def store_for(project: Project) -> ArtifactStore:
    limit = int(project.settings.artifact_limit_gb * 1024**3)
    return ArtifactStore(project.cache_dir / "artifacts", limit)


def build_dir(project: Project, checkout: Checkout, profile: BuildProfile) -> Path:
    return project.cache_dir / "buildtrees" / checkout.tree / checkout.slot.name / profile.name


def key_for(project: Project, checkout: Checkout, profile: BuildProfile) -> str:
    if checkout.tree_id is None:
        raise InfraError(
            f"{checkout.variant} did not apply to {checkout.revision}: nothing to build"
        )
    return build_key(checkout.tree_id, profile, project.configs_dir, toolchain_version())


def build(
    project: Project, checkout: Checkout, profile: BuildProfile, jobs: int | None = None
) -> BuildOutcome:
    """Build (or find) the artifact for a checkout; a compile error is a failed outcome."""
    store = store_for(project)
    key = key_for(project, checkout, profile)
    logs = project.cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{key}.log"
    found = store.get(key)
    if found is not None:
        return BuildOutcome(key, "hit", found, found.path / "build.log", meta=found.meta)
    distcc = project.distcc
    _require_tools(["make", "gcc", "ccache", "depmod", *(["distcc"] if distcc else [])])
    out = build_dir(project, checkout, profile)
    src = checkout.slot
    jobs = _make_jobs(project, jobs)
    env = _build_env(project, checkout)
    make = [
        "make",
        "-C",
        str(src),
        f"O={out}",
        f"ARCH={profile.arch}",
        f"-j{jobs}",
        "CC=ccache gcc",
    ]
    started = time.time()
    before = _ccache_stats(env)
    staging = store.staging(key)
    deadline = Deadline(profile.build_timeout)
    with (
        log_path.open("w") as log,
        line_progress(f"building {checkout.variant} @ {checkout.revision}") as bar,
    ):
        runner = Runner(log, deadline, env, on_line=bar)
        try:
            configured = _configure_if_needed(project, checkout, profile, src, out, make, runner)
            if configured is not None:
                store.discard(staging)
                return BuildOutcome(key, "failed", None, log_path, errors=configured)
            runner.run([*make, *profile.targets], cwd=src)
            if "modules" in profile.targets:
                _install_modules(make, staging / "modules", runner, src)
            release = _kernel_release(out, make, runner, src)
        except CommandFailed:
            store.discard(staging)
            log.flush()
            return _failed(key, log_path, out, src)
        except BaseException:
            store.discard(staging)
            raise
    _stage_outputs(out, staging, profile, log_path)
    rebuilt = _rebuilt_objects(out, started)
    after = _ccache_stats(env)
    meta = {
        "key": key,
        "tree": checkout.tree,
        "revision": checkout.revision,
        "commit": checkout.commit,
        "variant": checkout.variant,
        "patch_hash": checkout.patch_hash,
        "tree_id": checkout.tree_id,
        "profile": profile.name,
        "profile_identity": profile_identity(profile, project.configs_dir),
        "toolchain": toolchain_version(),
        "kernel_release": release,
        "duration_s": round(time.time() - started, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ccache": {k: after.get(k, 0) - before.get(k, 0) for k in ("hits", "misses")},
        "rebuilt_objects": rebuilt[:200],
        "rebuilt_count": len(rebuilt),
        "jobs": jobs,
        "sizes": _sizes(staging),
    }
    if distcc is not None:
        meta["distributed"] = distributed.record(distcc, log_path.read_text(errors="replace"))
    artifact = store.publish(key, staging, meta)
    return BuildOutcome(key, "built", artifact, artifact.path / "build.log", meta=meta)


def _make_jobs(project: Project, asked: int | None) -> int:
    """make -jN: as asked, else enough for the distcc builders, else the setting or the cores."""
    if asked:
        return asked
    if project.distcc is not None:
        return distributed.jobs(project.distcc)
    return project.settings.build_jobs or os.cpu_count() or 1


def _sizes(staging: Path) -> dict[str, int]:
    """Bytes of what a build produced (the kernel image, its config and map, the modules)."""
    sizes = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
    modules = [p.stat().st_size for p in staging.glob("modules/**/*.ko") if p.is_file()]
    if modules:
        sizes["modules"] = sum(modules)
    sizes.pop("build.log", None)
    return sizes


def _install_modules(make: list[str], mods: Path, runner: Runner, src: Path) -> None:
    """modules_install into the staging directory, without the links back into the build tree."""
    runner.run(
        [*make, f"INSTALL_MOD_PATH={mods}", "INSTALL_MOD_STRIP=1", "modules_install"], cwd=src
    )
    for link in mods.glob("lib/modules/*/build"):
        link.unlink()  # points into the build tree, which moves on
    for link in mods.glob("lib/modules/*/source"):
        link.unlink()


def _stage_outputs(out: Path, staging: Path, profile: BuildProfile, log_path: Path) -> None:
    """The kernel image, its .config, System.map and the build log, into the staging directory."""
    for name, rel in (
        ("bzImage", f"arch/{_kernel_arch(profile.arch)}/boot/bzImage"),
        ("config", ".config"),
        ("System.map", "System.map"),
    ):
        if (out / rel).exists():
            shutil.copyfile(out / rel, staging / name)
    shutil.copyfile(log_path, staging / "build.log")


def _configure_if_needed(
    project: Project,
    checkout: Checkout,
    profile: BuildProfile,
    src: Path,
    out: Path,
    make: list[str],
    runner: Runner,
) -> list[str] | None:
    """Configure unless this build tree is already configured for this commit and profile and the
    patches touch no Kconfig file. Returns the dropped symbols as errors, or None."""
    stamp = {"commit": checkout.commit, "profile": profile_identity(profile, project.configs_dir)}
    with Git(src) as g:
        patched = g.run("diff", "--cached", "--name-only").split()
    kconfig_touched = any(Path(p).name.startswith("Kconfig") for p in patched)
    stamp_path = out / STAMP
    if not kconfig_touched and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        runner.log.write(
            "# configuration unchanged for this commit and profile: not reconfigured\n"
        )
        return None
    old = (out / ".config").read_bytes() if (out / ".config").is_file() else None
    old_times = (out / ".config").stat() if old is not None else None
    stamp_path.unlink(missing_ok=True)

    def run_in_src(argv: list[str]) -> None:
        runner.run(argv, cwd=src)

    dropped = configure(
        profile,
        project.configs_dir,
        src,
        out,
        make,
        run_in_src,
    )
    if dropped:
        message = "profile symbols dropped by olddefconfig: " + ", ".join(str(d) for d in dropped)
        runner.log.write(message + "\n")
        return [message]
    if old is not None and old_times is not None and (out / ".config").read_bytes() == old:
        os.utime(
            out / ".config", ns=(old_times.st_atime_ns, old_times.st_mtime_ns)
        )  # nothing to redo
    if not kconfig_touched:
        stamp_path.write_text(json.dumps(stamp))
    return None


def _failed(key: str, log_path: Path, out: Path, src: Path) -> BuildOutcome:
    text = log_path.read_text(errors="replace")
    if _DISK_FULL in text:
        raise InfraError(f"the disk filled during the build (log: {log_path})")
    errors = [
        f"{_source_relative(m.group('where'), out, src)}: {m.group('msg')}"
        for m in _COMPILER_ERROR.finditer(text)
    ]
    errors += [m.group(0).strip() for m in _LINK_ERROR.finditer(text)]
    if not errors:
        errors = [ln for ln in text.splitlines() if ln.strip()][-5:]
    return BuildOutcome(key, "failed", None, log_path, errors=errors[:10])


def _source_relative(where: str, out: Path, src: Path) -> str:
    """gcc names sources relative to the build directory; show them relative to the tree."""
    path, _, position = where.partition(":")
    full = Path(os.path.normpath(out / path))
    try:
        return f"{full.relative_to(src)}:{position}"
    except ValueError:
        return where


def _require_tools(tools: list[str]) -> None:
    missing = [t for t in tools if shutil.which(t) is None and not Path(f"/sbin/{t}").exists()]
    if missing:
        raise InfraError(f"build tools missing: {', '.join(missing)} (./bootstrap installs them)")


def _build_env(project: Project, checkout: Checkout) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CCACHE_DIR": str(project.cache_dir / "ccache"),
            "CCACHE_BASEDIR": str(project.cache_dir),  # slots share cache hits
            "KBUILD_BUILD_USER": "kbisect",
            "KBUILD_BUILD_HOST": "kbisect",
            "KBUILD_BUILD_TIMESTAMP": "kbisect " + checkout.commit[:12],
            "LC_ALL": "C",
            "PATH": env.get("PATH", "/usr/bin:/bin") + ":/sbin:/usr/sbin",
        }
    )
    if project.distcc is not None:  # opt-in; changes where objects compile, not what they are
        env.update(distributed.environment(project.distcc, project.cache_dir))
        Path(env["DISTCC_DIR"]).mkdir(parents=True, exist_ok=True)
    return env


def _ccache_stats(env: dict[str, str]) -> dict[str, int]:
    try:
        out = processes.run(["ccache", "--print-stats"], deadline=30, env=env, check=False).stdout
    except CommandError:
        return {}  # the numbers are a nicety: no ccache, no numbers
    raw = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

    def number(name: str) -> int:
        value = raw.get(name, "0").strip()
        return int(value) if value.isdigit() else 0

    hits = number("direct_cache_hit") + number("preprocessed_cache_hit")
    return {"hits": hits, "misses": number("cache_miss")}


def _rebuilt_objects(out: Path, since: float) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(out):
        for name in files:
            if name.endswith((".o", ".ko")):
                path = Path(dirpath) / name
                if path.stat().st_mtime >= since:
                    found.append(str(path.relative_to(out)))
    return sorted(found)


def _kernel_release(out: Path, make: list[str], runner: Runner, src: Path) -> str:
    """What `uname -r` will say: kbuild writes it to include/config/kernel.release."""
    written = out / "include" / "config" / "kernel.release"
    if written.is_file():
        return written.read_text().strip()
    return runner.run([*make, "-s", "kernelrelease"], cwd=src).strip().splitlines()[-1]


def _kernel_arch(arch: str) -> str:
    return "x86" if arch in ("x86_64", "i386", "x86") else arch
