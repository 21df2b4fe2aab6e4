"""Text from configuration files, made safe to show in a one-line message.

A file may hold anything: escape sequences that recolour a terminal, a carriage return that
forges a second `file:line:` line, a value a megabyte long. Whatever reaches a message goes
through `shown` or `printable`, so a problem stays one short, honest line.
"""

from __future__ import annotations

import unicodedata

SHOWN_CHARS = 60
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Unicode categories a configuration value may not contain (tab and newline excepted):
# controls, lone surrogates, and the line and paragraph separators.
_REFUSED = {"Cc", "Cs", "Zl", "Zp"}


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int | None = None) -> str:
    """`text` with every character a terminal would act on escaped; cut to `limit` characters."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 3]
        cut = True
    else:
        cut = False
    out = "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
    return out + "..." if cut else out


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value quoted for a message: 'text' escaped and at most about `limit` characters."""
    text = str(value)
    if len(text) <= limit:
        return f"'{printable(text)}'"
    return f"'{printable(text[:limit])}...' ({len(text)} characters)"


def refused_character(text: str) -> str | None:
    """The first character a configuration string may not hold, escaped, or None."""
    for ch in text:
        if ch not in "\t\n" and unicodedata.category(ch) in _REFUSED:
            return _escape(ch)
    return None
