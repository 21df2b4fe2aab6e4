"""The CI templates in pipelines/ci/: what they declare, the systemd units as systemd-analyze
verifies them, and the GitLab job's script run twice as a runner runs it (a fresh clone each
time, `git clean -ffdx` in between), the second nightly classifying against the first.

The job runs a whole nightly, over the fake kernel tree and one namespace rack host of
test_nightly (real sshd, real builds of the fake kbuild, FAKE grub/reboot): needs root, and slow
like the other whole nightlies (about a minute on 2 cores)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import Failure, JUnitXml

from fake_kernel import git
from fake_machine import fake_rack_host
from helpers import require_program
from kbisect.lab.ssh import generate_keypair
from kbisect.results.model import Change
from kbisect.results.store import ResultsStore
from netns import NetnsLab, SshHost
from test_nightly import FAKE_JOB, make_project

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "pipelines" / "ci"
UNITS = ("kbisect-nightly.service", "kbisect-nightly.timer", "kbisect-nightly-failed@.service")


def gitlab_job() -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["kbisect-nightly"]
    return job


# -- what the templates declare ----------------------------------------------------------------


def test_gitlab_template_keeps_the_store_locks_the_lab_and_publishes() -> None:
    job = gitlab_job()
    state = job["variables"]["KBISECT_STATE"]
    assert state.startswith("/") and "CI_PROJECT_DIR" not in state  # outside the checkout
    assert "KBISECT_RESULTS" not in job["variables"]  # derived from the state by the script
    assert job["resource_group"]
    assert job["allow_failure"] == {"exit_codes": [1]}  # 1 a warning; 2 and 3 fail the job
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "kbisect-out/junit.xml"
    assert "kbisect-out/" in job["artifacts"]["paths"]


def test_jenkinsfile_keeps_the_store_and_locks_the_lab() -> None:
    text = (CI / "Jenkinsfile").read_text()
    assert "KBISECT_STATE = '/var/lib/kbisect'" in text
    assert "WORKSPACE" not in text and "KBISECT_RESULTS" not in text
    assert "lock(resource: 'kbisect-lab')" in text
    assert "pipelines/ci/nightly-job kbisect-out" in text
    assert "status == 1) { unstable(" in text
    assert "testResults: 'kbisect-out/junit.xml'" in text


def _units(tmp_path: Path, checkout: Path) -> Path:
    """The units as installed: the checkout where the unit expects it (/srv/kbisect)."""
    out = tmp_path / "units"
    out.mkdir()
    for name in UNITS:
        text = (CI / name).read_text().replace("/srv/kbisect", str(checkout))
        (out / name).write_text(text)
    return out


def _verify(units: Path) -> subprocess.CompletedProcess[str]:
    program = require_program("systemd-analyze", "systemd")
    return subprocess.run(
        [program, "verify", *(f"./{name}" for name in UNITS)],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


def test_systemd_units_verify(tmp_path: Path) -> None:
    units = _units(tmp_path, REPO)
    done = _verify(units)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr
    )
    service = (units / "kbisect-nightly.service").read_text()
    assert "\nUser=kbisect\n" in service and "User=root" not in service
    assert "\nTimeoutStartSec=6h\n" in service  # a oneshot's whole run (RuntimeMaxSec: no effect)
    assert "\nOnFailure=kbisect-nightly-failed@%n.service\n" in service
    assert "\nSuccessExitStatus=1\n" in service
    # and verify does find what is wrong: a limit systemd cannot read, a unit that is missing
    broken = service.replace("TimeoutStartSec=6h", "TimeoutStartSec=all night")
    (units / "kbisect-nightly.service").write_text(broken)
    assert "TimeoutStartSec" in _verify(units).stderr
    (units / "kbisect-nightly.service").write_text(service)
    (units / "kbisect-nightly-failed@.service").unlink()
    (units / "kbisect-nightly-failed@.service").write_text("[Unit]\nDescription=x\n")
    assert _verify(units).returncode != 0  # a service with no ExecStart


def test_nightly_job_refuses_a_store_inside_the_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git(checkout, "init", "-q")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBISECT_")}
    env["KBISECT_RESULTS"] = str(checkout / "results")
    done = subprocess.run(
        [str(CI / "nightly-job")], cwd=checkout, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "inside the checkout" in done.stderr
    assert not (checkout / "kbisect-out").exists()


# -- the GitLab job, twice, as a runner runs it --------------------------------------------------


@pytest.fixture
def rack_host(tmp_path: Path) -> Iterator[tuple[Path, SshHost]]:
    work = tmp_path / "lab"
    work.mkdir()
    key = work / "id_ed25519"
    generate_keypair(key)
    netns = NetnsLab(work / "netns", key.with_name("id_ed25519.pub"))
    try:
        yield work, fake_rack_host(netns, "rack1", work)[0]
    finally:
        netns.close()


def _ci_project(work: Path, host: SshHost, tmp: Path) -> tuple[Path, Path]:
    """The repository the CI clones: the test_nightly project on one host and one revision,
    with the CI templates; and the job program (outside it: the lab's side)."""
    root = make_project(work, [host], tmp)
    (root / "pipelines/nightly.yaml").write_text(
        "description: fake\nrevisions:\n  - {tree: fake, revisions: [v3]}\n"
        "experiments:\n  - {experiment: exp}\nprofiles: [dom0]\n"
        f"hosts: [{host.name}]\njobs: [fake]\nrepeat: 1\nauto_bisect: {{enabled: false}}\n"
    )
    shutil.copytree(CI, root / "pipelines/ci")
    shutil.copy(CI / "gitlab-ci.yml", root / ".gitlab-ci.yml")
    (root / ".gitignore").write_text("/kbisect-out/\n/results/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the lab's nightly")
    return root, tmp / "fakejob.sh"


def _launcher(tmp: Path) -> Path:
    """What ./bootstrap (the job's before_script) installs: a `kbisect` on PATH, here for the
    code under test (bootstrap itself installs packages: not run here)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    src = REPO / "src"
    (bin_dir / "kbisect").write_text(
        f'#!/bin/sh\nPYTHONPATH="{src}" exec "{sys.executable}" -m kbisect "$@"\n'
    )
    (bin_dir / "kbisect").chmod(0o755)
    return bin_dir


def _run_job(clone: Path, runner: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The job's script as GitLab's shell executor runs it: bash -eo pipefail in the clone,
    the job's variables under the runner's (schedule variables win over the file's)."""
    job = gitlab_job()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBISECT_")}
    env.update({"CI_PROJECT_DIR": str(clone), "CI_PIPELINE_SOURCE": "schedule"})
    env.update({k: str(v) for k, v in job["variables"].items()})
    env.update(runner)
    script = "\n".join(job["script"])
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], cwd=clone, env=env, capture_output=True,
        text=True, timeout=900, check=False,
    )  # fmt: skip


def _junit_cases(clone: Path) -> dict[tuple[str, str], bool]:
    """(classname, name) -> failed, from the file the job reports as JUnit."""
    report = clone / gitlab_job()["artifacts"]["reports"]["junit"]
    return {
        (case.classname, case.name): any(isinstance(r, Failure) for r in case.result)
        for suite in JUnitXml.fromfile(str(report))
        for case in suite
    }


@pytest.mark.needs_root
@pytest.mark.slow
def test_gitlab_job_twice_in_fresh_clones_classifies_against_the_first(
    rack_host: tuple[Path, SshHost], tmp_path: Path
) -> None:
    work, host = rack_host
    origin, job_program = _ci_project(work, host, tmp_path / "project-src")
    state = tmp_path / "runner/state"  # what the runner keeps: the template's /var/lib/kbisect
    runner = {
        "KBISECT_STATE": str(state),
        "KBISECT_CACHE": str(tmp_path / "runner/cache"),
        "PATH": f"{_launcher(tmp_path)}:{os.environ['PATH']}",
    }
    builds = tmp_path / "builds"

    first = builds / "1"
    git(tmp_path, "clone", "-q", str(origin), str(first))
    done = _run_job(first, runner)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert (first / "kbisect-out/results/site/index.html").is_file()
    assert (first / "kbisect-out/summary.txt").read_text().count("NEW REGRESSIONS: 0") == 1
    before = _junit_cases(first)
    assert before and not any(before.values())
    assert (state / "results/kbisect.sqlite").is_file()
    git(first, "clean", "-ffdx")  # as the runner does before the next job
    assert not (first / "kbisect-out").exists() and not (first / "results").exists()

    # overnight the kernel broke: the job's subtest beta fails from now on
    job_program.write_text(FAKE_JOB.replace("GNTSTRESS beta PASS", "GNTSTRESS beta FAIL"))
    second = builds / "2"
    git(tmp_path, "clone", "-q", str(origin), str(second))
    done = _run_job(second, runner)
    assert done.returncode in gitlab_job()["allow_failure"]["exit_codes"], done.stderr
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr
    summary = (second / "kbisect-out/summary.txt").read_text()
    assert "NEW REGRESSIONS: 2" in summary, summary  # beta, in both variants
    after = _junit_cases(second)
    assert after.keys() == before.keys()  # the same tests: CI histories go on
    assert {name for (_, name), failed in after.items() if failed} == {"beta"}
    with ResultsStore(state / "results") as store:
        runs = sorted(r.id for r in store.runs())
        assert len(runs) == 2
        changes = store.changes(runs[1])
    regressed = [c for c in changes if c.change is Change.REGRESSION]
    assert {c.key.subtest for c in regressed} == {"beta"} and len(regressed) == 2
    assert all(c.baseline_run == runs[0] for c in changes)  # against the first night
    assert not any(c.change is Change.NEW for c in changes)
