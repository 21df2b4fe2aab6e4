"""The configuration loader: valid files load into typed objects; every kind of mistake is
reported with its file, line, key path and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from tests.conftest import REPO, MakeProject

from kbisect.config import load_project
from kbisect.errors import ConfigError, UserError

_VALID = {
    "configs/main.yaml": """
        settings:
          build_jobs: 3
        trees:
          - name: linux
            url: /srv/linux.git
        profiles:
          - name: small
            base: tinyconfig
            fragments: [frag/x.config]
        hosts:
          - name: qemu
            kind: qemu
          - name: rack1
            kind: ssh
            ssh: {address: rack1.example, port: 2222}
        """,
    "configs/jobs.yaml": """
        jobs:
          - name: stress
            program: gntstress
            sysctl: {kernel.numa_balancing: 1}
        """,
    "configs/frag/x.config": "CONFIG_XEN=y\n",
    "seeds/exp/experiment.yaml": """
        name: exp
        title: an experiment
        question: does it work?
        variants:
          - name: base
            description: as it is
          - name: patched
            description: with the patch
            patches: [a.patch]
            expect: {default: pass, odirect-read: fail}
        """,
    "seeds/exp/a.patch": "--- a/x\n+++ b/x\n",
    "pipelines/nightly.yaml": """
        revisions:
          - tree: linux
            revisions: [v6.1, 6.2]
        experiments:
          - experiment: exp
            variants: [patched]
        profiles: [small]
        hosts: [qemu, rack1]
        jobs: [stress]
        """,
}
VALID = {path: textwrap.dedent(text).lstrip("\n") for path, text in _VALID.items()}


def problems_of(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_project(root)
    return [str(p) for p in info.value.problems]


def test_valid_project_loads_typed_objects(make_project: MakeProject) -> None:
    p = load_project(make_project(VALID))
    assert p.settings.build_jobs == 3
    assert p.hosts["rack1"].ssh is not None and p.hosts["rack1"].ssh.port == 2222
    assert p.hosts["qemu"].qemu_options().numa_fake == 2  # default applies
    assert p.jobs["stress"].sysctl == {"kernel.numa_balancing": "1"}
    assert p.experiments["exp"].variants[1].expect["odirect-read"] == "fail"
    # a number-like revision stays the text the user wrote
    assert p.pipelines["nightly"].revisions[0].revisions == ["v6.1", "6.2"]
    assert p.experiment_dirs["exp"] == p.root / "seeds" / "exp"


def test_repository_configuration_is_valid() -> None:
    p = load_project(REPO)
    assert "nightly" in p.pipelines
    assert {"vm-mixedmap", "vm-io", "none", "mempolicy"} <= {
        v.name for v in p.experiments["gntdev-numa"].variants
    }


def with_change(path: str, old: str, new: str) -> dict[str, str]:
    files = dict(VALID)
    assert old in files[path], old
    files[path] = files[path].replace(old, new, 1)
    return files


def test_an_expected_flaky_rate_is_a_range_beside_the_words(make_project: MakeProject) -> None:
    files = with_change(
        "seeds/exp/experiment.yaml",
        "{default: pass, odirect-read: fail}",
        "{default: flaky, odirect-read: {flaky: [0.05, 0.5]}, churn: {flaky: [0, 1]}}",
    )
    expect = load_project(make_project(files)).experiments["exp"].variants[1].expect
    assert expect["default"] == "flaky"
    ranges = {k: (v.flaky, str(v)) for k, v in expect.items() if not isinstance(v, str)}
    assert ranges == {
        "odirect-read": ([0.05, 0.5], "flaky 5-50%"),
        "churn": ([0.0, 1.0], "flaky 0-100%"),
    }


@pytest.mark.parametrize("word", ["on", "off", "auto"])
def test_a_word_yaml_takes_for_a_boolean_is_the_word_where_words_are_expected(
    make_project: MakeProject, word: str
) -> None:
    files = with_change(
        "configs/main.yaml", "kind: qemu", f"kind: qemu\n    qemu: {{standby: {word}}}"
    )
    assert load_project(make_project(files)).hosts["qemu"].qemu_options().standby == word


def test_a_real_boolean_is_still_refused_where_words_are_expected(
    make_project: MakeProject,
) -> None:
    files = with_change("configs/main.yaml", "kind: qemu", "kind: qemu\n    qemu: {standby: true}")
    assert problems_of(make_project(files)) == [
        "configs/main.yaml:13: hosts[0].qemu.standby: expected one of 'auto', 'on', 'off', "
        "got 'true'"
    ]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            with_change("configs/main.yaml", "base: tinyconfig", "bsae: tinyconfig"),
            [
                "configs/main.yaml:7: profiles[0].base: missing required key (a string)",
                "configs/main.yaml:8: profiles[0].bsae: unknown key (did you mean 'base'? "
                "expected one of: name, base, fragments, arch, targets, build_timeout)",
            ],
        ),
        (
            with_change("configs/main.yaml", "port: 2222", "port: twenty"),
            ["configs/main.yaml:15: hosts[1].ssh.port: expected an integer, got 'twenty'"],
        ),
        (
            with_change("configs/main.yaml", "kind: qemu", "kind: kvm"),
            [
                "configs/main.yaml:12: hosts[0].kind: expected one of 'qemu', 'ssh', 'lava', "
                "got 'kvm'"
            ],
        ),
        (
            with_change("pipelines/nightly.yaml", "hosts: [qemu, rack1]", "hosts: [qemu, rack2]"),
            ["pipelines/nightly.yaml:8: hosts[1]: unknown host 'rack2' (known: qemu, rack1)"],
        ),
        (
            with_change("pipelines/nightly.yaml", "variants: [patched]", "variants: [patchd]"),
            [
                "pipelines/nightly.yaml:6: experiments[0].variants[0]: unknown variant of exp "
                "'patchd' (known: base, patched)"
            ],
        ),
        (
            with_change("configs/jobs.yaml", "name: stress", "name: stress\n    repeat: [1]"),
            ["configs/jobs.yaml:3: jobs[0].repeat: expected an integer, got a list"],
        ),
        (
            {**VALID, "configs/more.yaml": "hosts:\n  - name: qemu\n    kind: qemu\n"},
            [
                "configs/more.yaml:2: hosts[0].name: duplicate host 'qemu' "
                "(first at configs/main.yaml:11)"
            ],
        ),
        (
            with_change(
                "configs/jobs.yaml", "program: gntstress", "program: gntstress\n    timeout: 0"
            ),
            ["configs/jobs.yaml:4: jobs[0].timeout: expected an integer from 1 to 604800, got 0"],
        ),
        (
            with_change("seeds/exp/experiment.yaml", "[a.patch]", "[a.patch, b.patch]"),
            [
                "seeds/exp/experiment.yaml:9: variants[1].patches[1]: "
                "no such file: seeds/exp/b.patch"
            ],
        ),
        (
            with_change(
                "configs/main.yaml",
                "url: /srv/linux.git",
                "url: /srv/linux.git\n    debian_package: x",
            ),
            ["configs/main.yaml:4: trees[0]: expected exactly one of 'url' or 'debian_package'"],
        ),
        (
            with_change("configs/main.yaml", "  build_jobs: 3", "  build_jobs: 3\n  build_jobs: 4"),
            ["configs/main.yaml:3: settings.build_jobs: duplicate key"],
        ),
        (
            with_change("pipelines/nightly.yaml", "jobs: [stress]", "jobs: [stress"),
            [
                "pipelines/nightly.yaml:10: YAML syntax error: "
                "expected ',' or ']', but got '<stream end>'"
            ],
        ),
        (
            {**VALID, "pipelines/empty.yaml": "\n"},
            ["pipelines/empty.yaml:1: empty file (expected Pipeline)"],
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "bad-literal",
        "unknown-host",
        "unknown-variant",
        "list-for-int",
        "duplicate-name",
        "range",
        "missing-patch",
        "exclusive-keys",
        "duplicate-key",
        "yaml-syntax",
        "empty-file",
    ],
)
def test_each_mistake_is_located(
    make_project: MakeProject, files: dict[str, str], expected: list[str]
) -> None:
    assert problems_of(make_project(files)) == expected


def test_unreadable_file_is_reported(make_project: MakeProject) -> None:
    root = make_project(VALID)
    (root / "configs" / "broken.yaml").mkdir()  # a directory where a file should be
    assert problems_of(root) == ["configs/broken.yaml: cannot read: Is a directory"]


def test_cache_inside_repository_is_refused(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KBISECT_CACHE")
    root = make_project(with_change("configs/main.yaml", "build_jobs: 3", "cache_dir: .cache"))
    [problem] = problems_of(root)
    assert problem.startswith("configs/main.yaml:2: settings.cache_dir: cache directory ")
    assert "inside the repository" in problem


def test_cache_dir_precedence(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = make_project(
        with_change("configs/main.yaml", "build_jobs: 3", f"cache_dir: {tmp_path}/fromconfig")
    )
    assert load_project(root).cache_dir == tmp_path / "cache"  # $KBISECT_CACHE wins
    monkeypatch.delenv("KBISECT_CACHE")
    assert load_project(root).cache_dir == tmp_path / "fromconfig"
    root2 = make_project(VALID)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_project(root2).cache_dir == tmp_path / "xdg" / "kbisect"


def test_unknown_name_lookup_lists_known_names(make_project: MakeProject) -> None:
    p = load_project(make_project(VALID))
    with pytest.raises(UserError, match=r"unknown host 'nope' \(known: qemu, rack1\)"):
        p.get("hosts", "nope")


def test_unset_defaults_are_the_only_tree_and_profile(make_project: MakeProject) -> None:
    p = load_project(make_project(VALID))
    assert p.tree_name(None) == "linux" and p.tree_name("/srv/other.git") == "/srv/other.git"
    assert p.profile(None).name == "small"
    with pytest.raises(UserError, match=r"unknown build profile 'big' \(known: small\)"):
        p.profile("big")
    more = {**VALID, "configs/more.yaml": "trees:\n  - name: other\n    url: /srv/o.git\n"}
    with pytest.raises(UserError, match=r"no tree given: .* settings.default_tree"):
        load_project(make_project(more)).tree_name(None)


def test_defaults_come_from_the_settings(make_project: MakeProject) -> None:
    files = {
        **with_change(
            "configs/main.yaml",
            "build_jobs: 3",
            "build_jobs: 3\n  default_tree: other\n  default_profile: big",
        ),
        "configs/more.yaml": (
            "trees:\n  - name: other\n    url: /srv/o.git\n"
            "profiles:\n  - name: big\n    base: defconfig\n"
        ),
    }
    p = load_project(make_project(files))
    assert p.tree_name(None) == "other" and p.tree_name("linux") == "linux"
    assert p.profile(None).name == "big" and p.profile("small").name == "small"
    repository = load_project(REPO)  # what the shipped settings say
    assert repository.tree_name(None) == "debian-6.1"
    assert repository.profile(None).name == "xen-dom0"


def test_a_default_that_names_nothing_is_located(make_project: MakeProject) -> None:
    files = with_change(
        "configs/main.yaml", "build_jobs: 3", "default_tree: linus\n  default_profile: big"
    )
    assert problems_of(make_project(files)) == [
        "configs/main.yaml:2: settings.default_tree: unknown tree 'linus' (known: linux)",
        "configs/main.yaml:3: settings.default_profile: unknown profile 'big' (known: small)",
    ]


def test_every_number_has_a_range_and_the_reference_shows_it() -> None:
    import dataclasses
    import typing

    from kbisect.config.reference import SECTIONS, reference_markdown
    from kbisect.config.schema import model_fields

    tables = reference_markdown().split("#### ")[1:]
    numbers = []
    for (title, cls), table in zip(SECTIONS, tables, strict=True):
        assert table.startswith(f"`{title}`")
        for f, tp in model_fields(cls):
            if {int, float} & {tp, *typing.get_args(tp)}:
                numbers.append(f.name)
                low, high = f.metadata["bounds"]
                required = (
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                )
                assert required or f.default is None or low <= f.default <= high, f.name
                [row] = [r for r in table.splitlines() if r.startswith(f"| `{f.name}` |")]
                assert f" from {low} to {high} " in row, row
    assert {"port", "cpus", "max_power_cycles", "artifact_limit_gb", "newest_tags"} <= set(numbers)


def test_debug_profile_is_the_dom0_profile_plus_the_debug_checks() -> None:
    """xen-dom0-debug asks for everything xen-dom0 does, then KFENCE sampling more often than
    its default, kmemleak, DEBUG_VM, lockdep and SLUB debugging, and not KASAN (a 6.1 KASAN
    kernel crashes at its first instruction as a Xen PV dom0); the default stays xen-dom0.
    (That every symbol survives olddefconfig is checked by the build itself; a debug build is
    too slow for the suite.)"""
    from kbisect.build.kconfig import requested

    project = load_project(REPO)
    dom0, debug = project.profile("xen-dom0"), project.profile("xen-dom0-debug")
    assert project.profile(None).name == "xen-dom0"
    assert debug.fragments[: len(dom0.fragments)] == dom0.fragments
    assert (debug.base, debug.arch, debug.targets) == (dom0.base, dom0.arch, dom0.targets)
    plain, wanted = requested(dom0, REPO / "configs"), requested(debug, REPO / "configs")
    assert {k: v for k, v in wanted.items() if k in plain} == plain, "nothing of dom0 undone"
    checks = ("KFENCE", "DEBUG_KMEMLEAK", "DEBUG_VM", "PROVE_LOCKING", "SLUB_DEBUG_ON")
    assert all(wanted[f"CONFIG_{name}"] == "y" for name in checks)
    assert int(wanted["CONFIG_KFENCE_SAMPLE_INTERVAL"]) < 100, "more often than the default"
    assert wanted.get("CONFIG_KASAN", "n") == "n"
