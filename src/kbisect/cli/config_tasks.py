"""Tasks about the configuration itself: check and reference."""

from __future__ import annotations

from invoke.context import Context

from kbisect.build.distributed import describe as describe_builds
from kbisect.cli.common import project, say, task
from kbisect.config.reference import reference_markdown
from kbisect.results.connection import probe_store


@task(help={"root": "Project directory (default: $KBISECT_ROOT or the nearest with configs/)."})
def check(c: Context, root: str | None = None) -> None:
    """Validate every configuration file; list every problem found (exit 2 if any).

    Each problem is one line, `file:line: key.path: what was expected`, and all of them are
    listed, not only the first. Exit 0 when the configuration is clean, 2 otherwise. Every task
    that reads the project checks the same; docs/configuration.md says what is accepted.
    It then says which results store is used and reaches a shared one (exit 3 if it cannot),
    and where builds compile (distcc builders, each probed).
    """
    p = project(root)
    say(
        f"{p.root}: configuration OK: {len(p.trees)} trees, {len(p.profiles)} build profiles, "
        f"{len(p.hosts)} hosts, {len(p.jobs)} jobs, {len(p.experiments)} experiments, "
        f"{len(p.pipelines)} pipelines; cache {p.cache_dir}"
    )
    say(f"store: {probe_store(p.results_dir, p.store_url)}")
    say(f"builds: {describe_builds(p.distcc)}")


@task(help={}, name="reference")
def reference(c: Context) -> None:
    """Print the configuration reference (Markdown, as in docs/configuration.md).

    It is generated from the configuration model, so it cannot drift from what the loader
    accepts; `python -m kbisect.cli.docs` writes it into docs/configuration.md.
    """
    say(reference_markdown())
