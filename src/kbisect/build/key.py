"""Build identity: a key from everything a build depends on, and nothing else.

Two cells whose sources are identical (same git tree id after patches) with the same profile and
toolchain share one build; a variant whose patches change nothing has the base revision's key.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from kbisect import processes
from kbisect.config import BuildProfile

# Bump when the way kbisect builds changes in a way that changes its outputs.
RECIPE_VERSION = 1


@lru_cache(maxsize=8)
def toolchain_version(cc: str = "gcc") -> str:
    """First lines of `gcc --version` and `make --version`."""
    lines = []
    for tool in (cc, "make"):
        out = processes.run([tool, "--version"], deadline=30, hint="./bootstrap installs it").stdout
        lines.append(out.splitlines()[0] if out else tool)
    return " / ".join(lines)


def profile_identity(profile: BuildProfile, configs_dir: Path) -> dict[str, object]:
    """What of a profile reaches the build: the base, fragment contents, arch and targets."""

    def digest(rel: str) -> str:
        return hashlib.sha256((configs_dir / rel).read_bytes()).hexdigest()

    base_is_file = profile.base not in BuildProfile.MAKE_BASES
    return {
        "base": digest(profile.base) if base_is_file else profile.base,
        "fragments": [digest(f) for f in profile.fragments],
        "arch": profile.arch,
        "targets": list(profile.targets),
    }


def build_key(tree_id: str, profile: BuildProfile, configs_dir: Path, toolchain: str) -> str:
    """The content address of a build."""
    identity = {
        "recipe": RECIPE_VERSION,
        "tree": tree_id,
        "profile": profile_identity(profile, configs_dir),
        "toolchain": toolchain,
    }
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]
