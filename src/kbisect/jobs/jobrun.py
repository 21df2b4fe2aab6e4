"""What a job's run is, wherever it ran (over SSH, or as a LAVA job): the record of one run, the
setup every host gets before the job, and how its logs are written."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kbisect.config.model import Job
from kbisect.jobs.classify import Verdict
from kbisect.jobs.gntstress import GntstressReport
from kbisect.results.model import LogKind

REMOTE_DIR = "/tmp/kbisect"  # noqa: S108 (on the test host, which only root uses)
LOG_NAMES = {
    LogKind.JOB_OUTPUT: "job-output.log",
    LogKind.DMESG: "dmesg.log",
    LogKind.CONSOLE: "console.log",
}


@dataclass
class JobRun:
    """One run of one job on one host, with what the classifier made of it."""

    job: str
    repeat: int
    started: datetime
    finished: datetime
    exit_status: int | None
    host_died: bool
    timed_out: bool
    report: GntstressReport | None
    verdict: Verdict
    logs: dict[LogKind, Path]
    facts: dict[str, str] = field(default_factory=dict)  # about the boot, for the fingerprint


def setup_script(job: Job) -> list[str]:
    """argv that loads the job's modules and applies its sysctl settings, failing loudly."""
    script = (
        'for m in $MODULES; do modprobe "$m" || { echo "modprobe $m failed" >&2; exit 10; }; done\n'
        'for kv in "$@"; do sysctl -w "$kv" >/dev/null || '
        '{ echo "sysctl -w $kv failed" >&2; exit 11; }; done\n'
        f"mkdir -p {REMOTE_DIR}\n"
        # The job's dmesg starts empty, so what it shows is the job's doing.
        'dmesg -c >/dev/null || { echo "cannot clear the kernel log (dmesg -c)" >&2; exit 12; }\n'
    )
    settings = [f"{k}={v}" for k, v in sorted(job.sysctl.items())]
    modules = " ".join(job.modules)
    return ["env", f"MODULES={modules}", "sh", "-c", script, "sh", *settings]


def write_log(path: Path, text: str, stderr: str = "") -> Path:
    """Write a log whole (a reader never sees half of it), stderr after stdout."""
    body = text
    if stderr:
        body += ("" if not text or text.endswith("\n") else "\n") + "--- stderr ---\n" + stderr
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(body)
    tmp.rename(path)
    return path
