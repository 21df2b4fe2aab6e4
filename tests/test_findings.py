"""`kbisect report`: an experiment's findings from a real results store filled through its API
(two hosts, repeats, a flaky subtest, a failing variant with errno, signal and kernel evidence),
as Markdown held against a golden file, as JSON, and as a page of the results browser (escaped).

Set KBISECT_UPDATE_GOLDEN=1 to rewrite tests/golden/findings/ after a deliberate change (and read
the diff).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kbisect.browser import render_site
from kbisect.browser.expect import Verdict
from kbisect.browser.findings import as_json, findings_page, gather
from kbisect.browser.findings_text import markdown, plain
from kbisect.config.project import load_project
from kbisect.results.model import (
    CellRecord,
    Evidence,
    LogKind,
    ResultStatus,
    SubtestRecord,
)
from kbisect.results.store import ResultsStore

GOLDEN = Path(__file__).resolve().parent / "golden" / "findings"
SRC = Path(__file__).resolve().parent.parent / "src"
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
EXPERIMENT = "gntdev-numa"
MARKUP = "<script>alert(1)</script> | *bold* [x](javascript:alert(2))"

EXPERIMENT_YAML = f"""
name: {EXPERIMENT}
title: VM_MIXEDMAP vs VM_IO vs nothing vs get_policy <b>
question: |
  Do the grant-map stress jobs tell the four ways apart?
  EFAULT under VM_IO only, SIGBUS with no flag only.
variants:
  - name: vm-mixedmap
    description: The shipped code.
    expect: {{default: pass}}
  - name: vm-io
    description: VM_IO instead; {MARKUP}
    patches: [vm-io.patch]
    expect: {{default: pass, odirect-read: fail}}
  - name: none
    description: No flag.
    patches: [none.patch]
    expect: {{default: pass, numa-soak: fail, churn: {{flaky: [0.05, 0.5]}}}}
  - name: mempolicy-v3
    description: A ->get_policy vm_op (the v3 patch).
    patches: [mempolicy.patch]
    expect: {{default: pass}}
    origin:
      subject: "[PATCH v3] xen/gntdev: Use mempolicy instead of VM_IO flag <img src=x>"
      author: A Developer <dev@example.org>
      date: "2016-11-10T12:00:00+00:00"
      message_id: <1478787000-1-dev@example.org>
"""

FINGERPRINTS = {
    "qemu": {
        "boot": "QEMU -kernel (Xen multiboot, direct)",
        "hypervisor": "xen",
        "xen_version": "4.17.7",
        "dom0_release": "6.1.0-kbisect",
        "dom0_cmdline": "console=hvc0 numa=fake=2 kbisect.build=0123abcd",
        "numa_nodes": "2",
        "cpus": "2",
    },
    "rack-vm": {
        "boot": "grub2 one-shot 'kbisect-0123abcd'",
        "hypervisor": "xen",
        "xen_version": "4.17.5",
        "dom0_release": "6.1.0-kbisect",
        "dom0_cmdline": "placeholder=1 root=LABEL=root kbisect.build=0123abcd",
        "numa_nodes": "2",
        "cpus": "2",
    },
}
OK = ResultStatus.PASS
BAD = ResultStatus.FAIL


def _subtests(variant: str, host: str, run: int, repeat: int) -> tuple[SubtestRecord, ...]:
    odirect = SubtestRecord("odirect-read", OK)
    soak = SubtestRecord("numa-soak", OK)
    churn = SubtestRecord("churn", OK)
    if variant == "vm-io":
        odirect = SubtestRecord("odirect-read", BAD, errno=14, detail="read: Bad address <EFAULT>")
    if variant == "none":
        soak = SubtestRecord("numa-soak", BAD, signal=7, detail="killed by SIGBUS after 1.02 s")
        if (host, run, repeat) == ("rack-vm", 1, 1):  # now and then
            churn = SubtestRecord("churn", BAD, signal=7, detail="SIGBUS after 932 cycles")
    return (odirect, soak, churn)


def _cell(variant: str, host: str, run: int, repeat: int, when: datetime) -> CellRecord:
    subtests = _subtests(variant, host, run, repeat)
    evidence: tuple[Evidence, ...] = ()
    status = BAD if any(s.status is BAD for s in subtests) else OK
    reason = ""
    if (variant, host, run, repeat) == ("mempolicy-v3", "qemu", 2, 0):
        evidence = (
            Evidence("BUG:", LogKind.DMESG, 812, ("BUG: KASAN: use-after-free in mpol_dup",)),
        )
        status, reason = BAD, "kernel evidence: BUG: KASAN <mpol_dup>"
    return CellRecord(
        tree="debian-6.1",
        rev="v6.1.192-2",
        variant=f"{EXPERIMENT}/{variant}",
        profile="xen-dom0",
        host=host,
        job="gntstress",
        repeat=repeat,
        status=status,
        reason=reason,
        commit="4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b",
        started=when,
        finished=when + timedelta(seconds=20),
        fingerprint=FINGERPRINTS[host],
        subtests=subtests,
        evidence=evidence,
    )


def fill(store: ResultsStore) -> None:
    """Two nightlies: the first on both hosts with two repeats, the second on qemu only with
    three; plus a cell of another experiment, which the report leaves out."""
    plan = {1: {"qemu": 2, "rack-vm": 2}, 2: {"qemu": 3}}
    for number, hosts in plan.items():
        started = T0 + timedelta(days=number - 1)
        run = store.start_run("nightly", pipeline="nightly", started=started)
        assert run.id == number
        for variant in ("vm-mixedmap", "vm-io", "none", "mempolicy-v3"):
            for host, repeats in hosts.items():
                for repeat in range(repeats):
                    store.record_cell(run.id, _cell(variant, host, number, repeat, started))
        other = _cell("vm-io", "qemu", number, 0, started)
        store.record_cell(run.id, CellRecord(**{**vars(other), "variant": "gntdev-numa2/vm-io"}))
        store.finish_run(run.id, finished=started + timedelta(hours=1))


@pytest.fixture
def project(make_project) -> Path:  # type: ignore[no-untyped-def]
    root: Path = make_project(
        {
            f"seeds/{EXPERIMENT}/experiment.yaml": EXPERIMENT_YAML,
            **{f"seeds/{EXPERIMENT}/{p}.patch": "" for p in ("vm-io", "none", "mempolicy")},
        }
    )
    return root


@pytest.fixture
def store(project: Path, store_backend: str | None) -> ResultsStore:
    """The store filled, in each backend (SQLite, PostgreSQL: the experiment's cells are
    picked by a range on their variant names, which both must compare alike)."""
    results = load_project(project).results_dir
    results.mkdir(parents=True, exist_ok=True)
    with ResultsStore(results) as s:
        fill(s)
    return ResultsStore(results)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("KBISECT_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def test_the_markdown_report_is_the_golden_one(project: Path, store: ResultsStore) -> None:
    experiment = load_project(project).experiments[EXPERIMENT]
    with store:
        text = markdown(gather(store, experiment), "../site/")
    _golden(f"{EXPERIMENT}.md", text)


def test_counts_expectations_and_evidence(project: Path, store: ResultsStore) -> None:
    experiment = load_project(project).experiments[EXPERIMENT]
    with store:
        found = gather(store, experiment)
        qemu_only = gather(store, experiment, host="qemu", since=2)
    assert found.cells == 4 * 7 and found.hosts == ["qemu", "rack-vm"]
    assert [r.id for r in found.runs] == [1, 2] and found.runs[0].cells == 16
    by = {v.name: {s.subtest: s for s in v.subtests} for v in found.variants}
    churn = by["none"]["churn"]
    assert (churn.total.fails, churn.total.passes) == (1, 6)
    assert (churn.by_host["rack-vm"].fails, churn.by_host["qemu"].fails) == (1, 0)
    assert churn.verdict is Verdict.EXPECTED  # 1 of 7: its interval meets 5-50%
    assert churn.failed_with[0][0] == "SIGBUS"
    odirect = by["vm-io"]["odirect-read"]
    assert (odirect.total.fails, odirect.verdict, odirect.failed_with[0][0]) == (
        7,
        Verdict.EXPECTED,
        "EFAULT",
    )
    evidence = by["mempolicy-v3"]["cell"]
    assert evidence.verdict is Verdict.UNEXPECTED and evidence.failed_with[0][0] == "BUG:"
    assert evidence.failed_with[0][2].page == f"run/2/cell-{evidence.failed_with[0][2].cell}.html"
    assert [(v.name, s.subtest) for v, s in found.unexpected()] == [("mempolicy-v3", "cell")]
    qemu = {h.host: dict(h.facts) for h in found.host_facts}["qemu"]
    assert qemu["boot"] == ("QEMU -kernel (Xen multiboot, direct)",)
    assert qemu["dom0_cmdline"] == ("console=hvc0 numa=fake=2",)  # the build's word left out
    assert [r.xen_versions for r in found.revisions] == [("4.17.5", "4.17.7")]
    assert qemu_only.cells == 4 * 3 and qemu_only.hosts == ["qemu"]
    assert [r.id for r in qemu_only.runs] == [2]
    document = as_json(found, "https://ci.example/site/")
    json.dumps(document)  # plain JSON
    none = {v["name"]: v for v in document["variants"]}["none"]
    assert none["subtests"][2]["hosts"]["rack-vm"] == {
        "passes": 1,
        "fails": 1,
        "errors": 0,
        "skips": 0,
    }
    assert none["subtests"][1]["failed_with"][0]["cell"].startswith(
        "https://ci.example/site/run/1/"
    )


def test_markdown_escapes_what_could_open_a_link_or_a_cell() -> None:
    assert plain(MARKUP) == (
        "\\<script\\>alert(1)\\</script\\> \\| \\*bold\\* \\[x\\](javascript:alert(2))"
    )
    assert plain("a\nb\x1b[2J") == "a b\\\\x1b\\[2J"  # the escape's backslash shows


def test_the_browser_page_is_escaped_and_linked(project: Path, store: ResultsStore) -> None:
    p = load_project(project)
    with store:
        render_site(store, experiments=p.experiments)
    site = p.results_dir / "site"
    html = (site / findings_page(EXPERIMENT)).read_text()
    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;1478787000-1-dev@example.org&gt;" in html
    for link in re.findall(r'href="([^"#]+)', html):
        assert (site / "findings" / link).resolve().is_file(), link
    assert 'href="../run/2/cell-' in html
    index = (site / "index.html").read_text()
    assert f'href="{findings_page(EXPERIMENT)}"' in index
    assert not (site / findings_page("gntdev-numa2")).exists()  # not an experiment here
    with ResultsStore(p.results_dir) as again:
        second = render_site(again, experiments=p.experiments)
    assert findings_page(EXPERIMENT) not in second.written  # nothing changed: not rendered
    with ResultsStore(p.results_dir) as again:
        run = again.start_run("nightly", started=T0 + timedelta(days=5))
        again.record_cell(run.id, _cell("vm-io", "qemu", run.id, 0, T0 + timedelta(days=5)))
        third = render_site(again, experiments=p.experiments)
    assert findings_page(EXPERIMENT) in third.written
    assert "3 runs" in (site / findings_page(EXPERIMENT)).read_text()


def test_the_page_reads_only_the_runs_that_changed_and_says_what_reading_all_would(
    project: Path, store: ResultsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = load_project(project)
    site = p.results_dir / "site"
    with store:
        render_site(store, experiments=p.experiments)
        asked: list[list[int] | None] = []
        read_all = store.experiment_cells

        def spy(experiment: str, **given: object) -> list[CellRecord]:
            ids = given.get("run_ids")
            asked.append(sorted(ids) if isinstance(ids, list) else None)
            return read_all(experiment, **given)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "experiment_cells", spy)
        # run 1's vm-io cell on qemu is recorded again (a resumed run), with kernel evidence
        # now; a third run adds a way to fail not seen before (EIO) on a Xen not seen before
        redone = _cell("vm-io", "qemu", 1, 0, T0)
        evidence = (Evidence("BUG:", LogKind.DMESG, 3, ("BUG: Bad page map in process x",)),)
        store.record_cell(1, replace(redone, evidence=evidence, reason="kernel evidence: BUG:"))
        run = store.start_run("nightly", started=T0 + timedelta(days=5))
        eio = SubtestRecord("odirect-read", BAD, errno=5, detail="read: Input/output error")
        newer = _cell("vm-io", "rack-vm", run.id, 0, T0 + timedelta(days=5))
        fingerprint = {**newer.fingerprint, "xen_version": "4.17.9-next"}
        newer = replace(newer, subtests=(eio, *newer.subtests[1:]), fingerprint=fingerprint)
        store.record_cell(run.id, newer)
        render_site(store, experiments=p.experiments)
        assert asked == [[1, run.id]]  # not run 2's cells again
        page = (site / findings_page(EXPERIMENT)).read_text()
        render_site(store, site.with_name("site-again"), experiments=p.experiments)
    from_all = (site.with_name("site-again") / findings_page(EXPERIMENT)).read_text()
    assert page == from_all
    assert "EIO" in page and "4.17.9-next" in page


def _kbisect(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "KBISECT_ROOT": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "kbisect", "report", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_report_task(project: Path, store: ResultsStore, tmp_path: Path) -> None:
    store.close()
    out = tmp_path / "reply.md"
    done = _kbisect("--experiment", EXPERIMENT, "--output", str(out), root=project)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith(f"# Findings: {EXPERIMENT}\n")
    site = os.path.relpath(load_project(project).results_dir / "site", tmp_path)
    assert f"]({site}/run/1/cell-" in text
    # a report kept in the repository names its runs and cells and links nowhere
    done = _kbisect("--experiment", EXPERIMENT, "--links", "none", root=project)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"(?<!\\)\]\(", done.stdout) and "run 1 cell " in done.stdout
    assert done.stdout.count("\n| 1 |") == 1, "the runs table names run 1"
    done = _kbisect("--experiment", EXPERIMENT, "--json", "--host", "rack-vm", root=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hosts"] == ["rack-vm"]
    done = _kbisect("--experiment", "gntdev-numa9", root=project)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "gntdev-numa9" in done.stderr
    done = _kbisect("--experiment", EXPERIMENT, "--since", "3", root=project)
    assert done.returncode == 0, done.stderr
    assert "No results (from run 3 on)" in done.stdout
