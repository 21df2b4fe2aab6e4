"""Worktree slots: reusable detached worktrees, checked out to exactly (revision + variant).

A kernel checkout is 75k files, so slots are reused: switching revision rewrites only the files
that differ. Before every use the slot is forced to the revision and cleaned of anything untracked,
so nothing from the previous use survives. A slot is held under an flock, so two processes never
share one.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kbisect.config import Project
from kbisect.errors import InfraError
from kbisect.tree.git import Git
from kbisect.tree.repos import TreeRepo, ensure_mirror, resolve
from kbisect.tree.variants import VariantRef

PatchOutcome = Literal["unpatched", "applied", "already-present", "does-not-apply"]
CHECKOUT_TIMEOUT = 900.0
_FAILED_PATH = re.compile(
    r"^error: (?:patch failed: (?P<a>.+?):\d+|(?P<b>.+?): (?:patch does not apply"
    r"|does not exist in index|No such file or directory|already exists in working directory))$",
    re.MULTILINE,
)


@dataclass
class Checkout:
    """The result of checking out (revision, variant) into a slot."""

    tree: str
    revision: str
    commit: str
    variant: str
    slot: Path
    outcome: PatchOutcome
    tree_id: str | None  # git tree object after the patches; None when they do not apply
    patch_hash: str
    conflicts: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def usable(self) -> bool:
        """False means SKIP: the variant cannot be tested on this revision."""
        return self.outcome != "does-not-apply"


def slots_dir(project: Project, tree: TreeRepo) -> Path:
    return project.cache_dir / "worktrees" / tree.name


@contextmanager
def slot(project: Project, tree: TreeRepo) -> Iterator[Path]:
    """Hold a free worktree slot of the tree (blocking until one is free)."""
    base = slots_dir(project, tree)
    base.mkdir(parents=True, exist_ok=True)
    count = tree.config.worktree_slots
    handles = [
        os.open(base / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644) for i in range(count)
    ]
    held: int | None = None
    try:
        for i, fd in enumerate(handles):  # first free slot, else wait for slot 0
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = i
                break
            except BlockingIOError:
                continue
        if held is None:
            fcntl.flock(handles[0], fcntl.LOCK_EX)
            held = 0
        yield base / f"slot-{held}"
    finally:
        for fd in handles:
            os.close(fd)  # closing releases the lock


def _prepare(tree: TreeRepo, path: Path, commit: str) -> None:
    """Make `path` a worktree at `commit` with nothing else in it."""
    if not (path / ".git").exists():
        with Git(tree.path, timeout=CHECKOUT_TIMEOUT) as g:
            g.run("worktree", "prune")
            g.run("worktree", "add", "--force", "--detach", str(path), commit)
        return
    with Git(path, timeout=CHECKOUT_TIMEOUT) as w:
        w.run("reset", "--quiet", "--hard")
        w.run("checkout", "--quiet", "--force", "--detach", commit)
        w.run("clean", "-ffdxq")


def _status(path: Path) -> str:
    with Git(path, timeout=CHECKOUT_TIMEOUT) as w:
        return w.run("status", "--porcelain", "--untracked-files=all")


def checkout(
    project: Project, tree: TreeRepo, revision: str, variant: VariantRef, path: Path
) -> Checkout:
    """Put `path` (a slot) at revision + variant. A patch that does not apply leaves it clean."""
    ensure_mirror(tree)
    commit = resolve(tree, revision)
    _prepare(tree, path, commit)
    if _status(path):
        raise InfraError(f"worktree {path} is not clean after checkout of {commit[:12]}")
    result = Checkout(
        tree=tree.name,
        revision=revision,
        commit=commit,
        variant=variant.qualified,
        slot=path,
        outcome="unpatched",
        tree_id=None,
        patch_hash=variant.patch_hash(),
    )
    applied = present = 0
    with Git(path, timeout=CHECKOUT_TIMEOUT) as w:
        for patch in variant.patches:
            check = w.try_run("apply", "--check", str(patch))
            if check.ok:
                w.run("apply", "--index", str(patch))
                applied += 1
                continue
            if w.try_run("apply", "--check", "--reverse", str(patch)).ok:
                present += 1
                continue
            merged = w.try_run("apply", "--3way", str(patch))
            unmerged = w.run("diff", "--name-only", "--diff-filter=U")
            if merged.ok and not unmerged.strip():
                applied += 1
                result.detail += f"{patch.name}: applied with a 3-way merge. "
                continue
            result.outcome = "does-not-apply"
            result.conflicts = _conflicting_files(check.stderr) or unmerged.split()
            where = ", ".join(result.conflicts) or "unknown files"
            result.detail += f"{patch.name} does not apply to {revision} ({where})"
            break
        if result.outcome != "does-not-apply":
            result.tree_id = w.run("write-tree").strip()
    if result.outcome == "does-not-apply":
        _prepare(tree, path, commit)  # never leave a half-applied tree
        return result
    if applied:
        result.outcome = "applied"
    elif present:
        result.outcome = "already-present"
    return result


def _conflicting_files(stderr: str) -> list[str]:
    files: list[str] = []
    for match in _FAILED_PATH.finditer(stderr):
        name = match.group("a") or match.group("b")
        if name not in files:
            files.append(name)
    return files
