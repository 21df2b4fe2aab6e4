"""Builds on a small fake kernel tree (real make, gcc and ccache): keys, cache hits, variant
rebuilds, failure classification, atomic publishing and pruning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import MakeProject
from tests.fake_kernel import make_buildable_repo, make_patch

from kbisect.build import builder
from kbisect.build.store import ArtifactStore
from kbisect.config import load_project
from kbisect.config.project import Project
from kbisect.errors import InfraError
from kbisect.tree import repos
from kbisect.tree.checkout import Checkout, checkout, slot
from kbisect.tree.variants import find_variant


@pytest.fixture
def project(tmp_path: Path, make_project: MakeProject) -> Project:
    kernel = make_buildable_repo(tmp_path / "src")
    io = make_patch(
        kernel,
        "drivers/xen/gntdev.c",
        "0x10000000; /* VM_MIXEDMAP */",
        "0x00004000; /* VM_IO */",
        "use VM_IO",
    )
    broken = make_patch(
        kernel,
        "drivers/xen/gntdev.c",
        "return 0x10000000;",
        "return 0x10000000",
        "forget a semicolon",
    )
    root = make_project(
        {
            "configs/trees.yaml": f"trees:\n  - name: fake\n    url: {kernel}\n",
            "configs/builds.yaml": """
                profiles:
                  - {name: dom0, base: tinyconfig, fragments: [frag/dom0.config]}
                  - {name: typo, base: tinyconfig, fragments: [frag/typo.config]}
                  - {name: slow, base: tinyconfig, fragments: [frag/dom0.config], build_timeout: 3}
                """,
            "configs/frag/dom0.config": "CONFIG_XEN=y\nCONFIG_XEN_GNTDEV=m\n",
            "configs/frag/typo.config": "CONFIG_XEN=y\nCONFIG_XEN_GNTDEVV=m\n",
            "seeds/exp/experiment.yaml": """
                name: exp
                title: t
                question: q
                variants:
                  - {name: io, description: d, patches: [io.patch]}
                  - {name: broken, description: d, patches: [broken.patch]}
                """,
            "seeds/exp/io.patch": io,
            "seeds/exp/broken.patch": broken,
        }
    )
    return load_project(root)


def build(
    project: Project, rev: str, variant: str | None, profile: str = "dom0"
) -> tuple[Checkout, builder.BuildOutcome]:
    tree = repos.open_tree(project, "fake")
    with slot(project, tree) as path:
        co = checkout(project, tree, rev, find_variant(project, variant), path)
        return co, builder.build(project, co, project.profiles[profile])


def staging_dirs(project: Project) -> list[Path]:
    return list((project.cache_dir / "artifacts").glob(".staging-*"))


def test_build_publishes_a_complete_artifact(project: Project) -> None:
    co, out = build(project, "v1", None)
    assert out.status == "built" and out.artifact is not None
    art = out.artifact.path
    assert (art / "bzImage").is_file() and (art / "System.map").is_file()
    assert "CONFIG_XEN_GNTDEV=m" in (art / "config").read_text()
    assert (art / "modules/lib/modules/6.1.0-fake/kernel/drivers/xen/xen-gntdev.ko").is_file()
    assert not (art / "modules/lib/modules/6.1.0-fake/build").exists()  # no link into the cache
    meta = out.meta
    assert meta["commit"] == co.commit and meta["kernel_release"] == "6.1.0-fake"
    assert set(meta["rebuilt_objects"]) == {
        "core.o",
        "drivers/xen/gntdev.o",
        "drivers/xen/xen-gntdev.ko",
    }
    assert meta["ccache"]["hits"] + meta["ccache"]["misses"] >= 2
    assert "gcc" in meta["toolchain"]
    assert meta["sizes"]["bzImage"] == (art / "bzImage").stat().st_size
    assert (
        meta["sizes"]["modules"]
        >= (art / "modules/lib/modules/6.1.0-fake/kernel/drivers/xen/xen-gntdev.ko").stat().st_size
    )
    assert staging_dirs(project) == []


def test_second_request_is_a_hit_that_compiles_nothing(project: Project) -> None:
    _, first = build(project, "v1", None)
    out_dir = project.cache_dir / "buildtrees" / "fake" / "slot-0" / "dom0"
    before = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*.o")}
    _, again = build(project, "v1", None)
    assert again.status == "hit" and again.key == first.key
    assert {p: p.stat().st_mtime_ns for p in out_dir.rglob("*.o")} == before


def test_variant_switch_rebuilds_only_the_module(project: Project) -> None:
    _, base = build(project, "v1", None)
    _, io = build(project, "v1", "io")
    assert io.status == "built" and io.key != base.key
    assert io.meta["rebuilt_objects"] == ["drivers/xen/gntdev.o", "drivers/xen/xen-gntdev.ko"]
    assert base.artifact and io.artifact
    assert (io.artifact.bzimage).read_bytes() == base.artifact.bzimage.read_bytes()
    ko = "modules/lib/modules/6.1.0-fake/kernel/drivers/xen/xen-gntdev.ko"
    assert (io.artifact.path / ko).read_bytes() != (base.artifact.path / ko).read_bytes()
    # back to the base is a hit; a new revision rebuilds what differs from the build tree's
    # last contents: v2's core.c, and gntdev.c, which the tree last held patched
    assert build(project, "v1", None)[1].status == "hit"
    _, v2 = build(project, "v2", None)
    assert v2.meta["rebuilt_objects"] == [
        "core.o",
        "drivers/xen/gntdev.o",
        "drivers/xen/xen-gntdev.ko",
    ]
    _, v2_io = build(project, "v2", "io")
    assert v2_io.meta["rebuilt_objects"] == ["drivers/xen/gntdev.o", "drivers/xen/xen-gntdev.ko"]


def test_dropped_profile_symbol_fails_the_build_by_name(project: Project) -> None:
    _, out = build(project, "v1", None, profile="typo")
    assert out.status == "failed"
    assert out.errors == [
        "profile symbols dropped by olddefconfig: CONFIG_XEN_GNTDEVV=m (got absent)"
    ]
    assert store(project).get(out.key) is None


def test_compile_error_is_a_build_failure_naming_file_and_line(project: Project) -> None:
    _, out = build(project, "v1", "broken")
    assert out.status == "failed" and out.artifact is None
    assert out.errors[0].startswith("drivers/xen/gntdev.c:1:")
    assert "error" not in out.errors[0].split(": ", 1)[0]
    assert "expected ';'" in out.errors[0]
    assert store(project).get(out.key) is None and staging_dirs(project) == []
    assert out.log.is_file()


def test_disk_full_is_an_infrastructure_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "enospc")
    with pytest.raises(InfraError, match="disk filled"):
        build(project, "v1", None)
    assert staging_dirs(project) == [] and store(project).artifacts() == []


def test_build_past_its_deadline_is_stopped(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "hang")
    with pytest.raises(InfraError, match="did not finish within the build's 3 s"):
        build(project, "v1", None, profile="slow")
    assert staging_dirs(project) == [] and store(project).artifacts() == []
    assert not _processes_running("sleep 300")


def test_missing_make_is_an_infrastructure_error(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = repos.open_tree(project, "fake")
    with slot(project, tree) as path:
        co = checkout(project, tree, "v1", find_variant(project, None), path)
        empty = tmp_path / "emptybin"
        empty.mkdir()
        for tool in ("gcc", "ccache", "depmod"):  # everything but make
            target = Path(os.popen(f"command -v {tool} || echo /sbin/{tool}").read().strip())
            (empty / tool).symlink_to(target)
        monkeypatch.setenv("PATH", str(empty))
        with pytest.raises(InfraError, match="build tools missing: make"):
            builder.build(project, co, project.profiles["dom0"])


def store(project: Project) -> ArtifactStore:
    return builder.store_for(project)


def _processes_running(needle: str, marker: bytes = b"FAKE_FAIL=hang") -> bool:
    """Whether a process runs `needle` with `marker` in its environment: the fake tree's own
    hanging recipe, not another program's `sleep 300` on the same machine."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if needle in command and marker in (proc / "environ").read_bytes().split(b"\0"):
                    return True
            except OSError:
                continue
    return False


# --- the store on its own -------------------------------------------------------------------


def publish(s: ArtifactStore, key: str, size: int) -> None:
    staging = s.staging(key)
    (staging / "bzImage").write_bytes(b"x" * size)
    s.publish(key, staging, {"key": key})


def test_store_prunes_least_recently_used(tmp_path: Path) -> None:
    s = ArtifactStore(tmp_path / "a", limit_bytes=10_000)
    for key in ("a", "b", "c"):
        publish(s, key, 4000)
        os.utime(s.root / key, (1000 + ord(key), 1000 + ord(key)))  # a oldest ... c newest
    assert s.get("a") is None
    assert s.get("b") is not None  # b is now the most recently used
    publish(s, "d", 4000)
    assert sorted(a.key for a in s.artifacts()) == ["b", "d"]


def test_half_written_artifact_is_never_visible(tmp_path: Path) -> None:
    s = ArtifactStore(tmp_path / "a", limit_bytes=10**9)
    staging = s.staging("k")
    (staging / "bzImage").write_bytes(b"partial")
    assert s.get("k") is None and s.artifacts() == []
    dead = s.root / ".staging-old-999999999"
    dead.mkdir()
    s.prune()
    assert not dead.exists() and staging.exists()  # our own (live pid) staging stays
