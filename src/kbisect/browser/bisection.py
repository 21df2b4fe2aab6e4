"""Bisection pages (``bisect/ID.html``): the request, the culprit and its validation, the decided
steps, the posterior run by run, the predicate runs and the bisect log. A report comes from a
bisection's JSON: every part of it is checked for its type before it is shown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

from markupsafe import Markup

from kbisect.bisect.session import shown_status
from kbisect.browser.manifest import Manifest
from kbisect.browser.pages import key_of
from kbisect.browser.safety import safe_file
from kbisect.browser.site import LogView, Site
from kbisect.browser.svg import Line, Step, line_chart, step_chart
from kbisect.results.model import BisectionRecord, TrialRecord
from kbisect.results.store import ResultsStore

REQUEST_KEYS = (
    "tree",
    "good",
    "bad",
    "variant",
    "predicate",
    "job",
    "test",
    "host",
    "profile",
    "command",
)
"""What a bisection was asked, in the order the page lists it."""
REPORT_KEYS = ("message", "confidence", "runs", "restarts", "miss_rate", "false_alarm_rate")
FILES = ("report.txt", "report.json", "junit.xml", "bisect.log")
"""A bisection's files (bisect/ID/NAME) the page links to, those that are there."""
PROBE_PHASES = ("good-end", "bad-end", "step")
"""The phases of the runs the engine's posterior follows (validation runs are not in it)."""


@dataclass(frozen=True)
class PosteriorRun:
    """One entry of a report's ``posterior.runs`` (kbisect.bisect.report): the run, where and
    what it gave, and the posterior after it (its likeliest culprits, position, commit or None
    for "the bad end is good", and probability)."""

    run: int
    commit: str
    outcome: str
    best_position: int
    best: str | None
    p_best: float
    entropy: float
    top: list[tuple[int, str | None, float]]


def shown_bisections(store: ResultsStore) -> list[BisectionRecord]:
    """The store's bisections with the status to show: one whose process died is interrupted
    (with how to resume it), not running."""
    return [replace(b, status=shown_status(store, b)) for b in store.bisections()]


def render_bisections(
    site: Site,
    store: ResultsStore,
    manifest: Manifest,
    layout: str,
    bisections: Sequence[BisectionRecord],
) -> int:
    """Render the page of every bisection whose key (its record and its bisect log's size and
    time) changed, and keep the keys in the manifest; how many were not rendered."""
    skipped = 0
    keys: dict[str, dict[str, Any]] = {}
    for b in bisections:
        relative = f"bisect/{b.id}.html"
        log_rel = f"bisect/{b.id}/bisect.log"
        real = safe_file(store.results_dir, log_rel)
        stamp = None
        if real is not None:
            st = real.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        key = key_of(layout, b.id, b.updated, b.status, b.request, b.report, stamp)
        old = manifest.bisections.get(str(b.id))
        if old is not None and old["key"] == key:
            skipped += 1
            keys[str(b.id)] = old
            continue
        site.paged_logs = set()
        _render(site, store, b, relative, log_rel)
        keys[str(b.id)] = {"key": key, "logs": sorted(site.paged_logs)}
    manifest.bisections = keys
    return skipped


def _render(
    site: Site, store: ResultsStore, b: BisectionRecord, relative: str, log_rel: str
) -> None:
    report = b.report or {}
    files = []
    for name in FILES:
        link = site.file_link(relative, f"bisect/{b.id}/{name}")
        if link:
            files.append((name, link))
    log_view = None
    if safe_file(store.results_dir, log_rel) is not None:
        log_view = site.log_view(relative, "bisect-log", log_rel, "bisect-log")
    elif (store.results_dir / log_rel).is_symlink():
        log_view = LogView("bisect-log", "bisect log", "bisect-log")
        log_view.problem = "not shown: it is outside the results directory"
    flags = report.get("flags")
    if not isinstance(flags, list):
        flags = []
    trials = store.trials(b.id)
    culprit = _culprit(report)
    commits, trace = posterior_of(report)
    steps = steps_of(trials, culprit["commit"] if culprit else "", _best_by_commit(trace))
    site.render(
        "bisection.html.j2",
        relative,
        title=_title(b, culprit),
        chart=step_chart(steps, f"runs per commit, bisection {b.id}") if steps else None,
        posterior_chart=posterior_chart(trace, f"posterior per run, bisection {b.id}"),
        converged=_converged(commits, trace),
        b=b,
        report={k: report.get(k) for k in REPORT_KEYS},
        request=_request(b),
        files=files,
        culprit=culprit,
        suspects=[
            {"commit": s.get("commit", ""), "subject": s.get("subject", "")}
            for s in _items(report.get("suspects"))
        ],
        flags=[str(f) for f in flags],
        validations=_validations(report),
        steps=[
            _verdict_row(v) for v in [*_items(report.get("ends")), *_items(report.get("steps"))]
        ],
        trials=trials,
        bisect_log=log_view,
        text=str(report.get("text") or ""),
    )


def steps_of(
    trials: Sequence[TrialRecord], culprit: str, posteriors: Mapping[str, Sequence[float]]
) -> list[Step]:
    """The predicate runs as the chart shows them: a step per commit tested in a row (its runs
    by outcome), in the order they ran. ``posteriors`` is, by commit, the likeliest culprit's
    probability after each run there that the engine's posterior follows, in order: a step
    shows the one after its last such run."""
    steps: list[Step] = []
    key: tuple[str, str] | None = None
    counts: dict[str, int] = {}
    followed: dict[str, int] = {}
    for t in [*sorted(trials, key=lambda t: t.seq), None]:
        here = (t.phase, t.commit) if t is not None else None
        if key is not None and here != key:
            phase, commit = key
            seen = followed.get(commit, 0)
            after = posteriors.get(commit, ())
            steps.append(
                Step(
                    commit[:8],
                    phase,
                    counts.get("pass", 0),
                    counts.get("fail", 0),
                    counts.get("skip", 0),
                    sum(n for k, n in counts.items() if k not in ("pass", "fail", "skip")),
                    after[seen - 1] if phase in PROBE_PHASES and 0 < seen <= len(after) else None,
                    bool(culprit) and commit == culprit,
                )
            )
            counts = {}
        if t is not None:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
            if t.phase in PROBE_PHASES and t.outcome != "abort":  # an abort ends before a trace
                followed[t.commit] = followed.get(t.commit, 0) + 1
        key = here
    return steps


def posterior_of(report: Mapping[str, Any]) -> tuple[int, list[PosteriorRun]]:
    """A report's ``posterior``: how many commits it is over and its well-formed runs (none
    for a report from before the engine kept it)."""
    posterior = report.get("posterior")
    if not isinstance(posterior, dict):
        return 0, []
    commits = posterior.get("commits")
    runs = [r for r in map(_posterior_run, _items(posterior.get("runs"))) if r is not None]
    return (commits if _is_int(commits) else 0), runs


def _posterior_run(entry: dict[str, Any]) -> PosteriorRun | None:
    run, position, p_best, entropy = (
        entry.get(k) for k in ("run", "best_position", "p_best", "entropy")
    )
    if not (_is_int(run) and _is_int(position) and _is_number(p_best)):
        return None
    top = []
    listed = entry.get("top")
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, list) and len(item) == 3 and _is_int(item[0]) and _is_number(item[2]):
            top.append((item[0], None if item[1] is None else str(item[1]), float(item[2])))
    best = entry.get("best")
    return PosteriorRun(
        run,
        str(entry.get("commit") or ""),
        str(entry.get("outcome") or ""),
        position,
        None if best is None else str(best),
        float(p_best),
        float(entropy) if _is_number(entropy) else 0.0,
        top,
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _best_by_commit(trace: Sequence[PosteriorRun]) -> dict[str, list[float]]:
    """The likeliest culprit's probability after each run, by the commit run."""
    out: dict[str, list[float]] = {}
    for r in trace:
        out.setdefault(r.commit, []).append(r.p_best)
    return out


def _name(commit: str | None) -> str:
    return commit[:8] if commit else "bad end good"


def posterior_chart(trace: Sequence[PosteriorRun], label: str) -> Markup | None:
    """How sure the engine grew, run by run, in percent: the likeliest culprit's probability
    after each run, and the probability of the one it converged on (after the last run)."""
    if not trace:
        return None
    final = trace[-1]
    converged = []
    for r in trace:
        p = next((p for position, _, p in r.top if position == final.best_position), None)
        converged.append(None if p is None else 100 * p)
    return line_chart(
        [f"{r.run} {r.outcome}" for r in trace],
        [
            Line("likeliest", [100 * r.p_best for r in trace]),
            Line(f"final {_name(final.best)}", converged),
        ],
        "%",
        label,
    )


def _converged(commits: int, trace: Sequence[PosteriorRun]) -> dict[str, Any] | None:
    """The posterior after the last run: its likeliest culprits and their probabilities."""
    if not trace:
        return None
    final = trace[-1]
    return {
        "commits": commits,
        "run": final.run,
        "entropy": final.entropy,
        "top": [
            {
                "position": position,
                "commit": commit or "none: the bad end is good",
                "percent": f"{100 * p:.1f}",
            }
            for position, commit, p in final.top
        ],
    }


def _title(b: BisectionRecord, culprit: dict[str, Any] | None) -> str:
    request = _request(b)
    asked = dict(request)
    span = f"{asked.get('good', '?')}..{asked.get('bad', '?')}"
    title = f"bisection {b.id} · {asked.get('tree', '')} {span}"
    if culprit and culprit["commit"]:
        title += f" · culprit {str(culprit['commit'])[:12]}"
    return f"{title} · {b.status}"


def _request(b: BisectionRecord) -> list[tuple[str, str]]:
    """What the bisection was asked (as the report gives it, else as the request)."""
    report = b.report or {}
    request = []
    for k in REQUEST_KEYS:
        value = report.get(f"{k}_given") or report.get(k) or b.request.get(k)
        if value in (None, "", []):
            continue
        request.append((k, ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return request


def _culprit(report: dict[str, Any]) -> dict[str, Any] | None:
    culprit = report.get("culprit")
    if not isinstance(culprit, dict):
        return None
    files = culprit.get("files")
    return {
        "commit": culprit.get("commit", ""),
        "subject": culprit.get("subject", ""),
        "author": culprit.get("author", ""),
        "date": culprit.get("date", ""),
        "files": [str(f) for f in files] if isinstance(files, list) else [],
    }


def _validations(report: dict[str, Any]) -> list[dict[str, Any]]:
    validations = []
    for v in _items(report.get("validations")):
        detail = v.get("detail") if isinstance(v.get("detail"), dict) else None
        validations.append(
            {
                "name": v.get("name", ""),
                "expected": v.get("expected", ""),
                "verdict": v.get("verdict"),
                "ok": v.get("ok"),
                "note": v.get("note", ""),
                "detail": _verdict_row(detail) if detail else None,
            }
        )
    return validations


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _verdict_row(v: dict[str, Any]) -> dict[str, Any]:
    keys = ("phase", "commit", "verdict", "runs", "passes", "fails", "skips", "errors")
    row = {k: v.get(k, "") for k in keys}
    row["confidence"] = v.get("confidence", "")
    row["detail"] = v.get("detail", "")
    if row["runs"] == "" and isinstance(v.get("passes"), int) and isinstance(v.get("fails"), int):
        row["runs"] = v["passes"] + v["fails"]
    return row
