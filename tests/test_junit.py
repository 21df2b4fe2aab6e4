"""JUnit export: read back with junitparser, validated against the Jenkins xunit schema."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from kbisect.jobs.classify import judge
from kbisect.jobs.gntstress import parse_output
from kbisect.results import CellRecord, LogKind, LogRef, ResultsStore, ResultStatus, SubtestRecord
from kbisect.results.junit import CELL_CASE, render, visible, write_junit
from test_classify import GOLDEN as CLASSIFY_GOLDEN
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
            got.append((case.name.split(" [")[0], kinds[0] if kinds else None))
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
    assert "kbisect.xen1_lab_example.gntstress.gntdev-numa/vm-io" in classnames
    assert "kbisect.qemu-xen.gntstress.base" in classnames  # the tree as it is


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
    assert failure.message == f"errno=14: {expected}"
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
        assert shown in expected and shown in failure.message
    assert markup in failure.message  # as text, not markup
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
    verdict = judge(parse_output(out), 0, oops, "")
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
    assert (last.get("name") or "").startswith(f"{CELL_CASE} [")
    failure = last.find("failure")
    assert failure is not None and failure.get("message") == verdict.reason
    assert "gntdev_mmap+0x1c6/0x340 [xen_gntdev]" in (failure.text or "")
    assert all(c.find("failure") is None for c in cases[:-1])


def test_evidence_goes_with_the_failing_subtest_when_there_is_one() -> None:
    root = ET.fromstring(render([make_cell()]))
    failures = [c.find("failure") for c in root.iter("testcase")]
    texts = [f.text for f in failures if f is not None]
    assert len(texts) == 2 and "BUG: Bad page map" in (texts[0] or "") and texts[1] is None
    assert CELL_CASE not in {(c.get("name") or "").split(" [")[0] for c in root.iter("testcase")}


def test_a_verdict_through_the_store_into_junit(tmp_path: Path) -> None:
    name = "gpf-gntdev-mmap"
    verdict = judge(
        parse_output((CLASSIFY_GOLDEN / f"{name}.out").read_text()),
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
