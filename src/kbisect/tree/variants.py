"""Patch variants from seeds/: finding them by name and identifying their patches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from kbisect.config import Project, Variant
from kbisect.errors import UserError


@dataclass(frozen=True)
class VariantRef:
    """A variant with its experiment and patch files; `base` (no variant) has no patches."""

    experiment: str
    name: str
    patches: tuple[Path, ...]
    variant: Variant | None

    @property
    def qualified(self) -> str:
        return f"{self.experiment}/{self.name}" if self.experiment else self.name

    def patch_hash(self) -> str:
        """Identity of the patch series (contents, in order); empty for no patches."""
        if not self.patches:
            return ""
        digest = hashlib.sha256()
        for patch in self.patches:
            digest.update(hashlib.sha256(patch.read_bytes()).digest())
        return digest.hexdigest()[:16]


BASE = VariantRef("", "base", (), None)


def find_variant(project: Project, spec: str | None) -> VariantRef:
    """`EXPERIMENT/VARIANT`, or `VARIANT` when only one experiment has it; None means the tree."""
    if spec is None or spec == "base":
        return BASE
    experiment, _, name = spec.rpartition("/")
    matches = [
        (exp, v)
        for exp in project.experiments.values()
        if not experiment or exp.name == experiment
        for v in exp.variants
        if v.name == name
    ]
    if not matches:
        known = [f"{e.name}/{v.name}" for e in project.experiments.values() for v in e.variants]
        raise UserError(f"unknown variant {spec!r} (known: {', '.join(known) or 'none'})")
    if len(matches) > 1:
        names = ", ".join(f"{e.name}/{v.name}" for e, v in matches)
        raise UserError(f"variant {spec!r} is ambiguous: say which ({names})")
    exp, variant = matches[0]
    base_dir = project.experiment_dirs[exp.name]
    return VariantRef(exp.name, variant.name, tuple(base_dir / p for p in variant.patches), variant)
