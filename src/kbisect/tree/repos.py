"""Kernel trees in the cache: git mirrors of URLs and paths, and imported Debian sources."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kbisect import processes
from kbisect.config import Project, Tree
from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.progress import Say
from kbisect.tree import debian
from kbisect.tree.git import GIT_HINT, Git

FETCH_TIMEOUT = 1800.0


@dataclass(frozen=True)
class TreeRepo:
    """A tree's bare repository in the cache. Worktree slots are made from it."""

    name: str
    path: Path
    config: Tree

    @property
    def is_debian(self) -> bool:
        return self.config.debian_package is not None


def trees_dir(project: Project) -> Path:
    return project.cache_dir / "trees"


def open_tree(project: Project, spec: str) -> TreeRepo:
    """A configured tree by name, or any git repository by path (mirrored like a URL tree)."""
    if spec in project.trees:
        config = project.trees[spec]
        return TreeRepo(spec, trees_dir(project) / f"{spec}.git", config)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
        name = f"{path.name}-{digest}"
        return TreeRepo(name, trees_dir(project) / f"{name}.git", Tree(name=name, url=str(path)))
    known = ", ".join(sorted(project.trees)) or "none configured"
    raise UserError(f"unknown tree {spec!r}: not a configured tree ({known}) nor a directory")


def ensure_mirror(tree: TreeRepo) -> None:
    """Clone a URL/path tree into the cache once; a Debian tree must have been imported."""
    if (tree.path / "HEAD").exists():
        return
    if tree.is_debian:
        raise UserError(
            f"tree {tree.name!r} has no releases yet: run `kbisect tree.import --tree {tree.name}`"
        )
    tree.path.parent.mkdir(parents=True, exist_ok=True)
    partial = tree.path.with_name(tree.path.name + ".partial")
    # one clone at a time; whoever holds the lock owns `.partial`, so one left by a killed clone
    # is stale and goes (the kernel drops the lock of a dead process)
    with tree.path.with_name(tree.path.name + ".lock").open("a") as lock:
        deadline = Deadline(FETCH_TIMEOUT)
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline.expired:
                    raise InfraError(f"tree {tree.name!r}: another clone took too long") from None
                time.sleep(0.2)
        if (tree.path / "HEAD").exists():
            return  # the other process cloned it
        shutil.rmtree(partial, ignore_errors=True)
        _git_anywhere(["clone", "--mirror", "--quiet", str(tree.config.url), str(partial)])
        partial.rename(tree.path)


def fetch(tree: TreeRepo) -> None:
    """Bring a mirror up to date (no-op for imported Debian trees)."""
    if tree.is_debian:
        return
    with Git(tree.path, timeout=FETCH_TIMEOUT) as g:
        g.run("remote", "update", "--prune")


def resolve(tree: TreeRepo, revision: str) -> str:
    """Any revision expression to a full commit id; fetches once if it is not known yet."""
    ensure_mirror(tree)
    if revision.startswith("-"):
        raise UserError(f"revision {revision!r} in tree {tree.name!r}: not a revision")
    for attempt in (1, 2):
        with Git(tree.path) as g:
            found = g.try_run(
                "rev-parse", "--verify", "-q", "--end-of-options", f"{revision}^{{commit}}"
            )
        if found.ok:
            return found.stdout.strip()
        if attempt == 1 and not tree.is_debian:
            fetch(tree)
    raise UserError(f"unknown revision {revision!r} in tree {tree.name!r}")


def newest_tags(tree: TreeRepo, count: int) -> list[str]:
    """The `count` newest release tags (Debian trees: by import order; others: by tag date)."""
    ensure_mirror(tree)
    if tree.is_debian:
        return debian.imported_tags(tree.path)[-count:]
    with Git(tree.path) as g:
        out = g.run(
            "for-each-ref",
            "--sort=-creatordate",
            f"--count={count}",
            "--format=%(refname:short)",
            "refs/tags",
        )
    return list(reversed(out.split()))


def import_debian(
    project: Project, tree: TreeRepo, versions: list[str] | None, say: Say
) -> list[str]:
    """Import the tree's Debian releases that are not in it yet; returns the new tags."""
    package = tree.config.debian_package
    if package is None:
        raise UserError(f"tree {tree.name!r} is not a Debian source tree (it has a url)")
    releases = debian.available_releases(package)
    if versions:
        releases = debian.require_known(versions, releases, package)
    if not (tree.path / "HEAD").exists():
        tree.path.parent.mkdir(parents=True, exist_ok=True)
        _git_anywhere(["init", "--quiet", "--bare", "--initial-branch=main", str(tree.path)])
    have = debian.imported_tags(tree.path)
    newest = have[-1] if have else None
    added: list[str] = []
    debs = project.cache_dir / "debian" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for release in releases:
        if release.tag in have:
            continue
        if newest is not None and debian.compare_versions(release.tag[1:], newest[1:]) < 0:
            say(f"{release.tag}: older than the newest imported release {newest}; not inserted")
            continue
        say(f"{release.tag}: downloading {release.deb_name}")
        deb = debian.download(release, debs)
        commit, files = debian.import_release(tree.path, release, deb)
        say(f"{release.tag}: imported {files} files as {commit[:12]}")
        added.append(release.tag)
        newest = release.tag
    debian.update_upstream_tags(tree.path)
    return added


def _git_anywhere(args: list[str]) -> None:
    """git commands that run before a repository exists (clone, init)."""
    processes.run(["git", *args], deadline=FETCH_TIMEOUT, hint=GIT_HINT)
