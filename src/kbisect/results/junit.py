"""JUnit XML export of cells, for Jenkins, GitLab and the like; the only user of junit-xml.

The store is the source of truth; this is a view of it. One testsuite per cell and one testcase
per subtest. CI systems follow a test's history by (classname, name), so both stay the same from
one nightly to the next: the classname is the cell's line, ``experiment.variant.profile.host.job``
(``gntdev-numa.vm-io.xen-dom0.qemu.gntstress``), the name is the subtest (``odirect-read``). What
changes from run to run (revision, commit, build key, host fingerprint, logs) goes into the
testsuite's properties. When one file holds several revisions, the newest (the last in the
pipeline's order) keeps the plain name and the one before it is ``odirect-read (rev~1)``, and so
on; several repeats of a cell add `` #N`` to all but the first. A cell whose verdict no subtest
shows (the host died before anything ran, kernel evidence while every subtest passed, a build that
failed) gets one more testcase, ``cell``, with the reason and the evidence.

A failure's message is short (``EFAULT (errno 14)``, ``SIGBUS (signal 7)``, ``timed out``) and its
body the detail: the subtest's own words, the classifier's reason, the kernel evidence and the
tail of the job's output. Every testcase has a ``time``: the cell's for the ``cell`` testcase;
gntstress does not time its subtests, so theirs is 0 and the testsuite carries the cell's time.

junit-xml builds the elements. It would drop characters XML cannot hold without a trace, so text
is escaped visibly first (ESC becomes the four characters ``\\x1b``); it writes a ``disabled``
attribute the Jenkins xunit schema rejects, which is removed. Files are written atomically, 0644.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import os
import re
import signal as signals
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from junit_xml import TestCase, TestSuite

from kbisect.results.model import CellRecord, Evidence, LogKind, ResultStatus, SubtestRecord

CELL_CASE = "cell"
"""The testcase that carries a cell's own verdict when no subtest does."""

FILE_MODE = 0o644
"""JUnit files are for CI systems and people to read: not private like mkstemp's 0600."""

TAIL_LINES = 20
"""Lines of the job's output a failure's body quotes."""
_TAIL_BYTES = 64 * 1024
_MESSAGE_CHARS = 120

# What XML 1.0 cannot hold, plus what junit-xml removes although XML could hold it (CR, C1
# controls but NEL, the Unicode non-characters): all shown as escapes, never dropped.
_NONCHARS = "".join(
    f"{chr(p + 0xFFFE)}{chr(p + 0xFFFF)}" for p in range(0x10000, 0x110000, 0x10000)
)
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufdd0-\ufddf\ufffe\uffff" + _NONCHARS + "]"
)
_NAME_PART = re.compile(r"[^A-Za-z0-9_+-]")


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
    """``experiment.variant.profile.host.job``; the tree as it is is the variant ``base``."""
    variant = cell.variant.split("/") if cell.variant else ["base"]
    return ".".join(_part(p) for p in (*variant, cell.profile, cell.host, cell.job))


@dataclass(frozen=True)
class Qualifier:
    """What tells apart, inside one file, cells that share a classname: the revision's place
    counted back from the newest (0 = the newest) and the repeat (None = the first)."""

    back: int = 0
    repeat: int | None = None

    def __str__(self) -> str:
        rev = f" (rev~{self.back})" if self.back else ""
        return rev + (f" #{self.repeat}" if self.repeat is not None else "")


def qualifiers(
    cells: Sequence[CellRecord], revisions: Sequence[tuple[str, str]] | None = None
) -> list[Qualifier]:
    """Each cell's qualifier. ``revisions`` are the (tree, revision) pairs oldest first, as the
    pipeline lists them; by default the order the cells first name them."""
    order = list(dict.fromkeys([*(revisions or []), *((c.tree, c.rev) for c in cells)]))
    present = [r for r in order if any((c.tree, c.rev) == r for c in cells)]
    first_repeat: dict[tuple[str, ...], int] = {}
    for c in cells:
        line = (classname(c), c.tree, c.rev)
        first_repeat[line] = min(first_repeat.get(line, c.repeat), c.repeat)
    return [
        Qualifier(
            len(present) - 1 - present.index((c.tree, c.rev)),
            None if c.repeat == first_repeat[(classname(c), c.tree, c.rev)] else c.repeat,
        )
        for c in cells
    ]


def suite_name(cell: CellRecord, qualifier: Qualifier = Qualifier()) -> str:
    return f"{classname(cell)}{qualifier}"


def case_name(subtest: str, qualifier: Qualifier = Qualifier()) -> str:
    return f"{subtest}{qualifier}"


def short_message(subtest: SubtestRecord) -> str:
    """What went wrong in a few words: the errno, the signal, a timeout; else the detail's
    first line, cut."""
    parts = []
    if subtest.errno:
        parts.append(f"{errno_codes.errorcode.get(subtest.errno, 'errno')} (errno {subtest.errno})")
    if subtest.signal:
        try:
            name = signals.Signals(subtest.signal).name
        except ValueError:
            name = "signal"
        parts.append(f"{name} (signal {subtest.signal})")
    if subtest.timed_out:
        parts.append("timed out")
    return ", ".join(parts) or _first_line(subtest.detail) or subtest.status.value


def _first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


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


class JobOutput:
    """A cell's job output as a failure's body quotes it: the lines that name a subtest, and the
    tail. Read from the results directory when it is given; nothing when it is not."""

    def __init__(self, cell: CellRecord, results_dir: Path | None) -> None:
        self.path = next((log.path for log in cell.logs if log.kind is LogKind.JOB_OUTPUT), None)
        self.lines: list[str] = []
        if results_dir is not None and self.path is not None:
            with contextlib.suppress(OSError), (results_dir / self.path).open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _TAIL_BYTES))
                self.lines = f.read().decode("utf-8", "replace").splitlines()

    def naming(self, subtest: str) -> str:
        word = re.compile(rf"(?<![\w-]){re.escape(subtest)}(?![\w-])")
        found = [line for line in self.lines if word.search(line)][-TAIL_LINES:]
        return self._block(f"job output lines naming {subtest}", found)

    def tail(self) -> str:
        return self._block(f"job output, last {TAIL_LINES} lines", self.lines[-TAIL_LINES:])

    def _block(self, title: str, lines: list[str]) -> str:
        return "\n".join([f"--- {title} ({self.path}):", *lines]) if lines else ""


def _body(*parts: str) -> str | None:
    text = "\n".join(p for p in parts if p)
    return visible(text) if text else None


def _set_status(case: TestCase, status: ResultStatus, message: str, body: str | None) -> None:
    if status is ResultStatus.MISS:
        message = f"MISS: {message or 'never ran'}"
    message = visible(message) or status.value
    if status is ResultStatus.FAIL:
        case.add_failure_info(message=message, output=body, failure_type="FAIL")
    elif status is ResultStatus.ERROR:
        case.add_error_info(message=message, output=body, error_type="ERROR")
    elif status in (ResultStatus.SKIP, ResultStatus.MISS):
        case.add_skipped_info(message=message, output=body)


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
        "started": cell.started.isoformat() if cell.started else "",
        "finished": cell.finished.isoformat() if cell.finished else "",
        "fingerprint": json.dumps(
            cell.fingerprint, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ),
        # how the host booted the build (the fingerprint's `boot`); older cells: what ran
        "host.boot": cell.fingerprint.get("boot") or _boot_line(cell.fingerprint),
    }
    props.update({f"host.{k}": v for k, v in sorted(cell.fingerprint.items()) if k != "boot"})
    if cell.boot_seconds is not None:  # the cell whose deploy booted the kernel
        props["boot_seconds"] = f"{cell.boot_seconds:g}"
    seen: dict[str, int] = {}
    for log in cell.logs:
        seen[log.kind.value] = seen.get(log.kind.value, 0) + 1
        key = f"log.{log.kind.value}"
        props[key if seen[log.kind.value] == 1 else f"{key}.{seen[log.kind.value]}"] = log.path
    return {k: visible(v) for k, v in props.items()}


def _boot_line(fp: dict[str, str]) -> str:
    """How the host was booted, in one line: what Xen and dom0 ran with which command lines."""
    xen = " ".join(p for p in (fp.get("xen_version", ""), fp.get("xen_cmdline", "")) if p)
    dom0 = " ".join(p for p in (fp.get("dom0_release", ""), fp.get("dom0_cmdline", "")) if p)
    return "; ".join(
        part for part in (f"xen {xen}" if xen else "", f"dom0 {dom0}" if dom0 else "") if part
    )


def _seconds(cell: CellRecord) -> float:
    if cell.started and cell.finished:
        return max(0.0, (cell.finished - cell.started).total_seconds())
    return 0.0


def _suite(cell: CellRecord, qualifier: Qualifier, results_dir: Path | None) -> TestSuite:
    output = JobOutput(cell, results_dir)
    evidence = _evidence_text(cell.evidence)
    shown_by = next(
        (
            s.name
            for s in cell.subtests
            if s.status is cell.status and s.status is not ResultStatus.PASS
        ),
        None,
    )
    name = visible(classname(cell))
    cases = []
    for s in cell.subtests:
        case = TestCase(visible(case_name(s.name, qualifier)), classname=name, elapsed_sec=0.0)
        body = None
        if s.status in (ResultStatus.FAIL, ResultStatus.ERROR):
            # The evidence and the output's tail go with the first testcase showing the verdict.
            shows = s.name == shown_by
            body = _body(
                s.detail,
                f"cell: {cell.reason}" if shows else "",
                evidence if shows else "",
                output.naming(s.name),
                output.tail() if shows else "",
            )
        _set_status(case, s.status, short_message(s), body)
        cases.append(case)
    needs_cell_case = cell.status in (ResultStatus.FAIL, ResultStatus.ERROR) and shown_by is None
    if not cell.subtests or needs_cell_case:
        cell_case = TestCase(
            visible(case_name(CELL_CASE, qualifier)), classname=name, elapsed_sec=_seconds(cell)
        )
        failed = cell.status in (ResultStatus.FAIL, ResultStatus.ERROR)
        body = _body(cell.reason, evidence, output.tail()) if failed else _body(evidence)
        _set_status(cell_case, cell.status, _first_line(cell.reason), body)
        if cell.status is ResultStatus.PASS and evidence:
            cell_case.stdout = visible(evidence)
        cases.append(cell_case)
    stdout = "\n".join(
        part for part in (f"{cell.status.value}: {cell.reason}", _logs_text(cell)) if part
    )
    return TestSuite(
        visible(suite_name(cell, qualifier)),
        cases,
        hostname=visible(cell.host),
        timestamp=cell.started.isoformat() if cell.started else None,
        properties=_properties(cell),
        stdout=visible(stdout),
    )


def _check_unique(cells: Sequence[CellRecord], quals: Sequence[Qualifier]) -> None:
    names: dict[tuple[str, str], CellRecord] = {}
    for cell, qualifier in zip(cells, quals, strict=True):
        for case in (*(s.name for s in cell.subtests), CELL_CASE):
            test = (classname(cell), case_name(case, qualifier))
            other = names.setdefault(test, cell)
            if other is not cell:
                raise ValueError(
                    f"cells {tuple(other.identity)} and {tuple(cell.identity)} "
                    f"would both have the JUnit test {test[0]}: {test[1]}"
                )


def _element(suite: TestSuite) -> ET.Element:
    element: ET.Element = suite.build_xml_doc(encoding="utf-8")
    element.attrib.pop("disabled", None)  # junit-xml's; the Jenkins xunit schema rejects it
    for case in element.iter("testcase"):
        case.set("time", f"{float(case.get('time') or 0):.3f}")
    return element


def _document(name: str, suites: Iterable[tuple[ET.Element, float]]) -> bytes:
    root = ET.Element("testsuites", {"name": visible(name)})
    totals = {"tests": 0, "failures": 0, "errors": 0}
    seconds_total = 0.0
    for suite, seconds in suites:
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


def render(
    cells: Sequence[CellRecord],
    *,
    name: str = "kbisect",
    revisions: Sequence[tuple[str, str]] | None = None,
    results_dir: Path | None = None,
) -> bytes:
    """The JUnit document for ``cells`` (UTF-8, with an XML declaration). ``revisions``: the
    (tree, revision) pairs oldest first (see `qualifiers`); ``results_dir``: where the cells'
    logs are, to quote the job's output in failures.

    Raises ValueError when two cells would name a test alike (the same identity twice, or
    names that only differ in characters a classname cannot carry).
    """
    quals = qualifiers(cells, revisions)
    _check_unique(cells, quals)
    return _document(
        name,
        (
            (_element(_suite(cell, q, results_dir)), _seconds(cell))
            for cell, q in zip(cells, quals, strict=True)
        ),
    )


def write_junit(
    cells: Sequence[CellRecord],
    path: Path,
    *,
    name: str = "kbisect",
    revisions: Sequence[tuple[str, str]] | None = None,
    results_dir: Path | None = None,
) -> Path:
    """Write ``render(cells)`` to ``path`` atomically (temp file in the same directory, rename)."""
    _atomic_write(path, render(cells, name=name, revisions=revisions, results_dir=results_dir))
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def _bisection_properties(report: dict[str, Any]) -> dict[str, str]:
    """What a CI page shows of a bisection without opening it. The confidence is the report's
    own (kbisect.bisect.report: the product of the decisions' posteriors)."""
    culprit = report.get("culprit") or {}
    good = report.get("good") or []
    props = {
        "id": report["id"],
        "status": report["status"],
        "tree": report.get("tree"),
        "good": ",".join(good) if isinstance(good, list) else good,
        "bad": report.get("bad"),
        "culprit": culprit.get("commit", ""),
        "culprit.subject": culprit.get("subject", ""),
        "runs": report.get("runs"),
        "confidence": report.get("confidence"),
        "restarts": report.get("restarts"),
        "predicate": report.get("predicate"),
        "variant": report.get("variant"),
        "host": report.get("host"),
        "job": report.get("job"),
        "test": report.get("test"),
        "predicate_seconds": report.get("predicate_seconds"),
    }
    return {k: visible("" if v is None else str(v)) for k, v in props.items()}


def render_bisection(report: dict[str, Any]) -> bytes:
    """A bisection report (kbisect.bisect.report.to_json) as JUnit: one testsuite with the
    bisection's properties, a testcase per end, step and validation, and `result`, which fails
    unless the culprit is confirmed."""
    bid = report["id"]
    bisect_class = f"kbisect.bisect.{bid}"
    cases: list[TestCase] = []
    phases = [("end", report.get("ends", [])), ("step", report.get("steps", []))]
    for kind, items in phases:
        for number, item in enumerate(items, 1):
            case = TestCase(
                visible(f"{kind} {number} {item['commit'][:12]}"),
                classname=bisect_class,
                stdout=visible(json.dumps(item, sort_keys=True)),
                elapsed_sec=float(item.get("seconds") or 0.0),  # a hook: steps are not timed yet
            )
            if item["verdict"] == "skip":
                case.add_skipped_info(visible(_first_line(item.get("detail", "")) or "skip"))
            cases.append(case)
    for item in report.get("validations", []) or []:
        case = TestCase(
            visible(f"validate {item['name']}"), classname=bisect_class, elapsed_sec=0.0
        )
        if item["ok"] is False:
            case.add_failure_info(
                visible(f"expected {item['expected']}, got {item['verdict']}"),
                output=visible(json.dumps(item.get("detail"), sort_keys=True)),
            )
        elif item["ok"] is None:
            case.add_skipped_info(visible(item.get("note") or "not run"))
        cases.append(case)
    seconds = float(report.get("predicate_seconds") or 0.0)
    result = TestCase(
        "result",
        classname=bisect_class,
        stdout=visible(str(report.get("text", ""))),
        elapsed_sec=seconds,
    )
    if report["status"] != "confirmed":
        result.add_failure_info(
            visible(report["status"]), output=visible(f"{report['status']}: {report['message']}")
        )
    cases.append(result)
    suite = TestSuite(visible(f"bisection {bid}"), cases, properties=_bisection_properties(report))
    return _document("kbisect", [(_element(suite), seconds)])


def write_bisection_junit(report: dict[str, Any], path: Path) -> Path:
    _atomic_write(path, render_bisection(report))
    return path
