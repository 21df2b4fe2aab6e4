"""The emulated rack machine's disk image: Debian with Xen, GRUB2 and OpenSSH, built from Debian's
packages with mmdebstrap and cached under the kbisect cache by a hash of its recipe.

What makes it a rack machine rather than a special case: it boots SeaBIOS -> GRUB2 (from its MBR)
-> Xen -> Debian's own kernel as dom0 -> systemd -> OpenSSH, with `GRUB_DEFAULT=saved` so that
`grub-reboot` arms an entry once, and the serial console carrying GRUB, Xen and dom0. What is
particular to it is only how it gets the lab's public key: from a small seed disk (label KBSEED)
that kbisect attaches, so one image serves every project and key.

Building needs root (mmdebstrap, chroot, a root-owned file tree); about 90 s here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from kbisect import processes
from kbisect.config.model import EmulatedMachine
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.machine.disk import SEED_LABEL, DiskLayout, make_disk
from kbisect.progress import Say

# What every image has. Debian's kernel is the known-good one (the fallback entry); procps and
# kmod give the jobs sysctl and modprobe; initramfs-tools builds each deployed kernel's initrd.
PACKAGES = (
    "systemd-sysv", "udev", "kmod", "procps", "iproute2", "openssh-server", "initramfs-tools",
    "linux-image-amd64", "grub-pc", "xen-system-amd64",
)  # fmt: skip
# Units that only cost boot time on a test machine (timers that run apt or scrub file systems,
# and xendomains, which waits for domUs that never exist).
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    "fstrim.timer", "xendomains.service",
)  # fmt: skip
ROOT_LABEL = "kbroot"
MACHINE_HOSTNAME = "kbisect-rack"
XEN_ENTRY_TITLE = re.compile(r"^menuentry '([^']*Xen hypervisor[^']*)'", re.MULTILINE)
_MMDEBSTRAP_SECONDS = 1800.0
_RECIPE_VERSION = 1  # bumped when the build below changes what an image holds


@dataclass(frozen=True)
class ImageRecipe:
    """Everything that decides an image's contents; its hash names the cached image."""

    suite: str
    mirror: str
    packages: tuple[str, ...]
    disk_gb: int
    dom0_memory_mb: int
    dom0_cmdline: str
    version: int = _RECIPE_VERSION

    @classmethod
    def of(cls, machine: EmulatedMachine) -> ImageRecipe:
        return cls(
            suite=machine.suite,
            mirror=machine.mirror,
            packages=(*PACKAGES, *machine.extra_packages),
            disk_gb=machine.disk_gb,
            dom0_memory_mb=machine.dom0_memory_mb,
            dom0_cmdline=machine.dom0_cmdline,
        )

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True) + _customize_script("UUID", self)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def root_uuid(self) -> str:
        """The root file system's UUID: fixed by the recipe, so grub.cfg can be made offline."""
        return str(uuid.UUID(hashlib.sha256(self.key.encode()).hexdigest()[:32]))


@dataclass(frozen=True)
class MachineImage:
    """A built image: the raw disk and what was recorded about it."""

    disk: Path
    info: dict[str, str]

    @property
    def fallback_entry(self) -> str:
        """The title of GRUB's Xen entry with Debian's kernel (the saved default)."""
        return self.info["fallback_entry"]


def images_dir(cache_dir: Path) -> Path:
    return cache_dir / "machines"


def cached_image(recipe: ImageRecipe, cache_dir: Path) -> MachineImage | None:
    directory = images_dir(cache_dir) / recipe.key
    info = directory / "image.json"
    disk = directory / "disk.img"
    if not (info.is_file() and disk.is_file()):
        return None
    return MachineImage(disk, json.loads(info.read_text()))


def ensure_image(recipe: ImageRecipe, cache_dir: Path, say: Say) -> MachineImage:
    """The cached image for `recipe`, built first if there is none."""
    found = cached_image(recipe, cache_dir)
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise InfraError(
            f"the machine image {recipe.key} is not built yet, and building it needs root "
            "(mmdebstrap, chroot): run `sudo kbisect lab.image HOST` once"
        )
    directory = images_dir(cache_dir) / recipe.key
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / f"{recipe.key}.lock").open("w") as lock:
        _lock(lock, Deadline(_MMDEBSTRAP_SECONDS + 600), say)  # one build per image
        found = cached_image(recipe, cache_dir)
        if found is not None:
            return found
        work = directory.with_name(f"{recipe.key}.partial")
        shutil.rmtree(work, ignore_errors=True)  # a build that was killed leaves this
        work.mkdir()
        try:
            image = _build(recipe, work, say)
            shutil.rmtree(directory, ignore_errors=True)
            work.rename(directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return MachineImage(directory / image.disk.name, image.info)


def _lock(lock: IO[str], deadline: Deadline, say: Say) -> None:
    """Take the image's build lock, waiting for another kbisect's build of it (bounded)."""
    told = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline.expired:
                raise InfraError(
                    "another kbisect has been building this image for too long"
                ) from None
            if not told:
                say("another kbisect builds this machine image: waiting for it")
                told = True
            time.sleep(1)


def _build(recipe: ImageRecipe, work: Path, say: Say) -> MachineImage:
    root = work / "root"
    script = work / "customize.sh"
    script.write_text(_customize_script(recipe.root_uuid, recipe))
    say(f"machine image {recipe.key}: mmdebstrap {recipe.suite} ({len(recipe.packages)} packages)")
    processes.run(
        [
            "mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(recipe.packages),
            f"--customize-hook=sh -eu {script} \"$1\"", recipe.suite, str(root), recipe.mirror,
        ],
        deadline=_MMDEBSTRAP_SECONDS,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        hint="./bootstrap installs mmdebstrap",
        what="building the machine image",
    )  # fmt: skip
    grub_cfg = (root / "boot/grub/grub.cfg").read_text()
    titles = XEN_ENTRY_TITLE.findall(grub_cfg)
    if not titles:
        raise InfraError(f"the image's grub.cfg has no Xen entry ({root}/boot/grub/grub.cfg)")
    boot_sector, core_image = work / "boot.img", work / "core.img"
    shutil.move(root / "boot/grub/kbisect-core.img", core_image)
    shutil.copyfile(root / "usr/lib/grub/i386-pc/boot.img", boot_sector)
    say(f"machine image {recipe.key}: making the disk")
    disk = work / "disk.img"
    layout = DiskLayout(
        root, ROOT_LABEL, recipe.root_uuid, recipe.disk_gb << 30, boot_sector, core_image
    )
    make_disk(layout, disk, work)
    shutil.rmtree(root)
    info = {
        "recipe": json.dumps(asdict(recipe), sort_keys=True),
        "fallback_entry": titles[0],
        "root_uuid": recipe.root_uuid,
        "kernel": _debian_kernel(grub_cfg),
    }
    (work / "image.json").write_text(json.dumps(info, indent=1) + "\n")
    return MachineImage(disk, info)


def _debian_kernel(grub_cfg: str) -> str:
    found = re.search(r"module2?\s+/boot/vmlinuz-(\S+)", grub_cfg)
    return found.group(1) if found else ""


def _grub_defaults(recipe: ImageRecipe) -> str:
    xen = (
        f"com1=115200,8n1 console=com1 dom0_mem={recipe.dom0_memory_mb}M,"
        f"max:{recipe.dom0_memory_mb}M loglvl=all guest_loglvl=all"
    )
    dom0 = f"console=hvc0 earlyprintk=xen {recipe.dom0_cmdline}".strip()
    return "\n".join(
        [
            "# kbisect's emulated rack machine: boot the saved entry (grub-reboot arms one once),",
            "# on the serial console; Xen and dom0 print there too.",
            "GRUB_DEFAULT=saved",
            "XEN_OVERRIDE_GRUB_DEFAULT=0",
            "GRUB_TIMEOUT=1",
            'GRUB_TERMINAL="serial console"',
            'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"',
            'GRUB_CMDLINE_LINUX_DEFAULT=""',
            'GRUB_CMDLINE_LINUX="console=ttyS0,115200"',
            f'GRUB_CMDLINE_XEN="{xen}"',
            f'GRUB_CMDLINE_LINUX_XEN_REPLACE="{dom0}"',
            "GRUB_DISABLE_OS_PROBER=true",
            "",
        ]
    )


# A stand-in for grub-probe while grub-mkconfig runs in the chroot: it answers for the disk the
# machine will have (virtio, first partition) instead of probing this machine's.
_GRUB_PROBE = """#!/bin/sh
case "$*" in
  *--target=device*) echo /dev/vda1 ;;
  *--target=fs_uuid*) echo @UUID@ ;;
  *--target=fs*) echo ext2 ;;
  *--target=partmap*) echo msdos ;;
  *--target=abstraction*) ;;
  *--target=drive*) echo '(hd0,msdos1)' ;;
  *--target=compatibility_hint*) echo hd0,msdos1 ;;
  *--target=hints_string*) ;;
  *) echo "grub-probe stand-in: $*" >&2; exit 1 ;;
esac
"""

# The lab's public key comes from a seed disk (label KBSEED) that kbisect attaches. Found with
# blkid rather than a mount unit: udev may come late under TCG, and a device unit times out.
_SEED_UNIT = """[Unit]
Description=kbisect: the lab's public key from the seed disk
Before=ssh.service
After=local-fs.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kbisect-seed
[Install]
WantedBy=multi-user.target
"""
_SEED_SCRIPT = f"""#!/bin/sh
dev=
for _ in $(seq 120); do dev=$(blkid -L {SEED_LABEL}) && break; sleep 1; done
[ -n "$dev" ] || {{ echo "kbisect-seed: no {SEED_LABEL} disk"; exit 0; }}
mkdir -p /run/kbisect-seed
mount -o ro "$dev" /run/kbisect-seed
install -d -m 700 /root/.ssh
install -m 600 /run/kbisect-seed/authorized_keys /root/.ssh/authorized_keys
umount /run/kbisect-seed
"""

# Process creation is slow in a PV dom0 under TCG (every page table update is an emulated
# hypercall): mkinitramfs takes minutes with MODULES=most, and scanning for resume devices is
# more of the same.
_INITRAMFS_SETTINGS = (
    "sed -i 's/^MODULES=.*/MODULES=dep/' \"$R/etc/initramfs-tools/initramfs.conf\"",
    'echo RESUME=none > "$R/etc/initramfs-tools/conf.d/resume"',
)

_NETWORK = """[Match]
Name=en* eth*
[Network]
DHCP=ipv4
"""


def _heredoc(path: str, text: str) -> str:
    return f"cat > \"$R{path}\" <<'KBISECT_EOF'\n{text.rstrip()}\nKBISECT_EOF\n"


def _customize_script(root_uuid: str, recipe: ImageRecipe) -> str:
    """mmdebstrap's customize hook ($1 is the root; /proc, /sys and /dev are mounted)."""
    masks = " ".join(MASKED_UNITS)
    return "\n".join(
        [
            'R="$1"',
            f'echo {MACHINE_HOSTNAME} > "$R/etc/hostname"',
            f"printf '127.0.0.1 localhost\\n127.0.1.1 {MACHINE_HOSTNAME}\\n' > \"$R/etc/hosts\"",
            # no fsck at boot: the disk is a fresh overlay each time, and fsck is seconds in TCG
            f"printf 'UUID={root_uuid} / ext4 errors=remount-ro 0 0\\n' > \"$R/etc/fstab\"",
            _heredoc("/etc/systemd/network/80-dhcp.network", _NETWORK),
            _heredoc("/etc/systemd/system/kbisect-seed.service", _SEED_UNIT),
            _heredoc("/usr/local/sbin/kbisect-seed", _SEED_SCRIPT),
            'chmod 755 "$R/usr/local/sbin/kbisect-seed"',
            _heredoc("/etc/default/grub.d/zz-kbisect.cfg", _grub_defaults(recipe)),
            'rm -f "$R"/boot/xen-*.efi',  # a BIOS machine: no EFI entries
            'chroot "$R" systemctl enable systemd-networkd kbisect-seed',
            f'chroot "$R" systemctl mask {masks}',
            'mkdir -p "$R/boot/grub"',
            'cp -r "$R/usr/lib/grub/i386-pc" "$R/boot/grub/"',
            'mv "$R/usr/sbin/grub-probe" "$R/usr/sbin/grub-probe.real"',
            _heredoc("/usr/sbin/grub-probe", _GRUB_PROBE.replace("@UUID@", root_uuid)),
            'chmod 755 "$R/usr/sbin/grub-probe"',
            'chroot "$R" grub-mkconfig -o /boot/grub/grub.cfg 2>/dev/null',
            'mv "$R/usr/sbin/grub-probe.real" "$R/usr/sbin/grub-probe"',
            'chroot "$R" grub-editenv /boot/grub/grubenv create',
            "title=$(sed -n \"s/^menuentry '\\([^']*Xen hypervisor[^']*\\)'.*/\\1/p\" "
            '"$R/boot/grub/grub.cfg" | head -n 1)',
            'chroot "$R" grub-set-default "$title"',
            'chroot "$R" grub-mkimage -O i386-pc -o /boot/grub/kbisect-core.img '
            "-p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2",
            # Debian's kernel got its initrd with every module (MODULES=most) above; the builds
            # kbisect deploys get one with what this machine needs, made in half the time.
            *_INITRAMFS_SETTINGS,
            "",
        ]
    )
