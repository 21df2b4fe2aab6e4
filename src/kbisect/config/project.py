"""Loading a whole project: configs/*.yaml, seeds/*/experiment.yaml and pipelines/*.yaml.

This is the only place that reads YAML. Every problem in every file is collected, then raised
together as one ConfigError, so `invoke check` can show them all at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kbisect.config.model import (
    BuildProfile,
    ConfigFile,
    Experiment,
    Host,
    Job,
    Pipeline,
    Settings,
    Tree,
)
from kbisect.config.schema import Model, Reader
from kbisect.errors import ConfigError, ConfigProblem, UserError

ROOT_ENV = "KBISECT_ROOT"
CACHE_ENV = "KBISECT_CACHE"
N = TypeVar("N", bound=Model)


@dataclass
class Project:
    """Everything configured, cross-checked. Build one with `load_project`."""

    root: Path
    settings: Settings = field(default_factory=Settings)
    trees: dict[str, Tree] = field(default_factory=dict)
    profiles: dict[str, BuildProfile] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    experiments: dict[str, Experiment] = field(default_factory=dict)
    experiment_dirs: dict[str, Path] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)

    @property
    def configs_dir(self) -> Path:
        return self.root / "configs"

    @property
    def cache_dir(self) -> Path:
        return cache_dir(self.settings, self.root)

    @property
    def results_dir(self) -> Path:
        """$KBISECT_RESULTS (e.g. a CI workspace), else settings.results_dir under the root
        (in the cache when there is no project)."""
        override = os.environ.get("KBISECT_RESULTS")
        if override:
            return Path(override)
        if not self.configs_dir.is_dir():  # no project (a plain repository): keep out of it
            return self.cache_dir / "results"
        return self.root / self.settings.results_dir

    def get(self, kind: str, name: str) -> Model:
        """A named object, or a user error that lists the names that exist."""
        table: dict[str, Model] = getattr(self, kind)
        if name not in table:
            raise UserError(f"unknown {_singular(kind)} {name!r} ({_known(table)})")
        return table[name]


def find_root(start: Path | None = None) -> Path | None:
    """The project root: $KBISECT_ROOT, else the nearest directory upwards that has configs/."""
    env = os.environ.get(ROOT_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise UserError(f"${ROOT_ENV}={env}: not a directory")
        return root.resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "configs").is_dir():
            return candidate
    return None


def cache_dir(settings: Settings, root: Path) -> Path:
    """$KBISECT_CACHE, else settings.cache_dir, else $XDG_CACHE_HOME/kbisect."""
    chosen = os.environ.get(CACHE_ENV) or settings.cache_dir
    if chosen:
        path = Path(chosen).expanduser()
        return path if path.is_absolute() else (root / path)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kbisect"


def load_project(root: Path | None = None) -> Project:
    """Load and cross-check every configuration file under `root` (found if not given)."""
    root = root or find_root()
    if root is None:
        return Project(
            root=Path.cwd()
        )  # no project: built-in defaults (e.g. bisect of a plain repo)
    loader = _Loader(root.resolve())
    project = loader.load()
    if loader.problems:
        raise ConfigError(loader.problems)
    return project


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[ConfigProblem] = []
        self.broken_names: set[str] = set()

    def load(self) -> Project:
        project = Project(root=self.root)
        settings_seen: Settings | None = None
        for path in sorted((self.root / "configs").glob("*.yaml")):
            doc = self._read(path, ConfigFile, allow_empty=True)
            if doc is None:
                continue
            if doc.settings is not None:
                if settings_seen is not None:
                    where = settings_seen.where()
                    self.problems.append(
                        doc.settings.problem(
                            "", f"settings given twice (first at {where[0]}:{where[1]})"
                        )
                    )
                else:
                    settings_seen = doc.settings
            self._add(project.trees, doc.trees, "tree")
            self._add(project.profiles, doc.profiles, "profile")
            self._add(project.hosts, doc.hosts, "host")
            self._add(project.jobs, doc.jobs, "job")
        project.settings = settings_seen or Settings()
        for path in sorted((self.root / "seeds").glob("*/experiment.yaml")):
            experiment = self._read(path, Experiment)
            if experiment is not None and self._add(
                project.experiments, [experiment], "experiment"
            ):
                project.experiment_dirs[experiment.name] = path.parent
        for path in sorted((self.root / "pipelines").glob("*.yaml")):
            pipeline = self._read(path, Pipeline)
            if pipeline is not None:
                project.pipelines[path.stem] = pipeline
        self._cross_check(project)
        return project

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _read(self, path: Path, cls: type[N], allow_empty: bool = False) -> N | None:
        name = self._rel(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problems.append(ConfigProblem(name, None, "", f"cannot read: {reason}"))
            return None
        reader = Reader(name)
        node = reader.compose(text)
        if node is None and not reader.problems:
            if allow_empty:
                return None
            reader.problems.append(
                ConfigProblem(name, 1, "", f"empty file (expected {cls.__name__})")
            )
        obj = reader.read_model(cls, node, "") if node is not None else None
        self.problems.extend(reader.problems)
        self.broken_names |= reader.broken_names
        return obj

    def _add(self, table: dict[str, N], items: list[N], kind: str) -> bool:
        added = True
        for item in items:
            name = str(getattr(item, "name"))  # noqa: B009 (every listed model has a name)
            if name in table:
                first = table[name].where()
                self.problems.append(
                    item.problem(
                        "name", f"duplicate {kind} {name!r} (first at {first[0]}:{first[1]})"
                    )
                )
                added = False
            else:
                table[name] = item
        return added

    def _cross_check(self, p: Project) -> None:
        out = self.problems
        cache = cache_dir(p.settings, self.root).resolve()
        if cache == self.root or self.root in cache.parents:
            target = p.settings if p.settings.located else None
            message = f"cache directory {cache} is inside the repository; choose one outside it"
            out.append(
                target.problem("cache_dir", message)
                if target
                else ConfigProblem(f"${CACHE_ENV}", None, "", message)
            )
        for profile in p.profiles.values():
            if profile.base not in BuildProfile.MAKE_BASES:
                self._file_exists(profile, "base", self.root / "configs" / profile.base)
            for i, fragment in enumerate(profile.fragments):
                self._file_exists(profile, f"fragments[{i}]", self.root / "configs" / fragment)
        for name, experiment in p.experiments.items():
            if experiment.tree is not None:
                self._ref(experiment, "tree", experiment.tree, p.trees, "tree")
            seen: dict[str, object] = {}
            for variant in experiment.variants:
                if variant.name in seen:
                    out.append(variant.problem("name", f"duplicate variant {variant.name!r}"))
                seen[variant.name] = variant
                for i, patch in enumerate(variant.patches):
                    self._file_exists(variant, f"patches[{i}]", p.experiment_dirs[name] / patch)
        for pipeline in p.pipelines.values():
            for rs in pipeline.revisions:
                self._ref(rs, "tree", rs.tree, p.trees, "tree")
            for vs in pipeline.experiments:
                found = self._ref(vs, "experiment", vs.experiment, p.experiments, "experiment")
                if found is not None and vs.variants is not None:
                    names = {v.name: v for v in p.experiments[vs.experiment].variants}
                    for i, v in enumerate(vs.variants):
                        self._ref(vs, f"variants[{i}]", v, names, f"variant of {vs.experiment}")
            for kind, table in (("profiles", p.profiles), ("hosts", p.hosts), ("jobs", p.jobs)):
                for i, ref in enumerate(getattr(pipeline, kind)):
                    self._ref(pipeline, f"{kind}[{i}]", ref, table, _singular(kind))

    def _ref(
        self, owner: Model, rel: str, name: str, table: Mapping[str, N], kind: str
    ) -> N | None:
        if name in table:
            return table[name]
        if name in self.broken_names:
            return None  # already reported where it is defined
        self.problems.append(owner.problem(rel, f"unknown {kind} {name!r} ({_known(table)})"))
        return None

    def _file_exists(self, owner: Model, rel: str, path: Path) -> None:
        if not path.is_file():
            self.problems.append(owner.problem(rel, f"no such file: {self._rel(path)}"))


def _singular(kind: str) -> str:
    return kind[:-1] if kind.endswith("s") else kind


def _known(table: Mapping[str, Any]) -> str:
    return "known: " + ", ".join(sorted(table)) if table else "none are configured"
