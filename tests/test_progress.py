"""Progress off a terminal (as in a CI log): long phases keep printing while they run, with a
small heartbeat interval instead of the real 30 s, and real commands that take a few seconds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kbisect import progress
from kbisect.build.runner import Runner
from kbisect.deadline import Deadline

SLOW_COMMAND = "echo compiling gntdev.o; sleep 3; echo linking vmlinux"


def test_a_long_build_command_prints_heartbeats_and_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.5)
    with (tmp_path / "build.log").open("w") as log, progress.line_progress("building demo") as bar:
        runner = Runner(log, Deadline(60), dict(os.environ), on_line=bar)
        runner.run(["sh", "-c", SLOW_COMMAND], cwd=tmp_path)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    beats = [line for line in lines if " so far; " in line]
    assert beats, err
    assert all(line.startswith("building demo: ") for line in beats)
    assert "compiling gntdev.o" in beats[0]
    assert lines[-1].startswith("building demo: done in ")
    assert lines[-1].endswith("; linking vmlinux")
    assert out == ""  # progress never mixes into the results on stdout


def test_a_failed_phase_says_it_stopped(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with (
        pytest.raises(RuntimeError),
        progress.line_progress("building broken"),
    ):
        raise RuntimeError("make failed")
    assert capfd.readouterr().err.splitlines()[-1].startswith("building broken: stopped after ")


def test_a_slow_transfer_prints_bytes_so_far(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.5)
    chunk = 1 << 20
    script = f"for i in 1 2 3; do head -c {chunk} /dev/zero; sleep 1; done"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with progress.byte_progress("host: bzImage", 3 * chunk) as meter:
        while data := proc.stdout.read1(65536):
            progress.advance(meter, len(data))
    assert proc.wait(timeout=30) == 0
    lines = capfd.readouterr().err.splitlines()
    assert any(" so far; " in line and "of 3.0 MiB" in line for line in lines), lines
    assert lines[-1].startswith("host: bzImage: done in ")
    assert lines[-1].endswith("3.0 MiB of 3.0 MiB")


def test_a_quick_transfer_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with progress.byte_progress("host: initrd", 10) as meter:
        progress.advance(meter, 10)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("seconds", "shown"), [(4.2, "4 s"), (59, "59 s"), (422, "7m02s"), (3780, "1h03m")]
)
def test_elapsed_reads_like_a_clock(seconds: float, shown: str) -> None:
    assert progress.elapsed(seconds) == shown
