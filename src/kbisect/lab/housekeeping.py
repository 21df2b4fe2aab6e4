"""What kbisect installs on a machine that boots from its own disk, and removing the old of it,
so that months of nightlies never fill /boot.

kbisect's files are known by their names: `vmlinuz-kbisect-KEY` and `initrd.img-kbisect-KEY` in
the boot directory, and module trees (named by the kernel release, which kbisect does not choose)
that carry a `kbisect.build` file with the key of the build that installed them. A tree without
that mark, and any other file, is the distribution's and is never removed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.ssh import SshSession
from kbisect.lab.ssh.commands import sh_script

KERNEL_PREFIX = "vmlinuz-kbisect-"
CONFIG_PREFIX = "config-"  # + release: the name mkinitramfs reads
INITRD_PREFIX = "initrd.img-kbisect-"
MODULES_MARK = "kbisect.build"  # in a module tree kbisect installed: the key of its build
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_SECONDS = 60.0

# Lists kbisect's builds in the boot directory ($1), newest first (by the time they were
# uploaded), and the module trees under $2 that carry kbisect's mark. Plain POSIX sh.
_LIST = rf"""
if cd "$1" 2>/dev/null; then
    for f in $(ls -1t -- {KERNEL_PREFIX}* {INITRD_PREFIX}* 2>/dev/null); do echo "boot $f"; done
fi
for m in "$2"/*/{MODULES_MARK}; do
    [ -f "$m" ] || continue
    read -r k < "$m" || continue
    d=${{m%/{MODULES_MARK}}}
    echo "modules ${{d##*/}} $k"
done
exit 0
"""


@dataclass(frozen=True)
class Installed:
    """kbisect's builds on a host: keys newest first, and module trees -> the build's key."""

    builds: tuple[str, ...]
    module_trees: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Installed:
        builds: list[str] = []
        trees: dict[str, str] = {}
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "boot":
                key = _key_of(rest)
                if key is not None and key not in builds:
                    builds.append(key)
            elif kind == "modules":
                tree, _, key = rest.partition(" ")
                if _SAFE_NAME.fullmatch(tree) and _SAFE_NAME.fullmatch(key):
                    trees[tree] = key
        return cls(tuple(builds), trees)


def _key_of(name: str) -> str | None:
    for prefix in (KERNEL_PREFIX, INITRD_PREFIX):
        if name.startswith(prefix) and _SAFE_NAME.fullmatch(name[len(prefix) :]):
            return name[len(prefix) :]
    return None


def kept_builds(
    installed: Installed, *, keep: int, installing: str | None, booted: str | None
) -> set[str]:
    """The builds that stay: the `keep` newest, counting the one being installed first, and
    always the one the host runs."""
    newest = [installing] if installing else []
    newest += [key for key in installed.builds if key != installing]
    kept = set(newest[: max(keep, 1 if installing else 0)])
    return kept | ({booted} if booted else set())


@dataclass(frozen=True)
class Removal:
    """Paths on the host to remove: kbisect's files of builds that are not kept."""

    files: tuple[str, ...]
    trees: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.files or self.trees)


def removal(
    installed: Installed,
    kept: set[str],
    *,
    boot_dir: str,
    modules_dir: str,
    running_release: str,
) -> Removal:
    """What to remove so that only the `kept` builds stay (the running release's modules
    always stay, whoever installed them)."""
    gone = [key for key in installed.builds if key not in kept]
    files = [
        f"{boot_dir}/{prefix}{key}" for key in gone for prefix in (KERNEL_PREFIX, INITRD_PREFIX)
    ]
    releases = [
        tree
        for tree, key in sorted(installed.module_trees.items())
        if key not in kept and tree != running_release
    ]
    # the config installed with a release (for mkinitramfs) goes with its module tree
    files += [f"{boot_dir}/{CONFIG_PREFIX}{release}" for release in releases]
    return Removal(tuple(files), tuple(f"{modules_dir}/{tree}" for tree in releases))


def list_installed(session: SshSession, boot_dir: str, modules_dir: str) -> Installed:
    result = session.run(sh_script(_LIST, boot_dir, modules_dir), Deadline(_SECONDS))
    if not result.ok:
        raise InfraError(f"listing kbisect's builds on the host failed: {result.stderr!r:.200}")
    return Installed.parse(result.text())


def remove(session: SshSession, host: str, gone: Removal) -> None:
    """Remove the files and module trees (nothing else: the paths are kbisect's)."""
    if not gone:
        return
    argv = ["rm", "-rf", "--", *gone.files, *gone.trees]
    result = session.run(argv, Deadline(_SECONDS))
    if not result.ok:
        raise InfraError(
            f"{host}: removing old kbisect builds failed: `{shlex.join(argv)[:200]}` exited "
            f"{result.status}: {result.stderr.decode(errors='replace').strip()[-300:]}"
        )
