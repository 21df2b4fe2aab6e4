"""Build pages (``build/KEY.html``): a build the rendered runs refer to, and its log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kbisect.browser.manifest import Manifest
from kbisect.browser.pages import key_of, meta_items
from kbisect.browser.site import Site
from kbisect.results.model import LogKind
from kbisect.results.store import ResultsStore


def render_builds(
    site: Site,
    store: ResultsStore,
    manifest: Manifest,
    layout: str,
    signatures: Mapping[str, str],
) -> int:
    """Render the page of every build a run in the manifest refers to whose key (over its
    signature in the store) changed, and keep the keys in the manifest; how many were not
    rendered."""
    skipped = 0
    referenced = sorted({b for entry in manifest.runs.values() for b in entry["builds"]})
    builds: dict[str, dict[str, Any]] = {}
    for build in referenced:
        relative = f"build/{build}.html"
        key = key_of(layout, build, signatures.get(build))
        old = manifest.builds.get(build)
        if old is not None and old["key"] == key:
            skipped += 1
            builds[build] = old
            continue
        site.paged_logs = set()
        record = store.get_build(build)
        view = None
        if record is not None and record.log:
            view = site.log_view(relative, LogKind.BUILD_LOG.value, record.log, "build-log")
        site.render(
            "build.html.j2",
            relative,
            key=build,
            build=record,
            meta=meta_items(record.meta) if record else [],
            view=view,
        )
        builds[build] = {"key": key, "logs": sorted(site.paged_logs)}
    manifest.builds = builds
    return skipped
