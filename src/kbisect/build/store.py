"""The artifact store: one directory per build key, published atomically, pruned LRU.

A build is assembled in a hidden staging directory and renamed into place only when complete, so
a reader never sees half an artifact, and a crash leaves only staging debris that `prune` removes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbisect.processes import pid_alive

META = "meta.json"
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class Artifact:
    """A published build: bzImage, modules/, config, System.map, build.log and meta.json."""

    key: str
    path: Path

    @property
    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / META).read_text())
        return data

    @property
    def bzimage(self) -> Path:
        return self.path / "bzImage"

    @property
    def modules(self) -> Path:
        return self.path / "modules"

    def size(self) -> int:
        return sum(
            f.stat().st_size for f in self.path.rglob("*") if f.is_file() and not f.is_symlink()
        )


class ArtifactStore:
    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        root.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> Artifact | None:
        """The artifact for `key`, marked as just used; None when it is not in the store."""
        path = self.root / key
        if not (path / META).is_file():
            return None
        now = time.time()
        os.utime(path, (now, now))  # the directory's mtime is its last use, for LRU
        return Artifact(key, path)

    def staging(self, key: str) -> Path:
        """A fresh private directory to assemble `key` in."""
        path = self.root / f"{STAGING_PREFIX}{key}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def publish(self, key: str, staging: Path, meta: dict[str, Any]) -> Artifact:
        """Write meta last, then rename into place; a concurrent identical build is fine."""
        tmp = staging / f".{META}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tmp.rename(staging / META)
        target = self.root / key
        try:
            staging.rename(target)
        except OSError:  # someone published the same key first: theirs is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
        self.prune(keep=key)
        artifact = self.get(key)
        assert artifact is not None
        return artifact

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def artifacts(self) -> list[Artifact]:
        """Published artifacts, most recently used first."""
        found = [
            Artifact(p.name, p)
            for p in self.root.iterdir()
            if not p.name.startswith(".") and (p / META).is_file()
        ]
        return sorted(found, key=lambda a: a.path.stat().st_mtime, reverse=True)

    def prune(self, keep: str | None = None) -> list[str]:
        """Remove least recently used artifacts over the size limit, and dead staging dirs."""
        for debris in self.root.glob(f"{STAGING_PREFIX}*"):
            pid = debris.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(debris, ignore_errors=True)
        removed: list[str] = []
        artifacts = self.artifacts()
        total = sum(a.size() for a in artifacts)
        for artifact in reversed(artifacts):  # oldest use first
            if total <= self.limit_bytes:
                break
            if artifact.key == keep:
                continue
            total -= artifact.size()
            shutil.rmtree(artifact.path, ignore_errors=True)
            removed.append(artifact.key)
        return removed
