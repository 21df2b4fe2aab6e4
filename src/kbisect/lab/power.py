"""Power drivers: how a host that does not answer is restarted.

An embedded host needs none (its power is its QEMU process, restarted with the build); a rack
machine is power-cycled by a command run on this machine, such as an IPMI power cycle.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kbisect import processes
from kbisect.lab.protocol import HostDown
from kbisect.processes import CommandError

# A power command answers in seconds; its bound is its own, not the host's boot timeout (the
# boot is waited for afterwards).
POWER_COMMAND_SECONDS = 120.0


def local_command(argv: list[str]) -> list[str]:
    """A configured command, as run on this machine: a command that is kbisect's own
    (`kbisect lab.power ...`) runs this very installation, with or without a launcher on PATH."""
    if argv and argv[0] == "kbisect":
        return [sys.executable, "-m", "kbisect", *argv[1:]]
    return list(argv)


def command_env(project_root: Path | None) -> dict[str, str]:
    """The environment of a configured command: kbisect's own find this project."""
    env = dict(os.environ)
    if project_root is not None:
        env["KBISECT_ROOT"] = str(project_root)
    return env


class CommandPower:
    """Power-cycles a host with a command (argv), e.g. [ipmitool, -H, bmc1, power, cycle]."""

    def __init__(self, host: str, argv: list[str] | None, project_root: Path | None = None) -> None:
        self.host = host
        self.argv = local_command(argv) if argv else None
        self.env = command_env(project_root)

    def cycle(self) -> None:
        """Run the command; HostDown if there is none or it fails."""
        if not self.argv:
            raise HostDown(f"{self.host}: not answering and no power_cycle command is configured")
        try:
            processes.run(self.argv, deadline=POWER_COMMAND_SECONDS, env=self.env)
        except CommandError as exc:
            raise HostDown(f"{self.host}: power_cycle command: {exc}") from exc
