"""Running a job on a deployed host: upload the program, prepare the host (modules, sysctl),
start the job detached, poll it under the job's time limit, fetch its output, dmesg and the
console, and judge the result.

A dropped connection during a job is not a lost job: the job runs detached on the host and is
found again by name after reconnecting. A host that dies under a job (QEMU gone, no SSH within the
deadline) is recorded as such and the classifier decides: kernel evidence on the console makes it
FAIL (a panic), none makes it ERROR.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from kbisect.config.model import Job
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.jobs.classify import judge
from kbisect.jobs.jobrun import LOG_NAMES, REMOTE_DIR, JobRun, setup_script, write_log
from kbisect.jobs.lava import run_lava_job
from kbisect.jobs.program import program_of
from kbisect.lab.lava.host import LavaHost
from kbisect.lab.protocol import HostDown, LabHost
from kbisect.lab.ssh import JobHandle, JobState, SshSession
from kbisect.progress import Say
from kbisect.results.model import LogKind

_SETUP_SECONDS = 120.0
_RECONNECT_SECONDS = 60.0
_POLL_SECONDS = 5.0  # a round trip this often; the host answers within 0.2 s of the end
_FETCH_SECONDS = 120.0


def run_job(
    host: LabHost,
    job: Job,
    repeat: int,
    binary: Path,
    out_dir: Path,
    say: Say = print,
    *,
    only: Sequence[str] = (),
) -> JobRun:
    """Run `job` once on `host` (which must be deployed) and write its logs into out_dir.

    `binary` is the job's program as `program_of(job).binary(...)` gives it; `only` names the
    subtests to run alone, where the program can (empty: all)."""
    if isinstance(host, LavaHost):  # the whole job is one LAVA job: boot included
        return run_lava_job(host, job, repeat, binary, out_dir, say, only=only)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    program = program_of(job)
    remote = f"{REMOTE_DIR}/{binary.name}"
    host.open_console()  # where kbisect captures it (a rack host), it runs from now on
    console = host.console_log()
    console_from = console.stat().st_size if console and console.exists() else 0
    session = host.connect(Deadline(_RECONNECT_SECONDS))
    try:
        _prepare(host, session, job, binary, remote)
        name = f"{job.name}-{host.name}-r{repeat}"  # unique even where hosts share a /tmp
        argv = program.command(remote, job.args, only)
        handle = session.start_job(argv, name, Deadline(_SETUP_SECONDS))
        say(f"{host.name}: {job.name} (repeat {repeat}) running, time limit {job.timeout} s")
        session, state, died = _wait(host, session, handle, Deadline(job.timeout))
        stdout = stderr = dmesg = ""
        timed_out = False
        if not died and state.running:
            timed_out = True
            say(f"{host.name}: {job.name} still running after {job.timeout} s: stopping it")
            state = session.stop_job(handle)
        if not died:
            try:
                output = session.job_output(handle, Deadline(_FETCH_SECONDS))
                stdout = output.stdout.decode(errors="replace")
                stderr = output.stderr.decode(errors="replace")
                dmesg = session.run(["dmesg"], Deadline(_FETCH_SECONDS)).text()
                session.remove_job(handle)
            except InfraError:
                host_gone = _host_gone(host)
                if host_gone is None:
                    raise
                died = True
    finally:
        session.close()
    console_text = _read_from(console, console_from)
    expected = program.expected(job.args, only)
    report = program.parse(stdout, expected) if stdout.strip() else None
    exit_status = None if died or timed_out else state.status
    verdict = judge(report, exit_status, dmesg, console_text, host_died=died)
    logs = {
        LogKind.JOB_OUTPUT: write_log(out_dir / LOG_NAMES[LogKind.JOB_OUTPUT], stdout, stderr),
        LogKind.DMESG: write_log(out_dir / LOG_NAMES[LogKind.DMESG], dmesg),
    }
    if console is not None:
        logs[LogKind.CONSOLE] = write_log(out_dir / LOG_NAMES[LogKind.CONSOLE], console_text)
    return JobRun(
        job=job.name,
        repeat=repeat,
        started=started,
        finished=datetime.now(UTC),
        exit_status=exit_status,
        host_died=died,
        timed_out=timed_out,
        report=report,
        verdict=verdict,
        logs=logs,
    )


def _prepare(host: LabHost, session: SshSession, job: Job, binary: Path, remote: str) -> None:
    result = session.run(setup_script(job), Deadline(_SETUP_SECONDS))
    if not result.ok:
        raise InfraError(
            f"{host.name}: preparing job {job.name} failed: "
            f"{result.stderr.decode(errors='replace').strip()[-300:]}"
        )
    session.upload(binary, remote, Deadline(_SETUP_SECONDS), mode=0o755)


def _wait(
    host: LabHost, session: SshSession, handle: JobHandle, deadline: Deadline
) -> tuple[SshSession, JobState, bool]:
    """Poll until the job ends or the deadline passes; reconnect after a dropped connection.

    Returns the (possibly new) session, the last state, and whether the host died.
    """
    while True:
        try:
            state = session.wait_job(handle, deadline, _POLL_SECONDS)
            return session, state, False
        except InfraError:
            if _host_gone(host) is not None:
                return session, JobState(False, None), True
        # the connection dropped but the host may be fine: log in again and find the job
        session.close()
        try:
            session = host.connect(Deadline(min(_RECONNECT_SECONDS, deadline.remaining() + 10)))
            handle = session.find_job(handle.name)
        except InfraError:
            return session, JobState(False, None), True
        if deadline.expired:
            return session, session.poll(handle), False
        time.sleep(_POLL_SECONDS)


def _host_gone(host: LabHost) -> str | None:
    try:
        host.check_alive()
    except HostDown as exc:
        return str(exc)
    return None


def _read_from(path: Path | None, offset: int) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")
