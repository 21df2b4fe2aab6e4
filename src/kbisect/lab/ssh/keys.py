"""Keys: the lab's own key pair, and the host keys kbisect pins (OpenSSH known_hosts files).

A host whose key is not pinned is refused (HostKeyUnknown: trust it with `kbisect lab.trust`);
a host whose key differs from its pin is refused louder (HostKeyChanged).
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import paramiko

from kbisect import processes
from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.lab.ssh.net import Watchdog, describe, open_socket

SSH_PORT = 22
KEY_TYPE = "ssh-ed25519"


class HostKeyUnknown(InfraError):
    """The host offered a key that no known_hosts file pins."""


class HostKeyChanged(InfraError):
    """The host is pinned to another key: a reinstall, or someone in the middle."""


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64."""
    return key.fingerprint


def host_key_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host` on port 22, `[host]:port` otherwise."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


class KnownHosts:
    """Pinned host keys from OpenSSH known_hosts files (plain or hashed, `[host]:port` entries).

    `readonly` files (such as the one shipped with the lab configuration) are read only; `writable`
    is read too and is where `add` records newly trusted keys. Missing files count as empty.
    """

    def __init__(self, writable: Path, readonly: Iterable[Path] = ()) -> None:
        self.writable = writable
        self.readonly = tuple(readonly)

    @property
    def files(self) -> list[Path]:
        """The existing files, read-only ones first."""
        return [path for path in (*self.readonly, self.writable) if path.exists()]

    @staticmethod
    def _load(path: Path) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        try:
            keys.load(str(path))
        except OSError as exc:
            raise UserError(f"cannot read known_hosts file {path}: {exc.strerror}") from None
        except Exception as exc:  # paramiko.hostkeys.InvalidHostKey is not an SSHException
            raise UserError(f"{path}: invalid known_hosts entry: {exc}") from None
        return keys

    def lookup(self, host: str, port: int) -> dict[str, paramiko.PKey]:
        """The pinned keys of host:port by key type (empty when the host is unknown)."""
        name = host_key_name(host, port)
        found: dict[str, paramiko.PKey] = {}
        for path in self.files:
            entries = self._load(path).lookup(name)
            if entries is not None:
                for key_type, key in entries.items():
                    found.setdefault(key_type, key)
        return found

    def pinned_in(self, host: str, port: int) -> list[Path]:
        """The files that pin a key for host:port."""
        name = host_key_name(host, port)
        return [path for path in self.files if self._load(path).lookup(name) is not None]

    def apply(self, client: paramiko.SSHClient) -> None:
        """Give the client every pinned key (as "system" keys, which paramiko never writes)."""
        for path in self.files:
            self._load(path)  # a broken file is a clear UserError, not a paramiko traceback
            client.load_system_host_keys(str(path))

    def add(self, host: str, port: int, key: paramiko.PKey, *, replace: bool = False) -> None:
        """Pin `key` for host:port in the writable file (atomically: temp file + rename).

        A host already pinned to another key is only re-pinned with replace=True, which drops its
        old entries from the writable file; an entry in a read-only file cannot be replaced.
        """
        name = host_key_name(host, port)
        known = self.lookup(host, port)
        if known.get(key.get_name()) == key:
            return
        if known and not replace:
            old = ", ".join(f"{t} {fingerprint(k)}" for t, k in sorted(known.items()))
            raise UserError(
                f"{name} is already pinned to another key ({old}); "
                "replace it only if you know why the host key changed"
            )
        keys = self._load(self.writable) if self.writable.exists() else paramiko.HostKeys()
        if replace:
            while keys.lookup(name) is not None:
                del keys[name]
            fixed = [path for path in self.pinned_in(host, port) if path != self.writable]
            if fixed:
                raise UserError(
                    f"{name} is pinned in {', '.join(map(str, fixed))}, which kbisect does not "
                    "write: change the entry there"
                )
        keys.add(name, key.get_name(), key)
        self.writable.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{self.writable.name}.", suffix=".tmp", dir=self.writable.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            keys.save(str(tmp))
            tmp.chmod(0o644)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            tmp.replace(self.writable)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def fetch_host_key(host: str, port: int, deadline: Deadline) -> paramiko.PKey:
    """The host key that host:port offers (ed25519 preferred), for `kbisect lab.trust`.

    Only the key exchange runs: no authentication, nothing is executed.
    """
    where = f"{host} port {port}"
    sock = open_socket(host, port, deadline, where)
    transport = paramiko.Transport(sock)
    watchdog = Watchdog(deadline, transport.close)
    try:
        options = transport.get_security_options()
        options.key_types = _prefer(KEY_TYPE, options.key_types)
        transport.banner_timeout = max(deadline.remaining(), 0.1)
        transport.start_client(timeout=max(deadline.remaining(), 0.1))
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if watchdog.fired:
            raise InfraError(f"{where}: no SSH handshake within {deadline.seconds:g} s") from None
        raise InfraError(f"{where}: SSH handshake failed: {describe(exc)}") from None
    finally:
        watchdog.cancel()
        transport.close()
        sock.close()


def _prefer(first: str, items: Iterable[str]) -> tuple[str, ...]:
    rest = [item for item in items if item != first]
    return (first, *rest)


def generate_keypair(path: Path, comment: str = "kbisect") -> paramiko.Ed25519Key:
    """Make an ed25519 key pair (`path` and `path.pub`, the private one mode 0600)."""
    if path.exists():
        raise UserError(f"{path} already exists: kbisect does not overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    processes.run(argv, deadline=60, hint="Debian package openssh-client")
    path.chmod(0o600)
    return load_private_key(path)


def parse_public_key(line: str) -> paramiko.PKey:
    """A key from an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)."""
    try:
        key_type, data = line.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
    except (ValueError, paramiko.SSHException, binascii.Error) as exc:
        raise UserError(f"not an OpenSSH public key line: {line[:60]!r} ({exc})") from None


def load_private_key(path: Path) -> paramiko.Ed25519Key:
    """The ed25519 private key in `path` (OpenSSH format, no passphrase)."""
    try:
        return paramiko.Ed25519Key.from_private_key_file(str(path))
    except FileNotFoundError:
        raise UserError(f"SSH key {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read SSH key {path}: {exc.strerror}") from None
    except paramiko.SSHException as exc:
        raise UserError(f"{path} is not an unencrypted ed25519 private key: {exc}") from None
