"""config: YAML in, typed objects out. Nothing else in kbisect parses YAML."""

from kbisect.config.model import (
    BuildProfile,
    Distcc,
    Experiment,
    Host,
    Job,
    Pipeline,
    Settings,
    Tree,
    Variant,
)
from kbisect.config.project import Project, cache_dir, find_root, load_project

__all__ = [
    "BuildProfile",
    "Distcc",
    "Experiment",
    "Host",
    "Job",
    "Pipeline",
    "Project",
    "Settings",
    "Tree",
    "Variant",
    "cache_dir",
    "find_root",
    "load_project",
]
