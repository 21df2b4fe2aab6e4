"""A small kernel-like git repository made by the tests: a few commits, tags, and patches that
apply, are already applied, or conflict."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

GNTDEV_V1 = textwrap.dedent(
    """\
    // fake gntdev.c
    static int gntdev_mmap(struct file *flip, struct vm_area_struct *vma)
    {
    \tint err = 0;

    \tvma->vm_ops = &gntdev_vmops;
    \tvma->vm_flags |= VM_DONTEXPAND | VM_DONTDUMP | VM_MIXEDMAP;

    \treturn err;
    }
    """
)


def git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@localhost",
        "GIT_COMMITTER_NAME": "Test Committer",
        "GIT_COMMITTER_EMAIL": "committer@localhost",
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout


def commit_file(repo: Path, rel: str, text: str, message: str) -> str:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(repo, "add", rel)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def make_kernel_repo(root: Path) -> Path:
    """v1: gntdev with VM_MIXEDMAP; v2: an unrelated file changes; v3: gntdev's flag line is
    rewritten (so a VM_IO patch written against v1 conflicts there)."""
    repo = root / "linux"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    commit_file(repo, "Makefile", "all:\n\t@echo built\n", "Makefile")
    commit_file(repo, "drivers/xen/gntdev.c", GNTDEV_V1, "xen/gntdev: add")
    git(repo, "tag", "v1")
    commit_file(repo, "mm/gup.c", "// gup\n", "mm: add gup")
    git(repo, "tag", "v2")
    commit_file(
        repo,
        "drivers/xen/gntdev.c",
        GNTDEV_V1.replace("VM_DONTEXPAND | VM_DONTDUMP | VM_MIXEDMAP", "VM_MIXEDMAP | VM_DONTCOPY"),
        "xen/gntdev: reorder flags",
    )
    git(repo, "tag", "v3")
    return repo


def make_patch(repo: Path, rel: str, old: str, new: str, subject: str, base: str = "v1") -> str:
    """A git format-patch of replacing `old` by `new` in `rel` on top of `base`."""
    git(repo, "checkout", "-q", "--detach", base)
    path = repo / rel
    path.write_text(path.read_text().replace(old, new))
    git(repo, "commit", "-q", "-am", subject)
    patch = git(repo, "format-patch", "--stdout", "-1", "HEAD")
    git(repo, "checkout", "-q", "master")
    return patch
