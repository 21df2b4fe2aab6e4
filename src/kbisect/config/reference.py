"""The configuration reference, generated from the model so the docs cannot drift from the code."""

from __future__ import annotations

import dataclasses
import inspect

from kbisect.config import model
from kbisect.config.schema import describe, model_fields

SECTIONS = [
    ("configs/*.yaml", model.ConfigFile),
    ("settings", model.Settings),
    ("trees[]", model.Tree),
    ("profiles[]", model.BuildProfile),
    ("distcc", model.Distcc),
    ("hosts[]", model.Host),
    ("hosts[].qemu", model.QemuOptions),
    ("hosts[].ssh", model.SshOptions),
    ("hosts[].ssh.commands", model.RackCommands),
    ("jobs[]", model.Job),
    ("seeds/NAME/experiment.yaml", model.Experiment),
    ("variants[]", model.Variant),
    ("variants[].origin", model.VariantOrigin),
    ("variants[].expect.SUBTEST", model.FlakyRange),
    ("pipelines/NAME.yaml", model.Pipeline),
    ("revisions[]", model.RevisionSet),
    ("experiments[]", model.VariantSet),
    ("auto_bisect", model.AutoBisect),
]


def _default(f: dataclasses.Field[object]) -> str:
    if f.default is not dataclasses.MISSING:
        return "null" if f.default is None else repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "see below" if dataclasses.is_dataclass(value) else repr(value)
    return "**required**"


def reference_markdown() -> str:
    """Markdown tables, one per configuration object."""
    out: list[str] = []
    for title, cls in SECTIONS:
        out.append(f"#### `{title}`")
        out.append("")
        out.append(inspect.cleandoc(cls.__doc__ or ""))
        out.append("")
        out.append("| key | type | default | meaning |")
        out.append("|---|---|---|---|")
        for f, tp in model_fields(cls):
            meaning = f.metadata.get("doc", "")
            kind = describe(tp, f.metadata.get("bounds"), f.metadata.get("non_empty", False))
            out.append(f"| `{f.name}` | {kind} | {_default(f)} | {meaning} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
