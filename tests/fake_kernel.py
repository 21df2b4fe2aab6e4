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


# --- a tree that builds: a tiny stand-in for kbuild, written for these tests ----------------

FAKE_MAKEFILE = """\
# Fake kernel build for kbisect's tests: honours O=, ARCH=, CC=, INSTALL_MOD_PATH=,
# and fails on request (FAKE_FAIL=enospc|hang) the way a real build can.
O ?= .
CC ?= gcc

tinyconfig defconfig allnoconfig:
\t@mkdir -p $(O)
\t@printf 'CONFIG_64BIT=y\\n' > $(O)/.config

olddefconfig:
\t@sh scripts/olddefconfig.sh $(O)/.config Kconfig

$(O)/core.o: core.c $(O)/.config
\t$(CC) -c core.c -o $@

$(O)/drivers/xen/gntdev.o: drivers/xen/gntdev.c $(O)/.config
\t@mkdir -p $(O)/drivers/xen
\t$(CC) -c drivers/xen/gntdev.c -o $@

$(O)/drivers/xen/xen-gntdev.ko: $(O)/drivers/xen/gntdev.o
\tcp $< $@

bzImage: $(O)/core.o
ifeq ($(FAKE_FAIL),enospc)
\t@echo "core.o: write error: No space left on device"; exit 1
endif
ifeq ($(FAKE_FAIL),hang)
\tsleep 300
endif
\t@mkdir -p $(O)/arch/x86/boot
\tcat $(O)/core.o > $(O)/arch/x86/boot/bzImage
\t@echo "ffffffff81000000 T _text" > $(O)/System.map

modules: $(O)/drivers/xen/xen-gntdev.ko

modules_install:
\tmkdir -p $(INSTALL_MOD_PATH)/lib/modules/6.1.0-fake/kernel/drivers/xen
\tcp $(O)/drivers/xen/xen-gntdev.ko $(INSTALL_MOD_PATH)/lib/modules/6.1.0-fake/kernel/drivers/xen/
\tln -sfn $(O) $(INSTALL_MOD_PATH)/lib/modules/6.1.0-fake/build

kernelrelease:
\t@echo 6.1.0-fake
"""

# olddefconfig: keep only symbols the Kconfig file declares (like a dependency dropping them)
FAKE_OLDDEFCONFIG = """\
#!/bin/sh
awk 'NR == FNR { if ($1 == "config") known["CONFIG_" $2] = 1; next }
     { split($0, kv, "="); if (kv[1] in known) print }' "$2" "$1" > "$1.new" && mv "$1.new" "$1"
"""

# merge_config.sh -m -O DIR BASE FRAGMENT...: later files override earlier ones
FAKE_MERGE = """\
#!/bin/sh
shift; shift; out=$1; shift
awk -F= '/^CONFIG_/ { v[$1] = $0; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
         END { for (i = 0; i < n; i++) print v[order[i]] }' "$@" > "$out/.config.merged"
mv "$out/.config.merged" "$out/.config"
"""

FAKE_GNTDEV = "int gntdev_flags(void) { return 0x10000000; /* VM_MIXEDMAP */ }\n"


def make_buildable_repo(root: Path) -> Path:
    """v1 builds; v2 changes only core.c."""
    repo = root / "linux-build"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    files = {
        "Makefile": FAKE_MAKEFILE,
        "Kconfig": "config 64BIT\nconfig XEN\nconfig XEN_GNTDEV\n",
        "scripts/olddefconfig.sh": FAKE_OLDDEFCONFIG,
        "scripts/kconfig/merge_config.sh": FAKE_MERGE,
        "core.c": "int core(void) { return 1; }\n",
        "drivers/xen/gntdev.c": FAKE_GNTDEV,
    }
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel.endswith(".sh"):
            path.chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fake kernel")
    git(repo, "tag", "v1")
    commit_file(repo, "core.c", "int core(void) { return 2; }\n", "core: change")
    git(repo, "tag", "v2")
    return repo
