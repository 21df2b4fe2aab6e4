"""Loading a whole project: configs/*.yaml, seeds/*/experiment.yaml and pipelines/*.yaml.

This is the only place that reads YAML. Every problem in every file is collected, then raised
together as one ConfigError, so `invoke check` can show them all at once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kbisect.config.model import (
    BuildProfile,
    ConfigFile,
    Distcc,
    Experiment,
    Host,
    Job,
    Pipeline,
    Settings,
    Tree,
)
from kbisect.config.nodes import compose
from kbisect.config.schema import Model, Reader
from kbisect.config.text import printable, shown
from kbisect.errors import ConfigError, ConfigProblem, UserError

ROOT_ENV = "KBISECT_ROOT"
CACHE_ENV = "KBISECT_CACHE"
STORE_ENV = "KBISECT_STORE"
MAX_FILE_BYTES = 128 * 1024  # the largest shipped file is 2 KiB; reading 128 KiB takes 1 s
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml")  # what a user may think is read
N = TypeVar("N", bound=Model)


@dataclass
class Project:
    """Everything configured, cross-checked. Build one with `load_project`."""

    root: Path
    settings: Settings = field(default_factory=Settings)
    trees: dict[str, Tree] = field(default_factory=dict)
    profiles: dict[str, BuildProfile] = field(default_factory=dict)
    distcc: Distcc | None = None  # distributed compiles, when configured
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

    @property
    def store_url(self) -> str | None:
        """The shared store's URL: $KBISECT_STORE, else settings.store; None for the SQLite
        file in the results directory."""
        return os.environ.get(STORE_ENV) or self.settings.store or None

    def tree_name(self, given: str | None) -> str:
        """The tree a task works on: the one given (`--tree`: a name, or any git repository's
        path), else settings.default_tree, else the only configured tree."""
        if given:
            return given
        if self.settings.default_tree:
            return self.settings.default_tree
        if len(self.trees) == 1:
            return next(iter(self.trees))
        raise UserError(
            "no tree given: pass --tree NAME (or a git repository's path), or set "
            f"settings.default_tree ({_known(self.trees)})"
        )

    def profile(self, name: str | None) -> BuildProfile:
        """A build profile by name; without one, settings.default_profile, else the only one."""
        name = name or self.settings.default_profile
        if name is None and len(self.profiles) == 1:
            return next(iter(self.profiles.values()))
        if name is None:
            raise UserError(
                "no build profile given: pass --profile NAME or set settings.default_profile "
                f"({_known(self.profiles)})"
            )
        if name not in self.profiles:
            raise UserError(f"unknown build profile {name!r} ({_known(self.profiles)})")
        return self.profiles[name]

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
        try:
            path = Path(chosen).expanduser()
        except RuntimeError:  # ~user of a user that does not exist
            raise UserError(f"cache directory {shown(chosen)}: cannot expand '~'") from None
        return path if path.is_absolute() else (root / path)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kbisect"


def load_project(root: Path | None = None, *, required: bool = True) -> Project:
    """Load and cross-check every configuration file under `root` (found if not given).

    Outside any project (no configs/ in the root given or found) this is a user error, unless
    the task works without one (`required=False`: bisect of a plain repository), which gets
    built-in defaults instead.
    """
    if root is not None and not root.is_dir():
        raise UserError(f"project root {printable(str(root), 200)}: not a directory")
    found = root or find_root()
    if found is None or not (found / "configs").is_dir():
        if required:
            raise UserError(_not_a_project(found))
        return Project(root=found or Path.cwd())
    loader = _Loader(found.resolve())
    project = loader.load()
    if loader.problems:
        raise ConfigError([_tidy(problem) for problem in loader.problems])
    return project


def _not_a_project(root: Path | None) -> str:
    if root is None:
        here = printable(str(Path.cwd()), 200)
        return (
            f"not in a kbisect project: no configs/ directory in {here} or above it; "
            f"give --root DIR or set ${ROOT_ENV}"
        )
    return f"{printable(str(root), 200)} is not a kbisect project: it has no configs/ directory"


def _tidy(problem: ConfigProblem) -> ConfigProblem:
    """The problem as one short line: nothing a terminal acts on, nothing a megabyte long."""
    return ConfigProblem(
        printable(problem.file, 160),
        problem.line,
        printable(problem.key, 120),
        printable(problem.message, 240),
    )


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[ConfigProblem] = []
        self.broken_names: set[str] = set()
        # Directories with a file that did not load whole: a name it may define is not
        # reported as unknown elsewhere (one problem, one line).
        self.incomplete: set[str] = set()

    def load(self) -> Project:
        project = Project(root=self.root)
        settings_seen: Settings | None = None
        for path in self._files("configs", "*.yaml"):
            doc = self._read(path, ConfigFile, allow_empty=True)
            if doc is None:
                continue
            settings_seen = self._once(settings_seen, doc.settings, "settings")
            project.distcc = self._once(project.distcc, doc.distcc, "distcc")
            self._add(project.trees, doc.trees, "tree")
            self._add(project.profiles, doc.profiles, "profile")
            self._add(project.hosts, doc.hosts, "host")
            self._add(project.jobs, doc.jobs, "job")
        project.settings = settings_seen or Settings()
        for path in self._files("seeds", "*/experiment.yaml"):
            experiment = self._read(path, Experiment)
            if experiment is not None and self._add(
                project.experiments, [experiment], "experiment"
            ):
                project.experiment_dirs[experiment.name] = path.parent
        for path in self._files("pipelines", "*.yaml"):
            pipeline = self._read(path, Pipeline)
            if pipeline is not None:
                project.pipelines[path.stem] = pipeline
        self._cross_check(project)
        return project

    def _once(self, seen: N | None, new: N | None, key: str) -> N | None:
        """A section that may appear in one file only: the first one given, the rest reported."""
        if new is None or seen is None:
            return seen if new is None else new
        where = seen.where()
        self.problems.append(new.problem("", f"{key} given twice (first at {where[0]}:{where[1]})"))
        return seen

    def _files(self, directory: str, pattern: str) -> list[Path]:
        """The files `pattern` matches under `directory`. Near misses (`lab.yml`,
        `nightly.json`, `Experiment.yaml`) are reported instead of silently ignored."""
        wanted = pattern.rsplit("/", 1)[-1]  # "*.yaml" or "experiment.yaml"
        stem = wanted.removesuffix(".yaml")
        for path in sorted((self.root / directory).glob(pattern.replace(wanted, "*"))):
            if (
                path.suffix.lower() in CONFIG_SUFFIXES
                and stem in ("*", path.stem.lower())
                and not path.match(pattern)
                and not path.name.startswith(".")
                and path.is_file()
            ):
                rename = wanted.replace("*", path.stem)
                message = f"not read: only {wanted} files are read here; rename it to {rename}"
                self.problems.append(ConfigProblem(self._rel(path), None, "", message))
        return sorted((self.root / directory).glob(pattern))

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _read(self, path: Path, cls: type[N], allow_empty: bool = False) -> N | None:
        name = self._rel(path)
        text = self._text(path, name)
        node, error = compose(text) if text is not None else (None, None)
        if error is not None:
            self.problems.append(ConfigProblem(name, error[0], "", error[1]))
        if node is None:
            if text is not None and error is None and not allow_empty:
                self.problems.append(
                    ConfigProblem(name, 1, "", f"empty file (expected {cls.__name__})")
                )
            if text is None or error is not None:
                self.incomplete.add(path.relative_to(self.root).parts[0])
            return None
        reader = Reader(name)
        obj = reader.read_model(cls, node, "")
        self.problems.extend(reader.problems)
        self.broken_names |= reader.broken_names
        if obj is None or reader.incomplete:
            self.incomplete.add(path.relative_to(self.root).parts[0])
        return obj

    def _text(self, path: Path, name: str) -> str | None:
        """The file's text, or None with the reason recorded (not a file, too large, not UTF-8)."""
        data, reason = _head(path)
        if reason is not None:
            self.problems.append(ConfigProblem(name, None, "", f"cannot read: {reason}"))
            return None
        if len(data) > MAX_FILE_BYTES:
            self.problems.append(
                ConfigProblem(
                    name, None, "",
                    f"too large for a configuration file (more than {MAX_FILE_BYTES} bytes)",
                )
            )  # fmt: skip
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            byte = f"0x{data[exc.start]:02x}"
            self.problems.append(ConfigProblem(name, line, "", f"not UTF-8 text (byte {byte})"))
            return None

    def _add(self, table: dict[str, N], items: list[N], kind: str) -> bool:
        added = True
        for item in items:
            name = str(getattr(item, "name"))  # noqa: B009 (every listed model has a name)
            if name in table:
                first = table[name].where()
                self.problems.append(
                    item.problem(
                        "name", f"duplicate {kind} {shown(name)} (first at {first[0]}:{first[1]})"
                    )
                )
                added = False
            else:
                table[name] = item
        return added

    def _cross_check(self, p: Project) -> None:
        self._check_cache(p.settings)
        if p.settings.default_tree is not None:
            self._ref(p.settings, "default_tree", p.settings.default_tree, p.trees, "tree")
        if p.settings.default_profile is not None:
            chosen = p.settings.default_profile
            self._ref(p.settings, "default_profile", chosen, p.profiles, "profile")
        for profile in p.profiles.values():
            if profile.base not in BuildProfile.MAKE_BASES:
                self._file_exists(profile, "base", self.root / "configs" / profile.base)
            for i, fragment in enumerate(profile.fragments):
                self._file_exists(profile, f"fragments[{i}]", self.root / "configs" / fragment)
        for name, experiment in p.experiments.items():
            if experiment.tree is not None:
                self._ref(experiment, "tree", experiment.tree, p.trees, "tree")
            seen: set[str] = set()
            for variant in experiment.variants:
                if variant.name in seen:
                    message = f"duplicate variant {shown(variant.name)}"
                    self.problems.append(variant.problem("name", message))
                seen.add(variant.name)
                for i, patch in enumerate(variant.patches):
                    self._file_exists(variant, f"patches[{i}]", p.experiment_dirs[name] / patch)
        for pipeline in p.pipelines.values():
            self._check_pipeline(p, pipeline)

    def _check_pipeline(self, p: Project, pipeline: Pipeline) -> None:
        for rs in pipeline.revisions:
            self._ref(rs, "tree", rs.tree, p.trees, "tree")
        for vs in pipeline.experiments:
            found = self._ref(vs, "experiment", vs.experiment, p.experiments, "experiment")
            if found is not None and vs.variants is not None:
                names = {v.name: v for v in found.variants}
                for i, v in enumerate(vs.variants):
                    self._ref(vs, f"variants[{i}]", v, names, f"variant of {vs.experiment}")
        for kind, table in (("profiles", p.profiles), ("hosts", p.hosts), ("jobs", p.jobs)):
            for i, ref in enumerate(getattr(pipeline, kind)):
                self._ref(pipeline, f"{kind}[{i}]", ref, table, _singular(kind))

    def _check_cache(self, settings: Settings) -> None:
        target = settings if settings.located else None
        try:
            cache = cache_dir(settings, self.root).resolve()
        except (UserError, OSError, RuntimeError, ValueError) as exc:
            message = f"cannot use the cache directory: {exc}"
        else:
            if cache != self.root and self.root not in cache.parents:
                return
            message = f"cache directory {cache} is inside the repository; choose one outside it"
        self.problems.append(
            target.problem("cache_dir", message)
            if target
            else ConfigProblem(f"${CACHE_ENV}", None, "", message)
        )

    def _ref(
        self, owner: Model, rel: str, name: str, table: Mapping[str, N], kind: str
    ) -> N | None:
        if name in table:
            return table[name]
        defined_in = "seeds" if kind.startswith(("experiment", "variant")) else "configs"
        if name in self.broken_names or defined_in in self.incomplete:
            return None  # reported where it is (or may be) defined
        message = f"unknown {kind} {shown(name)} ({_known(table)})"
        self.problems.append(owner.problem(rel, message))
        return None

    def _file_exists(self, owner: Model, rel: str, path: Path) -> None:
        try:
            exists = path.is_file()
        except (OSError, ValueError):  # a name too long for the file system, say
            exists = False
        if not exists:
            shown_path = printable(self._rel(path), 100)
            self.problems.append(owner.problem(rel, f"no such file: {shown_path}"))


def _head(path: Path) -> tuple[bytes, str | None]:
    """Up to MAX_FILE_BYTES + 1 bytes of a regular file, or why not (a FIFO would block)."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            return b"", "Is a directory" if stat.S_ISDIR(mode) else "not a regular file"
        with path.open("rb") as f:
            return f.read(MAX_FILE_BYTES + 1), None
    except OSError as exc:
        return b"", exc.strerror or type(exc).__name__


def _singular(kind: str) -> str:
    return kind[:-1] if kind.endswith("s") else kind


def _known(table: Mapping[str, Any], most: int = 12) -> str:
    if not table:
        return "none are configured"
    names = sorted(table)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return "known: " + ", ".join(names[:most]) + more
