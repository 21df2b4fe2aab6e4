"""Variants from a mail thread: one per posted version of a patch series, into an experiment.

Each version's patches are written as files in the experiment directory (`VARIANT/NNNN-*.patch`,
in series order) and its entry in experiment.yaml records where it was posted. The experiment
is assembled in a temporary directory beside it and renamed into place, so an import that fails
leaves nothing half-written; importing the same thread again changes nothing.
"""

from __future__ import annotations

import dataclasses
import filecmp
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kbisect.config import Experiment, Project, Variant
from kbisect.config.experiment_text import new_experiment_text, read_experiment, with_variants
from kbisect.config.model import NAME_RE, VariantOrigin
from kbisect.errors import ConfigError, UserError
from kbisect.progress import Say
from kbisect.tree.mbox import Mail, Series, Thread, read_mbox

_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Imported:
    """One variant of the import and what happened to it."""

    variant: Variant
    series: Series
    files: dict[str, str]  # relative path in the experiment directory -> text
    state: str = "new"  # new, updated (same posting, new files) or unchanged


@dataclass(frozen=True)
class ImportResult:
    experiment: str
    directory: Path
    variants: list[Imported]
    notes: list[str]  # versions left out, and why


def slug(text: str, limit: int = 48) -> str:
    words = _SLUG.sub("-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "series"


def import_mbox(
    project: Project,
    mbox: Path,
    *,
    experiment: str | None = None,
    prefix: str | None = None,
    replace: bool = False,
    say: Say = print,
) -> ImportResult:
    """Import every complete version of the series in `mbox` as a variant of `experiment`."""
    thread = read_mbox(mbox)
    chosen, notes = _complete_versions(thread, mbox)
    name = experiment or slug(chosen[-1].lead.tags.title)
    for given, what in ((name, "experiment"), (prefix, "prefix")):
        if given is not None and not NAME_RE.fullmatch(given):
            raise UserError(f"bad {what} name {given!r}: letters, digits, '.', '_' or '-'")
    imports = [_variant(s, n, prefix) for s, n in zip(chosen, _names(chosen), strict=True)]
    existing = project.experiments.get(name)
    directory = project.experiment_dirs.get(name, project.root / "seeds" / name)
    if existing is None and directory.exists():
        raise UserError(f"{directory} exists but holds no experiment {name!r}")
    staged = _Staging(project.root, directory, existing)
    try:
        result = staged.build(name, imports, replace, mbox)
        staged.commit()
    finally:
        staged.cleanup()
    for line in notes:
        say(f"note: {line}")
    return ImportResult(name, directory, result, notes)


def _complete_versions(thread: Thread, mbox: Path) -> tuple[list[Series], list[str]]:
    """The series that can be imported: complete, and not a re-send of one already taken."""
    notes: list[str] = []
    chosen: list[Series] = []
    for series in thread.series:
        if series.missing:
            gone = ", ".join(f"{n}/{series.total}" for n in series.missing)
            notes.append(f"{series.label()} left out: patch {gone} is not in {mbox.name}")
            continue
        twin = next((s for s in chosen if s.diffs() == series.diffs()), None)
        if twin is not None:
            notes.append(f"{series.label()} left out: the same patches as {twin.label()}")
            continue
        chosen.append(series)
    if not chosen:
        found = "; ".join(notes) or f"{thread.messages} messages, none of them a patch"
        raise UserError(f"{mbox}: no complete patch series found ({found})")
    return chosen, notes


def _names(chosen: list[Series]) -> list[str]:
    """v1, v2 ...; a second posting of one version gets -resend, or -2, -3 ..."""
    names: list[str] = []
    for series in chosen:
        name = f"v{series.version}"
        if name in names:
            name += "-resend" if series.resend else ""
        base, n = name, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _variant(series: Series, name: str, prefix: str | None) -> Imported:
    full = f"{prefix}-{name}" if prefix else name
    lead = series.lead
    files = {
        f"{full}/{i:04d}-{slug(mail.tags.title)}.patch": mail.as_patch_file()
        for i, mail in enumerate(series.ordered, 1)
    }
    count = f"{len(files)} patch{'es' if len(files) != 1 else ''}"
    variant = Variant(
        name=full,
        description=f"{series.label()} of '{lead.tags.title}' ({count}, {lead.date[:10]})",
        patches=list(files),
        origin=_origin(lead),
    )
    return Imported(variant, series, files)


def _origin(mail: Mail) -> VariantOrigin:
    return VariantOrigin(
        subject=mail.subject, author=mail.author, date=mail.date, message_id=mail.message_id
    )


class _Staging:
    """The experiment directory's next state, built beside the project and renamed in."""

    def __init__(self, root: Path, directory: Path, existing: Experiment | None) -> None:
        self.root = root
        self.directory = directory
        self.existing = existing
        self.temp = Path(tempfile.mkdtemp(prefix=".variants-import-", dir=root))
        self.stage = self.temp / "experiment"
        self.changed = True

    def build(
        self, name: str, imports: list[Imported], replace: bool, mbox: Path
    ) -> list[Imported]:
        if self.existing is None:
            self.stage.mkdir()
            text = new_experiment_text(_new_experiment(name, imports, mbox))
            states = [dataclasses.replace(i, state="new") for i in imports]
        else:
            shutil.copytree(self.directory, self.stage, symlinks=True)
            states = self._states(imports, replace)
            self._drop_files({i.variant.name for i in imports})
            yaml_file = self.stage / "experiment.yaml"
            drop = {i.variant.name for i in imports}
            text = with_variants(
                yaml_file.read_text(),
                self._shown("experiment.yaml"),
                drop,
                [i.variant for i in imports],
            )
        for imported in imports:
            for rel, content in imported.files.items():
                path = self.stage / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        (self.stage / "experiment.yaml").write_text(text)
        self._check(text)
        if self.existing is not None:
            self.changed = not _same_tree(self.directory, self.stage)
            states = [self._final_state(i) for i in states]
        return states

    def _states(self, imports: list[Imported], replace: bool) -> list[Imported]:
        assert self.existing is not None
        by_name = {v.name: v for v in self.existing.variants}
        out = []
        for imported in imports:
            old = by_name.get(imported.variant.name)
            if old is None:
                out.append(imported)
            elif old.origin == imported.variant.origin:
                out.append(dataclasses.replace(imported, state="updated"))
            elif replace:
                out.append(dataclasses.replace(imported, state="replaced"))
            else:
                raise UserError(
                    f"variant {self.existing.name}/{old.name} exists and was not imported from "
                    f"{imported.series.lead.message_id or 'this posting'}: give --prefix for "
                    "other names, or --replace"
                )
        return out

    def _final_state(self, imported: Imported) -> Imported:
        if imported.state != "updated":
            return imported
        same = all(
            (self.directory / rel).is_file() and (self.directory / rel).read_text() == content
            for rel, content in imported.files.items()
        )
        return dataclasses.replace(imported, state="unchanged" if same else "updated")

    def _drop_files(self, names: set[str]) -> None:
        """The patch files of variants about to be replaced, unless another variant uses them."""
        assert self.existing is not None
        keep = {p for v in self.existing.variants if v.name not in names for p in v.patches}
        for variant in self.existing.variants:
            if variant.name in names:
                for patch in variant.patches:
                    if patch not in keep:
                        (self.stage / patch).unlink(missing_ok=True)
        for name in names:
            folder = self.stage / name
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            elif folder.exists():
                raise UserError(f"{self.directory / name} is in the way of the patches of {name}")

    def _check(self, text: str) -> None:
        """The new experiment reads back, and every patch it names is there."""
        try:
            experiment = read_experiment(text, self._shown("experiment.yaml"))
        except ConfigError as exc:
            raise UserError(f"the import would break the experiment: {exc}") from None
        for variant in experiment.variants:
            for patch in variant.patches:
                if not (self.stage / patch).is_file():
                    raise UserError(f"variant {variant.name}: patch {patch} is missing")

    def _shown(self, rel: str) -> str:
        path = self.directory / rel
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def commit(self) -> None:
        """Rename the staged experiment in; the old one is moved aside first, then removed."""
        if not self.changed:
            return
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        if self.existing is None:
            self.stage.rename(self.directory)
            return
        previous = self.temp / "previous"
        self.directory.rename(previous)
        try:
            self.stage.rename(self.directory)
        except OSError:
            previous.rename(self.directory)
            raise

    def cleanup(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def _new_experiment(name: str, imports: list[Imported], mbox: Path) -> Experiment:
    latest = imports[-1].series.lead
    versions = ", ".join(i.series.label() for i in imports)
    return Experiment(
        name=name,
        title=latest.tags.title,
        question=f"How do the posted versions of '{latest.tags.title}' ({versions}) behave "
        "on the same tree?\n",
        origin=f"Imported from {mbox.name} by `kbisect variants.import`; the thread starts "
        f"with {imports[0].series.lead.message_id or imports[0].series.lead.subject}.\n",
        variants=[i.variant for i in imports],
    )


def _same_tree(a: Path, b: Path) -> bool:
    compared = filecmp.dircmp(a, b)
    if compared.left_only or compared.right_only or compared.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, compared.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in compared.common_dirs)
