"""Bisection under concurrency and death: one process per bisection (a lock, not a race), an
interrupted bisection shown as such, and the first mirror clone by two processes at once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.test_bisect import kbisect, linear_repo

from kbisect.bisect.request import BisectRequest
from kbisect.bisect.session import running, shown_status
from kbisect.config import Tree
from kbisect.results.store import ResultsStore
from kbisect.tree import repos
from kbisect.tree.git import Git
from kbisect.tree.repos import TreeRepo


def test_a_second_resume_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 4)
    request = BisectRequest(tree=str(repo), good=[commits[0]], bad=commits[-1], predicate="run",
                            command="true")  # fmt: skip
    with ResultsStore(tmp_path / "results") as store:
        record = store.create_bisection(request.to_json())
        with running(store, record.id):
            assert shown_status(store, record) == "running"
            done = kbisect(tmp_path, "bisect", "--resume", str(record.id))
            assert done.returncode == 2, done.stdout + done.stderr
            assert done.stderr.strip().endswith(
                f"bisection {record.id} is running (pid {os.getpid()})"
            )
            assert len(done.stderr.strip().splitlines()) == 1
        # the process that held it is gone (here: let go): the bisection was interrupted
        assert shown_status(store, record) == (
            f"interrupted — resume with `kbisect bisect --resume {record.id}`"
        )
        assert not store.trials(record.id), "the refused resume ran nothing"


def test_first_clones_at_once_and_a_stale_partial(tmp_path: Path) -> None:
    source = tmp_path / "source"
    linear_repo(source, 3)
    mirror = tmp_path / "trees" / "t.git"
    tree = TreeRepo("t", mirror, Tree(name="t", url=str(source)))
    stale = mirror.with_name("t.git.partial")
    stale.mkdir(parents=True)
    (stale / "junk").write_text("left by a clone that was killed")
    errors: list[BaseException] = []

    def clone() -> None:
        try:
            repos.ensure_mirror(tree)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=clone) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not stale.exists()
    with Git(mirror) as g:
        assert g.run("rev-list", "--count", "main").strip() == "3"
