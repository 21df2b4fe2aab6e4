"""A second machine for distributed builds: a real distccd in a network namespace of its own,
and a controller namespace joined to it by one veth pair (and to nothing else).

Namespaces are named like tests/netns.py's (`kbt-<pid>-<random>`), so a run that was killed is
swept by the next one. The daemon is ended by its PID on `close()`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.netns import (
    PREFIX,
    _free_subnet,
    _ip,
    _kill_and_reap,
    descendants,
    sweep_stale_namespaces,
)

REPO = Path(__file__).resolve().parent.parent
PORT = 3632
STATS_PORT = 3633
# distccd's one line per job at --log-level info (dcc_job_summary): "... COMPILE_OK ... gcc FILE"
_JOB = re.compile(r"COMPILE_OK .* (\S+\.c)$", re.M)


class DistccLab:
    """A builder namespace running distccd and a controller namespace that reaches only it."""

    def __init__(self, workdir: Path, jobs: int = 2) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("network namespaces need root")
        sweep_stale_namespaces()
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.builder_ns, self.controller_ns = self._namespace(), self._namespace()
        block = _free_subnet()
        self.controller_ip = str(block.network_address + 1)
        self.builder_ip = str(block.network_address + 2)
        token = secrets.token_hex(3)
        outer, inner = f"kbdc{token}", f"kbdb{token}"
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", outer, "netns", self.controller_ns)
        _ip("link", "set", inner, "netns", self.builder_ns)
        for ns, dev, ip in (
            (self.controller_ns, outer, self.controller_ip),
            (self.builder_ns, inner, self.builder_ip),
        ):
            _ip("-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        # distccd drops root for the `distccd` user, who may not open a file here: it logs to
        # the stderr we open for it
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "distccd.log"
        self._start(jobs)

    @property
    def host(self) -> str:
        """The builder as a distcc host spec."""
        return f"{self.builder_ip}:{PORT}/{self.jobs}"

    def _namespace(self) -> str:
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def _start(self, jobs: int) -> None:
        self.jobs = jobs
        argv = [
            "ip", "netns", "exec", self.builder_ns, "distccd", "--daemon", "--no-detach",
            "--listen", self.builder_ip, "--port", str(PORT), "--allow", self.controller_ip,
            "--jobs", str(jobs), "--log-stderr", "--log-level", "info",
            "--stats", "--stats-port", str(STATS_PORT),
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"distccd exited {self.daemon.returncode}")
            ports = subprocess.run(
                ["ip", "netns", "exec", self.builder_ns, "ss", "-Hltn"],
                capture_output=True, text=True, timeout=10, check=False,
            ).stdout  # fmt: skip
            if f"{self.builder_ip}:{PORT}" in ports:
                return
            time.sleep(0.1)
        raise RuntimeError(f"distccd does not listen on {self.builder_ip}:{PORT} after 15 s")

    def in_controller(self, argv: list[str], env: dict[str, str], timeout: float) -> str:
        """Run a command in the controller's namespace; its output (stderr too)."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.controller_ns, *argv],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"{argv[:4]} exited {done.returncode}:\n{done.stdout[-4000:]}")
        return done.stdout

    def compiled(self) -> list[str]:
        """Sources the daemon compiled, one entry per job, from its own log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [Path(name).name for name in _JOB.findall(text)]

    def cpu_seconds(self) -> float:
        """CPU time the daemon and its workers have used, with the compilers they reaped."""
        if self.daemon is None:
            return 0.0
        total = 0
        for pid in {self.daemon.pid, *descendants(self.daemon.pid)}:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, str]:
        """The daemon's statistics page (--stats), fetched from the controller's side."""
        fetch = (
            "import sys, urllib.request; "
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
        )
        url = f"http://{self.builder_ip}:{STATS_PORT}/"
        text = self.in_controller([sys.executable, "-c", fetch, url], dict(os.environ), 30)
        return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)

    def close(self) -> None:
        if self.daemon is not None:
            _kill_and_reap(self.daemon.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.wait(timeout=5)
        for ns in self.namespaces:
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                if pid.isdigit():
                    _kill_and_reap(int(pid))
            _ip("netns", "del", ns, check=False)


def declare_builders(root: Path, hosts: list[str]) -> None:
    """Declare distcc builders in a project's builds.yaml (after its profiles)."""
    builds = root / "configs" / "builds.yaml"
    listed = ", ".join(f'"{h}"' for h in hosts)
    builds.write_text(builds.read_text() + f"distcc:\n  hosts: [{listed}]\n")


def copy_project(into: Path, hosts: list[str]) -> Path:
    """The repository's configuration and seeds, with builders declared when there are any."""
    for part in ("configs", "seeds"):
        shutil.copytree(REPO / part, into / part)
    if hosts:
        declare_builders(into, hosts)
    return into


def kbisect_build(lab: DistccLab, root: Path, cache: Path, *what: str) -> dict[str, str]:
    """`kbisect build` of (tree, revision, variant, profile) with that project and cache, run
    in the controller's namespace; the `name value` lines it prints."""
    env = {**os.environ, "KBISECT_ROOT": str(root), "KBISECT_CACHE": str(cache)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    tree, rev, variant, profile = what
    argv = [sys.executable, "-m", "kbisect", "build", "--tree", tree, "--rev", rev]
    argv += ["--variant", variant, "--profile", profile]
    out = lab.in_controller(argv, env, timeout=7200)
    return dict(re.findall(r"^(\w+) +(\S.*)$", out, re.M))
