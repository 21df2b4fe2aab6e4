"""The seed case for real: `kbisect run` for each gntdev variant of Debian's newest 6.1 release on
the embedded Xen host, judged against the expectations in seeds/gntdev-numa/experiment.yaml (which
record what was observed), then read back from the results store and the JUnit files."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from conftest import REPO, VARIANTS
from kbisect.build.store import Artifact
from kbisect.config import Project
from kbisect.lab.qemu import standby_wanted
from kbisect.results.model import ResultStatus
from kbisect.results.store import ResultsStore

pytestmark = pytest.mark.vm  # boots the embedded Xen host under QEMU

GUP = {"odirect-read", "odirect-write", "io-submit", "vmsplice", "process-vm-readv",
       "proc-pid-mem", "move-pages"}  # fmt: skip


@pytest.mark.slow
def test_four_variants_on_the_embedded_host(
    real_project: Project,
    dom0_builds: dict[str, Artifact],
    debian_tree: tuple[object, list[str]],
    tmp_path: Path,
) -> None:
    rev = debian_tree[1][-1]
    results = tmp_path / "results"
    env = {**os.environ, "KBISECT_ROOT": str(REPO), "KBISECT_RESULTS": str(results)}
    exits = {}
    for variant in VARIANTS:
        done = subprocess.run(
            [sys.executable, "-m", "kbisect", "run", "--tree", "debian-6.1", "--rev", rev,
             "--variant", variant, "--job", "gntstress"],
            capture_output=True, text=True, env=env, timeout=1200, check=False,
        )  # fmt: skip
        print(done.stdout[-3000:], done.stderr[-2000:])
        exits[variant] = done.returncode
        assert "junit: " in done.stdout, done.stderr
    experiment = real_project.experiments["gntdev-numa"]

    with ResultsStore(results) as store:
        runs = store.runs()
        assert len(runs) == 4 and all(r.status.value == "finished" for r in runs)
        cells = {c.variant.split("/")[-1]: c for r in runs for c in store.cells(r.id)}
    assert sorted(cells) == sorted(VARIANTS)

    for variant in experiment.variants:
        cell = cells[variant.name]
        got = {s.name: s.status for s in cell.subtests}
        assert len(got) == 13, (variant.name, got)
        wanted = {name: variant.expect.get(name, variant.expect["default"]) for name in got}
        for name, expected in wanted.items():
            allowed = {"PASS", "FAIL"} if expected == "flaky" else {expected.upper()}
            assert got[name].value in allowed, f"{variant.name} {name}: {cell.reason}"
        assert cell.evidence == (), f"{variant.name}: no kernel evidence expected"
        assert cell.fingerprint["hypervisor"] == "xen"
        assert cell.build_key == dom0_builds[variant.name].key
        failing = {n for n, s in got.items() if s is ResultStatus.FAIL}
        assert exits[variant.name] == (1 if failing else 0), variant.name

    # the shapes behind the verdicts: VM_IO breaks GUP with EFAULT/EIO, no flag breaks the soak
    io = {s.name: s for s in cells["vm-io"].subtests}
    assert {n for n, s in io.items() if s.status is ResultStatus.FAIL} == GUP
    assert all(io[n].errno in (errno.EFAULT, errno.EIO) for n in GUP)
    soak = next(s for s in cells["none"].subtests if s.name == "numa-soak")
    assert soak.signal == signal.SIGBUS

    # JUnit reads back to the same counts and statuses
    for run in runs:
        xml = JUnitXml.fromfile(str(results / "runs" / str(run.id) / "junit.xml"))
        for suite in xml:
            variant = next(p.value for p in suite.properties() if p.name == "variant")
            cell = cells[variant.split("/")[-1]]
            assert suite.tests == len(cell.subtests)
            statuses = {}
            for case in suite:
                kinds = {type(r) for r in case.result}
                statuses[case.name] = (
                    ResultStatus.FAIL if Failure in kinds else
                    ResultStatus.ERROR if Error in kinds else
                    ResultStatus.SKIP if Skipped in kinds else ResultStatus.PASS
                )  # fmt: skip
            assert sorted(statuses.values()) == sorted(s.status for s in cell.subtests)


@pytest.mark.slow
def test_default_nightly_on_the_embedded_host(
    real_project: Project,
    dom0_builds: dict[str, Artifact],
    debian_tree: tuple[object, list[str]],
    tmp_path: Path,
) -> None:
    """The shipped nightly pipeline, narrowed to the newest release (the session has only the
    newest release built) and to one run per cell (it ships three, for flake rates: 12 cells
    of a minute each here): four variants on the embedded host, the summary's variant table."""
    root = tmp_path / "project"
    for part in ("configs", "seeds", "pipelines"):
        shutil.copytree(REPO / part, root / part)
    nightly = root / "pipelines/nightly.yaml"
    shipped = nightly.read_text()
    assert "newest_tags: 2" in shipped and "\nrepeat: 3\n" in shipped
    narrowed = shipped.replace("newest_tags: 2", "newest_tags: 1")
    nightly.write_text(narrowed.replace("\nrepeat: 3\n", "\nrepeat: 1\n"))
    env = {**os.environ, "KBISECT_ROOT": str(root), "KBISECT_RESULTS": str(tmp_path / "res")}
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "nightly"],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip
    print(done.stdout[-4000:], done.stderr[-2000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    # where the machine has cores to spare, each variant after the first booted on the
    # standby QEMU while the one before it ran
    staged = standby_wanted(real_project.hosts["qemu"].qemu_options())
    assert done.stdout.count("booted on standby") == (3 if staged else 0)
    rev = debian_tree[1][-1]
    with ResultsStore(tmp_path / "res") as store:
        run = store.runs()[0]
        cells = store.cells(run.id)
        changes = store.changes(run.id)
    assert len(cells) == 4 and {c.rev for c in cells} == {rev}
    assert {c.change for c in changes} == {"NEW"}, "a first nightly has no baseline"
    summary = (tmp_path / "res/runs" / str(run.id) / "summary.txt").read_text()
    table = summary[summary.index(f"variants at {rev}") :].splitlines()
    header = table[1].split()
    assert header == ["subtest", "vm-mixedmap", "vm-io", "none", "mempolicy"] or sorted(
        header[1:]
    ) == sorted(VARIANTS)
    row = {line.split()[0]: line for line in table[2:] if line.strip()}
    assert "FAIL" in row["odirect-read"] and "FAIL" in row["numa-soak"]
    assert "FAIL" not in row["self-map"]
