"""Property-based fuzzing of the configuration loader: whatever the bytes in a configuration
file, loading the project either succeeds or raises ConfigError whose every problem is one
short printable line. Never another exception, never a traceback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import REPO
from tests.test_config_malformed import assert_clean_line

from kbisect.config import load_project
from kbisect.errors import ConfigError

# Files the fuzzer replaces: a new configs file, and the shipped experiment and pipeline.
TARGETS = ["configs/x.yaml", "seeds/gntdev-numa/experiment.yaml", "pipelines/nightly.yaml"]
SHIPPED = {
    rel: (REPO / rel).read_text()
    for rel in [
        *(str(p.relative_to(REPO)) for p in sorted((REPO / "configs").glob("*.yaml"))),
        "seeds/gntdev-numa/experiment.yaml",
        "pipelines/nightly.yaml",
    ]
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    database=None,  # and nothing written into the checkout (.hypothesis/)
    suppress_health_check=[HealthCheck.too_slow],
)
# What YAML is made of, plus the words the schema knows and values near its edges.
TOKENS = [
    *"-:[]{},&*!|>'\"#%@`?~ \n\t\r\\", "\x00", "\x1b", "\u2028", "\ufeff", "é",
    "name", "trees", "hosts", "jobs", "profiles", "settings", "revisions", "variants", "kind",
    "qemu", "ssh", "port", "repeat", "cpus", "memory_mb", "timeout", "url", "patches", "expect",
    "!!int", "!!bool", "!!float", "!!str", "!!null", "!!timestamp", "!!binary", "!!set",
    "!!omap", "!!python/object/apply:os.system", "!env", "!", "&a", "*a", "<<",
    "0", "-1", "1e8", "0x1f", "0o17", "1_000", ".nan", "-.inf", "99999999999999999999", "true",
    "on", "null", "2026-12-07", "12:30:00", "---", "...", "%YAML 1.1", "%TAG ! tag:x,2000:",
    "  ", "\n  - ", "\n    ", ": ", "- ",
]  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the shipped project, with a cache outside it."""
    root = tmp_path_factory.mktemp("fuzz") / "project"
    for part in ("configs", "seeds", "pipelines"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("ci"))
    saved = {k: os.environ.get(k) for k in ("KBISECT_CACHE", "KBISECT_ROOT")}
    os.environ["KBISECT_CACHE"] = str(root.parent / "cache")
    os.environ.pop("KBISECT_ROOT", None)
    load_project(root)  # the copy itself is valid
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def load_with(root: Path, rel: str, content: bytes) -> None:
    """Put `content` at `rel`, load the project, check the outcome, put the file back."""
    path = root / rel
    original = path.read_bytes() if path.exists() else None
    path.write_bytes(content)
    try:
        load_project(root)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert_clean_line(str(problem))
        assert all(line.isprintable() for line in exc.report().splitlines())
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)


@FUZZ
@given(target=st.sampled_from(TARGETS), content=st.binary(max_size=3000))
def test_random_bytes(base: Path, target: str, content: bytes) -> None:
    load_with(base, target, content)


yamlish = st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=80).map("".join)


@FUZZ
@given(target=st.sampled_from(TARGETS), text=yamlish)
def test_random_yaml_like_text(base: Path, target: str, text: str) -> None:
    load_with(base, target, text.encode("utf-8", "surrogatepass"))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    """A shipped file with a few slices deleted, replaced, duplicated or re-indented."""
    text = SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        how = draw(st.sampled_from(["delete", "replace", "insert", "duplicate", "indent"]))
        token = draw(st.sampled_from(TOKENS))
        if how == "delete":
            text = text[:i] + text[j:]
        elif how == "replace":
            text = text[:i] + token + text[j:]
        elif how == "insert":
            text = text[:i] + token + text[i:]
        elif how == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + text[i:j].replace("\n", "\n  ") + text[j:]
    return draw(st.sampled_from(TARGETS)), text


@FUZZ
@given(case=mutated())
def test_mutated_shipped_configs(base: Path, case: tuple[str, str]) -> None:
    target, text = case
    load_with(base, target, text.encode("utf-8", "surrogatepass"))
