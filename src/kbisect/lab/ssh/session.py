"""Logging in: `connect` checks the host key against the pins and returns an `SshSession`, one
connection that runs commands, transfers files and keeps detached jobs."""

from __future__ import annotations

import logging

import paramiko

from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.ssh.jobs import RemoteJobs
from kbisect.lab.ssh.keys import (
    HostKeyChanged,
    HostKeyUnknown,
    KnownHosts,
    fingerprint,
    load_private_key,
)
from kbisect.lab.ssh.net import SshTarget, Watchdog, describe, drop, open_socket
from kbisect.lab.ssh.transfer import FileTransfer

# paramiko logs a failed login attempt's traceback (a host that is still booting resets the
# connection) through Python's last-resort handler, onto kbisect's stderr: kbisect reports
# failures itself, one line each.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_KEEPALIVE_SECONDS = 15


class SshSession(FileTransfer, RemoteJobs):
    """One SSH connection to a host: commands (SshCommands), file transfer and detached jobs;
    a context manager that closes it."""


class _RefuseUnknown(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, remembering the refused key so that the error can show it."""

    def __init__(self) -> None:
        self.offered: paramiko.PKey | None = None

    def missing_host_key(  # type: ignore[override]
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.offered = key
        super().missing_host_key(client, hostname, key)


def connect(target: SshTarget, known_hosts: KnownHosts, deadline: Deadline) -> SshSession:
    """Log in to the target with its ed25519 key, checking the host key against the pins."""
    key = load_private_key(target.key_path)
    where = target.where
    client = paramiko.SSHClient()
    known_hosts.apply(client)
    policy = _RefuseUnknown()
    client.set_missing_host_key_policy(policy)
    sock = open_socket(target.address, target.port, deadline, where)
    watchdog = Watchdog(deadline, lambda: drop(sock))
    try:
        remaining = max(deadline.remaining(), 0.1)
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            pkey=key,
            sock=sock,
            timeout=remaining,
            banner_timeout=remaining,
            auth_timeout=remaining,
            channel_timeout=remaining,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise _changed_key(target, known_hosts, exc.key, exc.expected_key) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise InfraError(
            f"{where}: the host refused key {target.key_path} ({describe(exc)})"
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        if policy.offered is not None:
            raise _unknown_key(target, policy.offered) from None
        if watchdog.fired:
            raise InfraError(f"{where}: no SSH login within {deadline.seconds:g} s") from None
        raise InfraError(f"{where}: SSH connection failed: {describe(exc)}") from None
    finally:
        watchdog.cancel()
    if watchdog.fired:
        client.close()
        raise InfraError(f"{where}: no SSH login within {deadline.seconds:g} s")
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        client.close()
        raise InfraError(f"{where}: the SSH connection closed right after login")
    transport.set_keepalive(_KEEPALIVE_SECONDS)
    return SshSession(target, client, transport)


def _unknown_key(target: SshTarget, offered: paramiko.PKey) -> HostKeyUnknown:
    return HostKeyUnknown(
        f"{target.where}: unknown host key {offered.get_name()} {fingerprint(offered)}; "
        f"refusing to connect. Compare it with the host's own fingerprint (on its console: "
        f"ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then trust it with "
        f"`kbisect lab.trust {target.name}`"
    )


def _changed_key(
    target: SshTarget, known_hosts: KnownHosts, offered: paramiko.PKey, expected: paramiko.PKey
) -> HostKeyChanged:
    files = ", ".join(map(str, known_hosts.pinned_in(target.address, target.port))) or "?"
    return HostKeyChanged(
        f"HOST KEY CHANGED for {target.where}! It offered {offered.get_name()} "
        f"{fingerprint(offered)}, but {expected.get_name()} {fingerprint(expected)} is pinned "
        f"(in {files}). Someone may be intercepting the connection, or the host was reinstalled. "
        f"Refusing to connect. Only if the change is expected: remove the old entry and run "
        f"`kbisect lab.trust {target.name}`"
    )
