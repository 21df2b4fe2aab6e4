"""JUnit XML export of cells, for Jenkins, GitLab and the like; the only user of junit-xml.

The store is the source of truth; this is a view of it. One testsuite per cell (its identity,
build and host fingerprint as properties, its logs as paths, never inlined) and one testcase per
subtest. Testcase names carry tree, revision, profile and repeat, the classname carries host,
job and variant, so no two cells of a matrix collide in a CI's test tree. A cell whose verdict no
subtest shows (the host died before anything ran, kernel evidence while every subtest passed, a
build that failed) gets one more testcase, ``cell``, with the reason and the evidence.

junit-xml builds the elements. It would drop characters XML cannot hold without a trace, so text
is escaped visibly first (ESC becomes the four characters ``\\x1b``); it writes a ``disabled``
attribute the Jenkins xunit schema rejects, which is removed. Files are written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from junit_xml import TestCase, TestSuite

from kbisect.results.model import CellRecord, Evidence, ResultStatus, SubtestRecord

CELL_CASE = "cell"
"""The testcase that carries a cell's own verdict when no subtest does."""

# What XML 1.0 cannot hold, plus what junit-xml removes although XML could hold it (CR, C1
# controls but NEL, the Unicode non-characters): all shown as escapes, never dropped.
_NONCHARS = "".join(
    f"{chr(p + 0xFFFE)}{chr(p + 0xFFFF)}" for p in range(0x10000, 0x110000, 0x10000)
)
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufdd0-\ufddf\ufffe\uffff" + _NONCHARS + "]"
)
_NAME_PART = re.compile(r"[^A-Za-z0-9_/+-]")


def visible(text: str) -> str:
    """``text`` with every character XML (or junit-xml) cannot carry written as an escape."""

    def escape(m: re.Match[str]) -> str:
        code = ord(m[0])
        if code < 0x100:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return _UNSAFE.sub(escape, text)


def _part(text: str) -> str:
    """One dot-separated part of a classname: dots would make Jenkins see packages."""
    return _NAME_PART.sub("_", text) or "_"


def classname(cell: CellRecord) -> str:
    return ".".join(["kbisect", _part(cell.host), _part(cell.job), _part(cell.variant or "base")])


def _where(cell: CellRecord) -> str:
    return f"{cell.tree}@{cell.rev} {cell.profile} repeat {cell.repeat}"


def suite_name(cell: CellRecord) -> str:
    variant = cell.variant or "(tree as it is)"
    return f"{cell.tree}@{cell.rev} {variant} {cell.profile} {cell.host} {cell.job} #{cell.repeat}"


def case_name(cell: CellRecord, subtest: str) -> str:
    return f"{subtest} [{_where(cell)}]"


def _evidence_text(evidence: Sequence[Evidence]) -> str:
    blocks = []
    for e in evidence:
        also = f" (with {', '.join(e.also)})" if e.also else ""
        more = f", {e.more} more like it" if e.more else ""
        weak = "" if e.strong else " [weak]"
        head = f"--- {e.signature}{also}{weak}: {e.source.value} line {e.line}{more}"
        blocks.append("\n".join([head, *e.lines]))
    return "\n".join(blocks)


def _logs_text(cell: CellRecord) -> str:
    if not cell.logs:
        return ""
    lines = ["logs (paths relative to the results directory):"]
    lines += [f"  {log.kind.value}: {log.path}" for log in cell.logs]
    return "\n".join(lines)


def _set_status(
    case: TestCase, status: ResultStatus, message: str, output: str | None = None
) -> None:
    if status is ResultStatus.MISS:
        message = f"MISS: {message or 'never ran'}"
    message = visible(message) or status.value
    output = visible(output) if output else None
    if status is ResultStatus.FAIL:
        case.add_failure_info(message=message, output=output, failure_type="FAIL")
    elif status is ResultStatus.ERROR:
        case.add_error_info(message=message, output=output, error_type="ERROR")
    elif status in (ResultStatus.SKIP, ResultStatus.MISS):
        case.add_skipped_info(message=message, output=output)


def _case(cell: CellRecord, name: str) -> TestCase:
    return TestCase(visible(case_name(cell, name)), classname=visible(classname(cell)))


def _subtest_case(cell: CellRecord, subtest: SubtestRecord, output: str | None) -> TestCase:
    case = _case(cell, subtest.name)
    message = f"errno={subtest.errno}: {subtest.detail}" if subtest.errno else subtest.detail
    _set_status(case, subtest.status, message, output)
    return case


def _properties(cell: CellRecord) -> dict[str, str]:
    props = {
        "tree": cell.tree,
        "revision": cell.rev,
        "commit": cell.commit or "",
        "variant": cell.variant,
        "patch_hash": cell.patch_hash or "",
        "build_key": cell.build_key or "",
        "profile": cell.profile,
        "host": cell.host,
        "job": cell.job,
        "repeat": str(cell.repeat),
        "status": cell.status.value,
        "reason": cell.reason,
        "fingerprint": json.dumps(
            cell.fingerprint, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ),
    }
    seen: dict[str, int] = {}
    for log in cell.logs:
        seen[log.kind.value] = seen.get(log.kind.value, 0) + 1
        key = f"log.{log.kind.value}"
        props[key if seen[log.kind.value] == 1 else f"{key}.{seen[log.kind.value]}"] = log.path
    return {k: visible(v) for k, v in props.items()}


def _suite(cell: CellRecord) -> TestSuite:
    evidence = _evidence_text(cell.evidence)
    shown_by = next(
        (
            s.name
            for s in cell.subtests
            if s.status is cell.status and s.status is not ResultStatus.PASS
        ),
        None,
    )
    # The evidence goes with the first testcase that shows the cell's verdict.
    cases = [
        _subtest_case(cell, s, evidence if s.name == shown_by else None) for s in cell.subtests
    ]
    needs_cell_case = cell.status in (ResultStatus.FAIL, ResultStatus.ERROR) and shown_by is None
    if not cell.subtests or needs_cell_case:
        cell_case = _case(cell, CELL_CASE)
        _set_status(cell_case, cell.status, cell.reason, evidence)
        if cell.status is ResultStatus.PASS and evidence:
            cell_case.stdout = visible(evidence)
        cases.append(cell_case)
    stdout = "\n".join(
        part for part in (f"{cell.status.value}: {cell.reason}", _logs_text(cell)) if part
    )
    return TestSuite(
        visible(suite_name(cell)),
        cases,
        hostname=visible(cell.host),
        timestamp=cell.started.isoformat() if cell.started else None,
        properties=_properties(cell),
        stdout=visible(stdout),
    )


def render(cells: Sequence[CellRecord], *, name: str = "kbisect") -> bytes:
    """The JUnit document for ``cells`` (UTF-8, with an XML declaration).

    Raises ValueError when two cells would name a test alike (the same identity twice, or
    names that only differ in characters a classname cannot carry).
    """
    names: dict[tuple[str, str], CellRecord] = {}
    for cell in cells:
        for case in (*(s.name for s in cell.subtests), CELL_CASE):
            test = (classname(cell), case_name(cell, case))
            other = names.setdefault(test, cell)
            if other is not cell:
                raise ValueError(
                    f"cells {tuple(other.identity)} and {tuple(cell.identity)} "
                    f"would both have the JUnit test {test[0]}: {test[1]}"
                )
    root = ET.Element("testsuites", {"name": visible(name)})
    totals = {"tests": 0, "failures": 0, "errors": 0}
    seconds_total = 0.0
    for cell in cells:
        suite: ET.Element = _suite(cell).build_xml_doc(encoding="utf-8")
        suite.attrib.pop("disabled", None)  # junit-xml's; the Jenkins xunit schema rejects it
        seconds = 0.0
        if cell.started and cell.finished:
            seconds = max(0.0, (cell.finished - cell.started).total_seconds())
        suite.set("time", f"{seconds:.3f}")
        seconds_total += seconds
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        root.append(suite)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{seconds_total:.3f}")
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write_junit(cells: Sequence[CellRecord], path: Path, *, name: str = "kbisect") -> Path:
    """Write ``render(cells)`` to ``path`` atomically (temp file in the same directory, rename)."""
    _atomic_write(path, render(cells, name=name))
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def render_bisection(report: dict[str, Any]) -> bytes:
    """A bisection report (kbisect.bisect.report.to_json) as JUnit: one testsuite, a testcase
    per end, step and validation, and `result`, which fails unless the culprit is confirmed."""
    bid = report["id"]
    classname = f"kbisect.bisect.{bid}"
    cases: list[TestCase] = []
    phases = [("end", report.get("ends", [])), ("step", report.get("steps", []))]
    for kind, items in phases:
        for number, item in enumerate(items, 1):
            case = TestCase(
                visible(f"{kind} {number} {item['commit'][:12]}"),
                classname=classname,
                stdout=visible(json.dumps(item, sort_keys=True)),
            )
            if item["verdict"] == "skip":
                case.add_skipped_info(visible(item.get("detail", "")))
            cases.append(case)
    for item in report.get("validations", []) or []:
        case = TestCase(visible(f"validate {item['name']}"), classname=classname)
        if item["ok"] is False:
            case.add_failure_info(visible(f"expected {item['expected']}, got {item['verdict']}"))
        elif item["ok"] is None:
            case.add_skipped_info(visible(item.get("note") or "not run"))
        cases.append(case)
    result = TestCase("result", classname=classname, stdout=visible(str(report.get("text", ""))))
    if report["status"] != "confirmed":
        result.add_failure_info(visible(f"{report['status']}: {report['message']}"))
    cases.append(result)
    suite = TestSuite(visible(f"bisection {bid}"), cases)
    element: ET.Element = suite.build_xml_doc(encoding="utf-8")
    element.attrib.pop("disabled", None)
    root = ET.Element("testsuites", {"name": "kbisect"})
    for key in ("tests", "failures", "errors"):
        root.set(key, element.get(key, "0"))
    root.append(element)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write_bisection_junit(report: dict[str, Any], path: Path) -> Path:
    _atomic_write(path, render_bisection(report))
    return path
