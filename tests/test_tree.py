"""Trees, revisions, worktree slots and variants on a real git repository made by the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import MakeProject
from tests.fake_kernel import GNTDEV_V1, commit_file, git, make_kernel_repo, make_patch
from tests.test_cli import tool

from kbisect.build.key import build_key
from kbisect.config import load_project
from kbisect.config.project import Project
from kbisect.errors import UserError
from kbisect.tree import repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.variants import BASE, find_variant

FLAGS = "VM_DONTEXPAND | VM_DONTDUMP | VM_MIXEDMAP"


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    return make_kernel_repo(tmp_path / "src")


@pytest.fixture
def project(kernel: Path, make_project: MakeProject) -> Project:
    vm_io = make_patch(kernel, "drivers/xen/gntdev.c", "VM_MIXEDMAP;", "VM_IO;", "use VM_IO")
    # already in v3: the same change v3 made
    v3_flags = "VM_MIXEDMAP | VM_DONTCOPY"
    present = make_patch(kernel, "drivers/xen/gntdev.c", FLAGS, v3_flags, "reorder", base="v2")
    root = make_project(
        {
            "configs/trees.yaml": f"trees:\n  - name: linux\n    url: {kernel}\n",
            "configs/builds.yaml": "profiles:\n  - name: p\n    base: tinyconfig\n"
            "    fragments: [frag.config]\n",
            "configs/frag.config": "CONFIG_XEN=y\n",
            "seeds/exp/experiment.yaml": """
                name: exp
                title: t
                question: q
                variants:
                  - {name: vm-io, description: d, patches: [vm-io.patch]}
                  - {name: reorder, description: d, patches: [reorder.patch]}
                  - {name: both, description: d, patches: [reorder.patch, vm-io.patch]}
                """,
            "seeds/exp/vm-io.patch": vm_io,
            "seeds/exp/reorder.patch": present,
        }
    )
    return load_project(root)


def status(path: Path) -> str:
    return git(path, "status", "--porcelain", "--untracked-files=all")


def test_revisions_resolve_to_full_ids(project: Project, kernel: Path) -> None:
    tree = repos.open_tree(project, "linux")
    v2 = git(kernel, "rev-parse", "v2").strip()
    assert repos.resolve(tree, "v2") == v2
    assert repos.resolve(tree, "v3~1") == v2
    assert repos.resolve(tree, v2[:8]) == v2
    with pytest.raises(UserError, match="unknown revision 'v9' in tree 'linux'"):
        repos.resolve(tree, "v9")


def test_new_upstream_commits_are_fetched_on_demand(project: Project, kernel: Path) -> None:
    tree = repos.open_tree(project, "linux")
    repos.resolve(tree, "v1")  # mirror made now
    new = commit_file(kernel, "README", "hello\n", "readme")
    assert repos.resolve(tree, new) == new


def test_plain_path_is_a_tree(project: Project, kernel: Path) -> None:
    tree = repos.open_tree(project, str(kernel))
    assert tree.path.parent == project.cache_dir / "trees"
    assert repos.resolve(tree, "v1") == git(kernel, "rev-parse", "v1").strip()
    with pytest.raises(UserError, match="unknown tree 'nowhere'"):
        repos.open_tree(project, "nowhere")


def test_variant_applies_and_slot_holds_only_the_patch(project: Project) -> None:
    tree = repos.open_tree(project, "linux")
    with slot(project, tree) as path:
        result = checkout(project, tree, "v2", find_variant(project, "vm-io"), path)
    assert result.outcome == "applied"
    assert "VM_IO;" in (path / "drivers/xen/gntdev.c").read_text()
    assert status(path).splitlines() == ["M  drivers/xen/gntdev.c"]
    base_tree = git(path, "rev-parse", "HEAD^{tree}").strip()
    assert result.tree_id and result.tree_id != base_tree
    assert len(result.patch_hash) == 16


def test_patch_already_present_is_a_no_op(project: Project) -> None:
    tree = repos.open_tree(project, "linux")
    with slot(project, tree) as path:
        result = checkout(project, tree, "v3", find_variant(project, "reorder"), path)
    assert result.outcome == "already-present"
    assert status(path) == ""
    assert result.tree_id == git(path, "rev-parse", "v3^{tree}").strip()


def test_conflicting_patch_is_a_skip_naming_the_file(project: Project) -> None:
    tree = repos.open_tree(project, "linux")
    with slot(project, tree) as path:
        result = checkout(project, tree, "v3", find_variant(project, "vm-io"), path)
    assert result.outcome == "does-not-apply" and not result.usable
    assert result.conflicts == ["drivers/xen/gntdev.c"]
    assert result.tree_id is None
    assert status(path) == ""  # nothing half-applied
    assert "VM_IO" not in (path / "drivers/xen/gntdev.c").read_text()


def test_series_that_fails_midway_leaves_the_revision_clean(project: Project) -> None:
    tree = repos.open_tree(project, "linux")
    # on v2: reorder.patch applies, then vm-io.patch (against v1's line) conflicts
    with slot(project, tree) as path:
        result = checkout(project, tree, "v2", find_variant(project, "both"), path)
    assert result.outcome == "does-not-apply"
    assert status(path) == ""
    assert FLAGS in (path / "drivers/xen/gntdev.c").read_text()


def test_slot_is_reused_and_cleaned_after_a_dirty_use(project: Project) -> None:
    tree = repos.open_tree(project, "linux")
    with slot(project, tree) as path:
        checkout(project, tree, "v2", find_variant(project, "vm-io"), path)
        git_dir = (path / ".git").read_text()
        (path / "junk.o").write_text("object")
        (path / "build" / "deep").mkdir(parents=True)
        (path / "build" / "deep" / "x").write_text("x")
        (path / "Makefile").write_text("broken\n")
        (path / "mm/gup.c").unlink()
    with slot(project, tree) as again:
        result = checkout(project, tree, "v1", BASE, again)
    assert again == path and (path / ".git").read_text() == git_dir  # same slot, not re-created
    assert result.outcome == "unpatched"
    assert status(path) == ""
    assert (path / "drivers/xen/gntdev.c").read_text() == GNTDEV_V1
    assert not (path / "mm/gup.c").exists()  # v1 has no gup.c
    assert sorted(p.name for p in path.iterdir()) == [".git", "Makefile", "drivers"]


def test_two_holders_get_different_slots(project: Project) -> None:
    tree = repos.open_tree(project, "linux")
    with slot(project, tree) as first, slot(project, tree) as second:
        assert first != second


def test_build_key_follows_the_sources(project: Project) -> None:
    tree = repos.open_tree(project, "linux")
    profile = project.profiles["p"]
    keys = {}
    with slot(project, tree) as path:
        for rev, variant in [("v3", "base"), ("v3", "reorder"), ("v2", "base"), ("v2", "vm-io")]:
            result = checkout(project, tree, rev, find_variant(project, variant), path)
            assert result.tree_id
            keys[rev, variant] = build_key(result.tree_id, profile, project.configs_dir, "gcc 12")
    assert keys["v3", "reorder"] == keys["v3", "base"]  # the patch changed nothing
    assert len(set(keys.values())) == 3
    tree_id = "0" * 40
    first = build_key(tree_id, profile, project.configs_dir, "gcc 12")
    assert build_key(tree_id, profile, project.configs_dir, "gcc 13") != first
    (project.configs_dir / "frag.config").write_text("CONFIG_XEN=m\n")
    assert build_key(tree_id, profile, project.configs_dir, "gcc 12") != first


def test_unknown_and_ambiguous_variants(project: Project) -> None:
    with pytest.raises(UserError, match=r"unknown variant 'nope' \(known: exp/vm-io"):
        find_variant(project, "nope")
    assert find_variant(project, "exp/vm-io").name == "vm-io"


def test_checkout_task_prints_path_and_skip(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KBISECT_ROOT", str(project.root))
    ok = subprocess.run(
        [tool("kbisect"), "checkout", "--tree", "linux", "--rev", "v2", "--variant", "vm-io"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "outcome   applied" in ok.stdout
    skip = subprocess.run(
        [tool("kbisect"), "checkout", "--tree", "linux", "--rev", "v3", "--variant", "vm-io"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert skip.returncode == 125
    assert "does-not-apply (SKIP)" in skip.stdout
    assert "drivers/xen/gntdev.c" in skip.stdout
