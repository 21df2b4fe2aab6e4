"""Distributed compiles with distcc, under ccache (the `distcc` section of configs/builds.yaml).

ccache stays in front: a hit compiles nothing anywhere; a miss runs `distcc gcc ...`
(CCACHE_PREFIX), which preprocesses here and compiles on a builder. Builders run the same gcc,
so the objects, and therefore the build key, are those of a local build. A builder that does not
answer costs time, never a result: distcc compiles locally instead, and the build's record counts
how often that happened.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from kbisect.config import Distcc

DISTCC_PORT = 3632
PROBE_SECONDS = 3.0
# distcc's words when a compile it meant to send ran here instead (lib/compile.c)
_FALLBACK = re.compile(r"^distcc\[\d+\] .*(?:failed to distribute|running locally instead)", re.M)


def environment(distcc: Distcc, cache_dir: Path) -> dict[str, str]:
    """What ccache and distcc read to send compiles to the builders."""
    return {
        "CCACHE_PREFIX": "distcc",
        "DISTCC_HOSTS": " ".join(distcc.hosts),
        "DISTCC_DIR": str(cache_dir / "distcc"),  # its host back-off state, not in ~/.distcc
        "DISTCC_FALLBACK": "1",  # a dead builder slows the build, never fails the kernel
    }


def jobs(distcc: Distcc) -> int:
    """make -jN: enough to keep every builder's slots and this machine's cores busy."""
    return distcc.jobs or distcc.host_limits() + (os.cpu_count() or 1)


def record(distcc: Distcc, log_text: str) -> dict[str, object]:
    """What a build's meta says about distribution (never part of its key)."""
    return {
        "tool": "distcc",
        "hosts": list(distcc.hosts),
        "local_fallbacks": len(_FALLBACK.findall(log_text)),
    }


def describe(distcc: Distcc | None) -> str:
    """Where compiles go, and whether each builder answers (for `kbisect check`). A builder that
    does not answer is no error: its compiles run here."""
    if distcc is None:
        return "local (no distcc section in configs)"
    return f"distcc, make -j{jobs(distcc)}: " + ", ".join(
        f"{host} ({_probe(host)})" for host in distcc.hosts
    )


def _probe(host: str) -> str:
    spec = host.split(",")[0].partition("/")[0]
    if "@" in spec:
        return "over ssh, not probed"
    name, _, port = spec.partition(":")
    try:
        with socket.create_connection((name, int(port or DISTCC_PORT)), PROBE_SECONDS):
            return "answers"
    except OSError as exc:
        return f"does not answer: {exc.strerror or exc}; its compiles would run here"
