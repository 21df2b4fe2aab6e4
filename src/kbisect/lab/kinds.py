"""The kinds of lab host: a configuration's `kind` and the class that drives such a host.

A new kind is a module implementing kbisect.lab.protocol.LabHost (login, boot, power, console)
and one line in HOST_KINDS (plus its name in the configuration's `Host.kind`).
"""

from __future__ import annotations

from kbisect.config.model import Host
from kbisect.lab.embedded import EmbeddedHost
from kbisect.lab.lava.host import LavaHost
from kbisect.lab.protocol import LabHost, LabPaths, quiet
from kbisect.lab.rack import RackHost
from kbisect.progress import Say

HOST_KINDS: dict[str, type[LabHost]] = {
    "qemu": EmbeddedHost,  # Xen under QEMU on this machine
    "ssh": RackHost,  # a machine running Xen, booted through grub2
    "lava": LavaHost,  # a device type of a LAVA lab, one LAVA job per cell
}


def make_host(config: Host, paths: LabPaths, say: Say = quiet) -> LabHost:
    """The host object for a configured host, by its kind."""
    return HOST_KINDS[config.kind](config, paths, say)
