"""Where a host is, and network calls bounded by a wall-clock deadline.

paramiko's own timeouts bound single reads; a `Watchdog` bounds a whole operation (a login, a
handshake, a command) by closing its socket or channel when the deadline passes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kbisect.deadline import Deadline
from kbisect.errors import InfraError


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to log in."""

    name: str
    address: str
    port: int
    user: str
    key_path: Path

    @property
    def where(self) -> str:
        return f"{self.name} ({self.user}@{self.address} port {self.port})"


class Watchdog:
    """Runs `action` (closing a socket or transport) once the deadline passes, unless cancelled.

    The operation's code cancels it when done, and checks `fired` to tell a deadline from a
    failure.
    """

    def __init__(self, deadline: Deadline, action: Callable[[], object]) -> None:
        self.fired = False
        self._action = action
        self._timer = threading.Timer(deadline.remaining(), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(Exception):
            self._action()

    def cancel(self) -> None:
        self._timer.cancel()


def describe(exc: BaseException) -> str:
    """An exception as one line of an error message (its type where it says nothing)."""
    text = str(exc) or type(exc).__name__
    return text.strip()


def open_socket(host: str, port: int, deadline: Deadline, where: str) -> socket.socket:
    """A TCP connection to host:port within the deadline; InfraError naming `where` if not."""
    if deadline.expired:
        raise InfraError(f"{where}: no time left to connect")
    try:
        return socket.create_connection((host, port), timeout=max(deadline.remaining(), 0.1))
    except TimeoutError:
        raise InfraError(f"{where}: no TCP connection within {deadline.seconds:g} s") from None
    except OSError as exc:
        raise InfraError(f"{where}: cannot connect: {exc.strerror or exc}") from None


def drop(sock: socket.socket) -> None:
    """Cut a connection now: shutdown wakes any thread blocked on the socket."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
