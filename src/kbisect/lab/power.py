"""Power drivers: how a host that does not answer is restarted.

An embedded host needs none (its power is its QEMU process, restarted with the build); a rack
machine is power-cycled by a command run on this machine, such as an IPMI power cycle.
"""

from __future__ import annotations

from kbisect import processes
from kbisect.lab.protocol import HostDown
from kbisect.processes import CommandError

# A power command answers in seconds; its bound is its own, not the host's boot timeout (the
# boot is waited for afterwards).
POWER_COMMAND_SECONDS = 120.0


class CommandPower:
    """Power-cycles a host with a command (argv), e.g. [ipmitool, -H, bmc1, power, cycle]."""

    def __init__(self, host: str, argv: list[str] | None) -> None:
        self.host = host
        self.argv = argv

    def cycle(self) -> None:
        """Run the command; HostDown if there is none or it fails."""
        if not self.argv:
            raise HostDown(f"{self.host}: not answering and no power_cycle command is configured")
        try:
            processes.run(self.argv, deadline=POWER_COMMAND_SECONDS)
        except CommandError as exc:
            raise HostDown(f"{self.host}: power_cycle command: {exc}") from exc
