"""Trends (``trends/KIND-PIPELINE-H.html``): a pipeline's runs as pictures. Pass rate per
(variant, subtest) across its runs, where a failure started ("failing since run 12 on
v6.1.192-3"), cell duration per variant, the time its runs spent building, and how long its
hosts took to boot.

What a run adds to its trends (``trend_of``) is worked out when the run is rendered and kept
with its summary in the manifest, so the trends of 1,000 runs are drawn without reading a cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kbisect.browser.manifest import Manifest
from kbisect.browser.pages import digest
from kbisect.browser.safety import slug
from kbisect.browser.site import Site
from kbisect.browser.svg import Band, Line, line_chart, strip_chart
from kbisect.pipeline.regressions import Pool
from kbisect.results.model import CellRecord, RunRecord, SubtestKey

TREND_RUNS = 100
"""A trends page draws its pipeline's newest runs, this many."""
LINES_MAX = 6
"""At most this many variants get a line of their own in a line chart."""


def trend_page(kind: str, pipeline: str | None) -> str:
    """The trends page of runs of one kind and pipeline (runs that compare with each other)."""
    name = f"{kind}\0{pipeline or ''}"
    return f"trends/{slug(kind, 20)}-{slug(pipeline or 'none', 30)}-{digest(name, 4)}.html"


def trend_of(pools: Mapping[SubtestKey, Pool], cells: Sequence[CellRecord]) -> dict[str, Any]:
    """A run's share of its trends: ``f`` the (variant, subtest) pairs that did not pass
    everywhere, as [variant, subtest, passes, fails, errors, revisions that failed] (repeats,
    hosts, jobs and revisions pooled); ``v`` the variants tested (any pair of theirs not in
    ``f`` passed); ``d`` the mean seconds of a cell, per variant; ``b`` the mean seconds of a
    boot, per host (the cells that booted their kernel say how long it took)."""
    failing = {(k.variant, k.subtest) for k, p in pools.items() if p.fails or p.errors}
    pooled: dict[tuple[str, str], list[Any]] = {}
    if failing:
        for k, p in pools.items():
            pair = (k.variant, k.subtest)
            if pair not in failing:
                continue
            into = pooled.setdefault(pair, [k.variant, k.subtest, 0, 0, 0, []])
            into[2] += p.passes
            into[3] += p.fails
            into[4] += p.errors
            if (p.fails or p.errors) and k.rev not in into[5]:
                into[5].append(k.rev)
    seconds: dict[str, list[float]] = {}
    boots: dict[str, list[float]] = {}
    for c in cells:
        if c.started and c.finished:
            seconds.setdefault(c.variant, []).append((c.finished - c.started).total_seconds())
        if c.boot_seconds is not None:
            boots.setdefault(c.host, []).append(c.boot_seconds)
    return {
        "f": [[*v[:5], ", ".join(v[5])] for v in pooled.values()],
        "v": sorted({c.variant for c in cells}),
        "d": _means(seconds),
        "b": _means(boots),
    }


def _means(values: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {k: round(sum(v) / len(v), 1) for k, v in sorted(values.items())}


def _onset(
    failed: Sequence[bool | None], ids: Sequence[int], revs: Sequence[str]
) -> tuple[str, int | None]:
    """What a row of runs says (None: the pair was not tested in that run), and the index of
    the run where the failure that goes on now started."""
    runs = [i for i, f in enumerate(failed) if f is not None]
    blocks: list[list[int]] = []  # failing runs in a row (runs that did not test it skipped)
    previous_failed = False
    for i in runs:
        if failed[i]:
            if not previous_failed:
                blocks.append([])
            blocks[-1].append(i)
        previous_failed = bool(failed[i])
    if not blocks:
        return "passed in every run shown", None
    bad = sum(len(b) for b in blocks)
    last = blocks[-1]
    start = last[0]
    where = f"run {ids[start]}" + (f" on {revs[start]}" if revs[start] else "")
    if last[-1] == runs[-1]:  # failing now
        if len(blocks) == 1 and start == runs[0]:
            return f"failing in every run shown, since {where} or earlier", start
        if len(blocks) == 1:
            return f"failing since {where}", start
        if len(last) >= 2:  # twice in a row, now: not a one-off
            before = bad - len(last)
            runs_before = f"{before} run{'s' if before > 1 else ''}"
            return f"failing since {where} (and in {runs_before} before)", start
    elif len(blocks) == 1:
        span = f"to run {ids[last[-1]]}" if len(last) > 1 else "only"
        return f"failed from {where} {span}, passing since", start
    return f"flaky: failed in {bad} of {len(runs)} runs, last in run {ids[last[-1]]}", None


def _rate_square(run_id: int, found: list[Any] | None) -> tuple[str, str]:
    if found is None:
        return "r3", f"run {run_id}: passed"
    _, _, passes, fails, errors, revs = found
    total = passes + fails
    if not total:
        return "rE", f"run {run_id}: {errors} infrastructure errors, no verdict"
    rate = passes / total
    css = "r0" if rate == 0 else "r1" if rate < 0.5 else "r2"  # r2: half or more passed
    failed_at = f"; failed on {revs}" if revs else ""
    errs = f", {errors} errors" if errors else ""
    return css, f"run {run_id}: {passes} of {total} passed{errs}{failed_at}"


def pass_rate_bands(
    runs: Sequence[RunRecord], summaries: Sequence[Mapping[str, Any]]
) -> list[Band]:
    """A band per (variant, subtest) that did not pass in every run of ``runs``."""
    trends = [s.get("trend") or {"f": [], "v": [], "d": {}} for s in summaries]
    ids = [r.id for r in runs]
    pairs: dict[tuple[str, str], None] = {}
    for t in trends:
        for f in t["f"]:
            pairs[(f[0], f[1])] = None
    bands = []
    for variant, subtest in sorted(pairs):
        squares: list[tuple[str, str] | None] = []
        failed: list[bool | None] = []
        revs: list[str] = []
        for run_id, t in zip(ids, trends, strict=True):
            found = next((f for f in t["f"] if f[0] == variant and f[1] == subtest), None)
            if found is None and variant not in t["v"]:
                squares.append(None)
                failed.append(None)
                revs.append("")
                continue
            squares.append(_rate_square(run_id, found))
            failed.append(found is not None and found[3] > 0)
            revs.append(found[5] if found else "")
        note, mark = _onset(failed, ids, revs)
        bands.append(Band(f"{variant or '(as is)'} · {subtest}", squares, note, mark))
    return bands


def render_trends(
    site: Site,
    manifest: Manifest,
    runs: Sequence[RunRecord],
    build_seconds: Mapping[str, float],
) -> list[tuple[str, str, int]]:
    """The trends page of every kind and pipeline of ``runs`` (oldest first); (label, page, runs)
    for the index."""
    series: dict[tuple[str, str | None], list[RunRecord]] = {}
    charged: dict[int, float | None] = {}
    seen: set[str] = set()
    for run in runs:
        series.setdefault((run.kind, run.pipeline), []).append(run)
        builds = manifest.runs[str(run.id)]["builds"]
        new = [b for b in builds if b not in seen]
        seen.update(builds)
        known = [build_seconds[b] for b in new if b in build_seconds]
        charged[run.id] = round(sum(known) / 60, 2) if known else None
    out = []
    for (kind, pipeline), mine in series.items():
        shown = mine[-TREND_RUNS:]
        summaries = [manifest.runs[str(r.id)]["summary"] for r in shown]
        labels = [f"run {r.id}" for r in shown]
        bands = pass_rate_bands(shown, summaries)
        durations = _lines_of(summaries, "d", "(as is)")
        boots = _lines_of(summaries, "b", "")
        name = kind + (f" ({pipeline})" if pipeline else "")
        page = trend_page(kind, pipeline)
        first, last = shown[0].id, shown[-1].id
        site.render(
            "trends.html.j2",
            page,
            title=f"trends · {name} · runs {first} to {last}",
            name=name,
            runs=len(mine),
            first=first,
            last=last,
            rates=strip_chart(labels, bands, f"pass rate per variant and subtest, {name}")
            if bands
            else None,
            durations=line_chart(labels, durations, "s", f"mean cell duration, {name}")
            if durations
            else None,
            builds=line_chart(
                labels,
                [Line("new builds", [charged[r.id] for r in shown])],
                "min",
                f"build time per run, {name}",
            )
            if any(charged[r.id] is not None for r in shown)
            else None,
            boots=line_chart(labels, boots, "s", f"mean boot time per host, {name}")
            if boots
            else None,
            run_links=[(r.id, f"../run/{r.id}/index.html") for r in shown[-5:]],
        )
        out.append((name, page, len(mine)))
    return out


def _lines_of(summaries: Sequence[Mapping[str, Any]], field: str, unnamed: str) -> list[Line]:
    """A line per name in the trends' ``field`` (a value by variant or host per run; a run
    without one, or rendered before the field was kept, is a gap: no value, not a zero)."""
    per_run = [(s.get("trend") or {}).get(field, {}) for s in summaries]
    names = sorted({name for d in per_run for name in d})
    return [Line(n or unnamed, [d.get(n) for d in per_run]) for n in names[:LINES_MAX]]
