"""The nightly: scheduling over a fake kernel tree and two namespace rack hosts (real sshd, real
builds of the fake kbuild, FAKE grub/reboot), resume after kill -9, auto-bisection of a new
regression (the classes themselves: tests/test_regressions.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from junitparser import JUnitXml

from fake_kernel import commit_file, git, make_buildable_repo, make_patch
from fake_machine import fake_rack_host
from kbisect.lab.lease import Lease
from kbisect.lab.ssh import KnownHosts, generate_keypair
from kbisect.results.model import CellRecord, ResultStatus, RunStatus
from kbisect.results.store import ResultsStore
from netns import NetnsLab, SshHost

pytestmark = [pytest.mark.needs_root, pytest.mark.slow]  # netns hosts, whole nightlies

FAKE_JOB = """#!/bin/sh
# a stand-in for gntstress on the fake machines: two subtests, some time spent
sleep "${1:-1}"
echo "GNTSTRESS alpha PASS errno=0 detail=ok"
echo "GNTSTRESS beta PASS errno=0 detail=ok"
echo "GNTSTRESS-SUMMARY pass=2 fail=0 skip=0"
"""


@pytest.fixture(scope="module")
def rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[SshHost]]]:
    work = tmp_path_factory.mktemp("nightly")
    key = work / "id_ed25519"
    generate_keypair(key)
    netns = NetnsLab(work / "lab", key.with_name("id_ed25519.pub"))
    hosts = []
    try:
        for name in ("rack1", "rack2"):
            hosts.append(fake_rack_host(netns, name, work)[0])
        yield work, hosts
    finally:
        netns.close()


def make_project(work: Path, hosts: list[SshHost], tmp: Path) -> Path:
    kernel = make_buildable_repo(tmp / "src")
    commit_file(kernel, "core.c", "int core(void) { return 3; }\n", "core: three")
    git(kernel, "tag", "v3")
    io = make_patch(kernel, "drivers/xen/gntdev.c", "0x10000000; /* VM_MIXEDMAP */",
                    "0x00004000; /* VM_IO */", "use VM_IO")  # fmt: skip
    job = tmp / "fakejob.sh"
    job.write_text(FAKE_JOB)
    job.chmod(0o755)
    root = tmp / "project"
    (root / "configs/frag").mkdir(parents=True)
    (root / "seeds/exp").mkdir(parents=True)
    (root / "pipelines").mkdir()
    (root / "configs/trees.yaml").write_text(f"trees:\n  - name: fake\n    url: {kernel}\n")
    (root / "configs/builds.yaml").write_text(
        "profiles:\n  - {name: dom0, base: tinyconfig, fragments: [frag/dom0.config]}\n"
    )
    (root / "configs/frag/dom0.config").write_text("CONFIG_XEN=y\nCONFIG_XEN_GNTDEV=m\n")
    (root / "configs/jobs.yaml").write_text(
        f"jobs:\n  - {{name: fake, program: {job}, args: ['1'], timeout: 60}}\n"
    )
    lines = ["hosts:"]
    for host in hosts:
        m = work / f"machine-{host.name}"
        lines += [
            f"  - name: {host.name}",
            "    kind: ssh",
            "    boot_timeout: 20",
            "    ssh:",
            f"      address: {host.address}",
            f"      key: {work / 'id_ed25519'}",
            f"      boot_dir: {m / 'boot'}",
            f"      modules_dir: {m / 'lib/modules'}",
            f"      grub_script: {m / 'grub.d/42_kbisect'}",
            f"      grub_dir: {m / 'grub'}",
        ]
        KnownHosts(root / "configs/known_hosts").add(host.address, host.port, host.host_key)
    (root / "configs/lab.yaml").write_text("\n".join(lines) + "\n")
    (root / "seeds/exp/io.patch").write_text(io)
    (root / "seeds/exp/experiment.yaml").write_text(
        "name: exp\ntitle: t\nquestion: q\nvariants:\n"
        "  - {name: base, description: d, patches: []}\n"
        "  - {name: io, description: d, patches: [io.patch]}\n"
    )
    (root / "pipelines/nightly.yaml").write_text(
        "description: fake\nrevisions:\n  - {tree: fake, revisions: [v2, v3]}\n"
        "experiments:\n  - {experiment: exp}\nprofiles: [dom0]\n"
        f"hosts: [{', '.join(h.name for h in hosts)}]\njobs: [fake]\nrepeat: 1\n"
        "auto_bisect: {enabled: false}\n"
    )
    return root


def kbisect_env(root: Path, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KBISECT_ROOT": str(root),
        "KBISECT_CACHE": str(tmp / "cache"),
        "KBISECT_RESULTS": str(tmp / "results"),
    }


def overlaps(a: CellRecord, b: CellRecord) -> bool:
    assert a.started and a.finished and b.started and b.finished
    return a.started < b.finished and b.started < a.finished


def test_nightly_shares_builds_overlaps_hosts_and_writes_outputs(
    rack: tuple[Path, list[SshHost]], tmp_path: Path
) -> None:
    work, hosts = rack
    root = make_project(work, hosts, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "nightly"], capture_output=True, text=True,
        env=kbisect_env(root, tmp_path), timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    with ResultsStore(tmp_path / "results") as store:
        run = store.runs()[0]
        cells = store.cells(run.id)
    # 2 revisions x 2 variants x 2 hosts x 1 job
    assert len(cells) == 8 and all(c.status is ResultStatus.PASS for c in cells), cells
    assert len({c.build_key for c in cells}) == 4, "one build per (revision, variant)"
    assert done.stdout.count("building fake:") == 4
    by_host = {h.name: [c for c in cells if c.host == h.name] for h in hosts}
    assert any(overlaps(a, b) for a in by_host["rack1"] for b in by_host["rack2"]), (
        "the two hosts ran at the same time"
    )
    # outputs: JUnit per cell and merged, the summary with the variant table
    base = tmp_path / "results/runs" / str(run.id)
    assert len(list((base / "junit").glob("*.xml"))) == 8
    merged = JUnitXml.fromfile(str(base / "junit.xml"))
    assert sum(1 for _ in merged) == 8
    summary = (base / "summary.txt").read_text()
    assert summary.startswith(f"kbisect nightly run {run.id}")
    assert "NEW REGRESSIONS: 0" in summary and "variants at v3 (passes/runs;" in summary
    # every cell's host booted its build (a build a cell here): each recorded how long it took
    assert all(c.boot_seconds is not None and c.boot_seconds > 0 for c in cells), cells


def test_the_cell_that_booted_its_kernel_records_the_boot(
    rack: tuple[Path, list[SshHost]], tmp_path: Path
) -> None:
    work, hosts = rack
    root = make_project(work, hosts, tmp_path)
    argv = [sys.executable, "-m", "kbisect", "run", "fake", "v3", "fake", "--host", "rack1"]
    for _ in range(2):  # the second finds the build still up on rack1
        done = subprocess.run(
            [*argv, "--repeat", "2"], capture_output=True, text=True,
            env=kbisect_env(root, tmp_path), timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    with ResultsStore(tmp_path / "results") as store:
        again, first = store.runs()
        booted, up = store.cells(first.id), store.cells(again.id)
    assert [c.repeat for c in booted] == [1, 2] and [c.repeat for c in up] == [1, 2]
    assert booted[0].boot_seconds is not None and booted[0].boot_seconds > 0
    assert booted[1].boot_seconds is None  # the same boot, counted once
    assert [c.boot_seconds for c in up] == [None, None]  # ran on the kernel already up


def test_resume_after_kill_9_loses_and_duplicates_nothing(
    rack: tuple[Path, list[SshHost]], tmp_path: Path
) -> None:
    work, hosts = rack
    root = make_project(work, hosts, tmp_path)
    env = kbisect_env(root, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbisect", "nightly"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    before: list[CellRecord] = []
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and len(before) < 2:
            time.sleep(0.5)
            if (tmp_path / "results/kbisect.sqlite").exists():
                with ResultsStore(tmp_path / "results") as store:
                    runs = store.runs()
                    before = store.cells(runs[0].id) if runs else []
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert 2 <= len(before) < 8, "killed in the middle"
    with ResultsStore(tmp_path / "results") as store:
        run = store.runs()[0]
        assert run.status is RunStatus.RUNNING
        recorded = {c.identity: c.id for c in store.cells(run.id)}
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "nightly", "--resume", str(run.id)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    with ResultsStore(tmp_path / "results") as store:
        cells = store.cells(run.id)
        assert store.get_run(run.id).status is RunStatus.FINISHED  # type: ignore[union-attr]
    assert len(cells) == 8 and len({c.identity for c in cells}) == 8
    for cell in cells:  # what was recorded before the kill was kept, not redone
        if cell.identity in recorded:
            assert cell.id == recorded[cell.identity]
    assert f"{8 - len(recorded)} cells to run" in done.stdout


# -- regression tracking with scripted results ----------------------------------------------------


def test_ctrl_c_stops_cleanly_and_leaves_the_run_resumable(
    rack: tuple[Path, list[SshHost]], tmp_path: Path
) -> None:
    work, hosts = rack
    root = make_project(work, hosts, tmp_path)
    env = kbisect_env(root, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbisect", "nightly"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:  # bounded by the nightly's own deadlines
            seen.append(line)
            if "running, time limit" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "kbisect nightly --resume 1" in output
    with ResultsStore(tmp_path / "results") as store:
        assert store.get_run(1).status is RunStatus.RUNNING  # type: ignore[union-attr]
    leases = tmp_path / "cache/lab/leases"
    for host in hosts:
        assert Lease.holder(leases, host.name) is None, "leases released"


def test_new_regression_is_auto_bisected(rack: tuple[Path, list[SshHost]], tmp_path: Path) -> None:
    """Run 1 tests v2 (passes); run 2 tests v3, whose kernel carries a BROKEN marker that the
    job notices: a REGRESSION against v2, bisected automatically to the commit that added it."""
    work, hosts = rack
    host = hosts[0]
    root = make_project(work, [host], tmp_path)
    kernel = tmp_path / "src/linux-build"
    git(kernel, "tag", "-d", "v3")
    culprit = commit_file(
        kernel, "core.c", 'const char flavour[] = "BROKEN";\nint core(void) { return 3; }\n',
        "core: a flavour that breaks alpha",
    )  # fmt: skip
    commit_file(kernel, "Documentation/x.rst", "later\n", "docs: later")
    git(kernel, "tag", "v3")
    job = tmp_path / "fakejob.sh"
    job.write_text(
        "#!/bin/sh\n"
        "key=$(sed -n 's/.*kbisect.build=\\([0-9a-f]*\\).*/\\1/p' /proc/cmdline)\n"
        f"if grep -q BROKEN {work}/machine-{host.name}/boot/vmlinuz-kbisect-$key; then\n"
        '  echo "GNTSTRESS alpha FAIL errno=5 detail=broken flavour"\n'
        '  echo "GNTSTRESS-SUMMARY pass=0 fail=1 skip=0"; exit 1\n'
        "fi\n"
        'echo "GNTSTRESS alpha PASS errno=0 detail=ok"\n'
        'echo "GNTSTRESS-SUMMARY pass=1 fail=0 skip=0"\n'
    )
    pipeline = root / "pipelines/nightly.yaml"
    text = pipeline.read_text().replace(
        "auto_bisect: {enabled: false}", "auto_bisect: {enabled: true}"
    )
    text = text.replace("experiments:\n  - {experiment: exp}\n", "")
    env = kbisect_env(root, tmp_path)
    outputs = []
    for revs in ("[v2]", "[v3]"):
        pipeline.write_text(text.replace("[v2, v3]", revs))
        done = subprocess.run(
            [sys.executable, "-m", "kbisect", "nightly"], capture_output=True, text=True,
            env=env, timeout=900, check=False,
        )  # fmt: skip
        outputs.append(done)
    assert outputs[0].returncode == 0, outputs[0].stdout[-3000:] + outputs[0].stderr
    second = outputs[1]
    assert second.returncode == 1, second.stdout[-4000:] + second.stderr
    with ResultsStore(tmp_path / "results") as store:
        (regression,) = store.regressions("open")
        assert (regression.opened_rev, regression.good_rev) == ("v3", "v2")
        assert regression.bisection_id is not None
        report = store.get_bisection(regression.bisection_id).report  # type: ignore[union-attr]
    assert report is not None and report["status"] == "confirmed"
    assert report["culprit"]["commit"] == culprit
    assert "NEW REGRESSIONS: 1" in second.stdout
    assert f"{culprit[:12]} core: a flavour that breaks alpha" in second.stdout
