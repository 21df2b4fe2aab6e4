"""The embedded host's root filesystem: an initramfs kbisect assembles for each deploy.

busybox-static for the userland, the build's modules, dropbear (with the libraries it links)
holding a host key kbisect generated and the lab's authorized key, the job binaries, and an /init
that brings up the network and prints a marker on the console when SSH is ready.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

from kbisect import processes
from kbisect.errors import InfraError
from kbisect.processes import PIPE, CommandExited

READY_MARKER = "KBISECT-DOM0-READY"
BUSYBOX = Path("/bin/busybox")
DROPBEAR = Path("/usr/sbin/dropbear")

INIT = f"""#!/bin/busybox sh
# kbisect embedded dom0 init (generated)
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run /var/log /root /dev/pts /proc/xen
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t xenfs xenfs /proc/xen 2>/dev/null
hostname kbisect-dom0
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "kbisect: dom0 $(uname -r) up, starting dropbear" > /dev/console
dropbear -R -E -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid \\
  2>>/var/log/dropbear.log
echo "{READY_MARKER} $(cat /etc/kbisect-build 2>/dev/null)" > /dev/console
"""
KEEP_RUNNING = "while true; do sleep 3600; done\n"
CONSOLE_PROMPT = "kbisect-dom0# "
# A shell on the console instead, for a lab that drives the host through it (LAVA).
CONSOLE_SHELL = f"export PS1='{CONSOLE_PROMPT}'\nexec setsid cttyhack /bin/sh\n"


@dataclass(frozen=True)
class InitramfsInputs:
    modules: Path  # staging dir holding lib/modules/RELEASE
    host_key: Path  # dropbear-format ed25519 host key
    authorized_key: str  # one OpenSSH public key line
    build_identity: str  # written to /etc/kbisect-build, checked after boot
    extra_files: dict[str, Path]  # path in the image -> file on this machine
    console_shell: bool = False  # a shell on the console once up (else init just waits)


def _libraries(binary: Path) -> list[Path]:
    """Shared libraries (and the loader) a binary needs, from ldd."""
    try:
        out = processes.run(["ldd", str(binary)], deadline=30, what="building the initramfs")
    except CommandExited as exc:
        if any("not a dynamic executable" in line for line in exc.tail):
            return []  # static: it needs none
        raise
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        for part in parts:
            if part.startswith("/") and Path(part).exists():
                libs.append(Path(part))
    return libs


def _copy(src: Path, root: Path, dest: str, mode: int | None = None) -> None:
    target = root / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    target.chmod(mode if mode is not None else (src.stat().st_mode & 0o777))


def build_initramfs(inputs: InitramfsInputs, out: Path, scratch: Path) -> Path:
    """Write a gzip'd newc cpio archive to `out` (atomically)."""
    for tool in (BUSYBOX, DROPBEAR):
        if not tool.exists():
            raise InfraError(
                f"{tool} is missing (./bootstrap installs busybox-static and dropbear-bin)"
            )
    root = scratch / "root"
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/dropbear", "root/.ssh", "lib", "lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _copy(BUSYBOX, root, "/bin/busybox", 0o755)
    _copy(DROPBEAR, root, "/usr/sbin/dropbear", 0o755)
    for lib in _libraries(DROPBEAR):
        _copy(lib, root, str(lib), 0o755)
    (root / "init").write_text(INIT + (CONSOLE_SHELL if inputs.console_shell else KEEP_RUNNING))
    (root / "init").chmod(0o755)
    _copy(inputs.host_key, root, "/etc/dropbear/dropbear_ed25519_host_key", 0o600)
    (root / "root/.ssh/authorized_keys").write_text(inputs.authorized_key.strip() + "\n")
    (root / "root/.ssh/authorized_keys").chmod(0o600)
    (root / "etc/kbisect-build").write_text(inputs.build_identity + "\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shells").write_text("/bin/sh\n")
    if (inputs.modules / "lib").is_dir():
        shutil.copytree(inputs.modules / "lib", root / "lib", dirs_exist_ok=True, symlinks=True)
    for dest, src in inputs.extra_files.items():
        _copy(src, root, dest, 0o755)
    partial = out.with_name(out.name + ".partial")
    listing = scratch / "files.txt"
    listing.write_text("\n".join(sorted(str(p.relative_to(root)) for p in root.rglob("*"))) + "\n")
    with (
        listing.open("rb") as names,
        partial.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz,
        processes.start(
            ["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0"],
            cwd=root,
            stdin=names,
            stdout=PIPE,
            what="packing the initramfs",
        ) as cpio,
    ):
        assert cpio.stdout is not None
        shutil.copyfileobj(cpio.stdout, gz)
        cpio.check(120)
    partial.rename(out)
    shutil.rmtree(root, ignore_errors=True)
    return out
