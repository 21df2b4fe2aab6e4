"""Kernel configuration from a profile: base + fragments (merge_config) + olddefconfig, then a
check that every symbol the fragments ask for survived, so a typo or an unmet dependency can
never silently give a kernel without, say, CONFIG_XEN_GNTDEV."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kbisect.config import BuildProfile

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Dropped:
    """A symbol the profile asked for that the final .config does not have as asked."""

    symbol: str
    wanted: str
    got: str | None  # None: absent (unknown symbol or unmet dependency)

    def __str__(self) -> str:
        got = "absent" if self.got is None else self.got
        return f"{self.symbol}={self.wanted} (got {got})"


def parse_config(text: str) -> dict[str, str]:
    """Symbol values of a .config or fragment; `# CONFIG_X is not set` reads as 'n'."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = "n"
    return values


def requested(profile: BuildProfile, configs_dir: Path) -> dict[str, str]:
    """What the fragments ask for, later fragments overriding earlier ones."""
    wanted: dict[str, str] = {}
    for fragment in profile.fragments:
        wanted.update(parse_config((configs_dir / fragment).read_text()))
    return wanted


def dropped_symbols(wanted: dict[str, str], config_text: str) -> list[Dropped]:
    final = parse_config(config_text)
    problems = []
    for symbol, value in wanted.items():
        got = final.get(symbol)
        if got == value or (value == "n" and got is None):
            continue
        problems.append(Dropped(symbol, value, got))
    return problems


def configure(
    profile: BuildProfile,
    configs_dir: Path,
    src: Path,
    out: Path,
    make: list[str],
    run: Callable[[list[str]], None],
) -> list[Dropped]:
    """Write out/.config for the profile; returns the symbols that did not survive.

    `make` is the make command line for this tree and build directory; `run` runs a command
    (logged, under the build's deadline) from the source directory.
    """
    out.mkdir(parents=True, exist_ok=True)
    if profile.base in BuildProfile.MAKE_BASES:
        run([*make, profile.base])
    else:
        shutil.copyfile(configs_dir / profile.base, out / ".config")
    if profile.fragments:
        merge = [str(src / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O", str(out)]
        run([*merge, str(out / ".config"), *(str(configs_dir / f) for f in profile.fragments)])
    run([*make, "olddefconfig"])
    return dropped_symbols(requested(profile, configs_dir), (out / ".config").read_text())
