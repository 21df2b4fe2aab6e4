"""The index (``index.html``): runs and bisections, newest first, the open regressions, and the
experiments' findings. It is rendered every time, from the runs' summaries and the findings
pages in the manifest (no run's cells are read)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from kbisect.browser.fragments import run_row
from kbisect.browser.manifest import Manifest
from kbisect.browser.site import Site
from kbisect.results.model import BisectionRecord, RegressionRecord, RunRecord


def render_index(
    site: Site,
    manifest: Manifest,
    runs: Sequence[RunRecord],
    started: Mapping[int, str],
    bisections: Sequence[BisectionRecord],
    regressions: Sequence[RegressionRecord],
    trends: Sequence[tuple[str, str, int]] = (),
    findings: Sequence[tuple[str, str, int]] = (),
) -> None:
    """The index of ``runs`` (oldest first: the page lists them newest first)."""
    rows_html = []
    for run in reversed(runs):
        summary = manifest.runs[str(run.id)]["summary"]
        rows_html.append(run_row(run, started[run.id], summary))
    site.render(
        "index.html.j2",
        "index.html",
        runs=Markup("".join(rows_html)),  # noqa: S704 (rows of escaped cells)
        run_count=len(runs),
        run_ids={r.id for r in runs},
        bisections=[_bisection_row(b) for b in bisections],
        bisection_ids={b.id for b in bisections},
        open_regressions=[r for r in regressions if r.status == "open"],
        trends=trends,
        findings=findings,
    )


def _bisection_row(b: BisectionRecord) -> dict[str, Any]:
    report = b.report or {}
    request = b.request
    culprit = report.get("culprit") if isinstance(report.get("culprit"), dict) else None
    good = report.get("good_given") or request.get("good") or []
    return {
        "id": b.id,
        "status": b.status,
        "created": b.created,
        "tree": str(report.get("tree") or request.get("tree") or "-"),
        "good": ", ".join(str(g)[:16] for g in good) if isinstance(good, list) else str(good),
        "bad": str(report.get("bad_given") or request.get("bad") or "-")[:16],
        "culprit": str(culprit.get("commit", "")) if culprit else "",
        "subject": str(culprit.get("subject", "")) if culprit else "",
        "confidence": report.get("confidence", "-"),
    }
