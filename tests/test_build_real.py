"""One real build of a Debian 6.1 kernel with the embedded dom0 profile, and variant switches
on it. The tree and the build are shared through the session's kbisect cache."""

from __future__ import annotations

import pytest

from kbisect.build import builder
from kbisect.config import Project
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.repos import TreeRepo
from kbisect.tree.variants import find_variant

pytestmark = pytest.mark.kernel_build

KO = "kernel/drivers/xen/xen-gntdev.ko"


@pytest.mark.slow
def test_dom0_build_and_variant_switch(
    real_project: Project, debian_tree: tuple[TreeRepo, list[str]]
) -> None:
    project = real_project
    tree, tags = debian_tree
    newest = tags[-1]
    profile = project.profiles["xen-dom0"]
    outcomes = {}
    with slot(project, tree) as path:
        for name in ("vm-mixedmap", "vm-io", "vm-mixedmap"):
            co = checkout(project, tree, newest, find_variant(project, name), path)
            outcomes.setdefault(name, []).append(builder.build(project, co, profile))
    first, io, again = outcomes["vm-mixedmap"][0], outcomes["vm-io"][0], outcomes["vm-mixedmap"][1]
    # built here, or already by another test of this session (dom0_builds): either way once
    assert first.status in ("built", "hit"), first.errors
    assert io.status in ("built", "hit"), io.errors
    assert again.status == "hit" and again.key == first.key
    assert first.artifact and io.artifact

    config = (first.artifact.path / "config").read_text()
    assert "CONFIG_XEN_GNTDEV=m" in config and "CONFIG_XEN_PV_DOM0=y" in config
    release = first.meta["kernel_release"]
    assert release.startswith("6.1.")
    base_ko = first.artifact.modules / "lib/modules" / release / KO
    io_ko = io.artifact.modules / "lib/modules" / release / KO
    assert base_ko.is_file() and io_ko.is_file()
    assert (first.artifact.modules / "lib/modules" / release / "modules.dep").is_file()

    # the variant switch recompiled gntdev and nothing outside drivers/xen, bzImage unchanged
    assert io_ko.read_bytes() != base_ko.read_bytes()
    assert io.artifact.bzimage.read_bytes() == first.artifact.bzimage.read_bytes()
    rebuilt = io.meta["rebuilt_objects"]
    assert "drivers/xen/gntdev.o" in rebuilt
    assert all(obj.startswith("drivers/xen/") for obj in rebuilt), rebuilt
