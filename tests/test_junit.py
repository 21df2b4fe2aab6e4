"""JUnit export: read back with junitparser, validated against the Jenkins xunit schema."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from helpers import RECORDED_SUBTESTS
from kbisect.jobs.classify import judge
from kbisect.jobs.gntstress import parse_output
from kbisect.results import CellRecord, LogKind, LogRef, ResultsStore, ResultStatus, SubtestRecord
from kbisect.results.junit import (
    CELL_CASE,
    render,
    render_bisection,
    visible,
    write_bisection_junit,
    write_junit,
)
from test_classify import GOLDEN as CLASSIFY_GOLDEN
from test_gntstress import GOLDEN as GNTSTRESS_GOLDEN
from test_results_store import make_cell

XSD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "jenkins-xunit-junit-10.xsd"

RESULT_TYPE = {
    ResultStatus.PASS: None,
    ResultStatus.FAIL: Failure,
    ResultStatus.ERROR: Error,
    ResultStatus.SKIP: Skipped,
    ResultStatus.MISS: Skipped,
}


def validate(path: Path) -> None:
    """The file validates against the Jenkins xunit plugin's strict JUnit schema."""
    if not XSD.is_file():
        pytest.skip(
            f"the Jenkins xunit schema is not beside this checkout ({XSD}; it is kept outside "
            "the project for its licence): the JUnit is still read back with junitparser"
        )
    if shutil.which("xmllint") is None:
        pytest.fail("xmllint is needed to validate JUnit (Debian: libxml2-utils, ./bootstrap)")
    done = subprocess.run(
        ["xmllint", "--noout", "--schema", str(XSD), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def matrix() -> list[CellRecord]:
    """Cells that differ in one identity field at a time, in every cell status."""
    base = make_cell()
    cells = [
        base,
        replace(base, rev="v6.1.190-1"),
        replace(base, repeat=1),
        replace(base, profile="dom0-debug"),
        replace(base, tree="linux-stable"),
        replace(base, variant=""),
        replace(base, variant="gntdev-numa/vm-io", host="xen1.lab.example"),
        replace(base, job="gntstress-soak"),
    ]
    passing = replace(
        base,
        rev="v6.1.192-1",
        status=ResultStatus.PASS,
        reason="13 subtests: 13 PASS",
        subtests=tuple(SubtestRecord(n, ResultStatus.PASS) for n in ("self-map", "fork")),
        evidence=(),
    )
    skipped = replace(
        base,
        rev="v6.1.176-1",
        status=ResultStatus.SKIP,
        reason="patch does not apply",
        subtests=(),
        evidence=(),
        build_key=None,
    )
    dead = replace(
        base,
        rev="v6.1.170-3",
        status=ResultStatus.ERROR,
        reason="host died, no kernel evidence",
        subtests=(),
        evidence=(),
    )
    return [*cells, passing, skipped, dead]


def subtest_of(name: str) -> str:
    """The subtest a testcase name is about, without the qualifiers a file with several
    revisions or repeats adds (`` (rev~1)``, `` #2``)."""
    return re.sub(r"( \(rev~\d+\))?( #\d+)?$", "", name)


def _expected_cases(cell: CellRecord) -> list[tuple[str, ResultStatus]]:
    cases = [(s.name, s.status) for s in cell.subtests]
    shown = any(s.status is cell.status for s in cell.subtests)
    if not cell.subtests or (cell.status in (ResultStatus.FAIL, ResultStatus.ERROR) and not shown):
        cases.append((CELL_CASE, cell.status))
    return cases


def test_counts_and_statuses_read_back_and_validate(tmp_path: Path) -> None:
    cells = matrix()
    path = write_junit(cells, tmp_path / "junit" / "run-1.xml")
    validate(path)
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == len(cells)
    for suite, cell in zip(suites, cells, strict=True):
        expected = _expected_cases(cell)
        statuses = [status for _, status in expected]
        assert suite.tests == len(expected)
        assert suite.failures == statuses.count(ResultStatus.FAIL)
        assert suite.errors == statuses.count(ResultStatus.ERROR)
        assert suite.skipped == statuses.count(ResultStatus.SKIP) + statuses.count(
            ResultStatus.MISS
        )
        got = []
        for case in suite:
            kinds = [type(r) for r in case.result]
            assert len(kinds) <= 1
            got.append((subtest_of(case.name), kinds[0] if kinds else None))
        assert got == [(name, RESULT_TYPE[status]) for name, status in expected]
    assert xml.tests == sum(len(_expected_cases(c)) for c in cells)


def test_no_disabled_attribute_anywhere(tmp_path: Path) -> None:
    text = render(matrix()).decode()
    assert "disabled" not in text
    root = ET.fromstring(text)
    assert root.tag == "testsuites" and "disabled" not in root.attrib


def test_names_are_unique_across_the_matrix() -> None:
    root = ET.fromstring(render(matrix()))
    suites = [s.get("name") for s in root.iter("testsuite")]
    assert len(suites) == len(set(suites))
    tests = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    assert len(tests) == len(set(tests))
    classnames = {c for c, _ in tests}
    assert "gntdev-numa.vm-io.dom0-min.xen1_lab_example.gntstress" in classnames
    assert "base.dom0-min.qemu-xen.gntstress" in classnames  # the tree as it is


def test_cells_differing_only_in_revision_or_repeat_do_not_collide() -> None:
    base = make_cell()
    for other in (replace(base, rev="v6.1.190-1"), replace(base, repeat=7)):
        root = ET.fromstring(render([base, other]))
        tests = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
        assert len(tests) == 2 * len(base.subtests) == len(set(tests))


def test_the_same_identity_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="would both have the JUnit test"):
        render([make_cell(), make_cell(reason="again")])
    with pytest.raises(ValueError, match="would both have the JUnit test"):
        render([make_cell(variant="a.b"), make_cell(variant="a_b")])  # same classname


def test_properties_carry_the_identity_build_and_fingerprint(tmp_path: Path) -> None:
    cell = make_cell()
    path = write_junit([cell], tmp_path / "j.xml")
    (suite,) = JUnitXml.fromfile(str(path))
    props = {p.name: p.value for p in suite.properties()}
    assert props["tree"] == "debian-6.1"
    assert props["revision"] == "v6.1.192-2"
    assert props["commit"] == cell.commit
    assert props["variant"] == "gntdev-numa/none"
    assert props["patch_hash"] == cell.patch_hash
    assert props["build_key"] == cell.build_key
    assert props["profile"] == "dom0-min"
    assert props["host"] == "qemu-xen"
    assert props["repeat"] == "0"
    assert json.loads(props["fingerprint"]) == cell.fingerprint
    assert props["fingerprint"] == json.dumps(
        cell.fingerprint, sort_keys=True, separators=(",", ":")
    )
    assert props["log.dmesg"] == "run-1/cell-1/dmesg.txt"


def test_logs_are_referenced_not_inlined(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "run-1").mkdir(parents=True)
    (results / "run-1" / "dmesg.txt").write_text("SECRET-DMESG-CONTENT\n")
    (results / "run-1" / "dmesg.1.txt").write_text("ANOTHER\n")
    cell = make_cell(
        logs=(
            LogRef(LogKind.DMESG, "run-1/dmesg.txt"),
            LogRef(LogKind.DMESG, "run-1/dmesg.1.txt"),
        )
    )
    text = render([cell]).decode()
    assert "SECRET-DMESG-CONTENT" not in text and "ANOTHER" not in text
    suite = ET.fromstring(text).find("testsuite")
    assert suite is not None
    out = suite.findtext("system-out") or ""
    assert "  dmesg: run-1/dmesg.txt\n  dmesg: run-1/dmesg.1.txt" in out
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["log.dmesg"] == "run-1/dmesg.txt" and props["log.dmesg.2"] == "run-1/dmesg.1.txt"


def test_control_characters_are_escaped_visibly_and_markup_survives(tmp_path: Path) -> None:
    nasty = "esc\x1b[31m nul\x00 del\x7f c1\x90 cr\r bell\x07 lone\ud800 nonchar\ufffe \U0001fffe"
    markup = "<script>alert('&amp;')</script> & <![CDATA[x]]> \"quoted\""
    cell = make_cell(
        reason=f"{nasty} {markup}",
        subtests=(SubtestRecord("self-map", ResultStatus.FAIL, 14, f"{markup} {nasty}"),),
        evidence=(),
    )
    path = write_junit([cell], tmp_path / "j.xml")
    validate(path)
    (suite,) = JUnitXml.fromfile(str(path))
    (case,) = list(suite)
    (failure,) = case.result
    expected = visible(f"{markup} {nasty}")
    assert failure.message == "EFAULT (errno 14)"
    assert (failure.text or "").startswith(expected)
    for shown in (
        "esc\\x1b[31m",
        "nul\\x00",
        "del\\x7f",
        "c1\\x90",
        "cr\\x0d",
        "bell\\x07",
        "lone\\ud800",
        "nonchar\\ufffe",
        "\\U0001fffe",
    ):
        assert shown in expected and shown in (failure.text or "")
    assert markup in (failure.text or "")  # as text, not markup
    props = {p.name: p.value for p in suite.properties()}
    assert props["reason"] == visible(f"{nasty} {markup}")
    raw = path.read_bytes()
    assert b"<script>" not in raw and b"&lt;script&gt;" in raw
    assert b"\x1b" not in raw and b"\x00" not in raw


def test_visible_leaves_ordinary_text_alone() -> None:
    text = "tab\there\nnewline, NEL\x85, é, 漢字, emoji \U0001f600, backslash \\x1b"
    assert visible(text) == text


def test_cell_testcase_carries_reason_and_evidence_when_no_subtest_shows_it() -> None:
    out = (CLASSIFY_GOLDEN / "clean-boot.out").read_text()
    oops = (
        "[   12.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"
        "[   12.000001] Call Trace:\n"
        "[   12.000002]  gntdev_mmap+0x1c6/0x340 [xen_gntdev]\n"
    )
    verdict = judge(parse_output(out, RECORDED_SUBTESTS), 0, oops, "")
    assert verdict.status is ResultStatus.FAIL
    cell = make_cell(
        status=verdict.status,
        reason=verdict.reason,
        subtests=verdict.subtests,
        evidence=verdict.evidence,
    )
    root = ET.fromstring(render([cell]))
    cases = list(root.iter("testcase"))
    assert len(cases) == 14
    last = cases[-1]
    assert last.get("name") == CELL_CASE
    failure = last.find("failure")
    assert failure is not None and failure.get("message") == verdict.reason
    assert "gntdev_mmap+0x1c6/0x340 [xen_gntdev]" in (failure.text or "")
    assert all(c.find("failure") is None for c in cases[:-1])


def test_evidence_goes_with_the_failing_subtest_when_there_is_one() -> None:
    root = ET.fromstring(render([make_cell()]))
    failures = [c.find("failure") for c in root.iter("testcase")]
    texts = [f.text for f in failures if f is not None]
    assert len(texts) == 2 and "BUG: Bad page map" in (texts[0] or "")
    assert texts[1] == "timeout after 60s"  # its own detail, not the cell's evidence again
    assert CELL_CASE not in {c.get("name") for c in root.iter("testcase")}


def test_a_verdict_through_the_store_into_junit(tmp_path: Path) -> None:
    name = "gpf-gntdev-mmap"
    verdict = judge(
        parse_output((CLASSIFY_GOLDEN / f"{name}.out").read_text(), RECORDED_SUBTESTS),
        None,
        None,
        (CLASSIFY_GOLDEN / f"{name}.console").read_text(),
        host_died=True,
    )
    with ResultsStore(tmp_path / "results") as store:
        run = store.start_run("run")
        store.record_cell(
            run.id,
            make_cell(
                status=verdict.status,
                reason=verdict.reason,
                subtests=verdict.subtests,
                evidence=verdict.evidence,
            ),
        )
        cells = store.cells(run.id)
    path = write_junit(cells, tmp_path / "results" / "junit.xml")
    validate(path)
    (suite,) = JUnitXml.fromfile(str(path))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (13, 1, 0, 12)
    first = next(iter(suite))
    (failure,) = first.result
    assert "general protection fault" in (failure.text or "")


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "j.xml"
    write_junit([make_cell()], path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_junit([make_cell(), make_cell()], path)
    assert path.read_bytes() == before
    write_junit(matrix(), path)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["j.xml"]  # no temp files left


def test_empty_matrix_is_valid(tmp_path: Path) -> None:
    path = write_junit([], tmp_path / "empty.xml")
    validate(path)
    assert JUnitXml.fromfile(str(path)).tests == 0


def test_every_status_pairing_validates(tmp_path: Path) -> None:
    cells = []
    for i, (cell_status, sub_status) in enumerate(itertools.product(ResultStatus, repeat=2)):
        cells.append(
            make_cell(
                repeat=i,
                status=cell_status,
                subtests=(SubtestRecord("fork", sub_status, 0, ""),),
            )
        )
    validate(write_junit(cells, tmp_path / "all.xml"))


# -- names CI histories follow, times, messages, properties, files -----------------------------

GOLDEN = Path(__file__).resolve().parent / "golden" / "junit"
REGEN = os.environ.get("KBISECT_REGEN_GOLDEN") == "1"


def vm_io_cell(rev: str, **changes: object) -> CellRecord:
    """The seed case's VM_IO cell as the nightly records it, at ``rev``."""
    report = parse_output((GNTSTRESS_GOLDEN / "vm-io.txt").read_text(), RECORDED_SUBTESTS)
    verdict = judge(report, 1, "", "")
    fields: dict[str, object] = {
        "rev": rev,
        "variant": "gntdev-numa/vm-io",
        "profile": "xen-dom0",
        "host": "qemu",
        "repeat": 1,
        "status": verdict.status,
        "reason": verdict.reason,
        "subtests": verdict.subtests,
        "evidence": verdict.evidence,
        "logs": (LogRef(LogKind.JOB_OUTPUT, f"runs/1/{rev}/job-output.log"),),
        "build_key": hashlib.sha256(rev.encode()).hexdigest()[:24],
        "fingerprint": {  # as kbisect.lab.probe reports the embedded host
            "hypervisor": "xen",
            "xen_version": "4.17.6-pre",
            "xen_cmdline": "console=com1 dom0_mem=1024M,max:1024M loglvl=all",
            "dom0_release": "6.1.0-kbisect",
            "dom0_cmdline": "console=hvc0 earlyprintk=xen panic=-1 numa=fake=2",
            "numa_nodes": "2",
            "numa_balancing": "1",
        },
    }
    fields.update(changes)
    return make_cell(**fields)


def cases_of(data: bytes) -> dict[tuple[str, str], ET.Element]:
    return {
        (c.get("classname") or "", c.get("name") or ""): c
        for c in ET.fromstring(data).iter("testcase")
    }


def test_names_stay_the_same_from_one_release_to_the_next() -> None:
    old, new = render([vm_io_cell("v6.1.190-1")]), render([vm_io_cell("v6.1.192-2")])
    assert cases_of(old).keys() == cases_of(new).keys()
    case = cases_of(new)[("gntdev-numa.vm-io.xen-dom0.qemu.gntstress", "odirect-read")]
    assert case.find("failure") is not None
    # what changed is in the properties, not the names
    suites = [ET.fromstring(d).find("testsuite") for d in (old, new)]
    names = {s.get("name") for s in suites if s is not None}
    assert names == {"gntdev-numa.vm-io.xen-dom0.qemu.gntstress"}
    revisions = [
        {p.get("name"): p.get("value") for p in s.iter("property")}["revision"]
        for s in suites
        if s is not None
    ]
    assert revisions == ["v6.1.190-1", "v6.1.192-2"]


def test_several_revisions_in_one_file_the_newest_keeps_the_plain_name() -> None:
    cells = [vm_io_cell("v6.1.192-2"), vm_io_cell("v6.1.190-1")]  # finished newest first
    data = render(cells, revisions=[("debian-6.1", "v6.1.190-1"), ("debian-6.1", "v6.1.192-2")])
    names = {n for _, n in cases_of(data)}
    assert "odirect-read" in names and "odirect-read (rev~1)" in names
    suites = {s.get("name"): s for s in ET.fromstring(data).iter("testsuite")}
    older = suites["gntdev-numa.vm-io.xen-dom0.qemu.gntstress (rev~1)"]
    assert {p.get("name"): p.get("value") for p in older.iter("property")}["revision"] == (
        "v6.1.190-1"
    )
    # without the pipeline's order, the order the cells name their revisions
    names = {n for _, n in cases_of(render(cells))}
    assert "odirect-read (rev~1)" in names


def test_repeats_after_the_first_are_numbered() -> None:
    cells = [vm_io_cell("v6.1.192-2", repeat=r) for r in (1, 2, 3)]
    names = {n for _, n in cases_of(render(cells))}
    assert {"odirect-read", "odirect-read #2", "odirect-read #3"} <= names


def test_every_testcase_has_a_time_and_the_cell_carries_its_own(tmp_path: Path) -> None:
    dead = make_cell(status=ResultStatus.ERROR, reason="host died", subtests=(), evidence=())
    path = write_junit([*matrix()[:2], replace(dead, rev="v1")], tmp_path / "j.xml")
    validate(path)
    root = ET.parse(path).getroot()
    times = [c.get("time") for c in root.iter("testcase")]
    assert times and all(t is not None and float(t) >= 0 for t in times)
    (cell_case,) = [c for c in root.iter("testcase") if c.get("name") == CELL_CASE]
    assert cell_case.get("time") == "42.000"  # make_cell: started .. finished
    for suite in JUnitXml.fromfile(str(path)):
        assert suite.time == 42.0


def test_failure_message_is_short_and_the_body_has_the_detail(tmp_path: Path) -> None:
    results = tmp_path / "results"
    out = results / "runs/1/v6.1.192-2/job-output.log"
    out.parent.mkdir(parents=True)
    out.write_text((GNTSTRESS_GOLDEN / "vm-io.txt").read_text())
    cell = vm_io_cell("v6.1.192-2")
    path = write_junit([cell], results / "junit.xml", results_dir=results)
    validate(path)
    (suite,) = JUnitXml.fromfile(str(path))
    failures = {c.name: c.result[0] for c in suite if c.result}
    assert failures["odirect-read"].message == "EFAULT (errno 14)"
    assert failures["proc-pid-mem"].message == "EIO (errno 5)"
    body = failures["odirect-read"].text or ""
    assert body.startswith("O_DIRECT pread(/dev/ram0) into the gntdev mapping: Bad address")
    assert f"cell: {cell.reason}" in body  # the classifier's reason
    assert "GNTSTRESS odirect-read FAIL errno=14" in body  # the job's own line about it
    assert "GNTSTRESS-SUMMARY pass=6 fail=7" in body  # and the output's tail
    # a later failure quotes its own lines, not the whole tail again
    move = failures["move-pages"].text or ""
    assert "GNTSTRESS move-pages FAIL" in move and "GNTSTRESS odirect-read" not in move


def test_signal_and_timeout_messages() -> None:
    root = ET.fromstring(render([make_cell()]))
    messages = {
        c.get("name"): f.get("message")
        for c in root.iter("testcase")
        if (f := c.find("failure")) is not None
    }
    assert messages == {"numa-soak": "SIGBUS (signal 7)", "churn": "timed out"}


def test_properties_name_revision_build_host_variant_and_boot() -> None:
    cell = make_cell(
        fingerprint={
            "xen_version": "4.17.3",
            "xen_cmdline": "dom0_mem=1024M",
            "dom0_release": "6.1.0-kbisect",
            "dom0_cmdline": "numa=fake=2",
        }
    )
    suite = ET.fromstring(render([cell])).find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["revision"] == cell.rev and props["build_key"] == cell.build_key
    assert props["host"] == "qemu-xen" and props["variant"] == "gntdev-numa/none"
    assert props["host.boot"] == "xen 4.17.3 dom0_mem=1024M; dom0 6.1.0-kbisect numa=fake=2"
    assert props["host.dom0_cmdline"] == "numa=fake=2"
    assert "boot_seconds" not in props  # the cell did not boot its kernel (or predates the field)
    booted = ET.fromstring(render([replace(cell, boot_seconds=41.5)])).find("testsuite")
    assert booted is not None
    props = {p.get("name"): p.get("value") for p in booted.iter("property")}
    assert props["boot_seconds"] == "41.5"


def test_files_are_readable_by_all(tmp_path: Path) -> None:
    path = write_junit([make_cell()], tmp_path / "j.xml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    report = bisection_report()
    bisect_path = write_bisection_junit(report, tmp_path / "b.xml")
    assert stat.S_IMODE(bisect_path.stat().st_mode) == 0o644


def bisection_report() -> dict[str, Any]:
    step = {
        "commit": "c0ffee" * 6 + "abcd",
        "phase": "step",
        "verdict": "bad",
        "passes": 0,
        "fails": 3,
        "skips": 0,
        "errors": 0,
        "confidence": 0.9921,
        "runs": 3,
        "identity": None,
        "detail": "",
    }
    return {
        "id": 4,
        "status": "confirmed",
        "message": "first bad commit found and confirmed",
        "tree": "debian-6.1",
        "good": ["v6.1.190-1"],
        "bad": "v6.1.192-2",
        "culprit": {"commit": step["commit"], "subject": "xen/gntdev: use VM_IO <again>"},
        "variant": "gntdev-numa/vm-io",
        "predicate": "job",
        "job": "gntstress",
        "test": "odirect-read",
        "host": "qemu",
        "ends": [dict(step, phase="good-end", verdict="good", passes=3, fails=0)],
        "steps": [step],
        "validations": [],
        "confidence": 0.97,
        "runs": 12,
        "restarts": 0,
        "predicate_seconds": 81.5,
        "text": "bisection 4: CONFIRMED",
    }


def test_bisection_junit_carries_its_findings(tmp_path: Path) -> None:
    report = bisection_report()
    path = write_bisection_junit(report, tmp_path / "junit.xml")
    validate(path)
    (suite,) = JUnitXml.fromfile(str(path))
    props = {p.name: p.value for p in suite.properties()}
    assert props["good"] == "v6.1.190-1" and props["bad"] == "v6.1.192-2"
    assert props["culprit"] == report["culprit"]["commit"]
    assert props["culprit.subject"] == "xen/gntdev: use VM_IO <again>"
    assert (props["runs"], props["confidence"]) == ("12", "0.97")
    cases = list(suite)
    assert [c.name for c in cases][-1] == "result" and not cases[-1].result
    assert cases[-1].time == 81.5 and all(c.time is not None for c in cases)
    failed = dict(report, status="contradicted", message="the revert still fails")
    root = ET.fromstring(render_bisection(failed))
    failure = root.find(".//testcase[@name='result']/failure")
    assert failure is not None and failure.get("message") == "contradicted"
    assert "the revert still fails" in (failure.text or "")


def test_golden_nightly_cell(tmp_path: Path) -> None:
    """A whole file for a person to review: the VM_IO cell as the nightly writes it.
    `KBISECT_REGEN_GOLDEN=1` rewrites it; review the diff before committing."""
    results = tmp_path / "results"
    out = results / "runs/1/v6.1.192-2/job-output.log"
    out.parent.mkdir(parents=True)
    out.write_text((GNTSTRESS_GOLDEN / "vm-io.txt").read_text())
    cell = vm_io_cell("v6.1.192-2", build_key="a1b2c3d4e5f6a7b8c9d0e1f2")
    got = render([cell], name="kbisect nightly 1", results_dir=results).decode()
    golden = GOLDEN / "vm-io-cell.xml"
    if REGEN:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(got)
    assert got == golden.read_text()
    validate(golden)
