"""git's part of a bisection: the commit graph between the ends (`load_history`), and the
bisect log in git's own form, which `git bisect replay` accepts (`render_log`), and reads back
(`read_bisect_log`, git's log or kbisect's). The search itself is kbisect.bisect.engine's; git's
`bisect` state is never touched, so the user's checkout, refs and own bisection stay as they are
and several bisections can run at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kbisect.errors import UserError
from kbisect.tree.git import Git

_MARK = re.compile(r"^git bisect (good|bad|skip|start)\b(.*)$")


class Mark(StrEnum):
    """What a tested commit is marked in git's bisection (`git bisect good|bad|skip`)."""

    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"


@dataclass(frozen=True)
class History:
    """The commits a bisection is about, in topological order (parents first): the good ends,
    then every commit reachable from the bad end but not from a good end; the bad end is last.
    `parents[i]` are the positions of commit i's parents among them."""

    commits: list[str]
    parents: list[list[int]]
    goods: list[int]

    @property
    def bad(self) -> int:
        return len(self.commits) - 1

    def position(self, commit: str) -> int:
        return self.commits.index(commit)


def load_history(repo: Path, good: list[str], bad: str) -> History:
    """The history between the ends, from git's commit graph (merges included)."""
    with Git(repo) as g:
        text = g.run(
            "rev-list", "--topo-order", "--reverse", "--parents", bad, *(f"^{c}" for c in good)
        )
    commits = list(good)
    parent_ids: list[list[str]] = [[] for _ in good]
    for line in text.splitlines():
        words = line.split()
        if words:
            commits.append(words[0])
            parent_ids.append(words[1:])
    if len(commits) == len(good) or commits[-1] != bad:
        raise UserError(f"no commits between the good ends and the bad end {bad[:12]}")
    where = {c: i for i, c in enumerate(commits)}
    parents = [[where[p] for p in ps if p in where] for ps in parent_ids]
    return History(commits, parents, list(range(len(good))))


@dataclass(frozen=True)
class LogMark:
    """A commit the bisection is sure about (or could not test), for the bisect log."""

    commit: str
    mark: Mark
    note: str = ""


def render_log(good: list[str], bad: str, marks: list[LogMark], culprit: str | None) -> str:
    """A `git bisect log` that `git bisect replay` (and `kbisect bisect.replay`) accepts.

    Good and skip marks are written first, in the order given, then the bad marks: the caller
    gives them newest first, so that the last one is the lowest and git's own bisection, replayed,
    ends where kbisect's posterior is (on the culprit, once it is found)."""
    lines = ["git bisect start " + " ".join(f"'{c}'" for c in [bad, *good])]
    for m in marks:
        if m.mark is not Mark.BAD:
            lines += [
                f"# {m.mark}: [{m.commit}] {m.note}".rstrip(),
                f"git bisect {m.mark} {m.commit}",
            ]
    for m in [m for m in marks if m.mark is Mark.BAD]:
        lines += [f"# bad: [{m.commit}] {m.note}".rstrip(), f"git bisect bad {m.commit}"]
    if culprit:
        lines.append(f"# first bad commit: [{culprit}]")
    return "\n".join(lines) + "\n"


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
