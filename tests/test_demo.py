"""The demo history: harmless commits on a release and one that swaps VM_MIXEDMAP for VM_IO."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit
from tests.conftest import MakeProject
from tests.fake_kernel import git, make_kernel_repo

from kbisect.cli.demo_tasks import history
from kbisect.config import load_project
from kbisect.errors import UserError
from kbisect.tree import repos
from kbisect.tree.demo import DEFAULT_BRANCH, GNTDEV, make_demo_history
from kbisect.tree.repos import TreeRepo

# Files with a few cleanups each (13 in all), and text next to them that must stay as it is.
SOURCES = {
    "drivers/xen/privcmd.c": """\
        // SPDX-License-Identifier: GPL-2.0
        /*
         * privcmd.c - fake for the demo tests.  Copyright (c) the the authors.
         */
        static const char *msg = "an error occured /* the the */";

        /*
         * Map the pages.  If a fault occured, the the caller retries.
         */
        int privcmd_map(void) { return 0; }
        """,
    "arch/x86/xen/mmu_pv.c": """\
        /* The hypervisor can not see these pages, e.g when ballooned. */
        int xen_mmu(void) { return 1; }
        """,
    "include/xen/grant_table.h": "/*\n * Grant tables: seperate from the mm.   \n */\n",
    "mm/mempolicy.c": """\
        /* Policies are refered to by the the task.  They never change. */
        int mpol(void) { return 2; }
        """,
    "Documentation/mm/numa.rst": """\
        ====
        NUMA
        ====

        Pages can recieve hinting faults, i.e when NUMA balancing is on.

        =========  ==============
        recieve    not this one
        =========  ==============

        Example::

            echo recieve > /proc/sys/kernel/numa_balancing

        See `recieve <https://example.org/recieve>`_ for the the details.
        """,
}
FIXED = {
    "drivers/xen/privcmd.c": SOURCES["drivers/xen/privcmd.c"].replace(
        "pages.  If a fault occured, the the", "pages. If a fault occurred, the"
    ),
    "arch/x86/xen/mmu_pv.c": SOURCES["arch/x86/xen/mmu_pv.c"].replace(
        "can not see these pages, e.g when", "cannot see these pages, e.g. when"
    ),
    "include/xen/grant_table.h": "/*\n * Grant tables: separate from the mm.\n */\n",
    "mm/mempolicy.c": SOURCES["mm/mempolicy.c"].replace(
        "refered to by the the task.  They", "referred to by the task. They"
    ),
    "Documentation/mm/numa.rst": SOURCES["Documentation/mm/numa.rst"]
    .replace("can recieve hinting faults, i.e when", "can receive hinting faults, i.e. when")
    .replace("for the the details", "for the details"),
}
CLEANUPS = 13
MIXEDMAP = "\tvma->vm_flags |= VM_DONTEXPAND | VM_DONTDUMP | VM_MIXEDMAP;"


@pytest.fixture
def tree(tmp_path: Path, make_project: MakeProject) -> TreeRepo:
    """The fake kernel with SOURCES added on v2 (gntdev.c with VM_MIXEDMAP), tagged d1."""
    kernel = make_kernel_repo(tmp_path / "src")
    git(kernel, "checkout", "-q", "-b", "demo-base", "v2")
    for rel, text in SOURCES.items():
        path = kernel / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    git(kernel, "add", "-A")
    git(kernel, "commit", "-q", "-m", "more sources")
    git(kernel, "tag", "d1")
    git(kernel, "checkout", "-q", "master")
    root = make_project({"configs/trees.yaml": f"trees:\n  - name: linux\n    url: {kernel}\n"})
    return repos.open_tree(load_project(root), "linux")


def changed(tree: TreeRepo, commit: str) -> list[str]:
    return git(tree.path, "diff-tree", "-r", "--no-commit-id", "--name-only", commit).split()


def diff_lines(tree: TreeRepo, commit: str) -> list[str]:
    out = git(tree.path, "show", "-U0", "--format=", commit)
    return [line for line in out.splitlines() if line[:1] in "+-" and line[:3] not in "+++---"]


def test_history_is_a_chain_on_the_base_with_one_culprit(tree: TreeRepo) -> None:
    made = make_demo_history(tree, "d1", commits=CLEANUPS + 1)
    base = git(tree.path, "rev-parse", "d1^{commit}").strip()
    chain = git(tree.path, "rev-list", "--reverse", "--parents", f"{base}..{DEFAULT_BRANCH}")
    pairs = [line.split() for line in chain.splitlines()]
    assert made.base == base and made.branch == DEFAULT_BRANCH
    assert [c.id for c in made.commits] == [child for child, _ in pairs]
    assert [parent for _, parent in pairs] == [base] + [c.id for c in made.commits[:-1]]
    assert made.tip == made.commits[-1].id == repos.resolve(tree, DEFAULT_BRANCH)
    # exactly one commit touches gntdev.c, and it only swaps the flag
    assert [c for c in made.commits if GNTDEV in changed(tree, c.id)] == [made.culprit]
    assert changed(tree, made.culprit.id) == [GNTDEV]
    assert diff_lines(tree, made.culprit.id) == [
        "-" + MIXEDMAP,
        "+" + MIXEDMAP.replace("VM_MIXEDMAP", "VM_IO"),
    ]
    assert "VM_IO" in made.culprit.subject
    # by default it sits about two thirds of the way up
    assert 8 <= made.culprit_index <= 10


def test_other_commits_only_fix_comments_and_prose(tree: TreeRepo) -> None:
    made = make_demo_history(tree, "d1", commits=CLEANUPS + 1)
    others = [c for c in made.commits if c != made.culprit]
    for commit in others:
        assert changed(tree, commit.id) == [commit.path]
        lines = diff_lines(tree, commit.id)
        assert len([x for x in lines if x[0] == "-"]) == len([x for x in lines if x[0] == "+"])
        subject = git(tree.path, "log", "-1", "--format=%s", commit.id).strip()
        assert subject == commit.subject and ": " in subject
    assert {c.subject.split(":")[0] for c in others} == {
        "xen/privcmd",
        "x86/xen",
        "xen/grant-table",
        "mm/mempolicy",
        "docs",  # docs: mm: ...
    }
    # all cleanups made: strings, license headers, tables, literals and links left alone
    for rel, text in FIXED.items():
        assert git(tree.path, "show", f"{made.tip}:{rel}") == textwrap.dedent(text), rel
    assert git(tree.path, "show", f"{made.tip}:mm/gup.c") == "// gup\n"
    authors = git(tree.path, "log", "--format=%an|%cn <%ce>", f"{made.base}..{made.tip}")
    assert {line.split("|")[1] for line in authors.splitlines()} == {
        "kbisect demo <demo@kbisect.invalid>"
    }


def test_same_inputs_give_the_same_commits(tree: TreeRepo) -> None:
    first = make_demo_history(tree, "d1", commits=6)
    again = make_demo_history(tree, "d1", commits=6)
    assert again == first
    other = make_demo_history(tree, "d1", commits=6, seed=7)
    assert other.tip != first.tip
    placed = make_demo_history(tree, "d1", commits=6, culprit_index=0)
    assert placed.commits[0] == placed.culprit
    assert repos.resolve(tree, DEFAULT_BRANCH) == placed.tip  # the branch follows the last run


def test_bad_inputs_are_user_errors(tree: TreeRepo) -> None:
    with pytest.raises(UserError, match=r"drivers/xen/gntdev.c at v3 has no .*VM_MIXEDMAP;"):
        make_demo_history(tree, "v3")  # v3 rewrote the flag line
    with pytest.raises(UserError, match=f"only {CLEANUPS} harmless edits.*at most {CLEANUPS + 1}"):
        make_demo_history(tree, "d1", commits=40)
    with pytest.raises(UserError, match=r"'master' already exists .* not a demo history"):
        make_demo_history(tree, "d1", branch="master")
    with pytest.raises(UserError, match="not a valid branch name"):
        make_demo_history(tree, "d1", branch="bad..name")
    with pytest.raises(UserError, match=r"outside 0\.\.5"):
        make_demo_history(tree, "d1", commits=6, culprit_index=6)


def test_task_prints_the_bisect_command(
    tree: TreeRepo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree.path.parent.parent.parent / "project"
    monkeypatch.setenv("KBISECT_ROOT", str(root))
    history(Context(), tree="linux", base="d1", commits=5)
    out = capsys.readouterr().out
    tip = repos.resolve(tree, DEFAULT_BRANCH)
    assert f"tip       {tip}" in out
    assert f"branch    {DEFAULT_BRANCH}  (5 commits)" in out
    assert (
        "next      kbisect bisect --tree linux --good d1 --bad demo/gntdev-vm-io "
        "--job gntstress --test odirect-read"
    ) in out
    with pytest.raises(Exit) as failed:
        history(Context(), tree="linux", base="v3")
    assert failed.value.code == 2
