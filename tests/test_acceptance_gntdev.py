"""The seed case for real: `kbisect run` for each gntdev variant of Debian's newest 6.1 release on
the embedded Xen host, judged against the expectations in seeds/gntdev-numa/experiment.yaml (which
record what was observed), then read back from the results store and the JUnit files. A whole
nightly over the same variants, on the embedded host and the rack machine at once, is in
tests/test_rack_vm.py."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from conftest import REPO, VARIANTS
from kbisect.build.store import Artifact
from kbisect.config import Project
from kbisect.jobs.gntstress import SUBTESTS
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
        assert tuple(got) == SUBTESTS, (variant.name, got)
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
