"""Host leases: one user of a lab host at a time, across processes on this machine.

These are the leases of a controller on its own (the default): with a shared store the leases
are rows in it instead (kbisect.lab.store_lease), and ``lease_book`` there picks which.

A lease is an exclusive flock on `LEASES_DIR/HOST.lock` plus `HOST.json` saying who holds it. The
kernel drops a flock when its holder dies, however it dies (kill -9 included), so a dead holder
never blocks anyone; its info file may stay behind, but it only counts while the lock is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kbisect.closeable import Closeable
from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.processes import pid_alive

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_POLL_SECONDS = 0.1
_SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a host's lease."""

    host: str
    pid: int
    user: str
    hostname: str
    purpose: str
    since: datetime
    # when a shared store's lease ends unless its holder heartbeats (None: with its holder)
    expires: datetime | None = field(default=None, compare=False)

    def describe(self) -> str:
        since = self.since.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        text = f"{self.user}@{self.hostname} (pid {self.pid}) for {self.purpose!r} since {since}"
        if self.expires is not None:
            text += f", expires {self.expires.astimezone().strftime('%Y-%m-%d %H:%M:%S')}"
        return text

    def to_json(self) -> str:
        data = asdict(self)
        data["since"] = self.since.isoformat()
        del data["expires"]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LeaseInfo:
        data = json.loads(text)
        return cls(
            host=str(data["host"]),
            pid=int(data["pid"]),
            user=str(data["user"]),
            hostname=str(data["hostname"]),
            purpose=str(data["purpose"]),
            since=datetime.fromisoformat(str(data["since"])),
        )


def check_host_name(host: str) -> str:
    if not _NAME_RE.fullmatch(host):
        raise UserError(f"bad host name {host!r}: use letters, digits, '.', '_' and '-'")
    return host


def _paths(leases_dir: Path, host: str) -> tuple[Path, Path]:
    check_host_name(host)
    return leases_dir / f"{host}.lock", leases_dir / f"{host}.json"


def _open_lock(lock_path: Path) -> int:
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise InfraError(f"cannot open lease file {lock_path}: {exc.strerror}") from None


def _try_lock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _alive_here(info: LeaseInfo) -> bool:
    """False only when the info names a process on this machine that no longer exists."""
    if info.hostname != socket.gethostname():
        return True
    return pid_alive(info.pid)


def _read_info(info_path: Path) -> LeaseInfo | None:
    try:
        return LeaseInfo.from_json(info_path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class Lease(Closeable):
    """A held lease on one host; release it with `release()` or by leaving the `with` block."""

    def __init__(
        self, leases_dir: Path, host: str, fd: int, info: LeaseInfo, *, inherited: bool = False
    ) -> None:
        self.leases_dir = leases_dir
        self.host = host
        self.info = info
        # a holder's info file outlives it only when it died holding the lease (release removes it)
        self.inherited = inherited
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, leases_dir: Path, host: str, purpose: str, deadline: Deadline) -> Lease:
        """Take the host's lease, waiting for the current holder until the deadline; then
        InfraError names the holder."""
        lock_path, info_path = _paths(leases_dir, host)
        fd = _open_lock(lock_path)
        try:
            while not _try_lock(fd, fcntl.LOCK_EX):
                if deadline.expired:
                    holder = cls.holder(leases_dir, host)
                    who = holder.describe() if holder is not None else "another process"
                    raise InfraError(
                        f"host {host} is leased by {who}; gave up waiting after "
                        f"{deadline.seconds:g} s"
                    )
                time.sleep(min(_POLL_SECONDS, deadline.remaining()))
            inherited = info_path.exists()
            info = LeaseInfo(
                host=host,
                pid=os.getpid(),
                user=current_user(),
                hostname=socket.gethostname(),
                purpose=purpose,
                since=datetime.now(UTC),
            )
            _write_atomically(info_path, info.to_json())
        except BaseException:
            os.close(fd)
            raise
        return cls(leases_dir, host, fd, info, inherited=inherited)

    @staticmethod
    def holder(leases_dir: Path, host: str) -> LeaseInfo | None:
        """Who holds the host's lease, or None when it is free (a dead holder's is free)."""
        lock_path, info_path = _paths(leases_dir, host)
        if not lock_path.exists():
            return None
        fd = _open_lock(lock_path)
        try:
            if _try_lock(fd, fcntl.LOCK_SH):
                return None
            # Held. A new holder writes its info right after locking: a missing file or one of
            # a dead process is the previous holder's, so give the new one a moment.
            settle = Deadline(_SETTLE_SECONDS)
            while True:
                info = _read_info(info_path)
                if (info is not None and _alive_here(info)) or settle.expired:
                    break
                time.sleep(_POLL_SECONDS)
            if info is None or not _alive_here(info):
                return LeaseInfo(host, -1, "?", "?", "(unknown holder)", datetime.now(UTC))
            return info
        finally:
            os.close(fd)  # also drops the shared lock if we took it

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        _, info_path = _paths(self.leases_dir, self.host)
        with contextlib.suppress(FileNotFoundError):
            info_path.unlink()
        fd, self._fd = self._fd, None
        os.close(fd)

    close = release  # what leaving the with block calls


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InfraError(f"cannot write lease info {path}: {exc.strerror}") from None


class FileLeases:
    """The leases of this machine's controllers: flocks in a directory (LeaseBook)."""

    def __init__(self, leases_dir: Path) -> None:
        self.leases_dir = leases_dir

    def describe(self) -> str:
        return f"on this machine ({self.leases_dir})"

    def acquire(self, host: str, purpose: str, deadline: Deadline) -> Lease:
        return Lease.acquire(self.leases_dir, host, purpose, deadline)

    def holder(self, host: str) -> LeaseInfo | None:
        return Lease.holder(self.leases_dir, host)

    def holders(self) -> list[LeaseInfo]:
        if not self.leases_dir.is_dir():
            return []
        hosts = sorted(path.stem for path in self.leases_dir.glob("*.lock"))
        return [info for info in map(self.holder, hosts) if info is not None]

    def hold(self, host: str, purpose: str, seconds: float, say: Callable[[str], None]) -> None:
        """Hold a host by hand. A flock lives with its process: this one holds it for
        ``seconds`` in the foreground (or until interrupted)."""
        with self.acquire(host, purpose, Deadline(0)) as lease:
            say(f"{host}: held by {lease.info.describe()} for {seconds:g} s (Ctrl-C ends it)")
            time.sleep(seconds)

    def take_back(self, host: str) -> LeaseInfo | None:
        holder = self.holder(host)
        if holder is None:
            return None
        raise UserError(
            f"host {host} is leased by {holder.describe()}: a lease on this machine lives with "
            "its process; end that process (leases in a shared store can be taken back)"
        )
