"""Tasks for builds and the artifact store."""

from __future__ import annotations

import time

from invoke.context import Context
from invoke.exceptions import Exit

from kbisect.build.builder import build as do_build
from kbisect.build.builder import store_for
from kbisect.cli.arguments import positive_int
from kbisect.cli.common import project, say, task
from kbisect.errors import ExitCode
from kbisect.tree import repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.variants import find_variant


@task(
    help={
        "tree": "Tree name (configs/) or path of any git repository.",
        "rev": "Revision: tag, branch, commit id or any git revision expression.",
        "variant": "EXPERIMENT/VARIANT or VARIANT; default: the tree as it is.",
        "profile": "Build profile (configs/); default: settings.default_profile or the only one.",
        "jobs": "make -jN (default: settings.build_jobs, else the number of cores).",
    },
    checks={"jobs": positive_int},
)
def build(
    c: Context,
    tree: str,
    rev: str,
    variant: str | None = None,
    profile: str | None = None,
    jobs: int = 0,
    root: str | None = None,
) -> None:
    """Check out and build (revision, variant, profile); print the build key and artifact path.

    A key already in the store compiles nothing. Exit 1 when the kernel does not build (the
    first `file:line: error` lines are printed), 125 when the variant does not apply (SKIP),
    3 for infrastructure trouble (a tool missing, the disk full, the build's deadline passed).
    docs/builds.md says what goes into a key and what a build leaves in the store.
    """
    p = project(root)
    chosen = p.profile(profile)
    handle = repos.open_tree(p, tree)
    ref = find_variant(p, variant)
    with slot(p, handle) as path:
        co = checkout(p, handle, rev, ref, path)
        if not co.usable:
            raise Exit(
                f"kbisect: {co.variant} does not apply to {rev}: SKIP ({co.detail})", ExitCode.SKIP
            )
        outcome = do_build(p, co, chosen, jobs or None)
    say(f"key       {outcome.key}")
    say(f"status    {outcome.status}")
    if outcome.artifact is not None:
        meta = outcome.artifact.meta
        say(f"artifact  {outcome.artifact.path}")
        say(f"kernel    {meta['kernel_release']}  ({meta['commit'][:12]} {meta['variant']})")
        if outcome.status == "built":
            say(
                f"took      {meta['duration_s']} s; rebuilt {meta['rebuilt_count']} objects; "
                f"ccache {meta['ccache']['hits']} hits, {meta['ccache']['misses']} misses"
            )
        return
    say(f"log       {outcome.log}")
    for line in outcome.errors:
        say(f"error     {line}")
    raise Exit("kbisect: build failed", ExitCode.FAILED)


@task(help={})
def builds(c: Context, root: str | None = None) -> None:
    """List the artifact store, most recently used first, with sizes and the store's limit."""
    p = project(root)
    store = store_for(p)
    artifacts = store.artifacts()
    if not artifacts:
        say(f"no builds in {store.root}")
        return
    total = 0
    for a in artifacts:
        meta, size = a.meta, a.size()
        total += size
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.path.stat().st_mtime))
        say(
            f"{a.key}  {meta['tree']}:{meta['revision']:<12} {meta['variant']:<26} "
            f"{meta['profile']:<10} {size / 2**20:7.1f} MiB  used {used}"
        )
    say(
        f"{len(artifacts)} builds, {total / 2**30:.2f} GiB "
        f"of {store.limit_bytes / 2**30:.0f} GiB; {store.root}"
    )
