"""The one door to external programs, with real processes: missing programs, exit statuses,
deadlines that end whole process groups (checked by PID), streaming, and Ctrl-C."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.conftest import REPO
from tests.fake_kernel import make_kernel_repo

from kbisect import processes
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.processes import (
    CommandError,
    CommandExited,
    DeadlinePassed,
    Output,
    ProgramMissing,
    end_all,
    run,
    start,
)

SRC = REPO / "src" / "kbisect"

# A child that starts a grandchild in the same group, records both PIDs, and then waits.
FAMILY = 'sleep 300 & echo "$!" > "$1"; echo "$$" >> "$1"; echo started; wait'


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether the process is gone or only a zombie (ended, not yet reaped by its parent)."""
    deadline = Deadline(within)
    while not deadline.expired:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def family_pids(record: Path, within: float = 10.0) -> list[int]:
    deadline = Deadline(within)
    while not deadline.expired:
        lines = record.read_text().split() if record.exists() else []
        if len(lines) == 2:
            return [int(pid) for pid in lines]
        time.sleep(0.05)
    raise AssertionError(f"{record} never held two PIDs")


def test_missing_program_is_an_infra_error_naming_it() -> None:
    with pytest.raises(ProgramMissing) as caught:
        run(["kbisect-no-such-tool", "--version"], deadline=10, hint="./bootstrap installs it")
    error = caught.value
    assert isinstance(error, InfraError) and error.exit_code == 3
    assert (
        error.report() == "kbisect: kbisect-no-such-tool is not installed (./bootstrap installs it)"
    )
    assert isinstance(error.__cause__, FileNotFoundError)


def test_missing_working_directory_is_not_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as caught:
        run(["true"], deadline=10, cwd=tmp_path / "nowhere")
    assert not isinstance(caught.value, ProgramMissing)
    assert f"cannot run true in {tmp_path / 'nowhere'}: no such directory" in str(caught.value)


def test_exit_status_is_an_infra_error_with_the_tail_of_stderr() -> None:
    script = "for i in 1 2 3 4 5; do echo problem $i >&2; done; echo fine; exit 7"
    with pytest.raises(CommandExited) as caught:
        run(["sh", "-c", script], deadline=30, what="checking the tool")
    error = caught.value
    assert error.status == 7 and error.argv[:2] == ("sh", "-c")
    assert error.tail == ("problem 3", "problem 4", "problem 5")
    assert str(error).startswith("checking the tool: `sh -c 'for i in")
    assert str(error).endswith("exited 7: problem 3 | problem 4 | problem 5")
    assert "\n" not in error.report()


def test_killed_by_a_signal_says_so() -> None:
    with pytest.raises(CommandExited, match="was killed by signal 9") as caught:
        run(["sh", "-c", "kill -9 $$"], deadline=30)
    assert caught.value.status == -9


def test_check_false_returns_the_status_and_both_outputs() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2; exit 3"], deadline=30, check=False)
    assert (done.returncode, done.ok) == (3, False)
    assert (done.stdout, done.stderr) == ("out\n", "err\n")


def test_input_environment_and_working_directory_reach_the_program(tmp_path: Path) -> None:
    data = "x" * 300_000 + "\nend\n"  # more than a pipe holds: fed without deadlock
    done = run(
        ["sh", "-c", 'cat; echo "$KB_SAMPLE"; pwd'],
        deadline=30,
        input=data,
        env={"KB_SAMPLE": "from-env", "PATH": os.environ["PATH"]},
        cwd=tmp_path,
    )
    assert done.stdout == data + f"from-env\n{tmp_path}\n"


def test_deadline_ends_the_whole_process_group(tmp_path: Path) -> None:
    record = tmp_path / "pids"
    with pytest.raises(DeadlinePassed) as caught:
        run(["sh", "-c", FAMILY + "; echo late >&2", "sh", str(record)], deadline=2)
    grandchild, child = family_pids(record)
    assert gone(child) and gone(grandchild)
    error = caught.value
    assert isinstance(error, InfraError) and error.status is None and error.seconds == 2
    assert "did not finish within 2 s; stopped" in str(error)


def test_streaming_gives_lines_in_order_as_they_come(tmp_path: Path) -> None:
    seen: list[str] = []
    gate = tmp_path / "gate"

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "one":  # the next line only comes once this one was seen
            gate.touch()

    script = f'echo one; while [ ! -e "{gate}" ]; do sleep 0.05; done; echo two >&2; printf three'
    done = run(["sh", "-c", script], deadline=30, output=Output.MERGED, on_line=on_line)
    assert seen == ["one", "two", "three"]
    assert done.stdout == "one\ntwo\nthree" and done.stderr == ""


def test_inherited_output_goes_where_kbisect_writes(capfd: pytest.CaptureFixture[str]) -> None:
    done = run(
        ["sh", "-c", "echo shown; echo warned >&2; exit 5"],
        deadline=30,
        output=Output.INHERIT,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (5, "", "")
    assert capfd.readouterr() == ("shown\n", "warned\n")


def test_merged_output_gives_its_tail_on_failure() -> None:
    with pytest.raises(CommandExited) as caught:
        run(["sh", "-c", "echo said; exit 2"], deadline=30, output=Output.MERGED)
    assert caught.value.tail == ("said",)


def test_interrupt_while_streaming_ends_the_group(tmp_path: Path) -> None:
    record = tmp_path / "pids"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(["sh", "-c", FAMILY, "sh", str(record)], deadline=60, on_line=interrupt)
    grandchild, child = family_pids(record)
    assert gone(child) and gone(grandchild)


def test_end_all_ends_tracked_groups_of_other_threads(tmp_path: Path) -> None:
    record = tmp_path / "pids"
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            run(["sh", "-c", FAMILY, "sh", str(record)], deadline=120)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    grandchild, child = family_pids(record)
    long_lived = start(["sleep", "300"])
    assert end_all(grace=5) == 2
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert gone(child) and gone(grandchild) and gone(long_lived.pid)
    [error] = errors
    assert isinstance(error, CommandExited) and error.status == -15
    assert end_all() == 0  # none left behind


def test_started_child_reports_its_stderr_tail_and_is_ended_on_exit(tmp_path: Path) -> None:
    with start(
        ["sh", "-c", "cat >/dev/null; echo broken >&2; exit 4"], stdin=processes.PIPE
    ) as child:
        assert child.stdin is not None
        child.stdin.write(b"data")
        child.stdin.close()
        with pytest.raises(CommandExited, match=r"exited 4: broken$"):
            child.check(30)
    record = tmp_path / "pids"
    with start(["sh", "-c", FAMILY, "sh", str(record)], stdout=processes.PIPE) as child:
        assert child.stdout is not None and child.stdout.readline() == b"started\n"
    grandchild, leader = family_pids(record)
    assert gone(leader) and gone(grandchild)


def test_started_child_past_its_deadline_is_ended(tmp_path: Path) -> None:
    child = start(["sleep", "300"], track=False)
    with pytest.raises(DeadlinePassed, match=r"`sleep 300` did not finish within 0\.5 s"):
        child.wait(0.5)
    assert gone(child.pid)


# Ways to start a program other than kbisect.processes: modules, and functions of os.
STARTER_MODULES = {"subprocess", "pty", "asyncio.subprocess"}
OS_STARTERS = re.compile(r"^(system|popen|fork\w*|exec\w*|spawn\w*|posix_spawn\w*)$")


def program_starters(path: Path) -> list[str]:
    """Where a module imports subprocess (or the like) or calls os.system/exec*/spawn*."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names = [f"{node.value.id}.{node.attr}"]
        for name in names:
            module, _, attr = name.partition(".")
            if (
                name in STARTER_MODULES
                or module in STARTER_MODULES
                or (module == "os" and OS_STARTERS.match(attr))
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {name}")
    return found


def test_only_processes_starts_programs() -> None:
    """Every external program goes through kbisect.processes (GitPython's own git aside)."""
    offenders = [
        where
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "processes.py"
        for where in program_starters(path)
    ]
    assert offenders == []
    # and the scan does see what it looks for
    assert program_starters(SRC / "processes.py")


def test_git_missing_from_path_is_one_line_through_the_command_line(tmp_path: Path) -> None:
    kernel = make_kernel_repo(tmp_path / "src")
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "trees.yaml").write_text(f"trees:\n  - name: linux\n    url: {kernel}\n")
    gitless = tmp_path / "bin"  # python only: no git on this PATH
    gitless.mkdir()
    (gitless / "python3").symlink_to(sys.executable)
    env = {
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        "PATH": str(gitless),
        "KBISECT_ROOT": str(root),
        "KBISECT_CACHE": str(tmp_path / "cache"),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "checkout", "--tree", "linux", "--rev", "v1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3
    assert done.stderr.splitlines() == ["kbisect: git is not installed (apt-get install git)"]


def test_a_child_that_ignores_term_is_killed_after_the_grace_time(tmp_path: Path) -> None:
    record = tmp_path / "pid"
    # the shell ends on TERM; its child ignores TERM and would outlive it
    script = f"sh -c 'trap \"\" TERM; echo $$ > {record}; sleep 300' & wait"
    with pytest.raises(processes.DeadlinePassed):
        processes.run(["/bin/sh", "-c", script], deadline=1, grace=1)
    assert gone(int(record.read_text()), within=5)


def test_supervised_group_ends_when_kbisect_is_killed(tmp_path: Path) -> None:
    record = tmp_path / "pid"
    command = f"sleep 300 & echo $! > {record}; wait"
    program = (
        "from kbisect import processes\n"
        f"processes.run(processes.supervised(['/bin/sh', '-c', {command!r}], grace=1), "
        "deadline=600, check=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    parent = subprocess.Popen([sys.executable, "-c", program], env=env)
    try:
        deadline = Deadline(30)
        while not (record.exists() and record.read_text().strip()) and not deadline.expired:
            time.sleep(0.05)
        grandchild = int(record.read_text())
        assert not gone(grandchild, within=0.2)
        parent.kill()  # SIGKILL: kbisect gets no chance to clean up
        parent.wait(timeout=10)
        assert gone(grandchild, within=10), "the predicate's group outlived kbisect"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)


def test_supervised_keeps_the_exit_status(tmp_path: Path) -> None:
    done = processes.run(
        processes.supervised(["/bin/sh", "-c", "exit 7"]), deadline=30, check=False
    )
    assert done.returncode == 7
