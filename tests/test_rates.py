"""Failure rates (kbisect.results.rates): Wilson intervals against published values, shifts
between runs, expected ranges; properties checked with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kbisect.results.rates import Rate, Shift, percent, shift, wilson, within


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Statistics in
# Medicine 17, table II, method 3 (score interval without continuity correction).
@pytest.mark.parametrize(
    ("fails", "runs", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
     (1, 29, 0.0061, 0.1718)],
)  # fmt: skip
def test_wilson_agrees_with_published_values(
    fails: int, runs: int, low: float, high: float
) -> None:
    got = wilson(fails, runs)
    assert got == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_nothing_seen_is_the_whole_range_and_nonsense_is_refused() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="4 of 3"):
        wilson(4, 3)
    with pytest.raises(ValueError, match="-1 of 3"):
        Rate(-1, 3)


counts = st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@given(counts)
def test_the_interval_holds_the_observed_rate_within_0_and_1(seen: tuple[int, int]) -> None:
    fails, runs = seen
    low, high = wilson(fails, runs)
    point = fails / runs if runs else 0.0
    assert 0.0 <= low <= point <= high <= 1.0
    assert (low == 0.0) == (fails == 0) and (high == 1.0) == (fails == runs)


@given(counts)
def test_passes_and_fails_mirror(seen: tuple[int, int]) -> None:
    fails, runs = seen
    low, high = wilson(fails, runs)
    mirror_low, mirror_high = wilson(runs - fails, runs)
    assert low == pytest.approx(1 - mirror_high) and high == pytest.approx(1 - mirror_low)


@given(st.integers(0, 50), st.integers(1, 50))
def test_more_runs_at_the_same_rate_narrow_the_interval(fails: int, extra: int) -> None:
    runs = fails + extra
    low, high = wilson(fails, runs)
    low4, high4 = wilson(4 * fails, 4 * runs)
    assert high4 - low4 < high - low


@pytest.mark.parametrize(
    ("now", "before", "expected"),
    [
        ((1, 1), (0, 1), Shift.UP),  # repeat 1: the clean flip is all there is
        ((0, 1), (1, 1), Shift.DOWN),
        ((3, 3), (0, 3), Shift.UP),
        ((1, 3), (0, 3), Shift.NONE),  # one unlucky repeat
        ((2, 3), (0, 3), Shift.NONE),
        ((6, 10), (0, 10), Shift.UP),  # flaky now, but far more often than before
        ((3, 10), (0, 10), Shift.NONE),
        ((10, 10), (1, 10), Shift.UP),
        ((3, 3), (1, 3), Shift.NONE),  # flaky before, failing now: not beyond doubt
        ((0, 10), (9, 10), Shift.DOWN),
        ((2, 10), (10, 10), Shift.DOWN),
        ((0, 3), (0, 3), Shift.NONE),
        ((3, 3), (3, 3), Shift.NONE),
        ((1, 3), (0, 0), Shift.NONE),  # no baseline verdict
    ],
)
def test_shift(now: tuple[int, int], before: tuple[int, int], expected: Shift) -> None:
    assert shift(Rate(*now), Rate(*before)) is expected


@given(counts, counts)
def test_a_shift_reverses_when_the_runs_swap(a: tuple[int, int], b: tuple[int, int]) -> None:
    up, down = shift(Rate(*a), Rate(*b)), shift(Rate(*b), Rate(*a))
    assert {up, down} in ({Shift.NONE}, {Shift.UP, Shift.DOWN})
    if up is Shift.UP:  # never a rise when the rate seen now is not higher
        assert a[0] / a[1] > b[0] / b[1]


@pytest.mark.parametrize(
    ("rate", "low", "high", "expected"),
    [
        ((1, 3), 0.05, 0.5, True),
        ((0, 3), 0.05, 0.5, True),  # three passes cannot rule out a 5% flake
        ((0, 100), 0.05, 0.5, False),  # a hundred can: it no longer flakes
        ((50, 50), 0.05, 0.5, False),  # a steady failure
        ((3, 3), 0.05, 0.5, True),  # three failures might be a 50% flake
        ((30, 100), 0.05, 0.5, True),
        ((70, 100), 0.05, 0.5, False),
        ((0, 0), 0.05, 0.5, None),
        ((100, 100), 0.0, 1.0, True),  # plain `flaky`: anything goes
    ],
)
def test_within_an_expected_range(
    rate: tuple[int, int], low: float, high: float, expected: bool | None
) -> None:
    assert within(Rate(*rate), low, high) is expected


def test_text() -> None:
    assert Rate(1, 3).describe() == "failed 1 of 3 (33%, 95% interval 6-79%)"
    assert Rate(0, 0).describe() == "no run with a verdict"
    shown = [percent(x) for x in (0.0, 0.001, 0.5, 0.999, 1.0)]
    assert shown == ["0%", "<1%", "50%", ">99%", "100%"]
    with pytest.raises(ValueError, match="range"):
        within(Rate(1, 3), 0.6, 0.5)
