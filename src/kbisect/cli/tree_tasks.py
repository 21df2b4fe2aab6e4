"""Tasks for trees, revisions and variants."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from kbisect.cli.common import project, say, task
from kbisect.errors import ExitCode, UserError
from kbisect.tree import repos
from kbisect.tree.checkout import checkout as do_checkout
from kbisect.tree.checkout import slot
from kbisect.tree.variants import find_variant


@task(
    name="import",
    help={
        "tree": "Debian source tree to import (default: settings.default_tree).",
        "version": "Only this Debian version (repeatable); default: every available one.",
    },
    iterable=["version"],
)
def import_(
    c: Context, tree: str | None = None, version: list[str] | None = None, root: str | None = None
) -> None:
    """Import Debian's point releases into the tree's git repository (incremental)."""
    p = project(root)
    handle = repos.open_tree(p, p.tree_name(tree))
    added = repos.import_debian(p, handle, version or None, say)
    tags = ", ".join(added) if added else "nothing new"
    say(f"{handle.name}: {tags}; {handle.path}")


@task(help={"tree": "Tree name or path of a git repository (default: settings.default_tree)."})
def revs(c: Context, tree: str | None = None, root: str | None = None) -> None:
    """List the tree's release tags, oldest first."""
    p = project(root, required=False)
    handle = repos.open_tree(p, p.tree_name(tree))
    for tag in repos.newest_tags(handle, 10_000):
        say(f"{tag}  {repos.resolve(handle, tag)}")


@task(
    help={
        "tree": "Tree name (configs/) or path of any git repository.",
        "rev": "Revision: tag, branch, commit id or any git revision expression.",
        "variant": "EXPERIMENT/VARIANT or VARIANT (see `variants`); default: the tree as it is.",
    }
)
def checkout(
    c: Context, tree: str, rev: str, variant: str | None = None, root: str | None = None
) -> None:
    """Check out a revision with a variant's patches into a worktree slot; print path and outcome.

    Exits 125 (git bisect's "skip") when the variant's patches do not apply to the revision.
    """
    p = project(root, required=False)
    handle = repos.open_tree(p, tree)
    ref = find_variant(p, variant)
    with slot(p, handle) as path:
        result = do_checkout(p, handle, rev, ref, path)
    say(f"worktree  {result.slot}")
    say(f"commit    {result.commit}  ({rev})")
    say(f"variant   {result.variant}")
    say(f"outcome   {result.outcome}" + (" (SKIP)" if not result.usable else ""))
    if result.tree_id:
        say(f"tree id   {result.tree_id}")
    if result.detail:
        say(f"detail    {result.detail.strip()}")
    if not result.usable:
        raise Exit(f"kbisect: {result.variant} does not apply to {rev}: SKIP", code=ExitCode.SKIP)


@task(help={})
def variants(c: Context, root: str | None = None) -> None:
    """List experiments and their variants, one line each."""
    p = project(root)
    if not p.experiments:
        raise UserError(f"no experiments under {p.root / 'seeds'}")
    for exp in p.experiments.values():
        say(f"{exp.name}: {exp.title}")
        for v in exp.variants:
            patches = ", ".join(v.patches) or "no patches"
            say(f"  {exp.name}/{v.name:14} {v.description}  [{patches}]")
