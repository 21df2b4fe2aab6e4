"""Console and dmesg classifier: find kernel and Xen evidence, and judge a cell.

A job's own report only says what userspace saw. Whether the kernel under test misbehaved (a
BUG, an Oops, a lockup, a Xen panic) is in dom0's dmesg and on the serial console, and whether a
run that stopped early is the kernel's fault (FAIL) or the lab's (ERROR) depends on that evidence:
infrastructure trouble is never reported as FAIL, and a FAIL is never hidden as ERROR.

How lines are read:

- A physical line may carry several records: console output interleaves dom0's kernel, Xen and
  userspace, so a line is split before every printk timestamp (``[   12.345678] ``) and every
  ``(XEN)``. Records keep their physical line number.
- A signature only starts at the beginning of a message (after the timestamp, a ``<N>`` level
  prefix or ``(XEN)``). ``traps: prog[1] general protection fault ip:...`` is a user process
  fault, not a kernel one, and does not match.
- When a log has printk timestamps, lines without one are userspace (or cut off) and are never
  evidence. Xen signatures only match ``(XEN)`` lines.
- An event is the matching line plus its context: following lines of the same origin, through a
  Call Trace, up to ``---[ end ...`` or at most CONTEXT_LINES lines. Signatures inside the context
  that belong to the same report (the Oops after a BUG, the Call Trace) are named in ``also``.
- ``WARNING: CPU: N PID: N at PATH`` is strong (``warning-xen``) when PATH is Xen code or the
  trace runs through gntdev, gntalloc or the grant table; elsewhere it is weak (``warning``):
  reported, but it does not fail a cell by itself. A line of stars on the Xen console is no
  evidence either: Xen boxes its boot warnings in stars too; its panic says ``Panic on CPU N``.
- The console repeats dmesg: an event seen in both is kept once, from dmesg.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from kbisect.jobs import blame, gntstress
from kbisect.jobs.gntstress import GntstressReport
from kbisect.results.model import Evidence, LogKind, ResultStatus, SubtestRecord

CONTEXT_LINES = 60
"""Most context lines kept after an event's first line."""
_LOOK_AHEAD = 4 * CONTEXT_LINES
"""Most lines looked at for an event's context, counting interleaved lines of other origins."""
KEEP_PER_SIGNATURE = 10
"""Events of one signature kept per log; later ones are only counted (Evidence.more)."""
_HEADLINE_CHARS = 160


@dataclass(frozen=True)
class Signature:
    name: str
    pattern: re.Pattern[str]
    xen: bool
    """Matches Xen console lines (``(XEN) ...``) instead of kernel lines."""
    strong: bool = True
    about: str = ""


def _sig(
    name: str, pattern: str, about: str, *, xen: bool = False, strong: bool = True
) -> Signature:
    return Signature(name, re.compile(pattern), xen, strong, about)


# First match wins: specific before generic.
SIGNATURES: tuple[Signature, ...] = (
    _sig("soft-lockup", r"(?:NMI )?(?:watchdog: )?BUG: soft lockup\b", "a CPU stuck in the kernel"),
    _sig("bad-page-map", r"BUG: Bad page map\b", "a page table entry the mm cannot account"),
    _sig("bad-page-state", r"BUG: Bad page state\b", "a freed page still in use"),
    _sig("kasan", r"BUG: KASAN: ", "a memory-safety bug KASAN caught"),
    _sig("kfence", r"BUG: KFENCE: ", "a memory-safety bug KFENCE sampled (the debug profile)"),
    _sig(
        "slub",
        r"BUG [\w.:-]+ \((?:Not tainted|Tainted: [^)]*)\): ",
        "a slab object SLUB debugging found corrupted (red zone, poison, double free)",
    ),
    _sig("bug", r"BUG: |kernel BUG at ", "BUG: ... lines and BUG_ON() hits"),
    _sig(
        "general-protection-fault",
        r"(?:Oops: )?general protection fault\b",
        "a general protection fault in kernel mode",
    ),
    _sig("oops", r"(?:Oops|invalid opcode): [0-9a-f]{4} \[#\d+\]", "an Oops"),
    _sig("kernel-panic", r"Kernel panic - not syncing\b", "the kernel gave up"),
    _sig("hard-lockup", r"(?:NMI )?watchdog: Watchdog detected hard LOCKUP", "a CPU stuck"),
    _sig("hung-task", r"INFO: task .+ blocked for more than \d+ seconds", "a task stuck in D"),
    _sig("rcu-stall", r"(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected stall", "an RCU stall"),
    _sig(
        "warning", r"WARNING: CPU: \d+ PID: \d+ at (?P<path>\S+)(?: (?P<fn>\S+))?", "a WARN() hit"
    ),
    _sig(
        "lockdep",
        r"WARNING: (?:possible (?:circular locking dependency|recursive locking"
        r"|irq lock inversion dependency) detected|inconsistent lock state"
        r"|suspicious RCU usage|bad unlock balance detected!"
        r"|lock held when returning to user space!)",
        "lockdep found a lock order or state that can deadlock (PROVE_LOCKING)",
    ),
    _sig(
        "kmemleak",
        r"kmemleak: \d+ new suspected memory leaks?\b",
        "kmemleak found unreferenced objects (its report is in /sys/kernel/debug/kmemleak)",
    ),
    _sig("call-trace", r"Call Trace:\s*$", "a stack dump without a known header"),
    _sig("xen-panic", r"Panic on CPU \d+", "Xen panicked", xen=True),
    _sig(
        "xen-dump",
        r"----\[ Xen-\S+\s+\S+\s+debug=[yn]",
        "Xen's register dump and call trace (printed for its crashes, BUG and WARN)",
        xen=True,
    ),
    _sig("xen-fatal", r"FATAL (?:PAGE FAULT|TRAP)\b", "a fatal fault in Xen", xen=True),
    _sig("xen-assert", r"Assertion '.*' failed", "a failed ASSERT() in Xen", xen=True),
    _sig("xen-bug", r"Xen BUG at ", "a BUG() in Xen", xen=True),
    _sig("xen-warn", r"Xen WARN at ", "a WARN() in Xen", xen=True),
    _sig(
        "xen-domain-crash",
        r"(?:Hardware Dom0|Domain 0) crashed|domain_crash(?:_sync)? called from"
        r"|\bd\d+v\d+\b.*\bcrash",
        "Xen crashed a domain",
        xen=True,
    ),
    _sig(
        "xen-grant",
        r"grant_table\.c:\d+:d\d+v\d+ ",
        "a grant-table complaint of a debug Xen",
        xen=True,
        strong=False,
    ),
)
"""Known signatures. ``warning`` becomes ``warning-xen`` (strong) in Xen code, see above."""

# Signatures that continue the report of an open event instead of starting a new one.
_FOLLOW_UPS = frozenset({"oops", "call-trace", "kernel-panic"})
_XEN_SIGNATURES = tuple(s for s in SIGNATURES if s.xen)
_KERNEL_SIGNATURES = tuple(s for s in SIGNATURES if not s.xen)
_ANY_XEN = re.compile("|".join(f"(?:{s.pattern.pattern})" for s in _XEN_SIGNATURES))
_ANY_KERNEL = re.compile("|".join(f"(?:{s.pattern.pattern})" for s in _KERNEL_SIGNATURES))
_XEN_NAMES = frozenset(s.name for s in _XEN_SIGNATURES)
_XEN_WIDE = frozenset({"xen-dump", "xen-panic"})

_BOUNDARY = re.compile(r"\(XEN\)(?: ?\[\s*[\d.:\- ]+\])?|(?:<\d>)?\[\s*\d+\.\d{6}\] ")
_XEN_LINE = re.compile(r"\(XEN\) ?(?:(\[\s*[\d.:\- ]+\]) ?)?(.*)")
_KERNEL_LINE = re.compile(r"(?:<\d>)?(\[\s*\d+\.\d+\]) ?(?:\[\s*[TC]\d+\] ?)?(.*)")
_LEVEL = re.compile(r"<\d>")
_END = re.compile(r"---\[ end ")
_TRACE_TAIL = re.compile(r"Modules linked in:|CR2: |---\[ end ")
_KERNEL_FRAME = re.compile(r"\s|</?[A-Z#]+>\s*$|(?:[A-Z][A-Z0-9]{1,5}|Code): ")
_GRANT_FRAME = re.compile(
    r"^\s+(?:\? )?(?:(?:gntdev|gntalloc|gnttab)_\w*\+0x|\S+\+0x\S+ \[xen_(?:gntdev|gntalloc)\])"
)
_GRANT_FUNCTION = re.compile(r"(?:gntdev|gntalloc|gnttab)_")
# at the start of the path or after a slash: a kernel built in a worktree or with O= prints
# `../../worktrees/slot0/drivers/xen/gntdev.c:400`; `mydrivers/xen/` is not Xen's code
_XEN_CODE = re.compile(r"(?:^|.*/)(?:drivers/xen/|arch/x86/xen/|include/xen/)")
_XEN_STARS = re.compile(r"\*{4,}\s*$")  # a panic box's frame, not an event itself
_XEN_END = re.compile(r"Reboot in five seconds|Manual reset required")


@dataclass(frozen=True)
class _Record:
    number: int
    text: str
    origin: str
    """Where it comes from: "xen", "kernel" (it has a printk timestamp) or "plain"."""
    stamp: str | None
    msg: str


def _records(text: str) -> list[_Record]:
    out: list[_Record] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.replace("\r", "")
        cuts = [m.start() for m in _BOUNDARY.finditer(line)]
        if not cuts or cuts[0] != 0:
            cuts.insert(0, 0)
        for start, end in zip(cuts, [*cuts[1:], len(line)], strict=True):
            piece = line[start:end]
            if piece.strip():
                out.append(_record(number, piece))
    return out


def _record(number: int, piece: str) -> _Record:
    if piece.startswith("(XEN)"):
        m = _XEN_LINE.match(piece)
        assert m is not None  # the pattern accepts anything after "(XEN)"
        return _Record(number, piece, "xen", m[1], m[2])
    m = _KERNEL_LINE.match(piece)
    if m is not None:
        return _Record(number, piece, "kernel", m[1].replace(" ", ""), m[2])
    level = _LEVEL.match(piece)
    return _Record(number, piece, "plain", None, piece[level.end() :] if level else piece)


def _match(rec: _Record, kernel_origins: frozenset[str]) -> Signature | None:
    if rec.origin == "xen":
        candidates, anything = _XEN_SIGNATURES, _ANY_XEN
    elif rec.origin in kernel_origins:
        candidates, anything = _KERNEL_SIGNATURES, _ANY_KERNEL
    else:
        return None
    if anything.match(rec.msg) is None:  # most lines: one regex instead of one per signature
        return None
    return next((sig for sig in candidates if sig.pattern.match(rec.msg)), None)


def scan(text: str, source: LogKind) -> list[Evidence]:
    """The events in one log (dmesg or console), in the order they appear."""
    records = _records(text)
    timestamped = any(r.origin == "kernel" for r in records)
    kernel_origins = frozenset({"kernel"} if timestamped else {"kernel", "plain"})
    consumed: set[int] = set()
    events: list[Evidence] = []
    for i, rec in enumerate(records):
        if i in consumed:
            continue
        sig = _match(rec, kernel_origins)
        if sig is None:
            continue
        taken, also = _context(records, i, sig, kernel_origins)
        consumed.update(taken)
        lines = tuple(records[j].text for j in (i, *taken))
        name, strong = sig.name, sig.strong
        if name == "warning":
            head = sig.pattern.match(rec.msg)
            assert head is not None
            if _warning_in_xen(head, lines[1:]):
                name = "warning-xen"
            else:
                strong = False
        events.append(Evidence(name, source, rec.number, lines, tuple(also), strong))
    return _cap(events)


def _context(
    records: list[_Record], head: int, sig: Signature, kernel_origins: frozenset[str]
) -> tuple[list[int], list[str]]:
    """Indexes of the records that belong to the event starting at ``head``, and signatures seen."""
    if sig.xen:
        return _xen_context(records, head, sig)
    taken: list[int] = []
    also: list[str] = []
    in_trace = sig.name == "call-trace"
    trace_done = False
    for j in range(head + 1, min(len(records), head + 1 + _LOOK_AHEAD)):
        if len(taken) >= CONTEXT_LINES:
            break
        rec = records[j]
        if rec.origin not in kernel_origins:
            continue  # interleaved from Xen or userspace: neither part of the event nor its end
        found = _match(rec, kernel_origins)
        if found is not None and found.name not in _FOLLOW_UPS:
            break
        if trace_done or (in_trace and not _KERNEL_FRAME.match(rec.msg)):
            trace_done = True
            if not _TRACE_TAIL.match(rec.msg):
                break
        taken.append(j)
        if found is not None and found.name not in also and found.name != sig.name:
            also.append(found.name)
        if found is not None and found.name == "call-trace":
            in_trace = True
        elif in_trace and rec.msg.strip() == "</TASK>":
            trace_done = True
        if _END.match(rec.msg):
            break
    return taken, also


def _xen_context(records: list[_Record], head: int, sig: Signature) -> tuple[list[int], list[str]]:
    """Xen's crash report runs from its register dump through the panic box's closing stars;
    any other Xen event ends with its call trace."""
    wide = sig.name in _XEN_WIDE
    follow_ups = _XEN_NAMES if wide else frozenset({"xen-dump"})
    panicked = sig.name == "xen-panic"
    in_trace = False
    taken: list[int] = []
    also: list[str] = []
    for j in range(head + 1, min(len(records), head + 1 + _LOOK_AHEAD)):
        if len(taken) >= CONTEXT_LINES:
            break
        rec = records[j]
        if rec.origin != "xen":
            continue
        found = _match(rec, frozenset())
        if found is not None and found.name not in follow_ups:
            break
        if in_trace and not wide and not rec.msg[:1].isspace():
            break
        taken.append(j)
        if found is not None and found.name not in also and found.name != sig.name:
            also.append(found.name)
        panicked = panicked or (found is not None and found.name == "xen-panic")
        in_trace = in_trace or rec.msg.startswith("Xen call trace:")
        if _XEN_END.search(rec.msg) or (panicked and _XEN_STARS.match(rec.msg)):
            break
    return taken, also


def _warning_in_xen(head: re.Match[str], context: Iterable[str]) -> bool:
    """A WARNING in Xen code, or one whose call trace runs through gntdev, gntalloc or gnttab."""
    if _XEN_CODE.match(head["path"]) or _GRANT_FUNCTION.match(head["fn"] or ""):
        return True
    return any(_GRANT_FRAME.match(_record(0, text).msg) for text in context)


def _cap(events: list[Evidence]) -> list[Evidence]:
    kept: list[Evidence] = []
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    for ev in events:
        count[ev.signature] = count.get(ev.signature, 0) + 1
        if count[ev.signature] <= KEEP_PER_SIGNATURE:
            last[ev.signature] = len(kept)
            kept.append(ev)
        else:
            at = last[ev.signature]
            kept[at] = replace(kept[at], more=kept[at].more + 1)
    return kept


def _key(ev: Evidence) -> tuple[str, str | None, str]:
    rec = _record(0, ev.headline)
    return ev.signature, rec.stamp, rec.msg.strip()


def classify(dmesg: str | None, console: str | None) -> list[Evidence]:
    """All evidence from dmesg then the console; a console event that repeats dmesg is dropped.

    Either log may be missing (None or ""): dmesg cannot be read from a host that died.
    """
    from_dmesg = scan(dmesg or "", LogKind.DMESG)
    unmatched = [_key(ev) for ev in from_dmesg]
    found = list(from_dmesg)
    for ev in scan(console or "", LogKind.CONSOLE):
        name, stamp, msg = _key(ev)
        for k, (d_name, d_stamp, d_msg) in enumerate(unmatched):
            same_time = stamp is None or d_stamp is None or stamp == d_stamp
            if d_name == name and d_msg == msg and same_time:
                del unmatched[k]
                break
        else:
            found.append(ev)
    return found


# --------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A cell's status, why in one line, the evidence, and each subtest's status."""

    status: ResultStatus
    reason: str
    evidence: tuple[Evidence, ...] = ()
    subtests: tuple[SubtestRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (used by the golden tests)."""
        return {
            "status": self.status.value,
            "reason": self.reason,
            "subtests": [
                {
                    "name": s.name,
                    "status": s.status.value,
                    "errno": s.errno,
                    "signal": s.signal,
                    "timed_out": s.timed_out,
                    "detail": s.detail,
                }
                for s in self.subtests
            ],
            "evidence": [
                {
                    "signature": e.signature,
                    "source": e.source.value,
                    "line": e.line,
                    "strong": e.strong,
                    "also": list(e.also),
                    "more": e.more,
                    "lines": list(e.lines),
                }
                for e in self.evidence
            ],
        }


_STATUS = {
    gntstress.Status.PASS: ResultStatus.PASS,
    gntstress.Status.FAIL: ResultStatus.FAIL,
    gntstress.Status.SKIP: ResultStatus.SKIP,
}


def describe(ev: Evidence) -> str:
    """One line naming an event: signature, where, and its first line without the timestamp."""
    what = "Xen evidence" if ev.signature.startswith("xen-") else "kernel evidence"
    text = _record(0, ev.headline).msg.strip()
    if len(text) > _HEADLINE_CHARS:
        text = text[: _HEADLINE_CHARS - 3] + "..."
    also = f" (with {', '.join(ev.also)})" if ev.also else ""
    return f"{what}: {ev.signature}{also} in {ev.source.value} line {ev.line}: {text}"


def _stopped(
    report: GntstressReport | None, exit_status: int | None, host_died: bool
) -> str | None:
    """Why the job did not run to its end, or None when it did."""
    where = f" during {report.interrupted_in}" if report and report.interrupted_in else ""
    if host_died:
        return f"host died{where}"
    if report is None:
        return "no job output"
    if not report.complete:
        return f"job output cut off{where}"
    if exit_status is None:
        return "job did not finish (no exit status)"
    return None


def _subtests(
    report: GntstressReport | None,
    strong: list[Evidence],
    stopped: str | None,
    blamed: list[blame.Blame],
) -> tuple[SubtestRecord, ...]:
    if report is None:
        return ()
    out = [_blamed(r, [b for b in blamed if b.subtest == r.name]) for r in report.results]
    running = report.interrupted_in
    for name in report.missing:
        if name == running and strong:
            out.append(
                SubtestRecord(name, ResultStatus.FAIL, detail=f"interrupted: {describe(strong[0])}")
            )
        elif name == running:
            why = stopped or "the run stopped"
            out.append(SubtestRecord(name, ResultStatus.ERROR, detail=f"interrupted: {why}"))
        elif running is not None:
            out.append(
                SubtestRecord(
                    name, ResultStatus.MISS, detail=f"never ran: the run stopped in {running}"
                )
            )
        else:
            out.append(SubtestRecord(name, ResultStatus.MISS, detail="no result line"))
    return tuple(out)


def _blamed(r: gntstress.SubtestResult, blames: list[blame.Blame]) -> SubtestRecord:
    """A reported subtest; kernel evidence in its window makes it FAIL, with the report."""
    if not blames:
        return SubtestRecord(r.name, _STATUS[r.status], r.errno, r.detail, r.signal, r.timed_out)
    text = blame.detail(r.detail, r.status.value, blames, describe(blames[0].evidence))
    return SubtestRecord(r.name, ResultStatus.FAIL, r.errno, text, r.signal, r.timed_out)


def _bad_exit(status: int | None) -> str:
    if status == gntstress.EXIT_USAGE:
        meaning = "usage error"
    elif status == gntstress.EXIT_INTERNAL:
        meaning = "internal error"
    elif status is not None and status >= 128:
        meaning = f"killed by signal {status - 128}"
    else:
        meaning = "but no subtest failed"
    return f"gntstress exited {status} ({meaning})"


def _names(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def judge(
    report: GntstressReport | None,
    exit_status: int | None,
    dmesg: str | None = "",
    console: str | None = "",
    *,
    host_died: bool = False,
) -> Verdict:
    """A cell's verdict from the job's report, its exit status and the host's logs.

    ``report`` is None when the job printed nothing; ``exit_status`` is None when it is unknown
    (the job was killed or the connection lost); ``host_died`` when the host stopped answering
    or crashed during the job. In order: kernel or Xen evidence is FAIL; a failed subtest is FAIL;
    a run that did not finish is ERROR (the lab's fault until evidence says otherwise); an exit
    status that contradicts the report is ERROR; all subtests skipped is SKIP; else PASS.
    """
    evidence, blamed = blame.attribute(
        classify(dmesg, console), {LogKind.DMESG: dmesg, LogKind.CONSOLE: console}
    )
    strong = [e for e in evidence if e.strong]
    weak = [e for e in evidence if not e.strong]
    stopped = _stopped(report, exit_status, host_died)
    subtests = _subtests(report, strong, stopped, blamed)
    results = report.results if report else []

    def verdict(status: ResultStatus, reason: str) -> Verdict:
        return Verdict(status, reason, tuple(evidence), subtests)

    if strong:
        more = f" (+{len(strong) - 1} more)" if len(strong) > 1 else ""
        owner = next((f"{b.subtest}: " for b in blamed if b.evidence == strong[0]), "")
        return verdict(ResultStatus.FAIL, owner + describe(strong[0]) + more)
    failed = [r for r in results if r.status is gntstress.Status.FAIL]
    if failed:
        first = failed[0]
        reason = f"{first.name} FAIL errno={first.errno}: {first.detail}"
        if len(failed) > 1:
            reason += f" (also failed: {_names([r.name for r in failed[1:]])})"
        if stopped:
            reason += f"; then {stopped}"
        return verdict(ResultStatus.FAIL, reason)
    if stopped:
        return verdict(ResultStatus.ERROR, f"{stopped}, no kernel evidence")
    assert report is not None  # _stopped() says so
    if report.missing:
        return verdict(
            ResultStatus.ERROR,
            f"{len(report.missing)} subtests never reported: {_names(report.missing)}",
        )
    if exit_status != gntstress.EXIT_OK:
        return verdict(ResultStatus.ERROR, _bad_exit(exit_status))
    if not results:
        return verdict(ResultStatus.ERROR, "no subtest ran")
    weak_note = ""
    if weak:
        weak_note = "; weak evidence: " + ", ".join(
            f"{e.signature} ({e.source.value} line {e.line})" for e in weak[:3]
        )
    if all(r.status is gntstress.Status.SKIP for r in results):
        return verdict(
            ResultStatus.SKIP,
            f"all {len(results)} subtests skipped ({results[0].name}: {results[0].detail})"
            + weak_note,
        )
    counts = {s: len(report.with_status(s)) for s in gntstress.Status}
    shown = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    return verdict(ResultStatus.PASS, f"{len(results)} subtests: {shown}{weak_note}")
