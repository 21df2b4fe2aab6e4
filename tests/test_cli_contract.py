"""The command-line contract, task by task: help, usage errors, --root, bad values, typos,
exit statuses, broken pipes, completion and --json.

The task list comes from the collection, so a new task is covered without touching this file.
Parsing is tried in-process (the real program, just not a new interpreter per case); what
involves the console script, a shell, a pipe or a task's work runs as a real process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.conftest import REPO
from tests.test_config import VALID

from kbisect import __version__
from kbisect.cli import ns, program
from kbisect.errors import ExitCode

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
}


def spelled(primary: str) -> str:
    """How a user types a task: `bisect`, not `bisect.bisect`."""
    return min((primary, *ns.task_names[primary]), key=len)


TASKS = [spelled(name) for name in ns.task_names]
NEEDS_NO_PROJECT = {"config.reference"}


def flags_of(task: str) -> dict[str, tuple[str, ...]]:
    return {str(a.name): tuple(a.names) for a in ns[task].get_arguments()}


def kb(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the real program in this process; (exit status, stdout, stderr)."""
    code = program().run_for_status(["kbisect", *argv])
    out, err = capsys.readouterr()
    return int(code), out, err


def kb_process(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "KBISECT_ROOT"}
    return subprocess.run(
        [sys.executable, "-m", "kbisect", *argv], cwd=cwd, env={**environment, **(env or {})},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


# -- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("task", TASKS)
def test_every_task_shows_its_help(
    task: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = kb([task, flag], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: kbisect {task} ")
    summary = (ns[task].__doc__ or "").strip().splitlines()[0]
    assert summary in out
    for names in flags_of(task).values():
        assert f"--{names[0]}" in out


@pytest.mark.parametrize("task", [t for t in TASKS if any(flags_of(t))])
def test_help_wins_over_arguments_given_or_missing(
    task: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # help wins wherever it is, even where an argument's value is still missing
    code, out, _ = kb([task, "somevalue", "-h"], capsys)
    assert code == 0 and out.startswith(f"Usage: kbisect {task} ")
    code, out, _ = kb(["--help", task], capsys)
    assert code == 0 and out.startswith(f"Usage: kbisect {task} ")


def test_short_h_is_always_help_and_shared_flags_have_no_short_form() -> None:
    for task in TASKS:
        for name, names in flags_of(task).items():
            assert not {"h", "V", "l"} & set(names), f"{task} --{name}: {names}"
            if name in ("root", "json"):
                assert names == (name,), f"{task}: {names}"
    assert "host" in flags_of("deploy")


def test_program_help_shows_only_kbisect_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = kb(["--help"], capsys)
    assert (code, err) == (0, "")
    options = out[out.index("Options:") : out.index("Tasks:")].splitlines()
    specs = [m.group(1) for line in options if (m := re.match(r"  (-\S.*?)\s{3,}", line))]
    shown = {flag for spec in specs for flag in re.findall(r"--?[\w-]+", spec)}
    assert shown == {
        "-h", "--help", "-V", "--version", "-l", "--list", "--complete",
        "--print-completion-script",
    }  # fmt: skip
    for task in TASKS:
        assert task in out or f"bisect.bisect ({task})" in out


INVOKE_OPTIONS = [
    "-R", "--dry", "--hide=both", "-e", "--echo", "-p", "--pty", "-w", "--warn-only", "-T=5",
    "--command-timeout=5", "--prompt-for-sudo-password", "--write-pyc", "-f=x.yaml",
    "--config=x.yaml", "-c=tasks", "--collection=tasks", "-r=.", "--search-root=.",
    "--list-format=json", "-F=json", "--list-depth=1", "-D=1", "-d", "--debug", "--no-dedupe",
]  # fmt: skip


@pytest.mark.parametrize("option", INVOKE_OPTIONS)
def test_invoke_options_kbisect_does_not_use_are_refused(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = kb([option, "config.reference"], capsys)
    assert code == ExitCode.USAGE and out == ""
    flag = option.split("=")[0]
    assert err.splitlines() == [err.strip()]
    assert err.startswith(f"kbisect: unknown flag {flag} ")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert kb(["--version"], capsys) == (0, f"kbisect {__version__}\n", "")


# -- usage errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_an_unknown_flag_is_one_line_and_exit_2(
    task: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = kb([task, "--no-such-flag"], capsys)
    assert (code, out) == (ExitCode.USAGE, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"kbisect {task}: unknown flag --no-such-flag ")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["build"], "kbisect build: missing --tree, --rev (see `kbisect build --help`)"),
        (["results.diff", "3"], "kbisect results.diff: missing --b"),
        (["deploy", "--host"], "kbisect deploy: --host needs a value"),
        (["bisect.log", "1", "2"], "kbisect bisect.log: unexpected argument '2'"),
        (["build", "--tre", "t"], "kbisect build: unknown flag --tre (did you mean --tree?)"),
        (["bisect", "--tmeout", "5"], "kbisect bisect: unknown flag --tmeout (did you mean --ti"),
        (["bisec"], "kbisect: unknown task 'bisec' (did you mean bisect?) (see `kbisect --list`)"),
        (["lab.stats"], "kbisect: unknown task 'lab.stats' (did you mean lab.status?)"),
        (["--help", "bisec"], "kbisect: unknown task 'bisec' (did you mean bisect?)"),
        (["--lst"], "kbisect: unknown flag --lst (did you mean --list?)"),
        (["--list", "labs"], "kbisect: --list: no namespace 'labs' (did you mean lab?)"),
        (["check", "--", "extra"], "kbisect: unexpected arguments after --: extra"),
        (["--print-completion-script", "tcsh"], "kbisect: --print-completion-script: expected"),
    ],
)  # fmt: skip
def test_usage_mistakes_are_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = kb(argv, capsys)
    assert (code, out) == (ExitCode.USAGE, "")
    assert len(err.splitlines()) == 1 and err.startswith(line), err


BAD_VALUES = [
    (["bisect", "--timeout", "-1"], "--timeout: expected a number greater than 0, got '-1'"),
    (["bisect", "--timeout", "0"], "--timeout: expected a number greater than 0, got '0'"),
    (["bisect", "--timeout", "nan"], "--timeout: expected a finite number, got 'nan'"),
    (["bisect", "--budget", "-1"], "--budget: expected a number greater than 0"),
    (["bisect", "--repeat", "-3"], "--repeat: expected a whole number of at least 1, got '-3'"),
    (["bisect", "--resume", "abc"], "--resume: expected an integer, got 'abc'"),
    (["bisect.replay", "log", "--max-runs", "0"], "--max-runs: expected a whole number"),
    (["stress", "--job", "j", "--repeat", "-3"], "--repeat: expected a whole number of at least 1"),
    (["run", "t", "r", "j", "--repeat", "0"], "--repeat: expected a whole number of at least 1"),
    (["build", "t", "r", "--jobs", "0"], "--jobs: expected a whole number of at least 1, got '0'"),
    (["results.render", "--jobs", "0"], "--jobs: expected a whole number of at least 1"),
    (["browse", "--port", "70000"], "--port: expected a port from 1 to 65535"),
    (["browse", "--port", "-1"], "--port: expected a port from 1 to 65535"),
    (["nightly", "--resume", "abc"], "--resume: expected an integer, got 'abc'"),
    (["nightly", "--resume", "0"], "--resume: expected a whole number of at least 1"),
    (["bisect.log", "abc"], "--id: expected an integer, got 'abc'"),
    (["results.diff", "1", "x"], "--b: expected a run id (a number), got 'x'"),
    (["demo.history", "--commits", "0"], "--commits: expected a whole number of at least 1"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_VALUES)
def test_bad_values_are_refused_before_any_work(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KBISECT_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("KBISECT_CACHE", str(tmp_path / "cache"))
    code, out, err = kb(argv, capsys)
    assert (code, out) == (ExitCode.USAGE, "")
    assert err.splitlines() == [err.strip()]
    assert err.startswith(f"kbisect {argv[0]}: {message}"), err
    assert list(tmp_path.iterdir()) == []  # nothing was started, nothing written


# -- the project ---------------------------------------------------------------------------------


def test_every_task_that_reads_the_project_takes_root() -> None:
    with_root = {task for task in TASKS if "root" in flags_of(task)}
    assert with_root == set(TASKS) - NEEDS_NO_PROJECT


def small_project(tmp_path: Path) -> Path:
    """A project whose one tree is a real git repository with two tags."""
    linux = tmp_path / "linux"
    linux.mkdir()
    for number in (1, 2):
        (linux / "Makefile").write_text(f"VERSION = {number}\n")
        for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", f"v{number}"]):
            if argv[0] == "init" and number > 1:
                continue
            subprocess.run(["git", *argv], cwd=linux, check=True, env={**os.environ, **GIT_ENV})
        subprocess.run(["git", "tag", f"v{number}"], cwd=linux, check=True)
    root = tmp_path / "project"
    files = {
        "configs/main.yaml": f"""
            trees:
              - name: linux
                url: {linux}
            profiles:
              - name: small
                base: tinyconfig
            hosts:
              - name: qemu
                kind: qemu
            jobs:
              - name: stress
                program: gntstress
            """,
        "pipelines/nightly.yaml": """
            description: two releases
            revisions:
              - tree: linux
                revisions: [v1, v2]
            profiles: [small]
            hosts: [qemu]
            jobs: [stress]
            """,
    }
    files.update({rel: text for rel, text in VALID.items() if rel.startswith("seeds/")})
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def test_root_points_a_task_at_a_project_from_anywhere(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = kb_process(
        ["variants", "--root", str(root)], elsewhere, {"KBISECT_CACHE": str(tmp_path / "c")}
    )
    assert done.returncode == 0, done.stderr
    assert "exp: an experiment" in done.stdout and "exp/patched" in done.stdout


def test_nightly_dry_run_json_is_the_plan(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    env = {"KBISECT_CACHE": str(tmp_path / "cache"), "KBISECT_RESULTS": str(tmp_path / "r")}
    done = kb_process(["nightly", "--dry-run", "--json", "--root", str(root)], tmp_path, env)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["exit_code"] == 0 and plan["pipeline"] == "nightly"
    assert plan["axes"]["revisions"] == ["linux:v1", "linux:v2"]
    assert [(c["rev"], c["host"], c["job"]) for c in plan["cells"]] == [
        ("v1", "qemu", "stress"),
        ("v2", "qemu", "stress"),
    ]
    assert "2 cells:" in done.stderr  # the human listing went to stderr


def test_nightly_resume_of_a_run_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    env = {"KBISECT_CACHE": str(tmp_path / "cache"), "KBISECT_RESULTS": str(tmp_path / "r")}
    done = kb_process(["nightly", "--resume", "999999", "--root", str(root)], tmp_path, env)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.startswith("kbisect: no nightly run 999999 in ")
    assert len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing written: not even an empty store


def test_debug_variable_shows_the_traceback_behind_the_line(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    env = {"KBISECT_CACHE": str(tmp_path / "cache"), "KBISECT_RESULTS": str(tmp_path / "r")}
    argv = ["bisect.log", "7", "--root", str(root)]
    plain = kb_process(argv, tmp_path, env)
    debug = kb_process(argv, tmp_path, {**env, "KBISECT_DEBUG": "1"})
    assert plain.returncode == debug.returncode == ExitCode.USAGE
    assert plain.stderr.splitlines() == [
        f"kbisect: no bisection 7 in {tmp_path / 'r'}/kbisect.sqlite"
    ]
    assert "Traceback (most recent call last):" in debug.stderr
    assert "UserError" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()


def test_debug_variable_shows_the_cause_of_a_translated_error(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    results = tmp_path / "r"
    results.mkdir()
    (results / "kbisect.sqlite").write_bytes(b"not a database, " * 512)
    env = {"KBISECT_CACHE": str(tmp_path / "cache"), "KBISECT_RESULTS": str(results)}
    argv = ["bisect.log", "7", "--root", str(root)]
    plain = kb_process(argv, tmp_path, env)
    debug = kb_process(argv, tmp_path, {**env, "KBISECT_DEBUG": "1"})
    assert plain.returncode == debug.returncode == ExitCode.INFRA
    [line] = plain.stderr.splitlines()
    assert line.startswith(f"kbisect: results store {results}/kbisect.sqlite: ")
    assert "sqlite3.DatabaseError" in debug.stderr, "the cause, with where it happened"
    assert "was the direct cause of the following exception" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line


# -- exit statuses -------------------------------------------------------------------------------


def test_documented_exit_table_is_the_exit_code_enum() -> None:
    doc = (REPO / "docs/tasks.md").read_text()
    section = doc[doc.index("## Exit status\n") :]
    table = section[section.index("| exit | meaning |") :].split("\n\n")[0]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    assert [(int(code), meaning.strip()) for code, meaning in rows] == [
        (int(c), c.meaning) for c in ExitCode
    ]


def test_no_task_exits_with_a_literal_number() -> None:
    sources = (REPO / "src/kbisect").rglob("*.py")
    literal = re.compile(r"\b(Exit\([^)]*,\s*(code=)?\d|sys\.exit\(\d|exit_code\s*=\s*\d)")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert offenders == []


# -- pipes and completion ------------------------------------------------------------------------


def test_help_into_head_ends_quietly(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m kbisect --help | head -1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: kbisect ") and done.stdout.count("\n") == 1
    assert done.stderr == ""


def test_a_reader_gone_before_the_first_line_is_quiet_too(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbisect", "--list"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the program has started to write
    assert proc.wait(timeout=60) == ExitCode.OUTPUT_CLOSED == 128 + signal.SIGPIPE
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_bash_completion_offers_tasks_and_flags(tmp_path: Path) -> None:
    script = kb_process(["--print-completion-script", "bash"], tmp_path)
    assert script.returncode == 0, script.stderr
    (tmp_path / "kbisect.bash").write_text(script.stdout)
    # the script calls `kbisect` by name: this interpreter's kbisect, whatever PATH says
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "kbisect").write_text(f'#!/bin/sh\nexec {sys.executable} -m kbisect "$@"\n')
    (shim / "kbisect").chmod(0o755)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        program = (
            f"source {tmp_path / 'kbisect.bash'}; COMP_WORDS=(kbisect {line}); "
            f"COMP_CWORD={len(words)}; _complete_kbisect kbisect '{words[-1]}' kbisect; "
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
        done = subprocess.run(
            ["bash", "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.split()

    lab = sorted(t for t in TASKS if t.startswith("lab."))
    assert sorted(complete("lab.")) == lab
    assert complete("bisect", "--ti") == ["--timeout"]
    assert complete("nightly", "--dr") == ["--dry-run"]


# -- --json --------------------------------------------------------------------------------------


def culprit_repo(path: Path) -> list[str]:
    """Eight commits; the fifth adds bug.c."""
    path.mkdir()
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    commits = []
    for number in range(1, 9):
        (path / "level").write_text(f"{number}\n")
        if number == 5:
            (path / "bug.c").write_text("int broken;\n")
        subprocess.run(["git", "add", "-A"], cwd=path, check=True)
        subprocess.run(["git", "commit", "-qm", f"change {number}"], cwd=path, check=True, env=env)
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, check=True, text=True, capture_output=True
        )
        commits.append(head.stdout.strip())
    return commits


def test_bisect_json_is_the_report_alone_on_stdout(tmp_path: Path) -> None:
    commits = culprit_repo(tmp_path / "repo")
    env = {"KBISECT_CACHE": str(tmp_path / "cache"), "KBISECT_RESULTS": str(tmp_path / "results")}
    predicate = "echo checking on stdout; ! test -e bug.c"  # its output must not reach stdout
    argv = ["bisect", "--tree", str(tmp_path / "repo"), "--good", commits[0], "--bad", "main"]
    done = kb_process([*argv, "--run", predicate, "--json"], tmp_path, env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == 0 and report["status"] == "confirmed"
    assert report["culprit"]["commit"] == commits[4]
    assert report["culprit"]["subject"] == "change 5"
    assert Path(report["report"]).is_file() and Path(report["junit"]).is_file()
    assert "# first bad commit: [" + commits[4] in Path(report["log"]).read_text()
    assert "checking on stdout" in done.stderr and "is the first bad commit" in done.stderr


def test_json_errors_are_json_too(tmp_path: Path) -> None:
    culprit_repo(tmp_path / "repo")
    env = {"KBISECT_CACHE": str(tmp_path / "cache"), "KBISECT_RESULTS": str(tmp_path / "results")}
    argv = ["bisect", "--tree", str(tmp_path / "repo"), "--good", "no-such-rev", "--bad", "main"]
    done = kb_process([*argv, "--run", "true", "--json"], tmp_path, env)
    assert done.returncode == ExitCode.USAGE
    document = json.loads(done.stdout)
    assert document["exit_code"] == ExitCode.USAGE and "no-such-rev" in document["error"]
    assert done.stderr.strip().splitlines()[-1] == f"kbisect: {document['error']}"


JSON_FAILURES = [
    ["stress", "--job", "nosuch"],
    ["run", "linux", "v1", "nosuch"],
    ["nightly", "--pipeline", "x"],
]


@pytest.mark.parametrize("argv", JSON_FAILURES)
def test_every_json_task_answers_in_json_when_it_fails(argv: list[str], tmp_path: Path) -> None:
    root = small_project(tmp_path)
    env = {"KBISECT_CACHE": str(tmp_path / "cache"), "KBISECT_RESULTS": str(tmp_path / "r")}
    done = kb_process([*argv, "--json", "--root", str(root)], tmp_path, env)
    assert done.returncode == ExitCode.USAGE, done.stderr
    document = json.loads(done.stdout)
    assert document["exit_code"] == ExitCode.USAGE
    assert "nosuch" in document["error"] or "'x'" in document["error"]
