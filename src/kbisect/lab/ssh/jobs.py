"""Detached jobs: a command that outlives the SSH connection that started it.

A job runs in its own session on the host, with its output in files of its directory
(JOBS_DIR/NAME), where its PID and, when it ends, its exit status land too; any later session
(after a dropped connection, from another process) finds it by name, polls it, reads its output
or stops its whole process group.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.lab.ssh.commands import CommandResult, SshCommands, sh_script

JOBS_DIR = "/tmp/kbisect-jobs"  # noqa: S108 (on the test host, which root alone uses)
_SMALL_OP_SECONDS = 60.0
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class JobHandle:
    """A detached job on a host; any later session can poll it by this (or by its name)."""

    name: str
    directory: str
    pid: int


@dataclass(frozen=True)
class JobState:
    """running, or finished with an exit status (None: it vanished without one, e.g. a reboot)."""

    running: bool
    status: int | None


@dataclass(frozen=True)
class JobOutput:
    """What a job wrote so far."""

    stdout: bytes
    stderr: bytes


# The job: a session leader that records its PID (= its process group), runs "$@" with output to
# files and records its exit status. It traps TERM so that it outlives the command when the group
# is stopped and can still record how the command ended.
_JOB_INNER = (
    'd=$1; shift; echo "$$" > "$d/pid.part" && mv -f "$d/pid.part" "$d/pid" || exit 1; '
    'trap : TERM; "$@" > "$d/stdout" 2> "$d/stderr" < /dev/null; '
    'echo "$?" > "$d/status.part"; mv -f "$d/status.part" "$d/status"'
)

_JOB_START = """
d=$1; shift
if [ -f "$d/pid" ] && [ ! -f "$d/status" ] && kill -0 -"$(cat "$d/pid")" 2>/dev/null; then
    echo "a job is still running in $d" >&2; exit 4
fi
rm -rf "$d" && mkdir -p "$d" && cd "$d" || exit 1
setsid sh -c @INNER@ sh "$d" "$@" > /dev/null 2>&1 < /dev/null &
i=0
while [ ! -f "$d/pid" ] && [ "$i" -lt 300 ] && kill -0 "$!" 2>/dev/null; do
    sleep 0.05; i=$((i+1))
done
[ -f "$d/pid" ] || { echo "the job did not start (is setsid there?)" >&2; exit 1; }
cat "$d/pid"
""".replace("@INNER@", shlex.quote(_JOB_INNER))

# $2: tenths of a second to linger for the job to end, so one round trip notices an end at once
_JOB_POLL = """
d=$1; n=${2:-0}
while :; do
    if [ -f "$d/status" ]; then echo "done $(cat "$d/status")"; exit 0; fi
    if [ ! -f "$d/pid" ]; then echo missing; exit 0; fi
    if ! kill -0 -"$(cat "$d/pid")" 2>/dev/null; then
        if [ -f "$d/status" ]; then echo "done $(cat "$d/status")"; exit 0; fi
        echo lost; exit 0
    fi
    [ "$n" -gt 0 ] || { echo running; exit 0; }
    sleep 0.2; n=$((n-2))
done
"""

_JOB_STOP = """
d=$1
[ -f "$d/pid" ] || exit 0
p=$(cat "$d/pid")
[ -f "$d/status" ] && exit 0
kill -TERM -"$p" 2>/dev/null
i=0
while [ "$i" -lt 50 ] && kill -0 -"$p" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -KILL -"$p" 2>/dev/null
i=0
while [ "$i" -lt 20 ] && kill -0 -"$p" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
[ -f "$d/status" ] || { echo 137 > "$d/status.part"; mv -f "$d/status.part" "$d/status"; }
exit 0
"""

_JOB_OUTPUT = 'cat "$1/stdout" && cat "$1/stderr" >&2'

_JOB_PID = 'cat "$1/pid"'


class RemoteJobs(SshCommands):
    """Detached jobs over the session's connection."""

    jobs_dir = JOBS_DIR

    def _job_dir(self, name: str) -> str:
        if not _NAME_RE.fullmatch(name):
            raise UserError(f"bad job name {name!r}: use letters, digits, '.', '_' and '-'")
        return f"{self.jobs_dir}/{name}"

    def start_job(self, argv: list[str], name: str, deadline: Deadline | None = None) -> JobHandle:
        """Start argv detached (its own session, output to files in the job directory) so that it
        outlives this connection; its exit status lands in the job directory when it ends."""
        if not argv:
            raise ValueError("start_job needs a command")
        directory = self._job_dir(name)
        result = self.run(sh_script(_JOB_START, directory, *argv), deadline or _small())
        if result.status == 4:
            raise InfraError(f"{self.name}: job {name} is still running; stop it first")
        self._check(result, f"starting job {name}")
        return JobHandle(name, directory, _parse_pid(result, self.name, name))

    def find_job(self, name: str, deadline: Deadline | None = None) -> JobHandle:
        """The handle of a job started earlier (by any session), from its job directory."""
        directory = self._job_dir(name)
        result = self.run(sh_script(_JOB_PID, directory), deadline or _small())
        if not result.ok:
            raise InfraError(f"{self.name}: there is no job {name} ({directory})")
        return JobHandle(name, directory, _parse_pid(result, self.name, name))

    def poll(
        self, job: JobHandle, deadline: Deadline | None = None, linger: float = 0.0
    ) -> JobState:
        """Whether the job still runs, or how it ended. With `linger`, the host waits up to that
        many seconds for the job to end before answering "running"."""
        tenths = str(max(0, round(linger * 10)))
        result = self._check(
            self.run(sh_script(_JOB_POLL, job.directory, tenths), deadline or _small()),
            f"polling job {job.name}",
        )
        words = result.text().split()
        match words:
            case ["running"]:
                return JobState(True, None)
            case ["done", status] if status.lstrip("-").isdigit():
                return JobState(False, int(status))
            case ["lost"]:
                return JobState(False, None)
            case ["missing"]:
                raise InfraError(f"{self.name}: there is no job {job.name} ({job.directory})")
        raise InfraError(f"{self.name}: polling job {job.name} answered {result.text()!r}")

    def wait_job(self, job: JobHandle, deadline: Deadline, interval: float = 1.0) -> JobState:
        """Wait until the job ends or the deadline passes (then its state says running): one
        round trip every `interval` seconds, each noticing an end within 0.2 s."""
        while True:
            linger = max(0.0, min(interval, deadline.remaining()))
            answer = Deadline(max(min(deadline.remaining(), _SMALL_OP_SECONDS), 5) + linger)
            state = self.poll(job, answer, linger)
            if not state.running or deadline.expired:
                return state

    def job_output(self, job: JobHandle, deadline: Deadline | None = None) -> JobOutput:
        """Everything the job wrote so far to stdout and stderr."""
        result = self._check(
            self.run(sh_script(_JOB_OUTPUT, job.directory), deadline or _small()),
            f"reading the output of job {job.name}",
        )
        return JobOutput(result.stdout, result.stderr)

    def stop_job(self, job: JobHandle, deadline: Deadline | None = None) -> JobState:
        """Kill the job's process group (TERM, then KILL after 5 s); returns its final state."""
        self._check(
            self.run(sh_script(_JOB_STOP, job.directory), deadline or _small()),
            f"stopping job {job.name}",
        )
        return self.poll(job, deadline)

    def remove_job(self, job: JobHandle, deadline: Deadline | None = None) -> None:
        """Delete a finished job's directory."""
        self._check(self.run(["rm", "-rf", job.directory], deadline or _small()), "removing job")


def _small() -> Deadline:
    return Deadline(_SMALL_OP_SECONDS)


def _parse_pid(result: CommandResult, host: str, name: str) -> int:
    text = result.text().strip()
    if not text.isdigit():
        raise InfraError(f"{host}: job {name} has no process id (got {text!r})")
    return int(text)
