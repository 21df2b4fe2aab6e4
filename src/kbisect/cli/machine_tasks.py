"""Tasks for emulated rack machines: their power switch (what a BMC is to hardware), their disk
image, and their serial console."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from invoke.context import Context

from kbisect.cli.arguments import positive_number
from kbisect.cli.common import project, say
from kbisect.cli.common import task as kb_task
from kbisect.config.model import DAY
from kbisect.deadline import Deadline
from kbisect.errors import UserError
from kbisect.lab.lab import Lab
from kbisect.lab.machine.vm import Power, VirtualMachine

ACTIONS = ("on", "off", "cycle", "status")
_FOLLOW_PAUSE = 0.2


def _action(text: str) -> str:
    if text not in ACTIONS:
        raise ValueError(f"expected one of {', '.join(ACTIONS)}")
    return text


@kb_task(
    help={
        "host": "Emulated rack machine (a host with a `machine` section).",
        "action": "on, off, cycle (a hard reset; switches on a machine that is off) or status.",
        "fresh": "With `on`: a new disk first (the pristine image, as if reinstalled).",
    },
    checks={"action": _action},
    name="power",
)
def lab_power(
    c: Context, host: str, action: str, fresh: bool = False, root: str | None = None
) -> None:
    """Switch an emulated rack machine on or off, power-cycle it, or say whether it is on.

    This is the machine's BMC: configure `power_cycle: [kbisect, lab.power, HOST, cycle]` for
    it like `ipmitool ... power cycle` for hardware. `on` builds the disk image first if there
    is none (as root; about 90 s) and returns once QEMU runs; the boot to SSH takes one to two
    minutes under TCG. The machine stays on after this command, until `off`.
    """
    with Lab(project(root), keep_up=True, say=say) as lab:
        vm = lab.machine(host)
        if action == "status":
            _status(vm)
        elif action == "on":
            if not vm.on(say, fresh=fresh):
                say(f"{vm.name}: already on")
        elif fresh:
            raise UserError("--fresh goes with `on`")
        elif action == "off":
            say(f"{vm.name}: {'off' if vm.off() else 'was off'}")
        else:
            vm.cycle(say)


def _status(vm: VirtualMachine) -> None:
    state = vm.state()
    if state is None:
        say(f"{vm.name}: {Power.OFF.value}")
        return
    up = time.time() - state.started
    say(f"{vm.name}: {Power.ON.value} for {up:.0f} s (QEMU pid {state.pid}, image {state.image})")
    say(f"  ssh       127.0.0.1 port {vm.port}")
    say(f"  console   {vm.console_log}")


@kb_task(
    help={"host": "Emulated rack machine whose disk image to build (if needed) and show."},
    name="image",
)
def lab_image(c: Context, host: str, root: str | None = None) -> None:
    """Build an emulated machine's disk image unless it is cached, and describe it.

    The image is Debian (the host's `machine.suite`) with Xen, GRUB2 in its MBR, Debian's own
    kernel as the known-good entry, and OpenSSH; it is built with mmdebstrap (root needed) and
    cached under the kbisect cache by a hash of its recipe, so it is built once.
    """
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        vm = lab.machine(host)
        image = vm.image(say)
    size = image.disk.stat().st_blocks * 512
    say(f"{host}: image {vm.recipe.key}: {image.disk} ({size / 2**20:.0f} MiB on disk)")
    say(f"  fallback entry  {image.fallback_entry}")
    say(f"  debian kernel   {image.info.get('kernel', '')}")


@kb_task(
    help={
        "host": "Emulated rack machine whose serial console to follow.",
        "seconds": "Stop after this long (default: a day).",
        "from_start": "Print the console from the machine's power-on, not only what comes now.",
    },
    checks={"seconds": positive_number},
    name="console",
)
def lab_console(
    c: Context,
    host: str,
    seconds: float = DAY,
    from_start: bool = False,
    root: str | None = None,
) -> None:
    """Follow an emulated machine's serial console (GRUB, Xen, dom0) until stopped.

    Configure `console: [kbisect, lab.console, HOST]` for the host, as `ipmitool ... sol
    activate` for hardware: kbisect then keeps what the console printed during each deploy and
    job with the results.
    """
    with Lab(project(root), keep_up=True, say=say) as lab:
        log = lab.machine(host).console_log
    follow(log, Deadline(seconds), from_start=from_start)


def follow(log: Path, deadline: Deadline, *, from_start: bool) -> None:
    """Copy what is appended to `log` to stdout; a log that starts anew (the machine was
    switched on again) is followed from its start."""
    position = 0 if from_start or not log.exists() else log.stat().st_size
    out = sys.stdout.buffer
    while not deadline.expired:
        try:
            size = log.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < position:
            position = 0
        if size > position:
            with log.open("rb") as f:
                f.seek(position)
                data = f.read(size - position)
            position += len(data)
            out.write(data)
            out.flush()
        else:
            time.sleep(_FOLLOW_PAUSE)
