"""LAVA hosts without a LAVA server: the job definition kbisect renders, the configuration's rules,
and the mapping of finished LAVA jobs back into verdicts, from answers recorded from the real
local LAVA lab (tests/data/lava/*: `GET /api/v0.2/jobs/N/`, `.../tests/`, `.../logs/`, recorded
by the slow tests' lab; the job's own token removed). The real server is in test_lava_lab.py."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import RECORDED_SUBTESTS
from kbisect.config.model import Host, Job, LavaOptions, QemuOptions
from kbisect.errors import InfraError
from kbisect.jobs.gntstress import SUBTESTS
from kbisect.jobs.jobrun import setup_script
from kbisect.jobs.lava import (
    CASE_SCRIPT,
    console_commands,
    job_script,
    lava_cases,
    read_console,
    verdict_of,
)
from kbisect.lab.lava.api import LavaServer
from kbisect.lab.lava.definition import BootFiles, JobRequest, image_arg, render
from kbisect.lab.lava.host import LavaOutcome
from kbisect.results.model import ResultStatus

DATA = Path(__file__).parent / "data" / "lava"
JOB = Job(name="gntstress", program="gntstress", args=["--soak-seconds", "3"],
          modules=["xen-gntdev"], sysctl={"kernel.numa_balancing": "1"}, timeout=900)  # fmt: skip
LAVA = LavaOptions(url="http://127.0.0.1:8000/", token_file=None)


def recorded(name: str, abandoned: str = "") -> LavaOutcome:
    """A job recorded from a real LAVA lab, by a gntstress with RECORDED_SUBTESTS."""
    where = DATA / name
    job = json.loads((where / "job.json").read_text())
    log = yaml.safe_load((where / "logs.yaml").read_text())
    cases = json.loads((where / "tests.json").read_text())
    return LavaOutcome.of(f"http://lava/scheduler/job/{job['id']}", job, cases, log, abandoned)


def request(commands: tuple[Any, ...] = ()) -> JobRequest:
    files = BootFiles(Path("/c/xen-4.17"), Path("/c/a/bzImage"), Path("/c/lab/h/initramfs.gz"))
    return JobRequest("kbisect K gntstress r1", files, "kbisect.build=K", "kbisect-dom0# ",
                      commands, boot_seconds=300, test_seconds=930)  # fmt: skip


# -- the job definition ------------------------------------------------------------------------


def test_definition_boots_xen_with_the_build_as_dom0_through_one_image_arg() -> None:
    commands = console_commands(JOB, SUBTESTS)
    job = yaml.safe_load(render(request(commands), LAVA, QemuOptions()))
    assert job["device_type"] == "qemu" and job["context"]["arch"] == "amd64"
    deploy, boot, test = (next(iter(a.values())) for a in job["actions"])
    images = deploy["images"]
    assert images["kernel"] == {"url": "file:///c/a/bzImage", "image_arg": ""}
    assert images["initrd"] == {"url": "file:///c/lab/h/initramfs.gz", "image_arg": ""}
    arg = images["xen"]["image_arg"]
    assert arg.startswith('-kernel {xen} -append "console=com1 dom0_mem=1024M,max:1024M')
    assert '-initrd "{kernel} console=hvc0 ' in arg and arg.endswith('kbisect.build=K,{initrd}"')
    assert "quiet" not in arg  # LAVA waits for "Linux version"
    assert boot == {"method": "qemu", "media": "tmpfs", "timeout": {"seconds": 300},
                    "prompts": ["kbisect-dom0# "]}  # fmt: skip
    # the job never ends before its parts could
    parts = deploy["timeout"]["seconds"] + 300 + test["timeout"]["seconds"]
    assert job["timeouts"]["job"]["seconds"] >= parts - 60
    script = test["interactive"][0]["script"]
    assert [s.get("name") for s in script] == [None, "gntstress", *SUBTESTS]


def test_a_comma_in_the_dom0_command_line_is_doubled_for_qemu() -> None:
    arg = image_arg(QemuOptions(extra_dom0_cmdline="console=ttyS0,115200"), "")
    assert "console=ttyS0,,115200,{initrd}" in arg


def test_case_patterns_do_not_match_their_own_echo() -> None:
    for command in console_commands(JOB, SUBTESTS):
        for pattern in (command.success, command.failure, command.fatal):
            if pattern:
                assert not re.search(pattern, command.command), (pattern, command.command)


def test_job_script_runs_the_setup_then_the_program_with_its_output_marked(tmp_path: Path) -> None:
    """job.sh and case.sh for real, under sh, with a stand-in program (and setup that cannot
    modprobe here: its failure is reported, not hidden)."""
    program = tmp_path / "prog"
    program.write_text(
        "#!/bin/sh\necho 'GNTSTRESS self-map PASS errno=0 detail=ok'\n"
        "echo 'GNTSTRESS fork FAIL errno=14 detail=bad'\necho oops >&2\nexit 1\n"
    )
    program.chmod(0o755)
    job = Job(name="j", program=str(program), modules=[], timeout=10)
    remote = tmp_path / "out"
    script = job_script(job, str(program), [str(program)]).replace("/tmp/kbisect", str(remote))
    remote.mkdir()
    text = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                          check=False).stdout  # fmt: skip
    found = read_console(text)
    assert found.stdout.splitlines()[1] == "GNTSTRESS fork FAIL errno=14 detail=bad"
    assert found.stderr == "oops\n" and found.exits["JOB"] == 1
    case = CASE_SCRIPT.replace("/tmp/kbisect", str(remote))
    for name, status in (("fork", "FAIL"), ("self-map", "PASS"), ("churn", "MISSING")):
        said = subprocess.run(["sh", "-c", case, "case.sh", name], capture_output=True,
                              text=True, timeout=30, check=False).stdout  # fmt: skip
        assert said == f"kbisect-case: {name}={status}\n"
    assert shlex.join(setup_script(job)) in job_script(job, "p", ["p"])  # as on every host


# -- the configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "lava"}, "kind 'lava' needs a 'lava' section"),
        ({"kind": "qemu", "lava": LAVA}, "only for kind 'lava'"),
        ({"kind": "lava", "lava": LavaOptions(url="ftp://x/")}, "expected an http:// or https://"),
    ],
)
def test_lava_host_configuration_rules(fields: dict[str, Any], problem: str) -> None:
    host = Host(name="h", **fields)
    found = [p for _, p in host.check()] + [p for _, p in (host.lava.check() if host.lava else [])]
    assert any(problem in p for p in found), found


# -- mapping a finished job back ---------------------------------------------------------------


def test_a_complete_job_maps_to_the_verdict_any_host_gives() -> None:
    outcome = recorded("pass")
    verdict, found = verdict_of(outcome, JOB, RECORDED_SUBTESTS)
    assert verdict.status is ResultStatus.PASS, verdict.reason
    assert [s.name for s in verdict.subtests] == list(RECORDED_SUBTESTS)
    assert "kbisect.build=" in found.probe and found.exits == {"SETUP": 0, "JOB": 0}
    # the job's report is the program's output, parsed once and kept with what it was read from
    assert found.report is not None and found.report.results
    assert [r.name for r in found.report.results] == list(RECORDED_SUBTESTS)
    assert found.console == outcome.console()
    # each subtest is a LAVA test case, and back
    cases = lava_cases(outcome)
    assert cases == {"gntstress": "pass", **{name: "pass" for name in RECORDED_SUBTESTS}}
    assert outcome.error() == ("", "")


def test_a_test_failure_is_fail_and_each_subtest_is_its_lava_case() -> None:
    """Recorded: gntstress with its crash selftest (a subtest killed by SIGBUS, on any kernel)."""
    outcome = recorded("fail")
    verdict, found = verdict_of(outcome, JOB, RECORDED_SUBTESTS)
    assert verdict.status is ResultStatus.FAIL and found.exits["JOB"] == 1
    failed = {s.name for s in verdict.subtests if s.status is ResultStatus.FAIL}
    assert failed == {"selftest-crash"}
    assert "killed by signal 7 (SIGBUS)" in verdict.reason
    cases = lava_cases(outcome)
    assert cases["gntstress"] == "fail"  # the job's own case: its exit status
    statuses = {s.name: s.status for s in verdict.subtests}
    # the subtests the recorded job was rendered with, each a LAVA case, and back
    for name in RECORDED_SUBTESTS:
        assert cases[name] == ("fail" if statuses[name] is ResultStatus.FAIL else "pass")
    assert outcome.health == "Complete"  # a test failure is no LAVA error


def test_a_boot_that_lava_times_out_is_error_with_lavas_reason() -> None:
    outcome = recorded("boot-timeout")
    verdict, _ = verdict_of(outcome, JOB, RECORDED_SUBTESTS)
    assert verdict.status is ResultStatus.ERROR
    error_type, message = outcome.error()
    assert error_type and message
    assert verdict.reason.startswith(f"LAVA job {outcome.job_id} Incomplete")
    assert message in verdict.reason


def test_a_canceled_job_is_error_with_the_reason() -> None:
    """Recorded: a job no device took (the device went into maintenance), canceled by kbisect
    after `queue_timeout`; it never ran, so it has neither log nor test cases."""
    why = "no qemu device took it within 5 s"
    outcome = recorded("cancel", abandoned=why)
    verdict, _ = verdict_of(outcome, JOB, RECORDED_SUBTESTS)
    assert outcome.health == "Canceled" and outcome.log == [] and outcome.cases == []
    assert verdict.status is ResultStatus.ERROR
    assert verdict.reason == f"LAVA job {outcome.job_id} canceled by kbisect: {why}"
    by_lava = verdict_of(recorded("cancel"), JOB, RECORDED_SUBTESTS)[0]  # canceled by someone else
    assert by_lava.status is ResultStatus.ERROR
    assert by_lava.reason.startswith(f"LAVA job {outcome.job_id} Canceled")


def test_a_panic_on_the_console_is_the_kernels_fail_whatever_lava_calls_it() -> None:
    """The recorded passing job, cut off by a panic in the middle of its job: LAVA ends it
    (Incomplete); the console's evidence makes it the kernel's FAIL, not an ERROR."""
    outcome = recorded("pass")
    cut = next(i for i, e in enumerate(outcome.log) if "KBISECT-STDOUT-END" in str(e.get("msg")))
    oops = [
        "[   31.000001] BUG: unable to handle page fault for address: 0000000000000008",
        "[   31.000002] Oops: 0000 [#1] PREEMPT SMP NOPTI",
        "[   31.000003] Kernel panic - not syncing: Fatal exception",
    ]
    outcome.log[cut:] = [{"dt": "x", "lvl": "target", "msg": line} for line in oops]
    outcome.health = "Incomplete"
    verdict, found = verdict_of(outcome, JOB, RECORDED_SUBTESTS)
    assert "JOB" not in found.exits
    assert verdict.status is ResultStatus.FAIL, verdict.reason
    outcome.log[cut:] = [{"dt": "x", "lvl": "target", "msg": "(the console stops)"}]
    no_evidence = verdict_of(outcome, JOB, RECORDED_SUBTESTS)[0]
    assert no_evidence.status is ResultStatus.ERROR


def test_output_cut_off_by_a_dead_job_is_read_as_far_as_it_goes() -> None:
    text = "x\nKBISECT-STDOUT-BEGIN\nGNTSTRESS self-map PASS errno=0 detail=ok\n"
    assert read_console(text).stdout == "GNTSTRESS self-map PASS errno=0 detail=ok\n"
    assert read_console(text).exits == {}


# -- the REST client -----------------------------------------------------------------------------


class _Replay(BaseHTTPRequestHandler):
    """Answers with the recorded job 'pass', for a token it knows."""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Token good":
            self._send(401, b'{"detail": "Invalid token."}')
        elif self.path.startswith("/api/v0.2/jobs/1/tests/"):
            cases = json.loads((DATA / "pass" / "tests.json").read_text())
            self._send(200, json.dumps({"next": None, "results": cases}).encode())
        elif self.path == "/api/v0.2/jobs/1/logs/":
            self._send(200, (DATA / "pass" / "logs.yaml").read_bytes())
        else:
            self._send(200, (DATA / "pass" / "job.json").read_bytes())

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def replay() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_client_reads_a_job_back_with_the_token(replay: str) -> None:
    server = LavaServer(replay, "good")
    assert server.job(1)["health"] == "Complete"
    assert len(server.tests(1)) == 23
    assert any(line["lvl"] == "target" for line in server.log(1))
    assert server.job_url(1) == f"{replay}scheduler/job/1"


def test_a_rejected_token_or_no_server_is_infrastructure_trouble(replay: str) -> None:
    with pytest.raises(InfraError, match=re.escape("HTTP 401 (is the token right?)")):
        LavaServer(replay, "bad").job(1)
    with pytest.raises(InfraError, match=re.escape("LAVA GET http://127.0.0.1:9/")):
        LavaServer("http://127.0.0.1:9/", "good").job(1)


def test_the_cell_page_links_the_lava_job_and_only_an_http_one() -> None:
    from kbisect.browser.cellpage import _lava_job

    url = "http://127.0.0.1:8000/scheduler/job/8"
    html = _lava_job({"lava_job": "8", "lava_job_url": url})
    assert f'href="{url}">8</a>' in html
    assert _lava_job({"lava_job": "8", "lava_job_url": "javascript:alert(1)"}) == ""
    assert _lava_job({"hypervisor": "xen"}) == ""
