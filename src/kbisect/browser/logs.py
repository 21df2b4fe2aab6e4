"""Logs for the browser: read with a size cap, decoded leniently, cut into pages of lines.

Logs come from kernels, hypervisors and test programs: any bytes at all. They are decoded as
UTF-8 with replacement characters, control characters are shown as escapes (``\\x1b``), very long
lines are cut, and every line is HTML-escaped before it reaches a page.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup, escape

from kbisect.browser.safety import visible

LOG_PAGE_LINES = 2000
"""Lines per page of a paged log."""
INLINE_MAX_LINES = 300
"""A log this short (and at most INLINE_MAX_BYTES) is shown on the page that refers to it."""
INLINE_MAX_BYTES = 48 * 1024
MAX_LOG_BYTES = 64 * 1024 * 1024
"""Beyond this a log is shown up to here; the rest is in the raw file."""
MAX_LINE_CHARS = 4000


@dataclass(frozen=True)
class LogText:
    lines: list[str]
    size: int
    truncated: bool
    """The file is longer than MAX_LOG_BYTES: only its beginning is in ``lines``."""

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.lines) // LOG_PAGE_LINES))

    @property
    def inline(self) -> bool:
        return self.size <= INLINE_MAX_BYTES and len(self.lines) <= INLINE_MAX_LINES

    def page(self, number: int) -> list[str]:
        start = (number - 1) * LOG_PAGE_LINES
        return self.lines[start : start + LOG_PAGE_LINES]


_CLEAN = re.compile("[^\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*")
"""Text without control characters other than tab and newline (no CR either) and without
bidirectional controls (safety.visible's)."""
_CONTROL_BYTES = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])
"""_CLEAN's characters in ASCII: what ASCII text must not have."""


def _clean(data: bytes, text: str) -> bool:
    """Whether ``text`` (``data`` decoded) is _CLEAN: for ASCII (most logs) by deleting the
    control bytes from ``data`` (a third of the regular expression's time)."""
    if data.isascii():
        return len(data.translate(None, _CONTROL_BYTES)) == len(data)
    return _CLEAN.fullmatch(text) is not None


def _line(text: str) -> str:
    text = text.rstrip("\r")
    if len(text) > MAX_LINE_CHARS:
        text = f"{text[:MAX_LINE_CHARS]} [... {len(text) - MAX_LINE_CHARS} more characters]"
    return visible(text)


def read_log_bytes(path: str | Path | int, size: int) -> bytes:
    """The first ``min(size, MAX_LOG_BYTES)`` bytes of a checked file (``size`` from its stat),
    or of a descriptor open for reading one (safety.Resolver.open's; left open).

    os-level reads of what is shown: most logs are small, and a buffered file object asked for
    MAX_LOG_BYTES sets that much up first (a cell page reads two or three logs). The path is
    real (symbolic links resolved): one swapped in since the check is not followed, and a FIFO
    swapped in does not block."""
    if isinstance(path, int):
        return _read(path, size)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        return _read(fd, size)
    finally:
        os.close(fd)


def _read(fd: int, size: int) -> bytes:
    want = min(size, MAX_LOG_BYTES)
    chunks = [os.read(fd, want)]
    got = len(chunks[0])
    while got < want and chunks[-1]:  # a short read
        chunks.append(os.read(fd, want - got))
        got += len(chunks[-1])
    return b"".join(chunks) if len(chunks) > 1 else chunks[0]


def read_log(path: str | Path, size: int | None = None) -> LogText:
    """A log's lines (at most MAX_LOG_BYTES of it); ``path`` must have been checked already."""
    if size is None:
        size = os.stat(path).st_size  # noqa: PTH116
    data = read_log_bytes(path, size)
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if not _CLEAN.fullmatch(text) or max(map(len, lines)) > MAX_LINE_CHARS:
        lines = [_line(line) for line in lines]  # the unusual case: escapes, CRs, long lines
    if lines[-1] == "":
        lines.pop()
    return LogText(lines, size, size > MAX_LOG_BYTES)


def inline_log(path: str | int, size: int, prefix: str) -> tuple[Markup, int] | None:
    """A short, plain log (a cell's job output or dmesg) as ``lines_html`` of ``read_log``
    shows it, with its line count, read and escaped in one piece; None when it is longer than
    a page shows inline or needs more care (control characters, CRs, very long lines): then
    ``read_log`` it is. ``path`` (or a descriptor open for reading it) must have been checked
    already; ``size`` is its stat's."""
    if size > INLINE_MAX_BYTES:
        return None
    data = read_log_bytes(path, size)
    text = data.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    elif not text:
        return Markup(""), 0
    lines = text.count("\n") + 1
    if lines > INLINE_MAX_LINES or not _clean(data, text):
        return None
    if size > MAX_LINE_CHARS and max(map(len, text.split("\n"))) > MAX_LINE_CHARS:
        return None
    escaped = str(escape(text)).split("\n")
    out = "</span>\n".join(map(str.__add__, _line_starts(prefix), escaped)) + "</span>\n"
    return Markup(out), lines  # noqa: S704 (escaped just above)


@functools.lru_cache(maxsize=64)
def _line_starts(prefix: str) -> list[str]:
    """The opening tags of lines 1 to INLINE_MAX_LINES of an inline log (lines_html's)."""
    return [f'<span id="{prefix}L{n}" data-n="{n}">' for n in range(1, INLINE_MAX_LINES + 1)]


def page_of(line: int) -> int:
    """The page (from 1) a line number (from 1) is on."""
    return max(0, line - 1) // LOG_PAGE_LINES + 1


def lines_html(lines: Sequence[str], first: int, prefix: str = "") -> Markup:
    """Numbered lines for a <pre>: each line escaped, with an anchor ``{prefix}L{n}``."""
    escaped = str(escape("\n".join(lines))).split("\n") if lines else []
    out = [
        f'<span id="{prefix}L{n}" data-n="{n}">{text}</span>\n'
        for n, text in enumerate(escaped, first)
    ]
    return Markup("".join(out))  # noqa: S704 (the lines were escaped just above)
