"""YAML nodes to typed dataclasses, with every mistake located by file, line and key path.

We walk the composed nodes ourselves instead of `yaml.safe_load`, so an error can say where it
is. Supported field types: str, int, float, bool, Literal[...], X | None, list[X],
dict[str, X], nested models, and unions of a scalar type with a model (chosen by the node: a
mapping reads as the model). Every number has a range and every string is text without
control characters; both are checked here, for every field alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

import yaml

from kbisect.config.nodes import is_null, tag_name, tag_problem
from kbisect.config.text import printable, refused_character, shown
from kbisect.errors import ConfigProblem

_INVALID: Any = object()
M = TypeVar("M", bound="Model")
Bounds = tuple[float, float]
# What a scalar's constructor may raise on a tagged value it cannot read (`!!int abc`).
_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, OverflowError)


@dataclass(frozen=True)
class Origin:
    """Where a model came from: its file, its line, its key path, and the lines of its keys."""

    file: str
    line: int
    path: str
    lines: dict[str, int]


def doc(
    text: str,
    default: Any = dataclasses.MISSING,
    factory: Any = dataclasses.MISSING,
    *,
    bounds: Bounds | None = None,
    non_empty: bool = False,
) -> Any:
    """A model field with a description (used by the configuration reference); a number's
    `bounds` (inclusive) and a list's `non_empty` are checked by the reader."""
    meta: dict[str, Any] = {"doc": text, "bounds": bounds, "non_empty": non_empty}
    return field(default=default, default_factory=factory, metadata=meta)


@dataclass(kw_only=True)
class Model:
    """Base of configuration objects. `located` is filled by the reader, not by YAML."""

    located: Origin | None = field(default=None, repr=False, compare=False)

    def check(self) -> list[tuple[str, str]]:
        """Rules within one object, as (relative key, message); overridden where needed."""
        return []

    def where(self, rel: str = "") -> tuple[str, int | None, str]:
        """File, line and full key path of one of this object's keys (or of the object)."""
        if self.located is None:
            return ("<built-in>", None, rel)
        o = self.located
        line = o.lines.get(rel, o.line)
        sep = "." if o.path and rel and not rel.startswith("[") else ""
        return (o.file, line, f"{o.path}{sep}{rel}")

    def problem(self, rel: str, message: str) -> ConfigProblem:
        file, line, key = self.where(rel)
        return ConfigProblem(file, line, key, message)


Fields = tuple[tuple[dataclasses.Field[Any], Any], ...]
_FIELDS: dict[type, Fields] = {}  # resolving hints is slow; a file may hold thousands of entries


def model_fields(cls: type) -> Fields:
    """The YAML-visible fields of a model with their resolved types."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        _FIELDS[cls] = tuple((f, hints[f.name]) for f in fields if f.name != "located")
    return _FIELDS[cls]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"


def describe(tp: Any, bounds: Bounds | None = None, non_empty: bool = False) -> str:
    """A type as a user reads it in an error message or the reference."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = " (or null)" if len(rest) < len(typing.get_args(tp)) else ""
        return " or ".join(describe(a, bounds, non_empty) for a in rest) + nullable
    if origin is list:
        some = "a non-empty" if non_empty else "a"
        item = typing.get_args(tp)[0]
        within = f" from {_number(bounds[0])} to {_number(bounds[1])}" if bounds else ""
        return f"{some} list of {_plural(item)}{within if item in (int, float) else ''}"
    if origin is dict:
        return f"a mapping of names to {_plural(typing.get_args(tp)[1])}"
    if isinstance(tp, type) and issubclass(tp, Model):
        return f"a mapping ({tp.__name__})"
    text = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if tp in (int, float) and bounds is not None:
        return f"{text[tp]} from {_number(bounds[0])} to {_number(bounds[1])}"
    return text.get(tp, str(tp))


def _plural(tp: Any) -> str:
    text = describe(tp)
    for article in ("a ", "an "):
        if text.startswith(article):
            text = text[len(article) :]
            return text if text.endswith("s") or text.startswith("mapping") else text + "s"
    return text


class Reader:
    """Reads one file's nodes into models, collecting problems instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []
        # Names of objects that failed to load: references to them are not reported again.
        self.broken_names: set[str] = set()
        # Whether something that may define a name was dropped without one (a broken top-level
        # section, an entry whose name is unreadable): unknown names are then not reported.
        self.incomplete = False
        self._constructor = yaml.constructor.SafeConstructor()

    def read_model(self, cls: type[M], node: yaml.Node, path: str) -> M | None:
        value = self._read(cls, node, path, "", {})
        return None if value is _INVALID else value

    def _problem(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, node.start_mark.line + 1, path, message))

    def _read(self, tp: Any, node: yaml.Node, path: str, rel: str, lines: dict[str, int]) -> Any:
        lines[rel] = node.start_mark.line + 1
        refused = tag_problem(node)
        if refused:
            self._problem(node, path, refused)
            return _INVALID
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if is_null(node) and len(args) < len(typing.get_args(tp)):
                return None
            if len(args) == 1:
                return self._read(args[0], node, path, rel, lines)
            return self._alternative(tp, args, node, path, rel, lines)
        if isinstance(tp, type) and issubclass(tp, Model):
            return self._read_model(tp, node, path)
        if origin is list:
            if not isinstance(node, yaml.SequenceNode):
                return self._wrong(tp, node, path)
            items = [
                self._read(typing.get_args(tp)[0], item, f"{path}[{i}]", f"{rel}[{i}]", lines)
                for i, item in enumerate(node.value)
            ]
            # A broken item is reported and left out, so its siblings are still checked.
            return [i for i in items if i is not _INVALID]
        if origin is dict:
            pairs = self._mapping(node, path)
            if pairs is None:
                return self._wrong(tp, node, path)
            result = {}
            for key, value in pairs:
                sub = f"{rel}.{key}" if rel else key
                result[key] = self._read(typing.get_args(tp)[1], value, f"{path}.{key}", sub, lines)
            return _INVALID if _INVALID in result.values() else result
        return self._scalar(tp, node, path)

    def _alternative(
        self, tp: Any, args: list[Any], node: yaml.Node, path: str, rel: str, lines: dict[str, int]
    ) -> Any:
        """A union of a model and a scalar type: a mapping reads as the model, anything else as
        the scalar; a mistake names both."""
        is_model = [isinstance(a, type) and issubclass(a, Model) for a in args]
        if isinstance(node, yaml.MappingNode) and any(is_model):
            return self._read(args[is_model.index(True)], node, path, rel, lines)
        if isinstance(node, yaml.ScalarNode) and not all(is_model):
            return self._scalar(args[is_model.index(False)], node, path, shown_as=tp)
        return self._wrong(tp, node, path)

    def _scalar(self, tp: Any, node: yaml.Node, path: str, shown_as: Any = None) -> Any:
        """A scalar of type ``tp``; a mistake is described as ``shown_as`` (default ``tp``)."""
        shown_as = tp if shown_as is None else shown_as
        if not isinstance(node, yaml.ScalarNode):
            return self._wrong(shown_as, node, path)
        try:
            value = self._constructor.construct_object(node)
        except _CONSTRUCT_ERRORS:
            tag = tag_name(node.tag)
            self._problem(
                node,
                path,
                f"{shown(node.value)} is not a valid {tag} (expected {describe(shown_as)})",
            )
            return _INVALID
        if typing.get_origin(tp) is Literal:
            allowed = typing.get_args(tp)
            if value in allowed:
                return value
            if isinstance(value, bool) and node.value in allowed:
                return node.value  # YAML 1.1 reads on/off/yes/no as booleans; these are words
            return self._wrong(shown_as, node, path)
        if tp is str and value is not None and not isinstance(value, bool):
            text = value if isinstance(value, str) else node.value  # `6.1` stays "6.1"
            return self._text(text, node, path)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return self._float(value, node, path)
        if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
            return value
        return self._wrong(shown_as, node, path)

    def _text(self, text: str, node: yaml.Node, path: str) -> Any:
        if refused_character(text) is None:
            return text
        self._problem(node, path, f"expected text without control characters, got {shown(text)}")
        return _INVALID

    def _float(self, value: int, node: yaml.Node, path: str) -> Any:
        try:
            return float(value)
        except OverflowError:
            self._problem(node, path, f"number too large: {printable(node.value, 40)}")
            return _INVALID

    def _wrong(self, tp: Any, node: yaml.Node, path: str) -> Any:
        self._problem(node, path, f"expected {describe(tp)}, got {_shown(node)}")
        return _INVALID

    def _mapping(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            return None
        pairs: list[tuple[str, yaml.Node]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            refused = tag_problem(key_node)
            if isinstance(key_node, yaml.ScalarNode) and refused is None:
                key = str(key_node.value)
                bad = refused_character(key)
                refused = f"expected a key without control characters, got {bad}" if bad else None
            else:
                key, refused = "", refused or f"expected a name as key, got {_shown(key_node)}"
            if refused is not None:
                self._problem(key_node, _join(path, printable(key, 40)), refused)
                self.incomplete = self.incomplete or not path
            elif key in seen:
                self._problem(key_node, _join(path, key), "duplicate key")
            else:
                seen.add(key)
                pairs.append((key, value_node))
        return pairs

    def _read_model(self, cls: type[Model], node: yaml.Node, path: str) -> Any:
        pairs = self._mapping(node, path)
        if pairs is None:
            return self._wrong(cls, node, path)
        fields = {f.name: (f, tp) for f, tp in model_fields(cls)}
        lines: dict[str, int] = {"": node.start_mark.line + 1}
        values: dict[str, Any] = {}
        bad = False
        for key, value_node in pairs:
            if key not in fields:
                hint = difflib.get_close_matches(key, list(fields), n=1)
                maybe = f"did you mean '{hint[0]}'? " if hint else ""
                self._problem(
                    value_node,
                    _join(path, key),
                    f"unknown key ({maybe}expected one of: {', '.join(fields)})",
                )
                bad = bad or bool(path)  # at a file's top level, the known sections still load
                self.incomplete = self.incomplete or not path
                continue
            f, tp = fields[key]
            value = self._read(tp, value_node, _join(path, key), key, lines)
            if value is not _INVALID:
                value = self._limits(f, tp, value, value_node, _join(path, key))
            if value is not _INVALID:
                values[key] = value
            elif path:
                bad = True
            else:  # at a file's top level a broken section is dropped; the rest is checked
                self.incomplete = True
        for name, (f, tp) in fields.items():
            if _required(f) and name not in values:
                if name not in dict(pairs):  # else its value was reported
                    self._problem(node, _join(path, name), f"missing required key ({describe(tp)})")
                bad = True
        if bad:
            if "name" in values:
                self.broken_names.add(str(values["name"]))
            elif "name" in fields:  # what the entry was called is unknown
                self.incomplete = True
            return _INVALID
        obj = cls(**values, located=Origin(self.file, lines[""], path, lines))
        checked = obj.check()
        for rel, message in checked:
            self.problems.append(obj.problem(rel, message))
        if any(rel == "name" for rel, _ in checked):  # a name nothing can refer to
            self.broken_names.add(str(values["name"]))
            self.incomplete = True
            return _INVALID
        return obj

    def _in_bounds(self, bounds: Bounds, tp: Any, value: Any, node: yaml.Node, path: str) -> Any:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and not bounds[0] <= value <= bounds[1]:
            # NaN fails both comparisons, so it lands here too
            got = printable(node.value, 40) if isinstance(node, yaml.ScalarNode) else value
            self._problem(node, path, f"expected {describe(tp, bounds)}, got {got}")
            return _INVALID
        return value

    def _limits(
        self, f: dataclasses.Field[Any], tp: Any, value: Any, node: yaml.Node, path: str
    ) -> Any:
        """The field's range (numbers) and non-emptiness (lists), checked."""
        bounds: Bounds | None = f.metadata.get("bounds")
        non_empty: bool = f.metadata.get("non_empty", False)
        if bounds is not None and isinstance(value, list) and isinstance(node, yaml.SequenceNode):
            # a list of numbers: each item in the range (broken items, reported and left out,
            # would shift the positions: the others are then not checked)
            pairs = zip(value, node.value, strict=True) if len(value) == len(node.value) else ()
            item_tp = typing.get_args(tp)[0]
            checked = [
                self._in_bounds(bounds, item_tp, item, item_node, f"{path}[{i}]")
                for i, (item, item_node) in enumerate(pairs)
            ]
            if _INVALID in checked:
                return _INVALID
        elif bounds is not None and self._in_bounds(bounds, tp, value, node, path) is _INVALID:
            return _INVALID
        if non_empty and isinstance(value, list) and not value:
            if isinstance(node, yaml.SequenceNode) and not node.value:  # not merely all broken
                self._problem(node, path, f"expected {describe(tp, non_empty=True)}, got []")
            return _INVALID
        return value


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing (null)"
    return shown(node.value)
