"""Writing experiment.yaml: a new file, or variants added to and dropped from an existing one.

An existing file is edited as text, so the rest of it (comments, order, hand-written variants)
stays exactly as it was; the result is read back and checked before anyone writes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from kbisect.config.model import Experiment, Variant
from kbisect.config.nodes import compose
from kbisect.config.schema import Model, Reader
from kbisect.errors import ConfigError, ConfigProblem, UserError


def plain(obj: Model) -> dict[str, Any]:
    """A model as YAML data: its fields in declaration order, empty and unset ones left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "located" or value in (None, "", [], {}):
            continue
        out[f.name] = plain(value) if isinstance(value, Model) else value
    return out


class _Dumper(yaml.SafeDumper):
    """Plain YAML as a person writes it: no anchors, several lines as a `|` block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text_scalar(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text.rstrip("\n") or text.endswith("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text_scalar)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def new_experiment_text(experiment: Experiment) -> str:
    """A whole experiment.yaml."""
    head = plain(dataclasses.replace(experiment, variants=[]))
    return _dump(head) + "variants:\n" + _items_text([*experiment.variants], 2)


def _items_text(variants: list[Variant], indent: int) -> str:
    text = _dump([plain(v) for v in variants])
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def read_experiment(text: str, file: str) -> Experiment:
    """Parse and check an experiment file's text; its problems as one ConfigError."""
    node, error = compose(text)
    if error is not None or node is None:
        line, message = error or (None, "empty file (expected Experiment)")
        raise ConfigError([ConfigProblem(file, line, "", message)])
    reader = Reader(file)
    experiment = reader.read_model(Experiment, node, "")
    if reader.problems or experiment is None:
        raise ConfigError(reader.problems or [ConfigProblem(file, 1, "", "not an experiment")])
    return experiment


def with_variants(text: str, file: str, drop: set[str], add: list[Variant]) -> str:
    """`text` with the variants named in `drop` removed and `add` appended to `variants`."""
    node, error = compose(text)
    if error is not None or not isinstance(node, yaml.MappingNode):
        raise UserError(f"{file}: not an experiment (a mapping with 'variants')")
    found = [value for key, value in node.value if key.value == "variants"]
    if not found or not isinstance(found[0], yaml.SequenceNode):
        raise UserError(f"{file}: expected a list under 'variants'")
    sequence = found[0]
    kept = [item for item in sequence.value if _name_of(item) not in drop]
    if sequence.flow_style or not sequence.value:
        return _rewritten_flow(text, sequence, kept, add)
    lines = text.splitlines(True)
    dash = _dash_column(lines, sequence.value[0])
    spans = [_item_lines(lines, item) for item in sequence.value]
    after = spans[-1][1]
    out = lines[: spans[0][0]]
    for (start, end), item in zip(spans, sequence.value, strict=True):
        if item in kept:
            out += lines[start:end]
        out += _between(lines, end, spans, after)
    added = _items_text(add, dash) if add else ""
    rest = "".join(lines[after:])
    body = "".join(out)
    if body and not body.endswith("\n"):
        body += "\n"
    return body + added + rest


def _between(lines: list[str], end: int, spans: list[tuple[int, int]], after: int) -> list[str]:
    """Lines after an item before the next one (comments, blank lines): kept in place."""
    nxt = min((s for s, _ in spans if s >= end), default=after)
    return lines[end:nxt]


def _name_of(item: yaml.Node) -> str | None:
    if isinstance(item, yaml.MappingNode):
        for key, value in item.value:
            if key.value == "name" and isinstance(value, yaml.ScalarNode):
                return str(value.value)
    return None


def _dash_column(lines: list[str], item: yaml.Node) -> int:
    line = lines[item.start_mark.line][: item.start_mark.column]
    return line.rstrip().rfind("-") if line.rstrip().endswith("-") else item.start_mark.column


def _content_end(node: yaml.Node) -> int:
    """Index just past the last character of a node's own content (not the comments after)."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return max(_content_end(v) for pair in node.value for v in pair)
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return max(_content_end(v) for v in node.value)
    return int(node.end_mark.index)


def _item_lines(lines: list[str], item: yaml.Node) -> tuple[int, int]:
    """An item's lines, [first, past last): from its dash to the end of its content."""
    text = "".join(lines)
    end = _content_end(item)
    last = text.count("\n", 0, end) + (0 if end and text[end - 1] == "\n" else 1)
    return item.start_mark.line, last


def _rewritten_flow(
    text: str, sequence: yaml.SequenceNode, kept: list[yaml.Node], add: list[Variant]
) -> str:
    """`variants: [...]` becomes a block list: the kept items as written, then the new ones."""
    items = "".join("  - " + text[i.start_mark.index : i.end_mark.index] + "\n" for i in kept)
    block = "\n" + items + (_items_text(add, 2) if add else "") if kept or add else " []"
    tail = text[sequence.end_mark.index :]
    if block.endswith("\n") and tail.startswith("\n"):
        tail = tail[1:]
    return text[: sequence.start_mark.index].rstrip(" ") + block + tail
