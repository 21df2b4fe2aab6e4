"""The command line: `invoke` (through tasks.py) and the `kbisect` console script are one
collection, and both report configuration problems the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO, MakeProject
from tests.test_config import VALID

from kbisect.cli import main

FIVE_MISTAKES = {
    **VALID,
    "configs/main.yaml": VALID["configs/main.yaml"]
    .replace("kind: qemu", "kind: qemu\n    colour: blue")  # unknown key
    .replace("port: 2222", "port: many"),  # wrong type
    "configs/jobs.yaml": VALID["configs/jobs.yaml"].replace(
        "    program: gntstress\n", ""
    ),  # missing
    "pipelines/nightly.yaml": VALID["pipelines/nightly.yaml"].replace(
        "profiles: [small]", "profiles: [big]"
    ),  # unknown name
    "configs/other.yaml": "trees:\n  - name: linux\n    url: /srv/other.git\n",  # duplicate
}
EXPECTED = [
    "configs/jobs.yaml:2: jobs[0].program: missing required key (a string)",
    "configs/main.yaml:13: hosts[0].colour: unknown key (expected one of: name, kind, qemu, ssh, "
    "lava, machine, boot_timeout, max_power_cycles)",
    "configs/main.yaml:16: hosts[1].ssh.port: expected an integer, got 'many'",
    "configs/other.yaml:2: trees[0].name: duplicate tree 'linux' (first at configs/main.yaml:4)",
    "pipelines/nightly.yaml:7: profiles[0]: unknown profile 'big' (known: small)",
    "kbisect: 5 configuration problems",
]


def tool(name: str) -> str:
    """The console script installed next to this Python (pip install -e .)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run ./bootstrap --test"
    return found


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KBISECT_ROOT"}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("program", ["invoke", "kbisect"])
def test_five_mistakes_give_five_messages_and_exit_2(
    make_project: MakeProject, program: str
) -> None:
    root = make_project(FIVE_MISTAKES)
    result = run([tool(program), "check", "--root", str(root)], cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.splitlines() == EXPECTED
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("program", ["invoke", "kbisect"])
def test_valid_project_checks_clean(make_project: MakeProject, program: str) -> None:
    root = make_project(VALID)
    result = run([tool(program), "check"], cwd=root if program == "kbisect" else REPO)
    if program == "invoke":  # invoke finds tasks.py in the repository; point it at the project
        result = run([tool(program), "check", "--root", str(root)], cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert (
        "configuration OK: 1 trees, 1 build profiles, 2 hosts, 1 jobs, 1 experiments"
        in result.stdout
    )


def test_in_process_program_matches(
    make_project: MakeProject, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(FIVE_MISTAKES)
    monkeypatch.setattr(sys, "argv", ["kbisect", "check", "--root", str(root)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == EXPECTED


def test_both_programs_list_the_same_tasks() -> None:
    listings = [run([tool(p), "--list"], cwd=REPO) for p in ("invoke", "kbisect")]
    assert all(r.returncode == 0 for r in listings)
    tasks = [
        [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith("  ") and ln.split()]
        for r in listings
    ]
    assert tasks[0] == tasks[1]
    assert "check" in tasks[0]


def test_every_task_has_help_for_every_flag() -> None:
    from kbisect.cli import ns

    for name in ns.task_names:
        t = ns[name]
        assert t.__doc__ and t.__doc__.strip(), f"{name} has no docstring"
        params = [p for p in t.get_arguments()]
        for arg in params:
            assert arg.help, f"{name} --{arg.name} has no help"


def test_configuration_reference_is_current() -> None:
    from kbisect.config.reference import reference_markdown

    doc = (REPO / "docs/configuration.md").read_text()
    stale = "docs/configuration.md is stale: run `python -m kbisect.cli.docs`"
    assert reference_markdown() in doc, stale


def test_tasks_doc_documents_every_task() -> None:
    from kbisect.cli import ns

    doc = (REPO / "docs/tasks.md").read_text()
    missing = [
        name
        for name, aliases in ns.task_names.items()
        if not any(f"\n### `{spelling}`\n" in doc for spelling in (name, *aliases))
    ]
    assert not missing, f"tasks missing from docs/tasks.md: {missing}"


def test_documents_referred_to_exist() -> None:
    """A name like README.md or docs/lab.md in the code, the docs or the shipped configuration
    is a file of the repository, not a document that only some machine has."""
    import re

    named = re.compile(r"(?<![\w./-])([\w./-]+\.md)\b")
    places = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "src").rglob("*.py")]
    for part in ("configs", "seeds", "pipelines"):
        places += (REPO / part).rglob("*.yaml")
    missing = [
        f"{path.relative_to(REPO)}: {name}"
        for path in places
        for name in named.findall(path.read_text())
        if not (REPO / name).is_file() and not (path.parent / name).is_file()
    ]
    assert missing == []


def test_invoke_task_help_after_a_positional_task_points_at_the_help() -> None:
    """Under the stock `invoke`, a task's first positional argument takes the next word, `--help`
    included: that is one line saying where help is, not a tree named "--help"."""
    asked = run([tool("invoke"), "build", "--help"], cwd=REPO)
    assert asked.returncode != 0 and asked.stdout == ""
    assert asked.stderr.strip().splitlines() == [
        "--help where --tree's value was expected: for a task's help, `invoke --help TASK` "
        "(or `kbisect TASK --help`)"
    ]
    shown = run([tool("invoke"), "--help", "build"], cwd=REPO)
    assert shown.returncode == 0 and "--tree=STRING" in shown.stdout
    # a task without positional arguments shows its help either way
    either = run([tool("invoke"), "builds", "--help"], cwd=REPO)
    assert either.returncode == 0 and "Usage: inv[oke]" in either.stdout
