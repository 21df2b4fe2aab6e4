"""Shared test fixtures. Tests use real files, real git and real processes."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbisect.build import builder
from kbisect.build.store import Artifact
from kbisect.config import Project, Settings, cache_dir, load_project
from kbisect.tree import debian, repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.repos import TreeRepo
from kbisect.tree.variants import find_variant
from pgserver import PostgresServer, ServerError, start_server

REPO = Path(__file__).resolve().parent.parent

MakeProject = Callable[[dict[str, str]], Path]

# Markers a test gets from the fixtures it uses, so that a new test is marked without anyone
# remembering to: `pytest -m "not slow"` is the quick inner loop (about a minute and a half on
# 2 cores).
_MARKS_BY_FIXTURE = {
    "dom0_builds": ("slow", "kernel_build"),
    "debian_tree": ("slow",),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for mark in _MARKS_BY_FIXTURE.get(fixture, ()):
                item.add_marker(mark)
        if item.get_closest_marker("vm") or item.get_closest_marker("kernel_build"):
            item.add_marker("slow")
        if item.get_closest_marker("needs_root") and not is_root:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs root (network namespaces, sshd): run the suite as root, "
                    'or leave these out with -m "not needs_root"'
                )
            )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (tests/pgserver.py). Not being able to start
    it fails the tests that need it: the shared store is tested for real or not at all."""
    try:
        server = start_server()
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Each store backend in turn: None for the SQLite file, else a fresh PostgreSQL store's URL,
    also in $KBISECT_STORE (so child processes and stores opened without a URL use it)."""
    if request.param == "sqlite":
        monkeypatch.delenv("KBISECT_STORE", raising=False)
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.fresh_schema()
    monkeypatch.setenv("KBISECT_STORE", url)
    return url


@pytest.fixture
def make_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeProject:
    """Write a project tree of {relative path: text} into a temporary directory."""
    monkeypatch.setenv("KBISECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KBISECT_ROOT", raising=False)

    def make(files: dict[str, str]) -> Path:
        root = tmp_path / "project"
        (root / "configs").mkdir(parents=True, exist_ok=True)
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))
        return root

    return make


@pytest.fixture(scope="session")
def real_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The repository's own configuration with a cache for this test run.

    Downloads (.deb files), ccache and the emulated rack machine's disk images are shared with
    the machine's kbisect cache, so a second run neither downloads nor compiles nor builds an
    image from scratch; everything else starts empty.
    """
    persistent = cache_dir(Settings(), REPO)
    cache = tmp_path_factory.mktemp("kbisect-cache")
    for shared in ("debian/debs", "ccache", "machines"):
        (persistent / shared).mkdir(parents=True, exist_ok=True)
        (cache / shared).parent.mkdir(parents=True, exist_ok=True)
        (cache / shared).symlink_to(persistent / shared)
    old = os.environ.get("KBISECT_CACHE")
    os.environ["KBISECT_CACHE"] = str(cache)
    try:
        yield load_project(REPO)
    finally:
        if old is None:
            os.environ.pop("KBISECT_CACHE", None)
        else:
            os.environ["KBISECT_CACHE"] = old


@pytest.fixture(scope="session")
def debian_tree(real_project: Project) -> tuple[TreeRepo, list[str]]:
    """debian-6.1 with the oldest and the newest available point releases imported, once."""
    if shutil.which("apt-get") is None:
        pytest.fail("apt-get is needed: the Debian tree is imported from Debian's packages")
    tree = repos.open_tree(real_project, "debian-6.1")
    available = debian.available_releases("linux-source-6.1")
    pick = [available[0].version, available[-1].version]
    repos.import_debian(real_project, tree, pick, print)
    return tree, [f"v{v}" for v in pick]


VARIANTS = ("vm-mixedmap", "vm-io", "none", "mempolicy")


@pytest.fixture(scope="session")
def dom0_builds(
    real_project: Project, debian_tree: tuple[TreeRepo, list[str]]
) -> dict[str, Artifact]:
    """The newest Debian 6.1 release built with the dom0 profile for each gntdev variant, once
    per session (later requests are artifact-store hits)."""
    tree, tags = debian_tree
    profile = real_project.profiles["xen-dom0"]
    built: dict[str, Artifact] = {}
    with slot(real_project, tree) as path:
        for name in VARIANTS:
            co = checkout(real_project, tree, tags[-1], find_variant(real_project, name), path)
            outcome = builder.build(real_project, co, profile)
            assert outcome.artifact is not None, (name, outcome.errors)
            built[name] = outcome.artifact
    return built


@pytest.fixture(scope="module")
def ssh_client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ed25519 key pair for the tests' SSH client, one per test module."""
    from kbisect.lab.ssh import generate_keypair

    path = tmp_path_factory.mktemp("client-key") / "id_ed25519"
    generate_keypair(path)
    return path
