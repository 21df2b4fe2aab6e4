"""Failure rates from repeated runs: how often a subtest failed, how sure we can be of it, and
whether a rate moved between two runs or sits within an expected range.

Pure arithmetic on counts (no store, no configuration). The interval is Wilson's score interval
at 95%: unlike the plain "p ± 1.96·sd" it stays within [0, 1] and says something useful for
0 of 3 or 3 of 3, which is what a nightly with `repeat: 3` has to work with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

Z95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95% interval."""


def wilson(fails: int, runs: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion seen in ``fails`` of ``runs``; (0, 1) when
    nothing was seen."""
    if not 0 <= fails <= runs:
        raise ValueError(f"{fails} of {runs}: expected 0 <= fails <= runs")
    if runs == 0:
        return (0.0, 1.0)
    z2 = z * z
    centre = (fails + z2 / 2) / (runs + z2)
    half = z / (runs + z2) * math.sqrt(fails * (runs - fails) / runs + z2 / 4)
    # at 0 (or all) of n the bound is exactly 0 (or 1); say so rather than round to 1e-17
    low = 0.0 if fails == 0 else max(0.0, centre - half)
    high = 1.0 if fails == runs else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class Rate:
    """A failure rate: ``fails`` of ``runs`` that had a verdict (pass or fail)."""

    fails: int
    runs: int

    def __post_init__(self) -> None:
        if not 0 <= self.fails <= self.runs:
            raise ValueError(f"{self.fails} of {self.runs}: expected 0 <= fails <= runs")

    @property
    def passes(self) -> int:
        return self.runs - self.fails

    @property
    def point(self) -> float:
        return self.fails / self.runs if self.runs else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.fails, self.runs)

    @property
    def flaky(self) -> bool:
        """Failed in some runs and passed in others."""
        return 0 < self.fails < self.runs

    def brief(self) -> str:
        """``33%, 95% interval 6-79%``."""
        low, high = self.interval
        return f"{percent(self.point)}, 95% interval {percent(low, sign=False)}-{percent(high)}"

    def describe(self) -> str:
        """``failed 1 of 3 (33%, 95% interval 6-79%)``."""
        if not self.runs:
            return "no run with a verdict"
        return f"failed {self.fails} of {self.runs} ({self.brief()})"


def percent(value: float, *, sign: bool = True) -> str:
    """0.3333 -> "33%" (whole percents; "<1%" and ">99%" near the ends, so that a rate that
    is not 0 or 1 never reads as one)."""
    if 0 < value < 0.005:
        text = "<1"
    elif 0.995 <= value < 1:
        text = ">99"
    else:
        text = f"{value * 100:.0f}"
    return f"{text}%" if sign else text


class Shift(StrEnum):
    """How a failure rate moved from a baseline to now."""

    UP = "up"
    """Fails more often, beyond doubt (a regression's evidence)."""
    DOWN = "down"
    """Fails less often, beyond doubt."""
    NONE = "none"
    """No change the runs can tell from chance."""


def shift(now: Rate, before: Rate) -> Shift:
    """Whether the failure rate moved between ``before`` and ``now``.

    Either a clean flip (passed in every run before, failed in every run now, or the other
    way round: all one run per cell can show), or intervals that no longer overlap (with a
    handful of repeats that takes a large move: 0 of 10 to 6 of 10 is one, 0 of 3 to 2 of 3
    is not). One unlucky repeat is never a shift."""
    if not now.runs or not before.runs:
        return Shift.NONE
    if before.fails == 0 and now.fails == now.runs:
        return Shift.UP
    if before.fails == before.runs and now.fails == 0:
        return Shift.DOWN
    now_low, now_high = now.interval
    before_low, before_high = before.interval
    if now_low > before_high:
        return Shift.UP
    if now_high < before_low:
        return Shift.DOWN
    return Shift.NONE


def within(rate: Rate, low: float, high: float) -> bool | None:
    """Whether an observed rate is consistent with an expected range [low, high]: True when
    its interval meets the range, False when the interval lies wholly outside it, None when
    nothing was observed."""
    if not 0 <= low <= high <= 1:
        raise ValueError(f"range [{low}, {high}]: expected 0 <= low <= high <= 1")
    if not rate.runs:
        return None
    seen_low, seen_high = rate.interval
    return seen_high >= low and seen_low <= high
