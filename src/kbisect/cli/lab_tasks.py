"""Tasks for the lab: bring the embedded host up and down, look at hosts, trust host keys, and
deploy a build."""

from __future__ import annotations

import shlex
import time

from invoke.context import Context

from kbisect.build.builder import store_for
from kbisect.build.store import Artifact
from kbisect.cli.arguments import positive_number
from kbisect.cli.common import project, say, warn
from kbisect.cli.common import task as kb_task
from kbisect.config import Project
from kbisect.deadline import Deadline
from kbisect.errors import UserError
from kbisect.lab.embedded import EmbeddedHost
from kbisect.lab.lab import Lab
from kbisect.lab.lease import current_user
from kbisect.lab.protocol import Deployment, LabHost
from kbisect.lab.rack import RackHost
from kbisect.lab.ssh import fetch_host_key, fingerprint

TRUST_SECONDS = 30.0


def find_artifact(p: Project, key: str | None) -> Artifact:
    """The build to boot: by key (a unique prefix is enough), else the most recently used
    build of the default profile (settings.default_profile, else the only profile)."""
    store = store_for(p)
    artifacts = store.artifacts()
    if key:
        matches = [a for a in artifacts if a.key.startswith(key)]
        if len(matches) != 1:
            what = "no build" if not matches else f"{len(matches)} builds"
            raise UserError(f"{what} in the store match {key!r} (see `kbisect builds`)")
        return matches[0]
    profile = p.profile(None).name
    for a in artifacts:
        if a.meta.get("profile") == profile:
            return a
    raise UserError(
        f"no {profile} build in the store yet: build one first, e.g. "
        "`kbisect build --tree debian-6.1 --rev v6.1.192-2 --variant vm-mixedmap`"
    )


def _deploy(lab: Lab, host: LabHost, artifact: Artifact, purpose: str) -> Deployment:
    meta = artifact.meta
    say(
        f"deploying {artifact.key} ({meta.get('tree')}:{meta.get('revision')} "
        f"{meta.get('variant')}, {meta.get('kernel_release')}) to {host.name}"
    )
    with lab.lease(host, purpose):
        done = host.deploy(artifact)
    say(f"{host.name}: booted and verified in {done.boot_seconds:g} s")
    for key, value in done.fingerprint.items():
        say(f"  {key:<15} {value}")
    return done


def _how_to_reach(lab: Lab, host: LabHost) -> None:
    target = host.target()
    known = host.known_hosts.writable
    command = [
        "ssh",
        "-i",
        str(target.key_path),
        "-p",
        str(target.port),
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        f"{target.user}@{target.address}",
    ]
    say(f"ssh:     {shlex.join(command)}")
    console = host.console_log()
    if console:
        say(f"console: {console}")


@kb_task(
    help={
        "host": "Embedded host to boot (default: the first qemu host).",
        "build": "Build key or unique prefix (default: the latest build of the default profile).",
    },
    name="up",
)
def lab_up(
    c: Context, host: str | None = None, build: str | None = None, root: str | None = None
) -> None:
    """Boot the embedded Xen host with a build and print how to reach it (it stays up).

    The embedded host is Xen 4.17 under QEMU; the build is `--build`'s (see its default). The
    boot is verified like any deploy; then the host's fingerprint and the `ssh` command that
    reaches it are printed. Stop it with `lab.down`.
    """
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        chosen = lab.host(host)
        if not isinstance(chosen, EmbeddedHost):
            raise UserError(f"{chosen.name} is a rack machine: use `kbisect deploy` for it")
        artifact = find_artifact(p, build)
        _deploy(lab, chosen, artifact, "lab.up")
        _how_to_reach(lab, chosen)
        say("stop it with: kbisect lab.down")


@kb_task(help={"host": "Embedded host to stop (default: all)."}, name="down")
def lab_down(c: Context, host: str | None = None, root: str | None = None) -> None:
    """Stop embedded hosts (QEMU is ended by its PID)."""
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        hosts = [lab.host(host)] if host else lab.all_hosts()
        for h in hosts:
            if isinstance(h, EmbeddedHost):
                say(f"{h.name}: {'stopped' if h.shutdown() else 'was not running'}")
            elif host:
                raise UserError(f"{h.name} is a rack machine; kbisect does not power it off")


@kb_task(help={}, name="status")
def lab_status(c: Context, root: str | None = None) -> None:
    """Every host: kind, running or not, what is deployed, and who holds its lease.

    For an embedded host: up or down, with the QEMU PID and SSH port, a standby QEMU booting
    the next build, and the console log. For a rack machine: its address.
    """
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        for h in lab.all_hosts():
            say(f"{h.name} ({h.kind})")
            if isinstance(h, EmbeddedHost):
                state = h.qemu.state()
                if state is None:
                    say("  state     down")
                else:
                    up = time.time() - state.started
                    where = f"ssh 127.0.0.1:{state.port}"
                    say(f"  state     up {up:.0f} s, QEMU pid {state.pid}, {where}")
                staged = h.standby.state()
                if staged is not None:
                    say(f"  standby   {staged.build_key} booting, QEMU pid {staged.pid}")
                say(f"  console   {h.console_log()}")
            else:
                t = h.target()
                say(f"  address   {t.user}@{t.address} port {t.port}")
            deployed = h.deployment()
            if deployed is not None:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(deployed.booted_at))
                say(f"  deployed  {deployed.build_key} ({deployed.release}) at {when}")
            holder = lab.leases().holder(h.name)
            say(f"  lease     {holder.describe() if holder else 'free'}")


@kb_task(
    help={
        "host": "Rack host whose key to fetch and pin.",
        "yes": "Record the key without asking (only after checking the fingerprint elsewhere).",
    },
    name="trust",
)
def lab_trust(c: Context, host: str, yes: bool = False, root: str | None = None) -> None:
    """Fetch a rack host's SSH key, show its fingerprint and pin it in configs/known_hosts.

    The key is recorded once you confirm it (or with `--yes`). Compare the fingerprint with
    `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host first. Embedded hosts need
    none of this: kbisect generated their keys and pins them itself.
    """
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        h = lab.host(host)
        if isinstance(h, EmbeddedHost):
            say(f"{h.name} is an embedded host: kbisect generated its key and pins it itself")
            return
        t = h.target()
        key = fetch_host_key(t.address, t.port, Deadline(TRUST_SECONDS))
        say(f"{h.name} ({t.address} port {t.port}) offers {key.get_name()} {fingerprint(key)}")
        if not yes:
            warn("compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host")
            answer = input("record this key? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                raise UserError("not recorded")
        h.known_hosts.add(t.address, t.port, key)
        say(f"pinned in {h.known_hosts.writable}")


@kb_task(help={}, name="leases")
def lab_leases(c: Context, root: str | None = None) -> None:
    """List who holds which host: controller, pid, user, purpose, since and (in a shared store)
    when the lease expires without a heartbeat."""
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        book = lab.leases()
        say(f"host leases {book.describe()}")
        holders = book.holders()
        for info in holders:
            say(f"  {info.host:<16} {info.describe()}")
        if not holders:
            say("  none held")


@kb_task(
    help={
        "host": "Host to reserve.",
        "hold": "Seconds to hold it.",
        "purpose": "What for (shown to others; default: maintenance by USER).",
    },
    checks={"hold": positive_number},
    name="lease",
)
def lab_lease(
    c: Context, host: str, hold: float, purpose: str | None = None, root: str | None = None
) -> None:
    """Reserve a host by hand (for maintenance) for --hold SECONDS.

    In a shared store the lease stays after this command ends, until it expires or
    `kbisect lab.release HOST --force`; with leases on this machine (no shared store) the
    command holds the host in the foreground.
    """
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        name = lab.host(host).name
        lab.leases().hold(name, purpose or f"maintenance by {current_user()}", hold, say)


@kb_task(
    help={"host": "Host whose lease to end.", "force": "Required: end whoever holds it."},
    name="release",
)
def lab_release(c: Context, host: str, force: bool = False, root: str | None = None) -> None:
    """Take a host's lease back from whoever holds it (--force), e.g. a reservation by hand.

    A controller that still works on the host learns it at its next heartbeat; one that died
    needs no help (its lease expires), but this frees the host at once.
    """
    if not force:
        raise UserError("lab.release ends another's lease: say --force")
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        name = lab.host(host).name
        taken = lab.leases().take_back(name)
        say(f"{name}: took back the lease of {taken.describe()}" if taken else f"{name}: free")


@kb_task(
    help={
        "host": "Rack host to clean up.",
        "kernels": "Also remove every kbisect kernel, initrd and module tree but the one it runs.",
    },
    name="clean",
)
def lab_clean(c: Context, host: str, kernels: bool = False, root: str | None = None) -> None:
    """Remove kbisect's grub entry from a rack host, so that it boots its own default again.

    Deploys keep only the newest builds (`keep_kernels`); --kernels removes kbisect's others
    too. Only what kbisect installed is removed, never the distribution's kernels.
    """
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        chosen = lab.host(host)
        if not isinstance(chosen, RackHost):
            raise UserError(f"{chosen.name} is an embedded host: kbisect installs nothing on it")
        with lab.lease(chosen, "lab.clean"):
            entry, gone = chosen.clean(kernels=kernels)
        script = chosen.ssh.grub_script
        say(f"{chosen.name}: {'removed' if entry else 'no'} grub entry ({script})")
        for path in (*gone.files, *gone.trees) if gone else ():
            say(f"{chosen.name}: removed {path}")


@kb_task(
    help={
        "host": "Host to deploy to (default: the first embedded host).",
        "build": "Build key or unique prefix (see `kbisect builds`).",
    }
)
def deploy(c: Context, build: str, host: str | None = None, root: str | None = None) -> None:
    """Boot a build on a host and verify it (boot id, uname -r, build identity, Xen).

    Verified means: the boot id changed, `uname -r` is the build's release,
    `kbisect.build=KEY` is on the dom0 command line, and the kernel runs on Xen. The host stays
    up for `kbisect stress`. A host that does not come back is power-cycled `max_power_cycles`
    times and then reported broken: exit 3, with its console log kept. See docs/lab.md.
    """
    p = project(root)
    with Lab(p, keep_up=True, say=say) as lab:
        chosen = lab.host(host)
        artifact = find_artifact(p, build)
        _deploy(lab, chosen, artifact, "deploy")
        if isinstance(chosen, EmbeddedHost):
            _how_to_reach(lab, chosen)
