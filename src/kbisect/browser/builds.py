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
        facts, rest, rebuilt = describe(record.meta) if record else ([], [], None)
        site.render(
            "build.html.j2",
            relative,
            title=_title(build, record.meta if record else {}),
            key=build,
            build=record,
            facts=facts,
            meta=rest,
            rebuilt=rebuilt,
            view=view,
        )
        builds[build] = {"key": key, "logs": sorted(site.paged_logs)}
    manifest.builds = builds
    return skipped


SHOWN = (
    "tree",
    "revision",
    "commit",
    "variant",
    "patch_hash",
    "profile",
    "profile_identity",
    "toolchain",
    "kernel_release",
    "duration_s",
    "built_at",
    "jobs",
    "ccache",
    "sizes",
    "rebuilt_objects",
    "rebuilt_count",
    "key",
)
"""Build metadata (kbisect.build.builder's meta.json) the page shows as facts; others as rows."""


def _title(key: str, meta: Mapping[str, Any]) -> str:
    parts = [str(meta[k]) for k in ("revision", "variant", "profile") if meta.get(k)]
    return " · ".join(["build", *parts]) if parts else f"build {key}"


def _size(n: object) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        return str(n)
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def describe(
    meta: Mapping[str, Any],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, Any] | None]:
    """A build's metadata as a person reads it: facts (profile, fragments, compiler, duration,
    ccache hit rate, sizes), the other metadata as rows, and the rebuilt objects counted by
    directory (None when not recorded)."""
    facts: list[tuple[str, str]] = []

    def add(label: str, value: object) -> None:
        if value not in (None, "", [], {}):
            facts.append((label, str(value)))

    add("tree, revision", " ".join(str(meta.get(k) or "") for k in ("tree", "revision")).strip())
    add("commit", meta.get("commit"))
    add("variant", meta.get("variant") or ("(as is)" if "variant" in meta else None))
    add("patch", meta.get("patch_hash"))
    add("profile", meta.get("profile"))
    identity = meta.get("profile_identity")
    if isinstance(identity, dict):
        add("base config", identity.get("base"))
        fragments = identity.get("fragments")
        if isinstance(fragments, list):
            add(
                "fragments",
                f"{len(fragments)}: " + ", ".join(str(f)[:12] for f in fragments)
                if fragments
                else "none",
            )
        targets = identity.get("targets")
        add("arch, targets", f"{identity.get('arch', '')} {' '.join(map(str, targets or []))}")
    add("compiler", meta.get("toolchain"))
    add("kernel release", meta.get("kernel_release"))
    duration = meta.get("duration_s")
    if isinstance(duration, int | float):
        jobs = f" with {meta['jobs']} jobs" if meta.get("jobs") else ""
        add("duration", f"{duration:.0f} s ({duration / 60:.1f} min){jobs}")
    add("built at", meta.get("built_at"))
    ccache = meta.get("ccache")
    if isinstance(ccache, dict):
        hits, misses = ccache.get("hits"), ccache.get("misses")
        if isinstance(hits, int) and isinstance(misses, int) and hits + misses:
            rate = 100 * hits / (hits + misses)
            add("ccache", f"{rate:.0f} % hits ({hits} hits, {misses} misses)")
    sizes = meta.get("sizes")
    if isinstance(sizes, dict):
        add("sizes", ", ".join(f"{k} {_size(v)}" for k, v in sorted(sizes.items())))
    rest = meta_items({k: v for k, v in meta.items() if k not in SHOWN})
    return facts, rest, _rebuilt(meta)


def _rebuilt(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The rebuilt objects: how many, by directory (two levels), and those listed."""
    listed = meta.get("rebuilt_objects")
    if not isinstance(listed, list):
        return None
    count = meta.get("rebuilt_count")
    total = count if isinstance(count, int) else len(listed)
    by_dir: dict[str, int] = {}
    for name in map(str, listed):
        folder = "/".join(name.split("/")[:-1][:2]) or "(top)"
        by_dir[folder] = by_dir.get(folder, 0) + 1
    return {
        "count": total,
        "listed": [str(x) for x in listed],
        "by_dir": sorted(by_dir.items(), key=lambda kv: (-kv[1], kv[0])),
    }
