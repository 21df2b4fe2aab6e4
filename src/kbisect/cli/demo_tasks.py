"""Tasks that set up demonstrations: a history with one known culprit for `kbisect bisect`."""

from __future__ import annotations

import shlex

from invoke.context import Context

from kbisect.cli.arguments import positive_int
from kbisect.cli.common import project, say, task
from kbisect.errors import UserError
from kbisect.tree import repos
from kbisect.tree.demo import DEFAULT_BRANCH, make_demo_history


@task(
    name="history",
    checks={"commits": positive_int},
    help={
        "tree": "Tree name (configs/) or a git repository's path (default: settings.default_tree).",
        "base": "Revision to build on (default: the newest release tag of the tree).",
        "commits": "How many commits the branch gets, the culprit included (default: 32).",
        "branch": f"Branch to (re)write in the tree's repository (default: {DEFAULT_BRANCH}).",
    },
)
def history(
    c: Context,
    tree: str | None = None,
    base: str | None = None,
    commits: int = 32,
    branch: str = DEFAULT_BRANCH,
    root: str | None = None,
) -> None:
    """Write a branch of small harmless commits on a release, one of which makes gntdev map
    grants VM_IO instead of VM_MIXEDMAP; print the bisect command that should find it.

    The culprit is about two thirds of the way up; every other commit fixes a typo or the
    spacing in a comment or a documentation paragraph, so every commit builds the same code.
    It takes about a second, and rerunning with the same arguments gives the same commit ids.
    See docs/bisection.md.
    """
    p = project(root, required=False)
    tree = p.tree_name(tree)
    handle = repos.open_tree(p, tree)
    if base is None:
        newest = repos.newest_tags(handle, 1)
        if not newest:
            raise UserError(f"tree {handle.name!r} has no release tags: pass --base")
        base = newest[-1]
    made = make_demo_history(handle, base, branch=branch, commits=commits)
    culprit = made.culprit
    say(f"branch    {made.branch}  ({len(made.commits)} commits)")
    say(f"base      {made.base}  ({base})")
    say(f"tip       {made.tip}")
    say(
        f"culprit   {culprit.id[:12]} {culprit.subject}  "
        f"(commit {made.culprit_index + 1} of {len(made.commits)})"
    )
    command = ["kbisect", "bisect", "--tree", tree, "--good", base, "--bad", made.branch]
    say("next      " + shlex.join([*command, "--job", "gntstress", "--test", "odirect-read"]))
