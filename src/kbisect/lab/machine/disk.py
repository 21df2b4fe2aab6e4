"""A bootable disk image from a root directory, without loop devices, udev or a VM.

Layout: an MBR with one Linux partition from 1 MiB to the end; the partition is an ext4 file
system made by `mke2fs -d ROOT` in a file of its own and copied in sparsely; GRUB's boot sector
goes in the MBR's first 440 bytes (the partition table stays) and its core image, made by the
root's own `grub-mkimage`, in the gap after the MBR. `grub-bios-setup` is never used: on an
image file it resolves this machine's own disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kbisect import processes
from kbisect.errors import InfraError

SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB, where partitioning tools start today
BOOT_CODE_BYTES = 440  # of the MBR: the boot code; the disk signature and partitions follow
_CHUNK = 1 << 20
_MKFS_SECONDS = 900.0


@dataclass(frozen=True)
class DiskLayout:
    """What the disk is made of: the root tree, the file system's label and UUID, the size,
    and GRUB's boot sector and core image (files taken out of the root)."""

    root: Path
    label: str
    uuid: str
    size_bytes: int
    boot_sector: Path
    core_image: Path


def make_disk(layout: DiskLayout, out: Path, scratch: Path) -> None:
    """Write the disk image `out` (sparse, raw)."""
    gap = (PARTITION_START - 1) * SECTOR
    if layout.core_image.stat().st_size > gap:
        raise InfraError(f"GRUB's core image is larger than the {gap} bytes before the partition")
    part = scratch / "partition.img"
    part_bytes = layout.size_bytes - PARTITION_START * SECTOR
    _make_filesystem(layout, part, part_bytes)
    with out.open("wb") as disk:
        disk.truncate(layout.size_bytes)
    _partition(out)
    _copy_sparse(part, out, PARTITION_START * SECTOR)
    part.unlink()
    with out.open("r+b") as disk:
        disk.write(layout.boot_sector.read_bytes()[:BOOT_CODE_BYTES])
        disk.seek(SECTOR)
        disk.write(layout.core_image.read_bytes())


def _make_filesystem(layout: DiskLayout, part: Path, size: int) -> None:
    part.unlink(missing_ok=True)
    processes.run(
        [
            "mke2fs", "-q", "-F", "-t", "ext4", "-L", layout.label, "-U", layout.uuid,
            "-E", "root_owner=0:0", "-d", str(layout.root), str(part), f"{size // 1024}k",
        ],
        deadline=_MKFS_SECONDS,
        hint="mke2fs is in e2fsprogs",
        what="making the machine's root file system",
    )  # fmt: skip


def _partition(disk: Path) -> None:
    script = f"label: dos\nstart={PARTITION_START}, type=83, bootable\n"
    processes.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
        input=script.encode(),
        deadline=60,
        hint="./bootstrap installs fdisk",
        what="partitioning the machine's disk",
    )


def _copy_sparse(source: Path, target: Path, offset: int) -> None:
    """Copy `source` into `target` at `offset`, leaving holes where the source has zeros."""
    zero = bytes(_CHUNK)
    with source.open("rb") as src, target.open("r+b") as dst:
        position = offset
        while chunk := src.read(_CHUNK):
            if chunk != zero[: len(chunk)]:
                dst.seek(position)
                dst.write(chunk)
            position += len(chunk)
        os.fsync(dst.fileno())


def seed_disk(files: dict[str, bytes], out: Path, scratch: Path) -> None:
    """A small ext4 disk labelled KBSEED holding `files` (name -> content): what the machine
    reads at boot that is not in its image (the lab's public key)."""
    tree = scratch / "seed"
    tree.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (tree / name).write_bytes(content)
    out.unlink(missing_ok=True)
    processes.run(
        [
            "mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", SEED_LABEL,
            "-E", "root_owner=0:0", "-d", str(tree), str(out), "8M",
        ],
        deadline=60,
        hint="mke2fs is in e2fsprogs",
        what="making the machine's seed disk",
    )  # fmt: skip


SEED_LABEL = "KBSEED"
