"""What `kbisect browse` may serve: an allow-list, not a rule about names.

Two kinds of file: the site's pages, which the renderer wrote into the site directory, and the
raw files of the results directory the pages may link (the logs, builds' logs, runs' JUnit and
summaries, bisections' reports that the store refers to). Anything else is refused, whatever it
is called: a copy or a hard link of the database under another name, a file someone dropped
into the results directory, the manifest (``.manifest.json``), the renderer's temporary files.
Real paths are compared, so a symbolic link is served only when it leads to an allowed file.

The list is made when the server starts and again when the site's manifest changes (a render
while serving), at most once per change. As a last guard, nothing that is the database (same
device and inode) or starts like an SQLite database is ever served.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from kbisect.browser.bisection import FILES as BISECTION_FILES
from kbisect.browser.manifest import MANIFEST
from kbisect.browser.safety import Resolver
from kbisect.results.connection import store_url
from kbisect.results.schema import DB_NAME
from kbisect.results.store import ResultsStore

_SQLITE_MAGIC = b"SQLite format 3\0"
_DB_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal")


def site_pages(site_real: Path) -> set[str]:
    """The real paths of the files the renderer wrote: regular files below the site directory,
    not dot files (the manifest, temporary files) and not symbolic links (it writes none)."""
    pages = set()
    for folder, dirs, files in os.walk(site_real):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or name == MANIFEST:
                continue
            path = os.path.join(folder, name)  # noqa: PTH118 (str paths: 70,000 pages)
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    pages.add(path)
            except OSError:
                continue
    return pages


def linked_files(results_dir: Path) -> set[str]:
    """The real paths of the raw files pages may link: what the store refers to, each checked
    to lie inside the results directory."""
    if store_url() is None and not (results_dir / DB_NAME).is_file():
        return set()
    resolver = Resolver(results_dir)
    with ResultsStore(results_dir) as store:
        relative = store.referenced_files()
        relative += [
            f"bisect/{b.id}/{name}" for b in store.bisections() for name in BISECTION_FILES
        ]
    found = (resolver.file(path) for path in relative)
    return {f[0] for f in found if f is not None}


class Allowed:
    """The allow-list of one site and results directory, refreshed when the manifest changes."""

    def __init__(self, site: Path, results_dir: Path) -> None:
        self.site = site.resolve()
        self.results_dir = results_dir.resolve()
        self._lock = threading.Lock()
        self._files: frozenset[str] = frozenset()
        self._database: set[tuple[int, int]] = set()
        self._stamp: tuple[int, int] | None = None
        self.refresh()

    def _manifest_stamp(self) -> tuple[int, int]:
        try:
            st = (self.site / MANIFEST).stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def refresh(self) -> None:
        """Make the list again if the manifest changed since it was made."""
        with self._lock:
            stamp = self._manifest_stamp()
            if stamp == self._stamp:
                return
            files = site_pages(self.site) | linked_files(self.results_dir)
            database = set()
            for name in _DB_FILES:
                try:
                    st = (self.results_dir / name).stat()
                except OSError:
                    continue
                database.add((st.st_dev, st.st_ino))
            self._files, self._database, self._stamp = frozenset(files), database, stamp

    def permits(self, real: str) -> bool:
        """Whether the file at the real path ``real`` may be served (a page of the site, or a
        file the store refers to), and is not the database in disguise."""
        if real not in self._files:
            self.refresh()
            if real not in self._files:
                return False
        try:
            st = Path(real).stat()
            if (st.st_dev, st.st_ino) in self._database:
                return False
            with open(real, "rb") as f:  # noqa: PTH123
                return f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC
        except OSError:
            return False
