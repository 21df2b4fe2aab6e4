"""Tasks about the configuration itself: check and reference."""

from __future__ import annotations

from invoke.context import Context

from kbisect.cli.common import project, say, task
from kbisect.config.reference import reference_markdown


@task(help={"root": "Project directory (default: $KBISECT_ROOT or the nearest with configs/)."})
def check(c: Context, root: str | None = None) -> None:
    """Validate every configuration file; list every problem found (exit 2 if any)."""
    p = project(root)
    say(
        f"{p.root}: configuration OK: {len(p.trees)} trees, {len(p.profiles)} build profiles, "
        f"{len(p.hosts)} hosts, {len(p.jobs)} jobs, {len(p.experiments)} experiments, "
        f"{len(p.pipelines)} pipelines; cache {p.cache_dir}"
    )


@task(help={}, name="reference")
def reference(c: Context) -> None:
    """Print the configuration reference (Markdown, as in README.md)."""
    say(reference_markdown())
