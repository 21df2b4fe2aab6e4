"""The console/dmesg classifier and cell verdicts, against hand-written golden logs.

Each case in tests/golden/classify is NAME.case.json (the job's exit status, whether the host
died, and the subtests the run was asked for when not RECORDED_SUBTESTS) plus whichever of
NAME.out (gntstress stdout), NAME.dmesg and NAME.console exist; a missing
file is output that could not be collected. NAME.json is the expected verdict. After a deliberate
change, `KBISECT_REGEN_GOLDEN=1 python3 -m pytest tests/test_classify.py` rewrites the .json
files; review the diff before committing them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import RECORDED_SUBTESTS
from kbisect.jobs.classify import (
    CONTEXT_LINES,
    KEEP_PER_SIGNATURE,
    SIGNATURES,
    Verdict,
    classify,
    judge,
    scan,
)
from kbisect.jobs.gntstress import SUBTESTS, parse_output
from kbisect.results.model import LogKind, ResultStatus

GOLDEN = Path(__file__).resolve().parent / "golden" / "classify"
REGEN = os.environ.get("KBISECT_REGEN_GOLDEN") == "1"
ALL_PASS = (GOLDEN / "clean-boot.out").read_text()


def _read(path: Path) -> str | None:
    # Bytes, not read_text(): universal newlines would hide the CRLF a serial console gives.
    return path.read_bytes().decode("utf-8", errors="replace") if path.exists() else None


def run_case(name: str) -> Verdict:
    case = json.loads((GOLDEN / f"{name}.case.json").read_text())
    out = _read(GOLDEN / f"{name}.out")
    return judge(
        None if out is None else parse_output(out, case.get("subtests", RECORDED_SUBTESTS)),
        case["exit_status"],
        _read(GOLDEN / f"{name}.dmesg"),
        _read(GOLDEN / f"{name}.console"),
        host_died=case["host_died"],
    )


CASES = sorted(p.name.removesuffix(".case.json") for p in GOLDEN.glob("*.case.json"))


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    got = run_case(name).to_dict()
    expected_path = GOLDEN / f"{name}.json"
    if REGEN:
        expected_path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert got == json.loads(expected_path.read_text())


def test_golden_files_are_paired() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json") if not p.name.endswith(".case.json")} == set(
        CASES
    )
    for p in GOLDEN.iterdir():
        assert p.name.removesuffix(".case.json").split(".")[0] in CASES, p
    assert {
        "bad-page-map",
        "sigbus-no-evidence",
        "soft-lockup",
        "hung-task",
        "gpf-gntdev-mmap",
        "xen-panic",
        "clean-boot",
        "benign-lookalikes",
        "dead-host",
        "all-skip",
        "warning-gntdev",
        "warning-elsewhere",
    } <= set(CASES)


def _statuses(v: Verdict) -> dict[str, ResultStatus]:
    return {s.name: s.status for s in v.subtests}


def test_bad_page_map_kept_once_from_dmesg_with_its_call_trace() -> None:
    v = run_case("bad-page-map")
    assert v.status is ResultStatus.FAIL
    assert [(e.signature, e.source) for e in v.evidence] == [("bad-page-map", LogKind.DMESG)] * 2
    first = v.evidence[0]
    assert first.also == ("call-trace",)
    assert any("task_numa_work" in line for line in first.lines)
    assert first.lines[-1].endswith("</TASK>")  # the trace, not the unrelated lines after it
    assert "bad-page-map" in v.reason and "dmesg line" in v.reason
    assert _statuses(v)["numa-soak"] is ResultStatus.FAIL


def test_console_evidence_without_dmesg_is_kept_and_interleaving_is_undone() -> None:
    console = (GOLDEN / "bad-page-map.console").read_text()
    found = classify(None, console)
    assert [e.signature for e in found] == ["bad-page-map", "bad-page-map"]
    first = found[0]
    assert first.source is LogKind.CONSOLE
    assert first.lines[0].startswith("[   14.220871] BUG: Bad page map")  # split off user text
    assert not any("(XEN)" in line or "kbisect-init" in line for line in first.lines)
    assert "k running" not in "".join(found[1].lines)


def test_sigbus_without_kernel_evidence_is_a_subtest_failure() -> None:
    v = run_case("sigbus-no-evidence")
    assert v.status is ResultStatus.FAIL and v.evidence == ()
    assert v.reason.startswith("numa-soak FAIL errno=0: killed by signal 7 (SIGBUS)")


def test_dead_host_without_evidence_is_error_never_fail() -> None:
    v = run_case("dead-host")
    assert v.status is ResultStatus.ERROR
    assert v.reason == "host died during numa-soak, no kernel evidence"
    statuses = _statuses(v)
    assert statuses["numa-soak"] is ResultStatus.ERROR
    assert [statuses[n] for n in ("fork", "mremap-grow", "partial-munmap", "churn")] == [
        ResultStatus.MISS
    ] * 4
    assert list(statuses) == list(RECORDED_SUBTESTS)


def test_gpf_in_gntdev_mmap_fails_the_interrupted_subtest() -> None:
    v = run_case("gpf-gntdev-mmap")
    assert v.status is ResultStatus.FAIL
    assert [e.signature for e in v.evidence] == [
        "general-protection-fault",
        "kernel-panic",
        "xen-domain-crash",
    ]
    gpf = v.evidence[0]
    assert gpf.lines[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert any("gntdev_mmap+0x1c6" in line for line in gpf.lines)
    statuses = _statuses(v)
    assert statuses["self-map"] is ResultStatus.FAIL
    assert set(list(statuses.values())[1:]) == {ResultStatus.MISS}


def test_xen_panic_carries_the_xen_call_trace() -> None:
    v = run_case("xen-panic")
    assert v.status is ResultStatus.FAIL
    (ev,) = v.evidence
    assert ev.signature == "xen-dump" and ev.also == ("xen-panic", "xen-fatal")
    text = "\n".join(ev.lines)
    assert "do_mmu_update" in text and "FATAL PAGE FAULT" in text
    assert ev.lines[-1] == "(XEN) ****************************************"
    assert v.reason.startswith("Xen evidence: xen-dump (with xen-panic, xen-fatal)")
    assert _statuses(v)["numa-soak"] is ResultStatus.FAIL


def test_lookalikes_and_xen_boot_banners_are_not_evidence() -> None:
    v = run_case("benign-lookalikes")
    assert v.status is ResultStatus.PASS and v.evidence == ()
    assert run_case("clean-boot").evidence == ()


def test_warning_strength() -> None:
    strong = run_case("warning-gntdev")
    assert strong.status is ResultStatus.FAIL
    assert [(e.signature, e.strong) for e in strong.evidence] == [("warning-xen", True)]
    assert all(r.status is ResultStatus.PASS for r in strong.subtests)
    weak = run_case("warning-elsewhere")
    assert weak.status is ResultStatus.PASS
    assert [(e.signature, e.strong) for e in weak.evidence] == [("warning", False)]
    assert "weak evidence: warning (dmesg line" in weak.reason


def test_warning_is_strong_when_its_trace_runs_through_gntdev() -> None:
    dmesg = (
        "[    5.1] WARNING: CPU: 0 PID: 7 at mm/memory.c:2310 insert_pfn+0x1/0x2\n"
        "[    5.2] Call Trace:\n"
        "[    5.3]  <TASK>\n"
        "[    5.4]  vm_insert_pfn+0x12/0x40\n"
        "[    5.5]  gntdev_mmap+0x1c6/0x340 [xen_gntdev]\n"
        "[    5.6]  </TASK>\n"
    )
    (ev,) = scan(dmesg, LogKind.DMESG)
    assert ev.signature == "warning-xen" and ev.strong


@pytest.mark.parametrize(
    ("path", "signature"),
    [
        ("drivers/xen/gntdev.c:400", "warning-xen"),
        ("../../worktrees/slot0/drivers/xen/gntdev.c:400", "warning-xen"),
        ("/home/ada/linux/arch/x86/xen/mmu_pv.c:12", "warning-xen"),
        ("../../worktrees/slot0/mm/memory.c:2310", "warning"),
        ("mydrivers/xen/thing.c:1", "warning"),
    ],
)
def test_a_warning_in_xen_code_is_found_wherever_the_tree_was_built(
    path: str, signature: str
) -> None:
    (ev,) = scan(f"[    5.1] WARNING: CPU: 0 PID: 7 at {path} f+0x1/0x2\n", LogKind.DMESG)
    assert ev.signature == signature and ev.strong == (signature == "warning-xen")


@pytest.mark.parametrize(
    ("line", "signature"),
    [
        ("BUG: KFENCE: out-of-bounds read in gntdev_mmap+0x40/0x1d9 [xen_gntdev]", "kfence"),
        ("BUG kmalloc-64 (Not tainted): Redzone overwritten", "slub"),
        ("BUG numa_policy (Tainted: G        W         ): Object already free", "slub"),
        ("WARNING: possible recursive locking detected", "lockdep"),
        ("WARNING: suspicious RCU usage", "lockdep"),
        ("BUG: kernel NULL pointer dereference, address: 0000000000000000", "bug"),
    ],
)
def test_debug_kernel_reports_are_named(line: str, signature: str) -> None:
    """What the xen-dom0-debug profile's checkers print is named, strong, not a bare trace."""
    (ev,) = scan(f"[   21.16] {line}\n[   21.17] Call Trace:\n[   21.18]  dump_stack+0x1/0x2\n",
                 LogKind.DMESG)  # fmt: skip
    assert (ev.signature, ev.strong) == (signature, True)


def test_soft_lockup_and_hung_task() -> None:
    lockup = run_case("soft-lockup")
    assert lockup.status is ResultStatus.FAIL
    assert [e.signature for e in lockup.evidence] == ["soft-lockup", "soft-lockup"]
    assert not any("NIC Link" in line for line in lockup.evidence[0].lines)
    hung = run_case("hung-task")
    assert hung.status is ResultStatus.FAIL
    assert [e.signature for e in hung.evidence] == ["hung-task"]
    assert _statuses(hung)["churn"] is ResultStatus.FAIL


def test_all_skip() -> None:
    v = run_case("all-skip")
    assert v.status is ResultStatus.SKIP
    assert v.reason.startswith("all 13 subtests skipped (self-map: no /dev/xen/gntalloc")


# ---------------------------------------------------------------------------------------------
# Reading lines
# ---------------------------------------------------------------------------------------------


def test_without_timestamps_every_line_may_be_evidence() -> None:
    (ev,) = scan("booting\nBUG: kernel NULL pointer dereference, address: 0\n", LogKind.DMESG)
    assert ev.signature == "bug" and ev.line == 2


def test_with_timestamps_untimestamped_lines_are_userspace() -> None:
    text = "[    1.000000] ok\nBUG: echoed\n[    2.000000] ok\n"
    assert scan(text, LogKind.CONSOLE) == []


def test_prefixes_crlf_and_caller_ids() -> None:
    text = (
        "<4>[   12.000001] Oops: 0002 [#1] SMP\r\n"
        "[   13.000000][  T345] kernel BUG at drivers/xen/gntdev.c:400!\r\n"
        "(XEN) [   52.123456] Assertion 'rc == 0' failed at common/grant_table.c:1234\r\n"
    )
    found = scan(text, LogKind.CONSOLE)
    assert [(e.signature, e.line) for e in found] == [("oops", 1), ("bug", 2), ("xen-assert", 3)]
    assert found[0].lines == ("<4>[   12.000001] Oops: 0002 [#1] SMP",)


def test_xen_frames_are_not_mistaken_for_timestamps() -> None:
    text = "(XEN) Xen WARN at grant_table.c:55\n(XEN) Xen call trace:\n(XEN)    [<ffff82d0>] R f\n"
    (ev,) = scan(text, LogKind.CONSOLE)
    assert ev.signature == "xen-warn" and len(ev.lines) == 3


def test_bug_then_oops_is_one_event() -> None:
    text = (
        "[    9.000001] BUG: unable to handle page fault for address: 0000000000000008\n"
        "[    9.000002] #PF: supervisor read access in kernel mode\n"
        "[    9.000003] Oops: 0000 [#1] PREEMPT SMP NOPTI\n"
        "[    9.000004] Call Trace:\n"
        "[    9.000005]  gntdev_ioctl+0x1/0x2 [xen_gntdev]\n"
        "[    9.000006] Modules linked in: xen_gntdev\n"
        "[    9.000007] ---[ end trace 0000000000000000 ]---\n"
        "[    9.000008] RIP: e030:gntdev_ioctl+0x1/0x2\n"
        "[    9.000009] Kernel panic - not syncing: Fatal exception\n"
    )
    found = scan(text, LogKind.DMESG)
    assert [(e.signature, e.also, len(e.lines)) for e in found] == [
        ("bug", ("oops", "call-trace"), 7),
        ("kernel-panic", (), 1),
    ]


def test_context_is_bounded() -> None:
    text = "[    1.000000] Call Trace:\n" + "".join(
        f"[    1.{i:06d}]  f{i}+0x1/0x2\n" for i in range(1, 500)
    )
    (ev,) = scan(text, LogKind.DMESG)
    assert len(ev.lines) == CONTEXT_LINES + 1


def test_repeated_events_are_counted_not_kept() -> None:
    text = "".join(
        f"[ {i:4d}.000000] BUG: Bad page state in process x pfn:{i}\n" for i in range(25)
    )
    found = scan(text, LogKind.DMESG)
    assert len(found) == KEEP_PER_SIGNATURE
    assert found[-1].more == 25 - KEEP_PER_SIGNATURE and found[0].more == 0


def test_console_repeating_dmesg_is_dropped_but_new_console_events_stay() -> None:
    dmesg = "[    5.000000] BUG: Bad page state in process a\n"
    console = (
        "[    5.000000] BUG: Bad page state in process a\n"
        "[    6.000000] BUG: Bad page state in process a\n"  # a second, later event
    )
    found = classify(dmesg, console)
    assert [(e.source, e.line) for e in found] == [(LogKind.DMESG, 1), (LogKind.CONSOLE, 2)]


def test_signature_names_are_unique() -> None:
    names = [s.name for s in SIGNATURES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "\x00\x1b[31mBUG: \x1b[0m",
        "(XEN)",
        "(XEN) [",
        "[    1.000000]",
        "[    1.000000] Call Trace:",
        "Call Trace:\n" * 3,
        "(XEN) Panic on CPU 0:\n" * 100,
        "x" * 100_000,
        "\u2028BUG: \x85\x0c",
    ],
)
def test_scan_never_raises(text: str) -> None:
    assert isinstance(scan(text, LogKind.CONSOLE), list)


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------

OOPS = "[   12.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"


def test_kernel_evidence_fails_a_cell_whose_subtests_all_passed() -> None:
    v = judge(parse_output(ALL_PASS, RECORDED_SUBTESTS), 0, OOPS, "")
    assert v.status is ResultStatus.FAIL
    assert v.reason.startswith("kernel evidence: bug in dmesg line 1: BUG: kernel NULL")
    assert {s.status for s in v.subtests} == {ResultStatus.PASS}


def test_a_failed_subtest_is_not_hidden_by_a_dead_host() -> None:
    out = ALL_PASS.replace(
        "GNTSTRESS odirect-read PASS errno=0", "GNTSTRESS odirect-read FAIL errno=14"
    )
    truncated = "".join(out.splitlines(keepends=True)[:5])
    v = judge(parse_output(truncated, RECORDED_SUBTESTS), None, None, "", host_died=True)
    assert v.status is ResultStatus.FAIL
    assert v.reason.endswith("; then host died during process-vm-readv")
    assert _statuses(v)["process-vm-readv"] is ResultStatus.ERROR


@pytest.mark.parametrize(
    ("exit_status", "reason"),
    [
        (1, "gntstress exited 1 (but no subtest failed)"),
        (2, "gntstress exited 2 (usage error)"),
        (3, "gntstress exited 3 (internal error)"),
        (137, "gntstress exited 137 (killed by signal 9)"),
        (None, "job did not finish (no exit status), no kernel evidence"),
    ],
)
def test_exit_status_contradicting_the_report_is_error(
    exit_status: int | None, reason: str
) -> None:
    v = judge(parse_output(ALL_PASS, RECORDED_SUBTESTS), exit_status)
    assert (v.status, v.reason) == (ResultStatus.ERROR, reason)


def test_no_output_and_missing_subtests_are_errors() -> None:
    assert judge(None, 0).reason == "no job output, no kernel evidence"
    assert judge(None, None, OOPS).status is ResultStatus.FAIL
    short = ALL_PASS.replace("pass=13", "pass=12").replace(
        next(ln for ln in ALL_PASS.splitlines() if " fork " in ln) + "\n", ""
    )
    v = judge(parse_output(short, RECORDED_SUBTESTS), 0)
    assert (v.status, v.reason) == (ResultStatus.ERROR, "1 subtests never reported: fork")
    assert _statuses(v)["fork"] is ResultStatus.MISS


def test_weak_evidence_alone_does_not_turn_a_dead_host_into_fail() -> None:
    warning = "[    3.000000] WARNING: CPU: 0 PID: 0 at kernel/time/tick.c:1 f+0x1/0x2\n"
    v = judge(None, None, warning, "", host_died=True)
    assert v.status is ResultStatus.ERROR and len(v.evidence) == 1


# ---------------------------------------------------------------------------------------------
# Subtest markers: evidence blamed on the subtest that was running
# ---------------------------------------------------------------------------------------------

MARKED_OUT = (GOLDEN / "marked-pass.out").read_text()
MARKED_DMESG = (GOLDEN / "marked-pass.dmesg").read_text()
"""A real run (vm-mixedmap, v6.1.192-3, embedded host): gntstress's markers and nothing else."""

WARN_MM = """\
[   60.100001] ------------[ cut here ]------------
[   60.100002] WARNING: CPU: 1 PID: 301 at mm/mempolicy.c:2478 mpol_misplaced+0x1d0/0x210
[   60.100003] Modules linked in: xen_gntalloc xen_gntdev
[   60.100004] CPU: 1 PID: 301 Comm: gntstress-aa6d Not tainted 6.1.192+ #1
[   60.100005] RIP: e030:mpol_misplaced+0x1d0/0x210
[   60.100006] Call Trace:
[   60.100007]  <TASK>
[   60.100008]  do_numa_page+0x1b2/0x360
[   60.100009]  handle_mm_fault+0x8a1/0xd20
[   60.100010]  </TASK>
[   60.100011] ---[ end trace 0000000000000000 ]---
"""
KASAN = """\
[   51.560000] ==================================================================
[   51.560001] BUG: KASAN: use-after-free in mpol_dup+0x2e/0x90
[   51.560002] Read of size 2 at addr ffff888003a1c1c4 by task kworker/1:2/77
[   51.560003] Call Trace:
[   51.560004]  <TASK>
[   51.560005]  mpol_dup+0x2e/0x90
[   51.560006]  </TASK>
"""
KMEMLEAK = "[  118.000000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"


def _insert_after(log: str, marker: str, text: str) -> str:
    """The log with text inserted after the line holding marker."""
    head, sep, tail = log.partition(marker + "\n")
    assert sep, marker
    return head + sep + text + tail


def _marked(dmesg: str, console: str = "") -> Verdict:
    return judge(parse_output(MARKED_OUT), 0, dmesg, console)


def test_recorded_markers_alone_are_no_evidence() -> None:
    v = _marked(MARKED_DMESG, MARKED_DMESG)
    assert v.status is ResultStatus.PASS and v.evidence == ()
    assert len(v.subtests) == len(SUBTESTS)
    assert {s.status for s in v.subtests} == {ResultStatus.PASS}


def test_a_warning_anywhere_fails_the_subtest_that_was_running_with_its_report() -> None:
    """A WARNING outside Xen code is weak on its own (warning-elsewhere), but inside a subtest's
    window it is that subtest's FAIL, and the report goes with it."""
    dmesg = _insert_after(MARKED_DMESG, "gntstress: subtest policy-lifecycle begin", WARN_MM)
    v = _marked(dmesg)
    assert v.status is ResultStatus.FAIL
    assert v.reason.startswith(
        "policy-lifecycle: kernel evidence: warning (with call-trace) in dmesg line 29: "
    )
    (ev,) = v.evidence
    assert ev.signature == "warning" and ev.strong
    failed = [s for s in v.subtests if s.status is ResultStatus.FAIL]
    assert [s.name for s in failed] == ["policy-lifecycle"]
    lines = failed[0].detail.split("\n")
    assert lines[0].endswith("while it ran; its own verdict: PASS " + _own("policy-lifecycle"))
    assert "mpol_misplaced+0x1d0/0x210" in lines[1]
    assert any(line.endswith(" do_numa_page+0x1b2/0x360") for line in lines)
    assert lines[-1].endswith("---[ end trace 0000000000000000 ]---")
    # the same log without markers: the old rule, weak, the cell passes
    unmarked = judge(parse_output(ALL_PASS, RECORDED_SUBTESTS), 0, WARN_MM, "")
    assert unmarked.status is ResultStatus.PASS and not unmarked.evidence[0].strong


def _own(name: str) -> str:
    report = parse_output(MARKED_OUT)
    result = report.result(name)
    assert result is not None
    return result.detail


def test_a_late_report_goes_to_the_subtest_that_just_ended() -> None:
    dmesg = _insert_after(MARKED_DMESG, "gntstress: subtest mbind-soak end", KASAN)
    v = _marked(dmesg)
    (ev,) = v.evidence
    assert ev.signature == "kasan"
    assert v.reason.startswith(
        "mbind-soak: kernel evidence: kasan (with call-trace) in dmesg line 22: "
    )
    soak = next(s for s in v.subtests if s.name == "mbind-soak")
    assert soak.status is ResultStatus.FAIL and "after it ended" in soak.detail
    assert "BUG: KASAN: use-after-free in mpol_dup+0x2e/0x90" in soak.detail
    assert [s.name for s in v.subtests if s.status is ResultStatus.FAIL] == ["mbind-soak"]


def test_kmemleak_and_bad_page_are_subtest_failures_and_markers_count_per_log() -> None:
    bad_page = "[   70.000000] BUG: Bad page map in process gntstress  pte:8000000012345067\n"
    dmesg = _insert_after(MARKED_DMESG, "gntstress: subtest churn begin", KMEMLEAK + "\n")
    console = _insert_after(MARKED_DMESG, "gntstress: subtest fork begin", bad_page)
    v = _marked(dmesg, console)
    assert [(e.signature, e.source) for e in v.evidence] == [
        ("kmemleak", LogKind.DMESG),
        ("bad-page-map", LogKind.CONSOLE),
    ]
    statuses = _statuses(v)
    assert statuses["churn"] is ResultStatus.FAIL and statuses["fork"] is ResultStatus.FAIL
    assert statuses["policy-lifecycle"] is ResultStatus.PASS


def test_evidence_before_the_first_marker_stays_the_cells() -> None:
    v = _marked(WARN_MM + MARKED_DMESG)
    assert v.status is ResultStatus.PASS and not v.evidence[0].strong
    v = _marked(OOPS + MARKED_DMESG)
    assert v.status is ResultStatus.FAIL and v.reason.startswith("kernel evidence: bug")
    assert {s.status for s in v.subtests} == {ResultStatus.PASS}


def test_a_real_warning_in_gntdev_mmap_fails_the_subtest_that_mapped_8_pages() -> None:
    """Recorded on the embedded host: v6.1.192-3 with a test patch that WARNs in gntdev_mmap()
    when 8 pages are mapped, which only policy-lifecycle does (the run's churn also timed out
    on a loaded machine: its own FAIL, no evidence)."""
    v = run_case("warn-policy-lifecycle")
    assert v.status is ResultStatus.FAIL
    assert v.reason.startswith("policy-lifecycle: kernel evidence: warning-xen (with call-trace)")
    statuses = _statuses(v)
    assert statuses.pop("policy-lifecycle") is ResultStatus.FAIL
    assert statuses.pop("churn") is ResultStatus.FAIL
    assert set(statuses.values()) == {ResultStatus.PASS}
    lifecycle = next(s for s in v.subtests if s.name == "policy-lifecycle")
    assert "while it ran; its own verdict: PASS 5 rounds" in lifecycle.detail
    assert any(
        "gntdev_mmap+0xb8/0x1f8 [xen_gntdev]" in line for line in lifecycle.detail.split("\n")
    )
