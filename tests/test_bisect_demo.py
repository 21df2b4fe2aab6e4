"""The real demo bisection: the demo history on Debian's newest 6.1 release, bisected with the
gntstress job on the embedded Xen host, finds and validates the commit that brings VM_IO back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from kbisect.build.store import Artifact
from kbisect.config import Project
from kbisect.tree.demo import make_demo_history
from kbisect.tree.repos import TreeRepo

pytestmark = pytest.mark.vm  # boots the embedded Xen host under QEMU


@pytest.mark.slow
def test_demo_bisection_finds_vm_io_on_the_embedded_host(
    real_project: Project,
    debian_tree: tuple[TreeRepo, list[str]],
    dom0_builds: dict[str, Artifact],  # warms the build tree, so steps are incremental
    tmp_path: Path,
) -> None:
    tree, tags = debian_tree
    history = make_demo_history(tree, tags[-1], commits=8)
    env = {**os.environ, "KBISECT_ROOT": str(REPO), "KBISECT_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "bisect", "--tree", "debian-6.1",
         "--good", tags[-1], "--bad", history.branch, "--job", "gntstress",
         "--test", "odirect-read"],
        capture_output=True, text=True, env=env, timeout=2400, check=False,
    )  # fmt: skip
    print(done.stdout[-6000:], done.stderr[-2000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    data = json.loads((tmp_path / "bisect/1/report.json").read_text())
    assert data["status"] == "confirmed"
    assert data["culprit"]["commit"] == history.culprit.id
    assert data["culprit"]["files"] == ["drivers/xen/gntdev.c"]
    checks = {v["name"]: v["ok"] for v in data["validations"]}
    assert checks == {"culprit": True, "parent": True, "revert": True}
    assert not data["flags"], data["flags"]
    # every step that was judged bad failed odirect-read with EFAULT, the VM_IO signature
    bad_steps = [s for s in data["steps"] if s["verdict"] == "bad"]
    assert bad_steps and all("Bad address" in s["detail"] for s in bad_steps)
