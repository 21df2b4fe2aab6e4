"""Which subtest kernel evidence belongs to: the subtest markers in the kernel log.

gntstress writes ``gntstress: subtest NAME begin`` to /dev/kmsg before each subtest and
``gntstress: subtest NAME end`` after it, so dmesg and the console carry the subtests'
boundaries among the kernel's own messages. An event belongs to the last subtest that began
before it in the same log: while that subtest ran, or after it ended and before the next began
(the kernel often reports late, from a workqueue or RCU callback, what a subtest set off). Events
before the first marker, or in a log without markers (a program that writes none, a host that
died before the job), belong to no subtest and stay the cell's.

A report in a subtest's window is that subtest's failure: a BUG, KASAN, kmemleak or Bad page
report, and a WARNING wherever it is in the kernel (outside any window a WARNING outside Xen code
stays weak, see kbisect.jobs.classify). Xen's own weak signatures are not promoted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from kbisect.results.model import Evidence, LogKind

_MARK = re.compile(r"gntstress: subtest (?P<name>[a-z0-9][a-z0-9-]*) (?P<what>begin|end)\s*$")
_PROMOTED = frozenset({"warning"})
"""Weak signatures that a subtest's window makes strong."""
DETAIL_LINES = 40
"""Lines of an event's report quoted in the subtest's detail."""


@dataclass(frozen=True)
class Blame:
    """An event and the subtest it belongs to."""

    subtest: str
    evidence: Evidence
    after_end: bool
    """It came after the subtest's end marker (and before the next subtest began)."""


@dataclass(frozen=True)
class _Mark:
    line: int
    name: str
    begin: bool


def marks(text: str | None) -> list[_Mark]:
    """The subtest markers in a log, in order, with their physical line numbers."""
    found: list[_Mark] = []
    for number, raw in enumerate((text or "").split("\n"), start=1):
        m = _MARK.search(raw.replace("\r", ""))
        if m is not None:
            found.append(_Mark(number, m["name"], m["what"] == "begin"))
    return found


def _owner(markers: list[_Mark], line: int) -> tuple[str, bool] | None:
    owner: tuple[str, bool] | None = None
    for mark in markers:
        if mark.line > line:
            break
        if mark.begin:
            owner = (mark.name, False)
        elif owner is not None and owner[0] == mark.name:
            owner = (mark.name, True)
    return owner


def blamable(ev: Evidence) -> bool:
    return ev.strong or ev.signature in _PROMOTED


def attribute(
    evidence: Iterable[Evidence], logs: dict[LogKind, str | None]
) -> tuple[list[Evidence], list[Blame]]:
    """The evidence with what a window promotes made strong, and the events that belong to a
    subtest (in the evidence's order)."""
    markers = {kind: marks(text) for kind, text in logs.items()}
    kept: list[Evidence] = []
    blamed: list[Blame] = []
    for ev in evidence:
        owner = _owner(markers.get(ev.source, []), ev.line) if blamable(ev) else None
        if owner is not None:
            ev = replace(ev, strong=True)
            blamed.append(Blame(owner[0], ev, owner[1]))
        kept.append(ev)
    return kept, blamed


def detail(own: str, status: str, blames: list[Blame], describe: str) -> str:
    """A subtest's detail once kernel evidence is blamed on it: what the kernel reported (the
    first event's report quoted), then the subtest's own verdict."""
    first = blames[0]
    when = "after it ended" if first.after_end else "while it ran"
    more = f" (+{len(blames) - 1} more)" if len(blames) > 1 else ""
    report = first.evidence.lines[:DETAIL_LINES]
    cut = len(first.evidence.lines) - len(report)
    lines = [
        f"{describe} {when}{more}; its own verdict: {status} {own}".rstrip(),
        *report,
        *([f"[{cut} more lines]"] if cut > 0 else []),
    ]
    return "\n".join(lines)
