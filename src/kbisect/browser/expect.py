"""Expected against observed: what each experiment's variants are expected to do (``expect`` in
seeds/NAME/experiment.yaml), and whether a subtest's pooled results are what was expected.

Cells name their variant ``EXPERIMENT/VARIANT``; a variant's ``expect`` maps subtests to pass,
fail, skip or flaky (pass or fail, optionally at a failure rate within a range), with
``default`` for the others. An unexpected pass is as
much news as an unexpected failure: the variant no longer does what the experiment says.
"""

from __future__ import annotations

import errno as errno_module
import signal as signal_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kbisect.pipeline.regressions import CELL
from kbisect.results.model import CellRecord, ResultStatus
from kbisect.results.rates import Rate, percent, within


@dataclass(frozen=True)
class Expected:
    """What a variant is expected to do in a subtest: pass, fail, skip, or flaky with a range
    of failure rates (plain ``flaky``: any rate)."""

    word: str
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def of(cls, value: Any) -> Expected:
        """From a word or a kbisect.config FlakyRange (anything with ``flaky: [low, high]``)."""
        if isinstance(value, Expected):
            return value
        if isinstance(value, str):
            return cls(value)
        low, high = value.flaky
        return cls("flaky", float(low), float(high))

    @property
    def ranged(self) -> bool:
        return self.word == "flaky" and (self.low, self.high) != (0.0, 1.0)

    def __str__(self) -> str:
        if not self.ranged:
            return self.word
        return f"flaky {percent(self.low, sign=False)}-{percent(self.high)}"


Expectations = Mapping[str, Mapping[str, Expected | str]]
"""Variant as cells name it (EXPERIMENT/VARIANT) -> subtest (or "default") -> expectation."""

DEFAULT = "default"


class Verdict(StrEnum):
    """How observed results compare with the expectation."""

    EXPECTED = "expected"
    UNEXPECTED = "unexpected"
    NO_VERDICT = "no verdict"
    """Only infrastructure errors (or nothing) were observed."""
    NOT_EXPECTED = "no expectation"
    """The variant (or the subtest, with no default) has no expectation."""


def expectations_of(experiments: Mapping[str, Any]) -> dict[str, dict[str, Expected]]:
    """The expectations of a project's experiments (kbisect.config Experiments by name)."""
    out: dict[str, dict[str, Expected]] = {}
    for name, experiment in sorted(experiments.items()):
        for variant in experiment.variants:
            if variant.expect:
                out[f"{name}/{variant.name}"] = {
                    str(k): Expected.of(v) for k, v in variant.expect.items()
                }
    return out


def expectation(expectations: Expectations, variant: str, subtest: str) -> Expected | None:
    """What ``variant`` is expected to do in ``subtest`` (None: nothing is said)."""
    mine = expectations.get(variant)
    if not mine:
        return None
    found = mine.get(subtest, mine.get(DEFAULT))
    return None if found is None else Expected.of(found)


_ALLOWED = {  # may pass, may fail, may skip
    "pass": (True, False, False),
    "fail": (False, True, False),
    "skip": (False, False, True),
    "flaky": (True, True, False),
}


def judge(expected: Expected | str | None, passes: int, fails: int, skips: int) -> Verdict:
    """Pooled results (repeats, hosts, jobs) against an expectation. ``flaky`` with a range is
    unexpected when the 95% interval of the failure rate seen lies wholly outside the range."""
    if expected is None:
        return Verdict.NOT_EXPECTED
    if not (passes or fails or skips):
        return Verdict.NO_VERDICT
    want = Expected.of(expected)
    allowed = _ALLOWED.get(want.word)
    if allowed is None:
        return Verdict.NOT_EXPECTED
    seen = (passes > 0, fails > 0, skips > 0)
    ok = all(allowed[i] or not seen[i] for i in range(3))
    if ok and want.ranged:
        ok = within(Rate(fails, passes + fails), want.low, want.high) is not False
    return Verdict.EXPECTED if ok else Verdict.UNEXPECTED


def failure_tag(errno: int, signal: int | None, timed_out: bool) -> str:
    """How a failure shows in a grid: EFAULT, SIGBUS, timeout (or FAIL when nothing says)."""
    if signal:
        try:
            return signal_module.Signals(signal).name
        except ValueError:
            return f"signal {signal}"
    if timed_out:
        return "timeout"
    if errno:
        return errno_module.errorcode.get(errno, f"errno {errno}")
    return "FAIL"


Failure = tuple[str, int, str]
"""How one subtest failed: its tag (EFAULT, SIGBUS), the cell's id, the detail."""


def failures_of(cells: Iterable[CellRecord]) -> dict[tuple[str, str], list[Failure]]:
    """Per (subtest, variant), the distinct ways its subtests failed or erred in ``cells``, each
    with the first cell that shows it; a cell failed by kernel evidence alone (or with no
    subtests) counts under the pseudo-subtest ``cell``."""
    out: dict[tuple[str, str], list[Failure]] = {}
    bad = (ResultStatus.FAIL, ResultStatus.ERROR, ResultStatus.MISS)
    for c in cells:
        found = [
            (s.name, failure_tag(s.errno, s.signal, s.timed_out), s.detail)
            for s in c.subtests
            if s.status in bad
        ]
        if c.status in bad and (not c.subtests or c.evidence) and not found:
            tag = c.evidence[0].signature if c.evidence else c.status.value
            found.append((CELL, tag, c.reason))
        for name, tag, detail in found:
            seen = out.setdefault((name, c.variant), [])
            if all(t != tag for t, _, _ in seen):
                seen.append((tag, int(c.id or 0), detail))
    return out
