"""Tasks for trees, revisions and variants."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit

from kbisect.cli.common import project, say, task
from kbisect.errors import ExitCode, UserError
from kbisect.tree import repos
from kbisect.tree.checkout import checkout as do_checkout
from kbisect.tree.checkout import slot
from kbisect.tree.variant_import import import_mbox
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
    """Import Debian's point releases into the tree's git repository (incremental).

    The tree is a Debian source package (`debian_package`, e.g. linux-source-6.1). Every
    version `apt-cache madison` offers is imported, or the ones named, into a git repository in
    the cache: one commit per release in Debian version order, dated and tagged (`v6.1.170-3`
    and so on). Importing again adds only what is new; an interrupted import leaves the
    repository as it was after the last complete release. Debian retires old releases from its
    archive; once imported they stay.
    """
    p = project(root)
    handle = repos.open_tree(p, p.tree_name(tree))
    added = repos.import_debian(p, handle, version or None, say)
    tags = ", ".join(added) if added else "nothing new"
    say(f"{handle.name}: {tags}; {handle.path}")


@task(help={"tree": "Tree name or path of a git repository (default: settings.default_tree)."})
def revs(c: Context, tree: str | None = None, root: str | None = None) -> None:
    """List the tree's release tags with their commit ids, oldest first."""
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

    Prints the slot's path, the commit, the outcome and the git tree id after the patches. The
    outcome is `unpatched`, `applied`, `already-present` or `does-not-apply`. A variant that
    does not apply is a SKIP that names the conflicting files: the slot is left at the plain
    revision and the task exits 125 (git bisect's "skip"). The slot is reused by the next
    checkout of the tree (docs/builds.md says how).
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
    """List the experiments under seeds/ and their variants, one line each."""
    p = project(root)
    if not p.experiments:
        raise UserError(f"no experiments under {p.root / 'seeds'}")
    for exp in p.experiments.values():
        say(f"{exp.name}: {exp.title}")
        for v in exp.variants:
            patches = ", ".join(v.patches) or "no patches"
            say(f"  {exp.name}/{v.name:14} {v.description}  [{patches}]")


@task(
    name="import",
    help={
        "mbox": "The thread as an mbox file (b4 mbox, or saved from a mail client).",
        "experiment": "Experiment to add the variants to (created if new); default: named "
        "after the series.",
        "prefix": "Name the variants PREFIX-v1, PREFIX-v2 ... (default: v1, v2 ...).",
        "replace": "Replace existing variants of the same names imported from elsewhere.",
    },
)
def variants_import(
    c: Context,
    mbox: str,
    experiment: str | None = None,
    prefix: str | None = None,
    replace: bool = False,
    root: str | None = None,
) -> None:
    """Make one variant per posted version of the patch series in a mail thread.

    Reads the mbox, finds every version of the series (`[PATCH v3 2/4]`, `[RFC PATCH v2 0/3]`
    cover letters, re-sends; replies quoting the patches are review and are left alone) and
    writes each complete version as a variant of the experiment: its patches, in order, as
    files under seeds/EXPERIMENT/VARIANT/, and its origin (subject, author, date, Message-Id)
    in experiment.yaml. A version with a patch missing from the mbox, or a re-send of patches
    already taken, is left out with a note. Importing the same thread again changes nothing; a
    variant of the same name from another posting is an error unless `--replace`. A version
    that does not apply to a revision is still imported: runs show it as SKIP.
    """
    p = project(root)
    result = import_mbox(
        p, Path(mbox), experiment=experiment, prefix=prefix, replace=replace, say=say
    )
    for item in result.variants:
        v = item.variant
        count = len(v.patches)
        subject = v.origin.subject if v.origin else ""
        say(f"  {result.experiment}/{v.name:14} {item.state:9} {count} patch(es)  {subject}")
    say(f"{result.experiment}: {result.directory}")
