"""Serving the site on 127.0.0.1: the site's pages and the raw files they link, nothing else.

- Only files on the allow-list (kbisect.browser.served) are served; no directory listings.
- The Host header must name this server (127.0.0.1, localhost, with this port if any): a page
  elsewhere that rebinds its own DNS name to 127.0.0.1 gets 421, never the results.
- Every bad request (a NUL, a path too long, an unknown method, a malformed line) is answered
  with a 4xx, and no request ever prints a traceback.
- A thread per connection, and a listen backlog of BACKLOG, so a browser opening many
  connections at once (or 200 clients) is answered rather than refused.
"""

from __future__ import annotations

import contextlib
import email.utils
import mimetypes
import os
import stat
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

from kbisect.browser.served import Allowed
from kbisect.progress import Say

HOST = "127.0.0.1"
BACKLOG = 1024
"""Connections waiting to be accepted (the kernel caps it at net.core.somaxconn)."""
MAX_PATH = 4096
"""Longest request path, in bytes once decoded; longer is 414."""
_PLAIN = "text/plain; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    default_request_version = "HTTP/1.0"  # a request too broken to name one gets a status line

    # -- answering -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        body = self._head()
        if body is not None:
            with body, contextlib.suppress(ConnectionError):
                while chunk := body.read(64 * 1024):
                    self.wfile.write(chunk)

    def do_HEAD(self) -> None:
        body = self._head()
        if body is not None:
            body.close()

    def _refuse_method(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def _head(self) -> IO[bytes] | None:
        """Check the request, send the status and headers; the open file to send, or None."""
        if not self._host_ok():
            return None
        real = self._target()
        if real is None:
            return None
        try:
            body = open(real, "rb")  # noqa: SIM115, PTH123 (closed by the caller)
            st = os.fstat(body.fileno())
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        site = self.server.allowed.site
        raw = not Path(real).is_relative_to(site)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", _PLAIN if raw else _page_type(real))
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if raw:  # a raw file is never a page of this origin
            self.send_header("Content-Security-Policy", "default-src 'none'; sandbox")
        self.end_headers()
        return body

    def _host_ok(self) -> bool:
        host = self.headers.get("Host")
        if host is None:
            self.send_error(HTTPStatus.BAD_REQUEST, "no Host header")
            return False
        if host.lower() not in self.server.host_names:
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "not this server's name")
            return False
        return True

    def _target(self) -> str | None:
        """The real path of the allowed file the request names (a directory: its index.html);
        None after answering 4xx."""
        try:
            path = unquote(urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            self.send_error(HTTPStatus.BAD_REQUEST, "not a path")
            return None
        if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not path.startswith("/") or "\0" in path or "\\" in path:
            self.send_error(HTTPStatus.BAD_REQUEST, "not a path")
            return None
        if ".." in parts:  # nothing above the served directory exists for a client
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        try:
            real = os.path.realpath(os.path.join(self.server.root, *parts))  # noqa: PTH118
            if stat.S_ISDIR(Path(real).stat().st_mode):
                real = os.path.join(real, "index.html")  # noqa: PTH118
        except (OSError, ValueError):
            real = ""
        if not real or not self.server.allowed.permits(real):
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        return real

    # -- never a traceback ---------------------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code == HTTPStatus.NOT_IMPLEMENTED:  # an unknown method: still the client's error
            code = HTTPStatus.METHOD_NOT_ALLOWED
        self._not_allowed = code == HTTPStatus.METHOD_NOT_ALLOWED
        with contextlib.suppress(ConnectionError):
            super().send_error(code, message, explain)

    def end_headers(self) -> None:
        if getattr(self, "_not_allowed", False):
            self.send_header("Allow", "GET, HEAD")
        super().end_headers()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except ConnectionError:
            self.close_connection = True
        except Exception as exc:  # a bug here must not become a traceback or a hang
            self.close_connection = True
            self.log_message("error answering %r: %s", self.requestline, exc)
            if not getattr(self, "_headers_buffer", None):
                self.send_error(HTTPStatus.BAD_REQUEST)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


def _page_type(path: str) -> str:
    guessed = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return guessed


class _Server(ThreadingHTTPServer):
    request_queue_size = BACKLOG
    daemon_threads = True
    allowed: Allowed
    root: str
    host_names: frozenset[str]
    quiet: bool

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection reset and the like: nothing to print (never a traceback)."""


class SiteServer:
    """A running server; ``url`` is the site's index. Use as a context manager or close()."""

    def __init__(self, site: Path, results_dir: Path, port: int = 0, quiet: bool = True) -> None:
        site_real, results_real = site.resolve(), results_dir.resolve()
        root = Path(os.path.commonpath([site_real, results_real]))
        self.httpd = _Server((HOST, port), _Handler, bind_and_activate=False)
        try:
            self.httpd.server_bind()
            self.httpd.server_activate()
        except OSError:
            self.httpd.server_close()
            raise
        self.port = int(self.httpd.server_address[1])
        self.httpd.allowed = Allowed(site_real, results_real)
        self.httpd.root = str(root)
        self.httpd.quiet = quiet
        names = {HOST, "localhost", self.httpd.server_name.lower()}
        self.httpd.host_names = frozenset(
            {*names, *(f"{n}:{self.port}" for n in names)} - {"", f":{self.port}"}
        )
        index = (site_real / "index.html").relative_to(root).as_posix()
        self.url = f"http://{HOST}:{self.port}/{quote(index)}"
        self._thread: threading.Thread | None = None

    def start(self) -> SiteServer:
        """Serve in a background thread (tests; `browse` serves in the foreground)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> SiteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    site: Path,
    results_dir: Path,
    port: int = 0,
    say: Say = print,
    quiet: bool = True,
) -> None:
    """Serve until Ctrl-C (or SIGTERM, as KeyboardInterrupt or SystemExit), then close cleanly."""
    server = SiteServer(site, results_dir, port, quiet)
    try:
        say(f"serving {site} on {server.url}  (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.close()
        say("stopped")


@contextlib.contextmanager
def serving(site: Path, results_dir: Path, port: int = 0) -> Iterator[SiteServer]:
    """A server in a background thread for the duration of a with-block."""
    server = SiteServer(site, results_dir, port).start()
    try:
        yield server
    finally:
        server.close()
