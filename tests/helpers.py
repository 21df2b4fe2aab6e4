"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import shutil

import pytest


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
