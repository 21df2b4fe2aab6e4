"""What keeps the site honest about files: links and reads never leave the results directory.

Every path the store holds is relative to the results directory and the model refuses ``..``
and absolute paths; a symbolic link inside the results directory can still point anywhere. So a
file is only read, linked or served after its real path (symbolic links resolved) has been
checked to lie inside the real results directory.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path, PurePosixPath
from urllib.parse import quote

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters (but tab and newline), and the bidirectional marks, embeddings, overrides
and isolates (U+061C, U+200E-F, U+202A-E, U+2066-9): a right-to-left override in a commit
subject would show a page's text in an order it does not have."""


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with control characters (but tab and newline) written as escapes like ``\\x1b``
    and bidirectional controls as ``\\u202e``, so a log or a name cannot move the cursor of a
    terminal, reorder a page's text or hide in a page."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_escape, text)


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s real location is ``root`` or below it (``root`` already resolved)."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return real == root or real.is_relative_to(root)


def safe_file(results_dir: Path, relative: str) -> Path | None:
    """The real path of a file the store refers to, or None when the reference would leave the
    results directory (``..``, an absolute path, a symbolic link to elsewhere) or is no regular
    file."""
    found = Resolver(results_dir).file(relative)
    return None if found is None else Path(found[0])


_SIMPLE = re.compile(r"(?:[^/\\\0.][^/\\\0]*/)*[^/\\\0.][^/\\\0]*")
"""A relative path whose parts are names that start with no dot: no "", "." or ".." parts, no
backslash, no NUL (what _relative checks, for the common case)."""


def _relative(path: str, parts: list[str]) -> bool:
    """kbisect.results.model.check_relative, as string tests (it is asked for every log)."""
    return bool(
        parts
        and not path.startswith("/")
        and ".." not in parts
        and "\\" not in path
        and "\0" not in path
    )


_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class Resolver:
    """safe_file for many files of one results directory, fast: the real path of every
    directory met is remembered, so a new file costs an lstat per component not seen before
    (a symbolic link, wherever it is, is resolved completely and checked)."""

    def __init__(self, results_dir: Path) -> None:
        self.root = os.path.realpath(results_dir)
        self._dirs: dict[str, str | None] = {"": self.root}

    def _inside(self, real: str) -> bool:
        return real.startswith(self.root + "/")

    def _follow(self, path: str) -> str | None:
        real = os.path.realpath(path)
        return real if self._inside(real) else None

    def _dir(self, relative: str) -> str | None:
        found = self._dirs.get(relative, "")
        if found != "":
            return found
        parent, _, name = relative.rpartition("/")
        base = self._dir(parent)
        real: str | None = None
        if base is not None:
            real = base + "/" + name
            try:
                link = stat.S_ISLNK(os.lstat(real).st_mode)
            except OSError:
                link = False  # missing: whatever is looked up below it is missing too
            if link:
                real = self._follow(real)
        self._dirs[relative] = real
        return real

    def _path(self, relative: str) -> str | None:
        """The path of ``relative`` below the real path of its directory (checked), or None."""
        if _SIMPLE.fullmatch(relative):  # the usual a/b/c.log: nothing to clean up or refuse
            folder, _, name = relative.rpartition("/")
        else:
            parts = [p for p in relative.split("/") if p not in ("", ".")]
            if not _relative(relative, parts):
                return None
            folder, name = "/".join(parts[:-1]), parts[-1]
        base = self._dir(folder)
        return None if base is None else base + "/" + name

    def open(self, relative: str) -> tuple[str, int, os.stat_result] | None:
        """``file``'s real path and stat, with a descriptor open for reading it (the caller
        closes it), or None. The usual file costs an open and an fstat where ``file`` and an
        open of it cost an lstat and an open (a path walk each: a few microseconds, twice a
        cell): the open refuses a symbolic link (O_NOFOLLOW), which is then resolved and
        checked as ``file`` does; O_NONBLOCK: a FIFO does not block it; whatever is no regular
        file is closed again at once."""
        path = self._path(relative)
        if path is None:
            return None
        try:
            fd = os.open(path, _READ)
        except OSError as e:
            if e.errno != errno.ELOOP:
                return None
            found = self.file(relative)  # a symbolic link: followed, and checked
            if found is None:
                return None
            path = found[0]
            try:
                fd = os.open(path, _READ)
            except OSError:
                return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return path, fd, st

    def file(self, relative: str) -> tuple[str, os.stat_result] | None:
        """The real path and stat of a regular file inside the results directory, or None."""
        path = self._path(relative)
        if path is None:
            return None
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                followed = self._follow(path)
                if followed is None:
                    return None
                path = followed
                st = Path(path).stat()
        except OSError:
            return None
        return (path, st) if stat.S_ISREG(st.st_mode) else None


def href(from_dir: Path, target: Path) -> str:
    """A relative URL from a page's (resolved) directory to a (resolved) file, each part quoted,
    so it works from file:// and from a web server alike."""
    rel = PurePosixPath(os.path.relpath(target, from_dir))
    return "/".join(quote(part, safe="") if part != ".." else part for part in rel.parts)


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe rendering of a name (never used alone: always next to a hash or id)."""
    return _SLUG.sub("_", text)[:limit].strip("._") or "_"
