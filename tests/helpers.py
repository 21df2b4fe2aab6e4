"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from kbisect.jobs.gntstress import SUBTESTS


def require_program(program: str, package: str) -> str:
    """The path of a program that `./bootstrap --test` installs.

    Missing, it is a failure that says how to install it, not a skip: a skip here would only hide
    a missing install step, and CI would pass without testing anything.
    """
    found = shutil.which(program)
    if found is None:
        pytest.fail(
            f"{program} is not installed: run ./bootstrap --test (or apt-get install {package})",
            pytrace=False,
        )
    return found


RECORDED_SUBTESTS: tuple[str, ...] = tuple(
    name for name in SUBTESTS if name not in ("mbind-soak", "policy-lifecycle")
)
"""The subtests of the gntstress that recorded the golden outputs (tests/golden/gntstress and
classify), before mbind-soak and policy-lifecycle: a recorded run is read as what it was asked."""
