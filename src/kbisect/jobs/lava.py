"""A job on a LAVA host: the job becomes LAVA interactive test commands on the dom0 console, and
the finished LAVA job becomes a JobRun judged exactly as on any other host.

In the job's initramfs, beside the program: `probe.sh` (kbisect's host probe), `job.sh` (the
setup every host gets, then the program with its output kept, then dmesg) and `case.sh` (one
subtest's status). On the console: the probe, the job (a LAVA test case named after the job:
pass when the program exits 0), then one LAVA test case per expected subtest, which fails when
the subtest FAILed or is missing (LAVA's interactive cases are only pass or fail: a SKIP passes).
Everything the verdict reads is printed between markers and read back from LAVA's log.

Mapping back: the verdict is kbisect's own classifier over the program's output, dmesg and the
console, so a LAVA host gives the signatures any host gives. A job that did not finish its
commands (LAVA infrastructure error, timeout, cancellation) is ERROR with LAVA's reason unless
the console shows kernel evidence (a panic is the kernel's FAIL, whatever LAVA calls it). The
boot is verified like any deploy: build key, release and Xen, from the probe.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from kbisect.config.model import Job
from kbisect.errors import InfraError
from kbisect.jobs.classify import Verdict, judge
from kbisect.jobs.gntstress import GntstressReport
from kbisect.jobs.jobrun import LOG_NAMES, REMOTE_DIR, JobRun, setup_script, write_log
from kbisect.jobs.program import program_of
from kbisect.lab.lava.definition import SUITE, ConsoleCommand
from kbisect.lab.lava.host import LavaHost, LavaOutcome
from kbisect.lab.probe import PROBE, Probe
from kbisect.progress import Say
from kbisect.results.model import LogKind, ResultStatus

IMAGE_DIR = "/kbisect"  # where the job's files sit in the initramfs
_PANIC = r"Kernel panic - not syncing"
_EXIT = re.compile(r"^KBISECT-(\w+)-EXIT=(\d+)\s*$", re.MULTILINE)
LAVA_LOG_NAME = "lava-job.log"
_SLACK_SECONDS = 30  # setup, dmesg and the subtest cases, beyond the job's own time limit


@dataclass(frozen=True)
class LavaRunResult:
    """What a LAVA job said, read from its console between kbisect's markers."""

    probe: str
    stdout: str
    stderr: str
    dmesg: str
    exits: dict[str, int]  # SETUP, JOB -> exit status
    console: str = ""  # the whole console the sections were read from
    report: GntstressReport | None = None  # the program's output parsed (by verdict_of)


def section(name: str) -> tuple[str, str]:
    return f"KBISECT-{name}-BEGIN", f"KBISECT-{name}-END"


def _shown(name: str, command: str) -> str:
    begin, end = section(name)
    return f"echo {begin}\n{command}\necho {end}\n"


def job_script(job: Job, binary_path: str, argv: Sequence[str]) -> str:
    """job.sh: the setup every host gets, the program (its output kept), then dmesg."""
    out, err = f"{REMOTE_DIR}/stdout", f"{REMOTE_DIR}/stderr"
    return (
        "#!/bin/sh\n"
        + f"{shlex.join(setup_script(job))}\n"
        + 'echo "KBISECT-SETUP-EXIT=$?"\n'
        + f"{shlex.join(argv)} > {out} 2> {err}\n"
        + "status=$?\n"
        + _shown("STDOUT", f"cat {out}")
        + _shown("STDERR", f"cat {err}")
        + _shown("DMESG", "dmesg")
        + 'echo "KBISECT-JOB-EXIT=$status"\n'
    )


CASE_SCRIPT = f"""#!/bin/sh
# One subtest's status from the program's output: kbisect-case: NAME=STATUS
s=$(sed -n "s/^GNTSTRESS $1 \\([A-Z]*\\) .*/\\1/p" {REMOTE_DIR}/stdout | head -n 1)
echo "kbisect-case: $1=${{s:-MISSING}}"
"""


def console_commands(job: Job, expected: Sequence[str] | None) -> tuple[ConsoleCommand, ...]:
    """What LAVA types: the probe, the job (a test case), then a test case per subtest."""
    commands = [
        ConsoleCommand(f"sh {IMAGE_DIR}/probe.sh", fatal=_PANIC),
        ConsoleCommand(
            f"sh {IMAGE_DIR}/job.sh",
            name=job.name,
            success=r"KBISECT-JOB-EXIT=0\b",
            failure=r"KBISECT-JOB-EXIT=[1-9]",
            fatal=_PANIC,
        ),
    ]
    for subtest in expected or ():
        commands.append(
            ConsoleCommand(
                f"sh {IMAGE_DIR}/case.sh {subtest}",
                name=subtest,
                success=rf"kbisect-case: {re.escape(subtest)}=(PASS|SKIP)",
                failure=rf"kbisect-case: {re.escape(subtest)}=(FAIL|MISSING)",
            )
        )
    return tuple(commands)


def read_console(console: str) -> LavaRunResult:
    """The marked sections of a LAVA job's console."""
    return LavaRunResult(
        probe=_between(console, "PROBE"),
        stdout=_between(console, "STDOUT"),
        stderr=_between(console, "STDERR"),
        dmesg=_between(console, "DMESG"),
        exits={m[1]: int(m[2]) for m in _EXIT.finditer(console)},
        console=console,
    )


def _between(console: str, name: str) -> str:
    begin, end = section(name)
    lines = console.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    if not starts:
        return ""
    body: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        if line.strip() == end:
            return "".join(f"{ln}\n" for ln in body)
        body.append(line)
    return "".join(f"{ln}\n" for ln in body)  # cut off: what there was


def lava_reason(outcome: LavaOutcome) -> str:
    """LAVA's own word on a job that did not finish its commands."""
    if outcome.abandoned:
        return f"LAVA job {outcome.job_id} canceled by kbisect: {outcome.abandoned}"
    error_type, error_msg = outcome.error()
    said = error_msg or outcome.failure_comment or "no reason given"
    kind = f"{error_type} error" if error_type else outcome.health.lower() or "unfinished"
    return f"LAVA job {outcome.job_id} {outcome.health or outcome.state} ({kind}): {said}"


def verdict_of(
    outcome: LavaOutcome, job: Job, expected: Sequence[str] | None
) -> tuple[Verdict, LavaRunResult]:
    """The cell's verdict from a finished LAVA job, and what it was read from (the console
    and its sections read once, the program's output parsed once)."""
    console = outcome.console()
    found = read_console(console)
    program = program_of(job)
    report = program.parse(found.stdout, expected) if found.stdout.strip() else None
    found = replace(found, report=report)
    finished = "JOB" in found.exits and outcome.health == "Complete" and not outcome.abandoned
    if finished:
        return judge(report, found.exits["JOB"], found.dmesg, console), found
    verdict = judge(report, None, found.dmesg, console, host_died=True)
    if verdict.status is ResultStatus.ERROR or outcome.health == "Canceled":
        verdict = replace(verdict, status=ResultStatus.ERROR, reason=lava_reason(outcome))
    return verdict, found


def lava_cases(outcome: LavaOutcome) -> dict[str, str]:
    """kbisect's LAVA test cases and their results (suite 0_kbisect)."""
    return {str(c.get("name")): str(c.get("result")) for c in outcome.suite(f"0_{SUITE}")}


def job_files(job: Job, binary: Path, scratch: Path, only: Sequence[str]) -> dict[str, Path]:
    """The files the job's initramfs carries (path in the image -> file here)."""
    remote = f"{IMAGE_DIR}/{binary.name}"
    argv = program_of(job).command(remote, job.args, only)
    texts = {
        "probe.sh": _shown("PROBE", PROBE.strip()),
        "job.sh": job_script(job, remote, argv),
        "case.sh": CASE_SCRIPT,
    }
    files = {remote: binary}
    for name, body in texts.items():
        path = scratch / name
        path.write_text(body)
        files[f"{IMAGE_DIR}/{name}"] = path
    return files


def run_lava_job(
    host: LavaHost,
    job: Job,
    repeat: int,
    binary: Path,
    out_dir: Path,
    say: Say = print,
    *,
    only: Sequence[str] = (),
) -> JobRun:
    """Run `job` once as a LAVA job on `host` and write its logs into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    artifact = host.deployed_artifact()
    expected = program_of(job).expected(job.args, only)
    with tempfile.TemporaryDirectory(prefix="kbisect-lava-") as scratch:
        files = host.boot_files(artifact, job_files(job, binary, Path(scratch), only))
        name = f"kbisect {artifact.key} {job.name} r{repeat}"
        test_seconds = job.timeout + _SLACK_SECONDS
        outcome = host.run(artifact, name, files, console_commands(job, expected), test_seconds)
    verdict, found = verdict_of(outcome, job, expected)
    facts = {"lava_job": str(outcome.job_id), "lava_job_url": outcome.url}
    if found.probe:
        probe = Probe.parse(found.probe)
        host.verify(probe, artifact)  # BootMismatch / KernelDidNotBoot, as on any host
        facts = {**probe.fingerprint(host.known_facts(artifact)), **facts}
    elif verdict.status is ResultStatus.PASS:
        raise InfraError(f"LAVA job {outcome.job_id} passed but printed no probe ({outcome.url})")
    say(f"{host.name}: LAVA job {outcome.job_id} {outcome.health}: {verdict.status}")
    names = {**LOG_NAMES, LogKind.LAVA_LOG: LAVA_LOG_NAME}
    texts = {
        LogKind.JOB_OUTPUT: (found.stdout, found.stderr),
        LogKind.DMESG: (found.dmesg, ""),
        LogKind.CONSOLE: (found.console, ""),
        LogKind.LAVA_LOG: (outcome.log_text(), ""),
    }
    logs = {kind: write_log(out_dir / names[kind], *text) for kind, text in texts.items()}
    return JobRun(
        job=job.name,
        repeat=repeat,
        started=started,
        finished=datetime.now(UTC),
        exit_status=found.exits.get("JOB"),
        host_died=outcome.health != "Complete",
        timed_out=bool(outcome.abandoned),
        report=found.report,
        verdict=verdict,
        logs=logs,
        facts=facts,
    )
