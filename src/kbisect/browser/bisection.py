"""Bisection pages (``bisect/ID.html``): the request, the culprit and its validation, the decided
steps, the predicate runs and the bisect log. A report comes from a bisection's JSON: every
part of it is checked for its type before it is shown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kbisect.browser.manifest import Manifest
from kbisect.browser.pages import key_of
from kbisect.browser.safety import safe_file
from kbisect.browser.site import LogView, Site
from kbisect.browser.svg import Step, step_chart
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
    steps = steps_of(trials, culprit["commit"] if culprit else "", _posteriors(report))
    site.render(
        "bisection.html.j2",
        relative,
        title=_title(b, culprit),
        chart=step_chart(steps, f"runs per commit, bisection {b.id}") if steps else None,
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
    trials: Sequence[TrialRecord], culprit: str, posteriors: Mapping[str, float]
) -> list[Step]:
    """The predicate runs as the chart shows them: a step per commit tested in a row (its runs
    by outcome), in the order they ran; ``posteriors`` by commit, where the engine kept one."""
    steps: list[Step] = []
    key: tuple[str, str] | None = None
    counts: dict[str, int] = {}
    for t in [*sorted(trials, key=lambda t: t.seq), None]:
        here = (t.phase, t.commit) if t is not None else None
        if key is not None and here != key:
            phase, commit = key
            steps.append(
                Step(
                    commit[:8],
                    phase,
                    counts.get("pass", 0),
                    counts.get("fail", 0),
                    counts.get("skip", 0),
                    sum(n for k, n in counts.items() if k not in ("pass", "fail", "skip")),
                    posteriors.get(commit),
                    bool(culprit) and commit == culprit,
                )
            )
            counts = {}
        if t is not None:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        key = here
    return steps


def _posteriors(report: dict[str, Any]) -> dict[str, float]:
    """A posterior per commit, from the report's ends and steps that carry one."""
    out = {}
    for v in [*_items(report.get("ends")), *_items(report.get("steps"))]:
        value = v.get("posterior")
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[str(v.get("commit", ""))] = float(value)
    return out


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
