"""Importing Debian source packages: a small .deb made by the test (fast, every path), and two
real linux-source-6.1 point releases with all four gntdev variants (slow, needs apt)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fake_kernel import git

from kbisect.config import load_project
from kbisect.config.project import Project
from kbisect.errors import InfraError
from kbisect.tree import debian, repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.repos import TreeRepo
from kbisect.tree.variants import find_variant

PACKAGE = "linux-source-6.1"


def make_deb(where: Path, version: str, files: dict[str, str], mtime: int) -> Path:
    """A linux-source-like .deb: usr/src/PACKAGE.tar.xz holding linux-source-6.1/<files>."""
    pkg = where / f"pkg-{version}"
    src = pkg / "usr" / "src"
    src.mkdir(parents=True)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: test <t@localhost>\nDescription: fake source\n"
    )
    with tarfile.open(src / f"{PACKAGE}.tar.xz", "w:xz") as tar:
        for rel, text in files.items():
            info = tarfile.TarInfo(f"{PACKAGE}/{rel}")
            if text.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, text[2:]
            else:
                data = text.encode()
                info.size = len(data)
                info.mode = 0o755 if rel.endswith(".sh") else 0o644
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(text.encode()) if info.isfile() else None)
    os.utime(src / f"{PACKAGE}.tar.xz", (mtime, mtime))
    deb = where / f"{PACKAGE}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return deb


FILES_1 = {
    "Makefile": "all:\n",
    "scripts/run.sh": "#!/bin/sh\n",
    "arch/link": "->../Makefile",
    "drivers/xen/gntdev.c": "VM_MIXEDMAP\n",
}
FILES_2 = {**FILES_1, "drivers/xen/gntdev.c": "VM_MIXEDMAP;\n", "new.c": "x\n"}


@pytest.fixture
def fake_debs(tmp_path: Path) -> dict[str, Path]:
    return {
        "6.1.1-1": make_deb(tmp_path, "6.1.1-1", FILES_1, 1_700_000_000),
        "6.1.2-1": make_deb(tmp_path, "6.1.2-1", FILES_2, 1_700_100_000),
    }


def bare(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True, timeout=30)
    return path


def test_release_becomes_a_faithful_dated_commit(
    tmp_path: Path, fake_debs: dict[str, Path]
) -> None:
    repo = bare(tmp_path / "a.git")
    release = debian.Release(PACKAGE, "6.1.1-1")
    commit, count = debian.import_release(repo, release, fake_debs["6.1.1-1"])
    assert count == 4
    assert git(repo, "rev-parse", "v6.1.1-1").strip() == commit
    listing = git(repo, "ls-tree", "-r", commit)
    assert "100755 blob" in next(ln for ln in listing.splitlines() if ln.endswith("scripts/run.sh"))
    assert "120000 blob" in next(ln for ln in listing.splitlines() if ln.endswith("arch/link"))
    assert git(repo, "show", f"{commit}:arch/link") == "../Makefile"
    assert (
        git(repo, "log", "-1", "--format=%at %s", commit).strip() == f"1700000000 {PACKAGE} 6.1.1-1"
    )
    # the same release imported elsewhere gets the same commit id
    again, _ = debian.import_release(bare(tmp_path / "b.git"), release, fake_debs["6.1.1-1"])
    assert again == commit


def test_import_is_incremental_idempotent_and_survives_interruption(
    tmp_path: Path, fake_debs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KBISECT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "p" / "configs").mkdir(parents=True)
    (tmp_path / "p" / "configs" / "t.yaml").write_text(
        f"trees:\n  - name: deb\n    debian_package: {PACKAGE}\n"
    )
    project = load_project(tmp_path / "p")
    tree = repos.open_tree(project, "deb")
    offered = [debian.Release(PACKAGE, "6.1.1-1")]
    monkeypatch.setattr(debian, "available_releases", lambda package: list(offered))
    monkeypatch.setattr(debian, "download", lambda release, debs: fake_debs[release.version])

    assert repos.import_debian(project, tree, None, print) == ["v6.1.1-1"]
    first = git(tree.path, "rev-parse", "main").strip()

    # interrupted half-way through the next release: nothing of it becomes visible
    offered.append(debian.Release(PACKAGE, "6.1.2-1"))
    real_members = debian._source_members

    def dies_midway(*args: object, **kwargs: object) -> Iterator[object]:
        for n, item in enumerate(real_members(*args, **kwargs)):  # type: ignore[arg-type]
            if n == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(debian, "_source_members", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        repos.import_debian(project, tree, None, print)
    assert git(tree.path, "rev-parse", "main").strip() == first
    assert debian.imported_tags(tree.path) == ["v6.1.1-1"]
    git(tree.path, "fsck", "--no-progress")

    monkeypatch.setattr(debian, "_source_members", real_members)
    assert repos.import_debian(project, tree, None, print) == ["v6.1.2-1"]
    assert git(tree.path, "rev-parse", "main~1").strip() == first  # history appended, not rewritten
    assert repos.import_debian(project, tree, None, print) == []  # nothing new: no change
    assert debian.imported_tags(tree.path) == ["v6.1.1-1", "v6.1.2-1"]
    assert repos.newest_tags(tree, 1) == ["v6.1.2-1"]

    # a second Debian revision of the same upstream version moves the upstream tag to it
    offered.append(debian.Release(PACKAGE, "6.1.2-2"))
    fake_debs["6.1.2-2"] = make_deb(tmp_path, "6.1.2-2", FILES_1, 1_700_200_000)
    assert repos.resolve(tree, "v6.1.2") == repos.resolve(tree, "v6.1.2-1")
    assert repos.import_debian(project, tree, None, print) == ["v6.1.2-2"]
    assert repos.resolve(tree, "v6.1.2") == repos.resolve(tree, "v6.1.2-2")
    assert repos.resolve(tree, "v6.1.1") == repos.resolve(tree, "v6.1.1-1")
    assert debian.imported_tags(tree.path) == ["v6.1.1-1", "v6.1.2-1", "v6.1.2-2"]


def damage(data: bytes, how: str) -> bytes:
    if how == "inner":  # an intact package (data.tar stored as is) holding a damaged tarball
        inner = data.index(b"\xfd7zXZ") + 80
        return data[:inner] + bytes(b ^ 0xFF for b in data[inner : inner + 32]) + data[inner + 32 :]
    if how == "garbage":
        return b"not a package\n" * 40
    if how == "cut-early":
        return data[:200]
    if how == "cut-late":
        return data[: len(data) - 150]
    middle = len(data) - 300  # inside the compressed source tarball
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


@pytest.mark.parametrize("how", ["garbage", "cut-early", "cut-late", "flipped", "inner"])
def test_damaged_package_is_one_line_and_imports_nothing(
    tmp_path: Path, fake_debs: dict[str, Path], how: str
) -> None:
    deb = fake_debs["6.1.1-1"]
    if how == "inner":
        deb = tmp_path / "stored.deb"
        subprocess.run(
            [
                "dpkg-deb",
                "--root-owner-group",
                "-Znone",
                "--build",
                str(tmp_path / "pkg-6.1.1-1"),
                str(deb),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    damaged = tmp_path / "damaged.deb"
    damaged.write_bytes(damage(deb.read_bytes(), how))
    repo = bare(tmp_path / "a.git")
    with pytest.raises(InfraError) as caught:
        debian.import_release(repo, debian.Release(PACKAGE, "6.1.1-1"), damaged)
    message = caught.value.report()
    assert "\n" not in message and ("dpkg-deb" in message or "damaged.deb" in message)
    assert git(repo, "for-each-ref") == ""


def test_versions_sort_the_debian_way() -> None:
    import functools

    versions = ["6.1.192-2", "6.1.99-1", "6.1.192-1", "6.1.170-3"]
    assert sorted(versions, key=functools.cmp_to_key(debian.compare_versions)) == [
        "6.1.99-1",
        "6.1.170-3",
        "6.1.192-1",
        "6.1.192-2",
    ]


# --- the real thing -------------------------------------------------------------------------


@pytest.mark.slow
def test_two_real_point_releases_take_all_four_variants(
    real_project: Project, debian_tree: tuple[TreeRepo, list[str]]
) -> None:
    project = real_project
    tree, tags = debian_tree
    assert debian.imported_tags(tree.path) == tags
    ids = {t: repos.resolve(tree, t) for t in tags}
    assert repos.import_debian(project, tree, [t[1:] for t in tags], print) == []
    assert {t: repos.resolve(tree, t) for t in tags} == ids  # idempotent: no commit changed
    assert repos.resolve(tree, f"{tags[0]}~0") == ids[tags[0]]
    assert git(tree.path, "rev-parse", f"{tags[1]}~1").strip() == ids[tags[0]]

    wanted = {
        "vm-mixedmap": ("VM_DONTEXPAND | VM_DONTDUMP | VM_MIXEDMAP;", None),
        "vm-io": ("VM_DONTEXPAND | VM_DONTDUMP | VM_IO;", "VM_MIXEDMAP"),
        "none": ("VM_DONTEXPAND | VM_DONTDUMP;", "VM_MIXEDMAP"),
        "mempolicy": (".get_policy", "VM_MIXEDMAP"),
    }
    with slot(project, tree) as path:
        for tag in tags:
            for name, (present, absent) in wanted.items():
                result = checkout(project, tree, tag, find_variant(project, name), path)
                assert result.usable, result.detail
                source = (path / "drivers/xen/gntdev.c").read_text()
                assert present in source, (tag, name)
                if absent:
                    assert absent not in source, (tag, name)
                    changed = git(path, "status", "--porcelain", "--untracked-files=all")
                    assert changed.splitlines() == ["M  drivers/xen/gntdev.c"]
                    assert result.outcome == "applied"
