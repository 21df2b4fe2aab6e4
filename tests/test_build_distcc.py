"""Distributed builds for real: a distccd in a namespace of its own (the second machine), kbisect
building from another namespace, with the builder declared in configs/builds.yaml.

On the small fake kernel: the compiles reach the builder (its own log and statistics say which),
the key and the objects are those of a local build, a builder that does not answer only costs a
local compile. On Debian's 6.1 (slow): a variant switch distributed gives the session's local
artifact byte for byte, and the kernel built that way boots on the embedded host and passes
gntstress.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests import test_build
from tests.conftest import REPO, MakeProject
from tests.distcc_lab import DistccLab, copy_project, declare_builders, kbisect_build
from tests.test_build import build

from kbisect.build import builder
from kbisect.build.distributed import describe
from kbisect.build.store import Artifact
from kbisect.config import Distcc, Project, load_project
from kbisect.errors import ConfigError
from kbisect.results.store import ResultsStore
from kbisect.tree import repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.variants import find_variant

project = test_build.project  # the fake kernel's project, a fixture

KO = "lib/modules/6.1.0-fake/kernel/drivers/xen/xen-gntdev.ko"
DOM0_KO = "kernel/drivers/xen/xen-gntdev.ko"


@pytest.fixture
def distcc_lab(tmp_path: Path) -> Iterator[DistccLab]:
    lab = DistccLab(tmp_path / "lab")
    try:
        yield lab
    finally:
        lab.close()


@pytest.mark.needs_root
@pytest.mark.slow  # seconds: a daemon in a namespace, a build through the command line
def test_distributed_build_compiles_on_the_builder_with_the_same_key(
    project: Project, distcc_lab: DistccLab, tmp_path: Path
) -> None:
    local_co, local = build(project, "v1", "io")
    assert local.artifact is not None and "distributed" not in local.meta
    declare_builders(project.root, [distcc_lab.host])
    # a cache of its own: a ccache hit would compile nothing anywhere
    shown = kbisect_build(
        distcc_lab, project.root, tmp_path / "cache-distcc", "fake", "v1", "io", "dom0"
    )
    assert shown["key"] == local.key and shown["status"] == "built"
    compiled = distcc_lab.compiled()
    assert {"core.c", "gntdev.c"} <= set(compiled), compiled
    assert int(distcc_lab.stats()["dcc_compile_ok"]) == len(compiled)
    there = Path(shown["artifact"])
    meta = json.loads((there / "meta.json").read_text())
    assert meta["distributed"] == {
        "tool": "distcc",
        "hosts": [distcc_lab.host],
        "local_fallbacks": 0,
    }
    assert (there / "modules" / KO).read_bytes() == (local.artifact.modules / KO).read_bytes()
    assert local_co.tree_id == meta["tree_id"]
    env = {**os.environ, "KBISECT_ROOT": str(project.root), "KBISECT_CACHE": str(tmp_path / "c")}
    checked = distcc_lab.in_controller([sys.executable, "-m", "kbisect", "check"], env, 60)
    assert (
        f"builds: distcc, make -j{2 + (os.cpu_count() or 1)}: {distcc_lab.host} (answers)"
        in checked
    )


def test_builder_that_does_not_answer_costs_a_local_compile_not_a_result(
    project: Project,
) -> None:
    _, local = build(project, "v1", None)
    shutil.rmtree(project.cache_dir)  # again, from nothing, with a builder nobody runs
    declare_builders(project.root, ["127.0.0.1:1/2"])
    distributed = load_project(project.root)
    assert distributed.distcc is not None
    _, again = build(distributed, "v1", None)
    assert again.status == "built" and again.key == local.key
    assert again.meta["distributed"]["local_fallbacks"] >= 2  # core.c and gntdev.c at least
    assert "failed to distribute" in again.log.read_text()
    assert "127.0.0.1:1/2 (does not answer: Connection refused;" in describe(distributed.distcc)
    assert describe(None).startswith("local")


def test_distcc_section_is_checked_where_it_is_written(make_project: MakeProject) -> None:
    root = make_project(
        {
            "configs/builds.yaml": """
                profiles:
                  - {name: dom0, base: tinyconfig}
                distcc:
                  hosts: ["builder1/8", "builder 2"]
                """
        }
    )
    with pytest.raises(ConfigError) as raised:
        load_project(root)
    text = str(raised.value)
    assert "builds.yaml:4:" in text and "distcc.hosts[1]" in text
    assert "HOST[:PORT][/LIMIT] or USER@HOST" in text


def test_distributed_jobs_fill_every_builder() -> None:
    distcc = Distcc(hosts=["a.example/8", "b.example:3632", "10.0.0.3/2,lzo", "k@c/1"])
    assert not distcc.check() and distcc.host_limits() == 8 + 4 + 2 + 1
    assert builder.distributed.jobs(distcc) == 15 + (os.cpu_count() or 1)
    assert builder.distributed.jobs(Distcc(hosts=["a"], jobs=5)) == 5


# ---------------------------------------------------------------------------------------------
# the real kernel


@pytest.mark.needs_root
@pytest.mark.kernel_build
@pytest.mark.vm
def test_dom0_variant_switch_distributed_boots_and_passes_gntstress(
    real_project: Project,
    dom0_builds: dict[str, Artifact],
    debian_tree: tuple[object, list[str]],
    distcc_lab: DistccLab,
    tmp_path: Path,
) -> None:
    rev = debian_tree[1][-1]
    local = dom0_builds["vm-mixedmap"]  # the session's build tree last built another variant
    release = local.meta["kernel_release"]
    local_ko = (local.modules / "lib/modules" / release / DOM0_KO).read_bytes()
    tree = repos.open_tree(real_project, "debian-6.1")
    with slot(real_project, tree) as path:  # another variant, so that gntdev.c changes again
        checkout(real_project, tree, rev, find_variant(real_project, "vm-io"), path)
    aside = tmp_path / "local-artifact"
    shutil.move(local.path, aside)  # so that the same key is built again, distributed
    try:
        root = copy_project(tmp_path / "project", [distcc_lab.host])
        os.environ["CCACHE_RECACHE"] = "1"  # compile for real: the shared ccache has it all
        try:
            where = ("debian-6.1", rev, "vm-mixedmap", "xen-dom0")
            shown = kbisect_build(distcc_lab, root, real_project.cache_dir, *where)
        finally:
            del os.environ["CCACHE_RECACHE"]
        assert shown["key"] == local.key and shown["status"] == "built"
        assert "gntdev.c" in distcc_lab.compiled()
        meta = json.loads((local.path / "meta.json").read_text())
        assert meta["distributed"]["local_fallbacks"] == 0
        # the module compiled on the builder is the local one, byte for byte (the bzImage is not
        # compared: it is relinked, with a new build number, when the shared build tree last
        # built another revision, as after a bisection)
        assert (local.modules / "lib/modules" / release / DOM0_KO).read_bytes() == local_ko

        # the distributed artifact (now the one in the store under that key) boots and passes
        results = tmp_path / "results"
        env = {**os.environ, "KBISECT_ROOT": str(REPO), "KBISECT_RESULTS": str(results)}
        done = subprocess.run(
            [sys.executable, "-m", "kbisect", "run", "--tree", "debian-6.1", "--rev", rev,
             "--variant", "vm-mixedmap", "--job", "gntstress"],
            capture_output=True, text=True, env=env, timeout=1200, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        with ResultsStore(results) as store:
            cells = [c for r in store.runs() for c in store.cells(r.id)]
        assert [c.build_key for c in cells] == [local.key]
        assert cells[0].subtests and all(s.status.value == "PASS" for s in cells[0].subtests)
    finally:
        # The session's own build goes back: later tests compare other variants' builds with
        # it, and the distributed one was linked after whatever the shared tree built last.
        if aside.exists():
            shutil.rmtree(local.path, ignore_errors=True)
            shutil.move(aside, local.path)
