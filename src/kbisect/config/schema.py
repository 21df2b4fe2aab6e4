"""YAML nodes to typed dataclasses, with every mistake located by file, line and key path.

PyYAML's composer keeps the line of every node; we walk those nodes ourselves instead of
`yaml.safe_load`, so an error can say where it is. Supported field types: str, int, float, bool,
Literal[...], X | None, list[X], dict[str, X] and nested models.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

import yaml

from kbisect.errors import ConfigProblem

_INVALID: Any = object()
M = TypeVar("M", bound="Model")


@dataclass(frozen=True)
class Origin:
    """Where a model came from: its file, its line, its key path, and the lines of its keys."""

    file: str
    line: int
    path: str
    lines: dict[str, int]


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A model field with a description (used by the configuration reference)."""
    return field(default=default, default_factory=factory, metadata={"doc": text})


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


def model_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    """The YAML-visible fields of a model with their resolved types."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "located"]


def describe(tp: Any) -> str:
    """A type as a user reads it in an error message or the reference."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(describe(a) for a in rest) + " (or null)"
    if origin is list:
        return f"a list of {_plural(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of names to {_plural(typing.get_args(tp)[1])}"
    if isinstance(tp, type) and issubclass(tp, Model):
        return f"a mapping ({tp.__name__})"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


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
        self._constructor = yaml.constructor.SafeConstructor()

    def compose(self, text: str) -> yaml.Node | None:
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            what = exc.problem or "not valid YAML"
            self.problems.append(ConfigProblem(self.file, line, "", f"YAML syntax error: {what}"))
            return None

    def read_model(self, cls: type[M], node: yaml.Node, path: str) -> M | None:
        value = self._read(cls, node, path, "", {})
        return None if value is _INVALID else value

    def _problem(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, node.start_mark.line + 1, path, message))

    def _read(self, tp: Any, node: yaml.Node, path: str, rel: str, lines: dict[str, int]) -> Any:
        lines[rel] = node.start_mark.line + 1
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if _is_null(node):
                return None
            return self._read(args[0], node, path, rel, lines)
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

    def _scalar(self, tp: Any, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return self._wrong(tp, node, path)
        value = self._constructor.construct_object(node)
        if typing.get_origin(tp) is Literal:
            allowed = typing.get_args(tp)
            if value in allowed:
                return value
            if isinstance(value, bool) and node.value in allowed:
                return node.value  # YAML 1.1 reads on/off/yes/no as booleans; these are words
            return self._wrong(tp, node, path)
        if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return node.value if not isinstance(value, str) else value  # `6.1` stays "6.1"
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
            return value
        return self._wrong(tp, node, path)

    def _wrong(self, tp: Any, node: yaml.Node, path: str) -> Any:
        got = _shown(node)
        self._problem(node, path, f"expected {describe(tp)}, got {got}")
        return _INVALID

    def _mapping(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            return None
        pairs: list[tuple[str, yaml.Node]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                self._problem(key_node, _join(path, key), "duplicate key")
                continue
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
                bad = True
                continue
            value = self._read(fields[key][1], value_node, _join(path, key), key, lines)
            if value is not _INVALID:
                values[key] = value
            elif path:
                bad = True
            # At a file's top level a broken section is dropped, so the rest is still checked.
        for name, (f, tp) in fields.items():
            if _required(f) and name not in values and name not in dict(pairs):
                self._problem(node, _join(path, name), f"missing required key ({describe(tp)})")
                bad = True
        if bad:
            self.broken_names.update(
                str(v.value) for k, v in pairs if k == "name" and isinstance(v, yaml.ScalarNode)
            )
            return _INVALID
        obj = cls(**values, located=Origin(self.file, lines[""], path, lines))
        for rel, message in obj.check():
            self.problems.append(obj.problem(rel, message))
        return obj


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing (null)"
    return repr(node.value)
