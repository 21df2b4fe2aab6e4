"""git's own bisection, run in kbisect's state rather than in the user's repository.

The state is a scratch bare repository whose objects come from the tree's repository through
`objects/info/alternates`: `git bisect` runs there with --no-checkout (implied in a bare
repository), so the user's checkout, refs and bisect state are never touched, several bisections
can run at once, and candidates are checked out into kbisect's worktree slots instead.
`read_bisect_log` reads a `git bisect log` file (git's or kbisect's) back into its ends.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from kbisect.errors import InfraError, UserError
from kbisect.tree.git import Git

_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.M)
_SKIPPED_ONLY = "There are only 'skip'ped commits left to test."
_SHA = re.compile(r"^[0-9a-f]{40}$")
_MARK = re.compile(r"^git bisect (good|bad|skip|start)\b(.*)$")


class Mark(StrEnum):
    """What a tested commit is marked in git's bisection (`git bisect good|bad|skip`)."""

    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"


@dataclass(frozen=True)
class Next:
    """What git says after a mark: test `candidate`, or the search is over."""

    candidate: str | None = None
    culprit: str | None = None
    suspects: tuple[str, ...] = field(default_factory=tuple)
    """When only skipped commits are left: the first bad commit is one of these."""
    remaining: str = ""

    @property
    def done(self) -> bool:
        return self.candidate is None


class GitBisect:
    """One bisection's git state in `state_dir` (recreated from scratch by `start`)."""

    def __init__(self, state_dir: Path, objects_dir: Path) -> None:
        self.state_dir = state_dir
        self.objects_dir = objects_dir

    def start(self, good: list[str], bad: str) -> Next:
        """A fresh `git bisect start BAD GOOD...` (any previous state in state_dir is dropped)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True)
        Git.init_bare(self.state_dir)
        alternates = self.state_dir / "objects" / "info" / "alternates"
        alternates.parent.mkdir(parents=True, exist_ok=True)
        alternates.write_text(str(self.objects_dir.resolve()) + "\n")
        with Git(self.state_dir) as g:
            g.run("update-ref", "--no-deref", "HEAD", bad)
            result = g.try_run("bisect", "start", "--no-checkout", bad, *good)
        return self._answer(result.status, result.stdout, result.stderr, "bisect start")

    def mark(self, commit: str, term: Mark) -> Next:
        """Mark a commit good, bad or skip; returns git's next step."""
        term = Mark(term)  # ValueError for anything else
        with Git(self.state_dir) as g:
            result = g.try_run("bisect", term, commit)
        return self._answer(result.status, result.stdout, result.stderr, f"bisect {term}")

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is reachable from `descendant` (or is it)."""
        with Git(self.state_dir) as g:  # it borrows every object of the tree
            return g.try_run("merge-base", "--is-ancestor", ancestor, descendant).ok

    def log(self) -> str:
        """The `git bisect log` of this bisection (replayable with `git bisect replay`)."""
        with Git(self.state_dir) as g:
            return g.run("bisect", "log")

    def _answer(self, status: int, stdout: str, stderr: str, what: str) -> Next:
        text = stdout + stderr
        found = _FIRST_BAD.search(text)
        if found:
            return Next(culprit=found.group(1))
        if _SKIPPED_ONLY in text:
            suspects = tuple(
                line.split()[0]
                for line in text.splitlines()
                if line.split() and _SHA.match(line.split()[0])
            )
            return Next(suspects=suspects)
        if status != 0:
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            message = lines[-1] if lines else f"exit {status}"
            if "not an ancestor" in text or ("merge base" in text and "bad" in text):
                raise UserError(f"git {what}: {message}")
            raise InfraError(f"git {what} failed: {message}")
        with Git(self.state_dir) as g:
            head = g.try_run("rev-parse", "--verify", "-q", "BISECT_HEAD")
        if not head.ok:
            raise InfraError(f"git {what} gave no next commit: {text.strip()[-200:]}")
        remaining = next((ln for ln in text.splitlines() if ln.startswith("Bisecting:")), "")
        return Next(candidate=head.stdout.strip(), remaining=remaining)


def read_bisect_log(path: Path) -> tuple[list[str], str]:
    """The good commits and the latest bad one from a `git bisect log` file."""
    good: list[str] = []
    bad: str | None = None
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        m = _MARK.match(line.strip())
        if m is None:
            continue
        words = [w for w in (w.strip("'\"") for w in m.group(2).split()) if not w.startswith("-")]
        if m.group(1) == "start":
            if words:
                bad, good = words[0], [*good, *words[1:]]
        elif m.group(1) == "good":
            good.extend(words)
        elif m.group(1) == "bad":
            bad = words[0] if words else bad
        if m.group(1) in ("good", "bad") and not words:
            raise UserError(f"{path}:{number}: expected a commit after `git bisect {m.group(1)}`")
    if not good or bad is None:
        raise UserError(f"{path}: expected `git bisect start`, good and bad lines")
    return good, bad
