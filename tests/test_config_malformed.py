"""A table of malformed configurations, each a mistake a user (or an attacker's file) makes:
every one is exactly one short, printable line `file:line: key.path: what was expected`, through
the loader, and exit 2 with nothing written and no traceback through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO
from tests.test_config import VALID

from kbisect.config import load_project
from kbisect.config.nodes import MAX_DEPTH
from kbisect.config.project import MAX_FILE_BYTES
from kbisect.errors import ConfigError, UserError

Files = dict[str, str | bytes]
LONGEST_LINE = 300
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)


def change(path: str, old: str, new: str) -> Files:
    files: Files = dict(VALID)
    text = files[path]
    assert isinstance(text, str) and old in text, old
    files[path] = text.replace(old, new, 1)
    return files


def added(path: str, content: str | bytes) -> Files:
    return {**VALID, path: content}


def on_host(option: str) -> Files:
    return change("configs/main.yaml", "    kind: qemu\n", f"    kind: qemu\n    {option}\n")


def on_job(option: str) -> Files:
    return change("configs/jobs.yaml", "program: gntstress", f"program: gntstress\n    {option}")


def on_pipeline(old: str, new: str) -> Files:
    return change("pipelines/nightly.yaml", old, new)


def flaky(value: str) -> Files:
    """The experiment's odirect-read expectation replaced by ``value``."""
    return change(EXP, "odirect-read: fail}", f"odirect-read: {value}}}")


RANGE = "variants[1].expect.odirect-read"
MAIN, JOBS, EXP, PIPE = (
    "configs/main.yaml", "configs/jobs.yaml", "seeds/exp/experiment.yaml", "pipelines/nightly.yaml"
)  # fmt: skip
SETTINGS = "settings:\n  build_jobs: 3\n"

# (id, files, the line's start "file:line: key.path", a fragment of what was expected)
CASES: list[tuple[str, Files, str, str]] = [
    # YAML tags
    ("int-tag", on_job("timeout: !!int abc"), f"{JOBS}:4: jobs[0].timeout", "!!int"),
    ("bool-tag", on_host("qemu: {numa_balancing: !!bool maybe}"),
     f"{MAIN}:13: hosts[0].qemu.numa_balancing", "'maybe' is not a valid !!bool"),
    ("timestamp-tag", on_job("timeout: !!timestamp x"), f"{JOBS}:4: jobs[0].timeout",
     "!!timestamp"),
    ("local-tag", change(MAIN, "url: /srv/linux.git", "url: !env HOME"),
     f"{MAIN}:5: trees[0].url", "YAML tag !env is not supported"),
    ("python-tag", change(MAIN, "url: /srv/linux.git", "url: !!python/object/apply:os.system [id]"),
     f"{MAIN}:5: trees[0].url", "!!python/object/apply:os.system is not supported"),
    ("python-tag-file", added("configs/evil.yaml", "!!python/object/apply:os.system\nargs: [id]\n"),
     "configs/evil.yaml:1: ", "is not supported"),
    ("set-tag", change(MAIN, "fragments: [frag/x.config]", "fragments: !!set {frag/x.config}"),
     f"{MAIN}:9: profiles[0].fragments", "!!set is not supported"),
    # bytes that are not YAML text
    ("nul-byte", change(MAIN, "build_jobs: 3", "build_jobs: 3 # \x00"), f"{MAIN}:2: ",
     "character \\x00 is not allowed"),
    ("raw-escape", change(MAIN, "build_jobs: 3", "build_jobs: 3 # \x1b[2J"), f"{MAIN}:2: ",
     "character \\x1b is not allowed"),
    ("binary", added("configs/junk.yaml", bytes(range(256)) * 8), "configs/junk.yaml:2: ",
     "not UTF-8 text (byte 0x80)"),
    ("invalid-utf8", added(MAIN, SETTINGS.encode() + b"# caf\xe9\n"), f"{MAIN}:3: ",
     "not UTF-8 text (byte 0xe9)"),
    ("too-large", added("configs/big.yaml", "#" * (MAX_FILE_BYTES + 1)), "configs/big.yaml: ",
     "too large"),
    # structure
    ("deep-flow", added("configs/deep.yaml", "[" * 100_000), "configs/deep.yaml:1: ",
     f"nested more than {MAX_DEPTH} levels"),
    ("deep-block", added("configs/deep.yaml", "- " * 1000 + "x\n"), "configs/deep.yaml:1: ",
     "nested more than"),
    ("billion-laughs", added("configs/lol.yaml", BILLION_LAUGHS + "trees: *j\n"),
     "configs/lol.yaml:1: ", "anchors and aliases"),
    ("alias", change(MAIN, "build_jobs: 3", "build_jobs: &n 3\n  cache_dir: *n"), f"{MAIN}:2: ",
     "anchors and aliases"),
    ("duplicate-key", change(MAIN, "  build_jobs: 3", "  build_jobs: 3\n  build_jobs: 4"),
     f"{MAIN}:3: settings.build_jobs", "duplicate key"),
    ("duplicate-nested-key", change(JOBS, "sysctl: {kernel.numa_balancing: 1}",
                                    "sysctl: {vm.x: 1, vm.x: 2}"),
     f"{JOBS}:4: jobs[0].sysctl.vm.x", "duplicate key"),
    ("list-as-key", change(MAIN, "settings:\n", "settings:\n  ? [a, b]\n  : 1\n"),
     f"{MAIN}:2: settings", "expected a name as key"),
    # control characters, forged lines, huge values
    ("escape-in-value", change(EXP, "description: as it is", 'description: "\\e[31mred"'),
     f"{EXP}:6: variants[0].description", "'\\x1b[31mred'"),
    ("escape-in-key", change(JOBS, "kernel.numa_balancing", '"\\e[2J"'),
     f"{JOBS}:4: jobs[0].sysctl.\\x1b[2J", "without control characters"),
    ("forged-line-in-key", added("configs/x.yaml", '"x\\rconfigs/x.yaml:1: forged": 1\n'),
     "configs/x.yaml:1: x\\rconfigs/x.yaml:1: forged", "without control characters"),
    ("forged-line-in-value", on_job('timeout: "9\\rconfigs/jobs.yaml:1: forged"'),
     f"{JOBS}:4: jobs[0].timeout", "'9\\rconfigs/jobs.yaml:1: forged'"),
    ("surrogate", change(EXP, "title: an experiment", 'title: "\\ud800"'), f"{EXP}:2: title",
     "\\ud800"),
    ("huge-value", on_job("timeout: " + "x" * 100_000), f"{JOBS}:4: jobs[0].timeout",
     "(100000 characters)"),
    ("huge-key", added(MAIN, SETTINGS + "? " + "y" * 100_000 + "\n: 1\n"), f"{MAIN}:4: yyyy",
     "unknown key"),
    ("name-newline", change(MAIN, "- name: rack1", '- name: "rack1\\n"'),
     f"{MAIN}:13: hosts[1].name", "got 'rack1\\n'"),
    # numbers: each has a range
    ("power-cycles", on_host("max_power_cycles: -1"), f"{MAIN}:13: hosts[0].max_power_cycles",
     "from 0 to 100, got -1"),
    ("memory", on_host("qemu: {memory_mb: 99999999999}"), f"{MAIN}:13: hosts[0].qemu.memory_mb",
     "got 99999999999"),
    ("cpus-zero", on_host("qemu: {cpus: 0}"), f"{MAIN}:13: hosts[0].qemu.cpus", "from 1 to"),
    ("cpus-true", on_host("qemu: {cpus: true}"), f"{MAIN}:13: hosts[0].qemu.cpus",
     "expected an integer, got 'true'"),
    ("huge-int", on_host("qemu: {cpus: " + "9" * 4000 + "}"), f"{MAIN}:13: hosts[0].qemu.cpus",
     "..."),
    ("worktree-slots", change(MAIN, "url: /srv/linux.git", "url: x\n    worktree_slots: 100000000"),
     f"{MAIN}:6: trees[0].worktree_slots", "from 1 to 64"),
    ("limit-nan", change(MAIN, "build_jobs: 3", "artifact_limit_gb: .nan"),
     f"{MAIN}:2: settings.artifact_limit_gb", "got .nan"),
    ("limit-inf", change(MAIN, "build_jobs: 3", "artifact_limit_gb: .inf"),
     f"{MAIN}:2: settings.artifact_limit_gb", "got .inf"),
    ("limit-negative", change(MAIN, "build_jobs: 3", "artifact_limit_gb: -4"),
     f"{MAIN}:2: settings.artifact_limit_gb", "got -4"),
    ("limit-overflow", change(MAIN, "build_jobs: 3", "artifact_limit_gb: 1" + "0" * 400),
     f"{MAIN}:2: settings.artifact_limit_gb", "too large"),
    ("port", change(MAIN, "port: 2222", "port: 70000"), f"{MAIN}:15: hosts[1].ssh.port",
     "from 1 to 65535, got 70000"),
    ("job-timeout", on_job("timeout: 0"), f"{JOBS}:4: jobs[0].timeout", "from 1 to"),
    ("job-repeat", on_job("repeat: -2"), f"{JOBS}:4: jobs[0].repeat", "got -2"),
    ("pipeline-repeat", on_pipeline("jobs: [stress]", "jobs: [stress]\nrepeat: 100000000"),
     f"{PIPE}:10: repeat", "from 1 to 1000"),
    # an expected failure rate: `expect: {SUBTEST: {flaky: [LOW, HIGH]}}`
    ("flaky-reversed", flaky("{flaky: [0.5, 0.05]}"), f"{EXP}:10: {RANGE}.flaky",
     "expected LOW <= HIGH, got [0.5, 0.05]"),
    ("flaky-one-rate", flaky("{flaky: [0.5]}"), f"{EXP}:10: {RANGE}.flaky",
     "expected two rates [LOW, HIGH], got 1"),
    ("flaky-nan", flaky("{flaky: [.nan, 0.5]}"), f"{EXP}:10: {RANGE}.flaky[0]",
     "expected a number from 0 to 1, got .nan"),
    ("flaky-percent", flaky("{flaky: [0.05, 50]}"), f"{EXP}:10: {RANGE}.flaky[1]",
     "expected a number from 0 to 1, got 50"),
    ("flaky-word", flaky("flakey"), f"{EXP}:10: {RANGE}",
     "expected one of 'pass', 'fail', 'skip', 'flaky' or a mapping (FlakyRange), got 'flakey'"),
    ("flaky-list", flaky("[0.05, 0.5]"), f"{EXP}:10: {RANGE}",
     "or a mapping (FlakyRange), got a list"),
    ("flaky-null", flaky("null"), f"{EXP}:10: {RANGE}", "got nothing (null)"),
    ("flaky-key", flaky("{flaky: [0, 1], rate: 1}"), f"{EXP}:10: {RANGE}.rate",
     "unknown key (expected one of: flaky)"),
    ("newest-tags", on_pipeline("revisions: [v6.1, 6.2]", "newest_tags: -5"),
     f"{PIPE}:3: revisions[0].newest_tags", "got -5"),
    ("max-bisections", on_pipeline("jobs: [stress]", "jobs: [stress]\nauto_bisect:\n"
                                   "  max_bisections: -4"),
     f"{PIPE}:11: auto_bisect.max_bisections", "got -4"),
    ("no-hosts", on_pipeline("hosts: [qemu, rack1]", "hosts: []"), f"{PIPE}:8: hosts",
     "expected a non-empty list"),
    ("no-revisions", on_pipeline("revisions:\n  - tree: linux\n    revisions: [v6.1, 6.2]\n",
                                 "revisions: []\n"), f"{PIPE}:1: revisions", "non-empty"),
    # files and names
    ("yml-file", added("configs/lab.yml", "hosts: []\n"), "configs/lab.yml: ",
     "only *.yaml files are read here; rename it to lab.yaml"),
    ("json-file", added("configs/lab.json", "{}\n"), "configs/lab.json: ", "only *.yaml"),
    ("upper-yaml", added("pipelines/weekly.YAML", "{}\n"), "pipelines/weekly.YAML: ",
     "only *.yaml"),
    ("experiment-yml", added("seeds/other/experiment.yml", "name: other\n"),
     "seeds/other/experiment.yml: ", "only experiment.yaml"),
    ("missing-patch", change(EXP, "[a.patch]", "[a.patch, b.patch]"),
     f"{EXP}:9: variants[1].patches[1]", "no such file: seeds/exp/b.patch"),
    ("patch-name-too-long", change(EXP, "[a.patch]", "[" + "p" * 5000 + "]"),
     f"{EXP}:9: variants[1].patches[0]", "no such file"),
    ("unknown-host", on_pipeline("hosts: [qemu, rack1]", "hosts: [qemu, rack9]"),
     f"{PIPE}:8: hosts[1]", "unknown host 'rack9' (known: qemu, rack1)"),
    ("unknown-job", on_pipeline("jobs: [stress]", "jobs: [strss]"), f"{PIPE}:9: jobs[0]",
     "unknown job 'strss' (known: stress)"),
    ("unknown-profile", on_pipeline("profiles: [small]", "profiles: [big]"),
     f"{PIPE}:7: profiles[0]", "unknown profile 'big' (known: small)"),
    ("unknown-tree", on_pipeline("- tree: linux", "- tree: linus"), f"{PIPE}:2: revisions[0].tree",
     "unknown tree 'linus' (known: linux)"),
    ("unknown-experiment", on_pipeline("experiment: exp", "experiment: exq"),
     f"{PIPE}:5: experiments[0].experiment", "unknown experiment 'exq' (known: exp)"),
    ("unknown-variant", on_pipeline("variants: [patched]", "variants: [patchd]"),
     f"{PIPE}:6: experiments[0].variants[0]", "(known: base, patched)"),
    ("broken-file-no-echo", change(MAIN, "hosts:", "hosts: [\n"), f"{MAIN}:",
     "YAML syntax error"),
]  # fmt: skip


def write(root: Path, files: Files) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KBISECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KBISECT_ROOT", raising=False)
    monkeypatch.delenv("KBISECT_RESULTS", raising=False)
    return tmp_path / "project"


def assert_clean_line(line: str) -> None:
    """One short line, nothing a terminal would act on."""
    assert len(line) <= LONGEST_LINE, line[:400]
    assert line.isprintable(), repr(line[:400])


@pytest.mark.parametrize(("files", "start", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_each_malformed_file_is_one_clean_located_line(
    project_dir: Path, files: Files, start: str, expected: str
) -> None:
    write(project_dir, files)
    with pytest.raises(ConfigError) as info:
        load_project(project_dir)
    lines = [str(p) for p in info.value.problems]
    assert len(lines) == 1, lines
    assert lines[0].startswith(start), lines[0]
    assert expected in lines[0], lines[0]
    assert_clean_line(lines[0])


def test_valid_base_of_the_table_loads(project_dir: Path) -> None:
    assert load_project(write(project_dir, dict(VALID))).hosts.keys() == {"qemu", "rack1"}


def test_python_tags_are_never_executed(project_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = f"!!python/object/apply:os.system ['touch {marker}']\n"
    write(
        project_dir, {**VALID, "configs/evil.yaml": "trees:\n  - " + evil, "pipelines/e.yaml": evil}
    )
    with pytest.raises(ConfigError) as info:
        load_project(project_dir)
    assert len(info.value.problems) == 2
    assert not marker.exists()


def test_a_fifo_is_reported_not_waited_for(project_dir: Path) -> None:
    write(project_dir, dict(VALID))
    os.mkfifo(project_dir / "configs" / "pipe.yaml")
    with pytest.raises(ConfigError) as info:
        load_project(project_dir)
    assert [str(p) for p in info.value.problems] == [
        "configs/pipe.yaml: cannot read: not a regular file"
    ]


def test_a_cache_dir_with_an_unknown_user_is_a_problem(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KBISECT_CACHE")
    write(project_dir, change(MAIN, "build_jobs: 3", "cache_dir: ~no-such-user-here/cache"))
    with pytest.raises(ConfigError) as info:
        load_project(project_dir)
    [line] = [str(p) for p in info.value.problems]
    assert line.startswith(f"{MAIN}:2: settings.cache_dir: ") and "cannot expand" in line


def test_every_problem_of_a_file_is_listed_each_on_its_line(project_dir: Path) -> None:
    files = change(MAIN, "port: 2222", "port: 0")
    files[JOBS] = str(files[JOBS]).replace("name: stress", 'name: "stress\\e"\n    repeat: 0')
    files["configs/lab.yml"] = "{}\n"
    write(project_dir, files)
    with pytest.raises(ConfigError) as info:
        load_project(project_dir)
    assert [str(p) for p in info.value.problems] == [
        "configs/jobs.yaml:2: jobs[0].name: expected text without control characters, "
        "got 'stress\\x1b'",
        "configs/jobs.yaml:3: jobs[0].repeat: expected an integer from 1 to 1000, got 0",
        "configs/lab.yml: not read: only *.yaml files are read here; rename it to lab.yaml",
        "configs/main.yaml:15: hosts[1].ssh.port: expected an integer from 1 to 65535, got 0",
    ]  # the job's name is broken, so the pipeline's `stress` is not reported as unknown


# Through the real command line: exit 2, the lines on stderr, nothing written, no traceback.

CLI_CASES = ["python-tag", "nul-byte", "deep-flow", "billion-laughs", "forged-line-in-key",
             "huge-value", "pipeline-repeat", "yml-file", "unknown-host",
             "flaky-reversed"]  # fmt: skip


def kbisect(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kbisect", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def snapshot(top: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in top.rglob("*")}


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBISECT_")}
    env["KBISECT_CACHE"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.parametrize(
    ("case", "task"),
    [(case, ["check"]) for case in CLI_CASES]
    + [(case, ["nightly", "--dry-run"]) for case in ("pipeline-repeat", "python-tag", "nul-byte")],
)
def test_the_command_line_exits_2_with_the_line_and_writes_nothing(
    tmp_path: Path, case: str, task: list[str]
) -> None:
    [(_, files, start, expected)] = [c for c in CASES if c[0] == case]
    root = write(tmp_path / "project", files)
    before = snapshot(tmp_path)
    env = {**clean_env(tmp_path), "KBISECT_ROOT": str(root)}
    result = kbisect(root, *task, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert lines[0].startswith(start) and expected in lines[0], lines
    assert lines[1:] == ["kbisect: 1 configuration problem"]
    for line in lines:
        assert_clean_line(line)
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert result.stdout == ""
    assert snapshot(tmp_path) == before


def test_shipped_configuration_checks_clean(tmp_path: Path) -> None:
    result = kbisect(REPO, "check", env=clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


# The project root: --root, $KBISECT_ROOT, or upwards from the working directory.


def test_check_of_a_root_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    result = kbisect(
        tmp_path, "check", "--root", str(tmp_path / "nonexistent"), env=clean_env(tmp_path)
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"kbisect: project root {tmp_path}/nonexistent: not a directory"


@pytest.mark.parametrize("task", [["check"], ["nightly", "--dry-run"], ["variants"]])
def test_outside_any_project_tasks_that_need_one_say_so_and_exit_2(
    tmp_path: Path, task: list[str]
) -> None:
    outside = tmp_path / "somewhere"
    outside.mkdir()
    result = kbisect(outside, *task, env=clean_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"kbisect: not in a kbisect project: no configs/ directory in {outside} or above it; "
        "give --root DIR or set $KBISECT_ROOT"
    ]


def test_a_root_without_configs_is_not_a_project(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path), "KBISECT_ROOT": str(tmp_path)}
    result = kbisect(tmp_path, "check", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kbisect: {tmp_path} is not a kbisect project: it has no configs/ directory"
    )


def test_a_plain_repository_needs_no_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_project(required=False) is what bisect, checkout and tree.revs use there."""
    outside = tmp_path / "repo"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.delenv("KBISECT_ROOT", raising=False)
    project = load_project(None, required=False)
    assert project.root == outside and not project.trees
    with pytest.raises(UserError, match="not in a kbisect project"):
        load_project(None)
