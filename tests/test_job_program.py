"""The job-program seam: a job's `program:` names gntstress (built here, told with --only what to
run) or is the path of the user's own program (shipped as it is, reporting what it reports).
Each command line is run here for real and its output read back through the same seam."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import require_program
from kbisect.config import Job
from kbisect.errors import InfraError
from kbisect.jobs.gntstress import SUBTESTS, GntstressProgram, Status
from kbisect.jobs.program import PROGRAMS, OwnProgram, program_of

ON_XEN = Path("/dev/xen/gntalloc").exists() or Path("/dev/xen/gntdev").exists()


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return done.stdout


def test_a_program_is_chosen_by_name_else_it_is_a_path(tmp_path: Path) -> None:
    assert isinstance(program_of(Job(name="j", program="gntstress")), GntstressProgram)
    assert set(PROGRAMS) == {"gntstress"}
    own = program_of(Job(name="j", program=str(tmp_path / "mine")))
    assert isinstance(own, OwnProgram) and own.path == tmp_path / "mine"
    home = program_of(Job(name="j", program="~/mine"))
    assert isinstance(home, OwnProgram) and home.path == Path.home() / "mine"


@pytest.mark.skipif(ON_XEN, reason="this machine has Xen grant devices")
def test_gntstress_is_built_and_runs_only_what_it_is_told(tmp_path: Path) -> None:
    require_program("gcc", "build-essential")
    program = program_of(Job(name="j", program="gntstress"))
    binary = program.binary(tmp_path / "cache")
    assert binary.parent == tmp_path / "cache" / "jobs"
    args = ["--soak-seconds", "1"]

    argv = program.command(str(binary), args, ["churn", "fork"])
    assert argv == [str(binary), "--soak-seconds", "1", "--only", "churn,fork"]
    expected = program.expected(args, ["churn", "fork"])
    assert expected == ("churn", "fork")
    report = program.parse(run(argv), expected)
    assert report.clean and [r.name for r in report.results] == ["fork", "churn"]

    everything = program.command(str(binary), args, [])
    assert program.expected(args, []) == SUBTESTS
    report = program.parse(run(everything), program.expected(args, []))
    assert report.clean and report.with_status(Status.SKIP) == list(SUBTESTS)


def test_own_program_runs_everything_and_is_expected_to_report_what_it_reports(
    tmp_path: Path,
) -> None:
    script = tmp_path / "mine.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo "GNTSTRESS first PASS errno=0 detail=args $*"\n'
        "echo 'GNTSTRESS second FAIL errno=5 detail=broken'\n"
        "echo 'GNTSTRESS-SUMMARY pass=1 fail=1 skip=0'\n"
    )
    script.chmod(0o755)
    program = program_of(Job(name="j", program=str(script)))
    assert program.binary(tmp_path / "cache") == script
    argv = program.command(str(script), ["-v"], ["second"])
    assert argv == [str(script), "-v"], "its options are unknown: no filter is added"
    assert program.expected(["-v"], ["second"]) is None
    report = program.parse(run(argv), None)
    assert report.clean and report.expected == ("first", "second")
    assert report.with_status(Status.FAIL) == ["second"]
    first = report.result("first")
    assert first is not None and first.detail == "args -v"


def test_own_program_that_is_not_there_is_an_infrastructure_error(tmp_path: Path) -> None:
    program = program_of(Job(name="sleeper", program=str(tmp_path / "gone")))
    with pytest.raises(InfraError, match=r"job sleeper: program .*/gone does not exist here"):
        program.binary(tmp_path / "cache")
