"""YAML text to a tree of nodes, refusing what a configuration file never needs.

PyYAML's safe composer keeps every node's line, so an error can say where it is. On top of it:
anchors and aliases are refused (a "billion laughs" file expands to gigabytes, and nothing in a
configuration needs them), nesting is bounded (100,000 `[` would exhaust the stack), and any
failure of the YAML layer, whatever its kind, becomes one located problem.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.reader import ReaderError

from kbisect.config.text import printable

MAX_DEPTH = 32  # nesting levels; the deepest real configuration has 5
CORE = "tag:yaml.org,2002:"
MAP_TAG, SEQ_TAG, STR_TAG, NULL_TAG = (CORE + t for t in ("map", "seq", "str", "null"))
TIMESTAMP_TAG = CORE + "timestamp"
# Tags a plain scalar may carry (implicit or written out): the YAML core schema's.
SCALAR_TAGS = frozenset(CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp"))


class _Refused(ComposerError):
    """Valid YAML that a configuration may not use."""


class _StrictLoader(yaml.SafeLoader):
    """The safe composer, refusing anchors, aliases and nesting deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                None, None, "anchors and aliases (&name, *name) are not supported: write the "
                "value out", event.start_mark,
            )  # fmt: skip
        if self.depth >= MAX_DEPTH:
            raise _Refused(
                None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def compose(text: str) -> tuple[yaml.Node | None, tuple[int | None, str] | None]:
    """The document's root node (None for an empty file), or the line and text of the error."""
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)
        return loader.get_single_node(), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "not valid YAML"
        if not isinstance(exc, _Refused):
            what = f"YAML syntax error: {what}"
        return None, (mark.line + 1 if mark else None, what)
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = printable(chr(exc.character)) if isinstance(exc.character, int) else "?"
        return None, (line, f"character {char} is not allowed in YAML (only printable text)")
    except (yaml.YAMLError, RecursionError) as exc:  # no other kind is known; never a traceback
        return None, (None, f"not valid YAML ({type(exc).__name__})")
    finally:
        if loader is not None:
            loader.dispose()


def tag_name(tag: str) -> str:
    """A tag as written in YAML: '!!int' for the core schema's, else as it is."""
    return "!!" + tag[len(CORE) :] if tag.startswith(CORE) else tag


def tag_problem(node: yaml.Node) -> str | None:
    """Why a node's tag is refused (python/..., !env, !!set on a mapping ...), or None."""
    if isinstance(node, yaml.ScalarNode):
        ok = node.tag in SCALAR_TAGS
    else:
        ok = node.tag == (MAP_TAG if isinstance(node, yaml.MappingNode) else SEQ_TAG)
    if ok:
        return None
    return f"YAML tag {printable(tag_name(node.tag), 60)} is not supported (plain values only)"


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG
