"""Serving the site on 127.0.0.1: the site's files and the raw files it links, nothing else.

http.server's SimpleHTTPRequestHandler would follow a symbolic link anywhere and list
directories; this handler resolves every path and serves it only when its real location is
inside the site or the results directory, never the store's database, and lists nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kbisect.progress import Say
from kbisect.results.schema import DB_NAME

HOST = "127.0.0.1"


class _Handler(SimpleHTTPRequestHandler):
    allowed: tuple[Path, ...] = ()
    site: Path = Path()
    refused_names: frozenset[str] = frozenset()
    quiet = True
    _raw = False

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        """The site's own files by their type; every other file (a log, a report, JUnit) as
        plain text, whatever its name: a raw file is never a page of this origin."""
        real = Path(path)
        self._raw = not (real == self.site or real.is_relative_to(self.site))
        return "text/plain; charset=utf-8" if self._raw else super().guess_type(path)

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if self._raw:
            self.send_header("Content-Security-Policy", "default-src 'none'; sandbox")
        super().end_headers()

    def translate_path(self, path: str) -> str:
        candidate = Path(super().translate_path(path))
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError):
            return ""
        if real.name in self.refused_names:
            return ""
        if not any(real == root or real.is_relative_to(root) for root in self.allowed):
            return ""
        return str(real)

    def send_head(self) -> Any:
        path = self.translate_path(self.path)
        if not path:
            self.send_error(404, "Not found")
            return None
        if Path(path).is_dir() and not (Path(path) / "index.html").is_file():
            self.send_error(404, "Not found")  # no directory listings
            return None
        return super().send_head()

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "Not found")
        return None

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def _common(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p) for p in paths]))


class SiteServer:
    """A running server; ``url`` is the site's index. Use as a context manager or close()."""

    def __init__(self, site: Path, results_dir: Path, port: int = 0, quiet: bool = True) -> None:
        site_real, results_real = site.resolve(), results_dir.resolve()
        root = _common([site_real, results_real])
        handler = type(
            "SiteHandler",
            (_Handler,),
            {
                "allowed": (site_real, results_real),
                "site": site_real,
                "refused_names": frozenset(
                    {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"}
                ),
                "quiet": quiet,
            },
        )
        self.httpd = ThreadingHTTPServer((HOST, port), partial(handler, directory=str(root)))
        self.httpd.daemon_threads = True
        bound = self.httpd.server_address[1]
        index = (site_real / "index.html").relative_to(root).as_posix()
        self.url = f"http://{HOST}:{bound}/{quote(index)}"
        self.port = int(bound)
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
