"""gntstress: the output parser against golden files, and the real static binary run here.

This machine is not a Xen domain, so every real subtest must SKIP on the missing device; the
runner itself (crash isolation, deadlines, usage errors) and the subtest logic on ordinary
memory (--selftest-backend anon) are checked for real. Everything that needs gntdev can only be
checked on the embedded Xen host.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

from helpers import RECORDED_SUBTESTS, require_program
from kbisect.errors import InfraError
from kbisect.jobs import gntstress
from kbisect.jobs.gntstress import (
    CFLAGS,
    SUBTESTS,
    GntstressReport,
    Status,
    build_gntstress,
    expected_subtests,
    parse_output,
)
from kbisect.tree.repos import TreeRepo

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "gntstress"
SOURCE = REPO / "src" / "kbisect" / "jobs" / "gntstress.c"
ON_XEN = Path("/dev/xen/gntalloc").exists() or Path("/dev/xen/gntdev").exists()


@pytest.fixture
def gcc() -> str:
    return require_program("gcc", "build-essential")


def read_output(path: Path) -> str:
    # Bytes, not read_text(): universal newlines would hide the CRLF a serial console gives.
    return path.read_bytes().decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.txt")))
def test_golden(name: str) -> None:
    report = parse_output(read_output(GOLDEN / f"{name}.txt"), RECORDED_SUBTESTS)
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    assert report.to_dict() == expected


def test_golden_files_are_paired() -> None:
    texts = {p.stem for p in GOLDEN.glob("*.txt")}
    assert texts == {p.stem for p in GOLDEN.glob("*.json")}
    assert {"all-pass", "vm-io", "none-sigbus", "truncated", "garbage"} <= texts


def _expected_failures(variant: str) -> set[str]:
    """The subtests seeds/gntdev-numa/experiment.yaml expects to fail for a variant.

    A plain text scan, deliberately not a YAML parser: the config module owns YAML.
    """
    text = (REPO / "seeds" / "gntdev-numa" / "experiment.yaml").read_text()
    block = text.split(f"- name: {variant}\n", 1)[1].split("\n  - name:", 1)[0]
    return set(re.findall(r"([a-z][a-z-]+): fail", block))


def test_experiment_names_are_gntstress_subtests() -> None:
    text = (REPO / "seeds" / "gntdev-numa" / "experiment.yaml").read_text()
    named = set(re.findall(r"^\s+([a-z][a-z-]+): (?:pass|fail)", text, re.M))
    named |= set(re.findall(r"[{ ]([a-z][a-z-]+): (?:pass|fail)", text))
    assert named - {"default"} <= set(SUBTESTS)


def test_vm_io_golden_fails_exactly_where_the_experiment_expects() -> None:
    report = parse_output(read_output(GOLDEN / "vm-io.txt"), RECORDED_SUBTESTS)
    assert report.clean
    failed = set(report.with_status(Status.FAIL))
    assert failed == _expected_failures("vm-io")
    for name in failed:
        result = report.result(name)
        assert result is not None
        assert result.errno == (5 if name == "proc-pid-mem" else 14)
    assert report.noise_lines == 13  # the stderr progress lines


def test_none_golden_sigbus_in_the_soak_only() -> None:
    report = parse_output(read_output(GOLDEN / "none-sigbus.txt"), RECORDED_SUBTESTS)
    recorded = _expected_failures("none") & set(RECORDED_SUBTESTS)
    assert set(report.with_status(Status.FAIL)) == recorded == {"numa-soak"}
    soak = report.result("numa-soak")
    assert soak is not None and soak.signal == 7 and not soak.timed_out


def test_truncated_golden_is_incomplete() -> None:
    report = parse_output(read_output(GOLDEN / "truncated.txt"), RECORDED_SUBTESTS)
    assert not report.complete and not report.clean
    assert report.interrupted_in == "numa-soak"
    assert report.missing == ["numa-soak", "fork", "mremap-grow", "partial-munmap", "churn"]
    assert [b.line for b in report.malformed] == [11]
    assert "cut off" in report.malformed[0].reason
    assert len(report.results) == 8
    assert all(r.status is Status.PASS for r in report.results)


def test_garbage_golden_reports_every_problem() -> None:
    report = parse_output(read_output(GOLDEN / "garbage.txt"), RECORDED_SUBTESTS)
    assert report.complete and not report.clean
    reasons = {b.line: b.reason for b in report.malformed}
    assert reasons[6] == "bad errno 'abc'"
    assert reasons[7] == "bad status 'MAYBE'"
    assert reasons[9] == "bad subtest name 'Proc-Pid-Mem'"
    assert reasons[18] == "second summary line"
    assert report.duplicates == ["self-map"]
    assert report.unexpected == ["gnt-frobnicate"]
    assert report.missing == ["io-submit", "vmsplice", "proc-pid-mem", "fork"]
    partial = report.result("partial-munmap")
    assert partial is not None and partial.status is Status.PASS  # recovered from mid-line
    soak = report.result("numa-soak")
    assert soak is not None and soak.timed_out and soak.signal is None
    assert any(p.startswith("summary says") for p in report.problems)
    self_map = report.result("self-map")
    assert self_map is not None and "ref0=8" in self_map.detail  # the first one counts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "\r\n\r\n",
        "GNTSTRESS",
        "GNTSTRESS ",
        "GNTSTRESS-SUMMARY",
        "GNTSTRESS-SUMMARY pass=-1 fail=0 skip=0\n",
        "GNTSTRESS self-map PASS errno= detail=\n",
        "GNTSTRESS self-map PASS errno=0 detail=" + "x" * 100_000,
        "\x00\x01GNTSTRESS\x00fork PASS errno=0 detail=\n",
        "GNTSTRESS fork PASS errno=99999999999999999999999 detail=big\n",
        "\u2028GNTSTRESS churn SKIP errno=0 detail=a\x85b\x0cc\n",
    ],
)
def test_parser_never_raises(text: str) -> None:
    report = parse_output(text)
    assert isinstance(report, GntstressReport)
    json.dumps(report.to_dict())


def test_detail_keeps_exotic_characters_on_one_line() -> None:
    report = parse_output("GNTSTRESS churn SKIP errno=0 detail=a\x85b\x0cc\nGNTSTRESS-SUMMARY ")
    churn = report.result("churn")
    assert churn is not None and churn.detail == "a\x85b\x0cc"
    assert not report.complete and report.malformed[0].reason == "unreadable summary"


def test_expected_subset_for_only_runs() -> None:
    text = (
        "GNTSTRESS self-map PASS errno=0 detail=ok\n"
        "GNTSTRESS churn PASS errno=0 detail=ok\n"
        "GNTSTRESS-SUMMARY pass=2 fail=0 skip=0\n"
    )
    assert parse_output(text, expected=["self-map", "churn"]).clean
    assert parse_output(text).missing == [n for n in SUBTESTS if n not in ("self-map", "churn")]


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_program("gcc", "build-essential")
    return build_gntstress(tmp_path_factory.mktemp("gntstress"))


def _is_static_elf(path: Path) -> bool:
    """No PT_INTERP program header: the kernel runs it without a dynamic loader."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1  # ELF64, little-endian
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP == 3


def test_build_is_static_and_cached(binary: Path) -> None:
    assert binary.name.startswith("gntstress-")
    assert os.access(binary, os.X_OK)
    assert _is_static_elf(binary)
    mtime = binary.stat().st_mtime_ns
    assert build_gntstress(binary.parent) == binary
    assert binary.stat().st_mtime_ns == mtime
    assert not list(binary.parent.glob(".gntstress-build-*"))


@pytest.mark.usefixtures("gcc")
def test_source_builds_warning_free(tmp_path: Path) -> None:
    done = subprocess.run(
        ["gcc", *CFLAGS, "-Werror", "-o", str(tmp_path / "g"), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_missing_compiler_is_infra_error(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="not installed"):
        build_gntstress(tmp_path, cc="kbisect-no-such-compiler")


@pytest.mark.usefixtures("gcc")
def test_missing_static_libc_is_infra_error(tmp_path: Path) -> None:
    # Real gcc with an empty sysroot: exactly what a machine without libc6-dev looks like.
    wrapper = tmp_path / "gcc-without-libc"
    wrapper.write_text(f'#!/bin/sh\nexec gcc --sysroot="{tmp_path / "empty"}" "$@"\n')
    wrapper.chmod(0o755)
    with pytest.raises(InfraError, match="libc6-dev"):
        build_gntstress(tmp_path / "out", cc=str(wrapper))


def test_source_is_package_data() -> None:
    assert gntstress.source_text() == SOURCE.read_bytes()
    assert '"**/*.c"' in (REPO / "pyproject.toml").read_text()


def test_source_includes_no_kernel_headers() -> None:
    includes = re.findall(r"^#include\s+([<\"].+?[>\"])", SOURCE.read_text(), re.M)
    assert includes
    assert not [i for i in includes if i.startswith(("<linux/", "<xen/", "<asm", '"'))]


_CHECKER = r"""
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <linux/types.h>
#include <linux/aio_abi.h>
#define __user
typedef uint32_t grant_ref_t;
typedef uint16_t domid_t;
#include HDR_ALLOC
#include HDR_DEV
#define GNTSTRESS_NO_MAIN
#include GNTSTRESS_C
#define SAME(a, b) _Static_assert((unsigned long)(a) == (unsigned long)(b), #a " != " #b)
#define LAYOUT(ours, theirs, f1, f2) \
    SAME(offsetof(struct ours, f1), offsetof(struct theirs, f2))
SAME(GS_IOCTL_GNTALLOC_ALLOC_GREF, IOCTL_GNTALLOC_ALLOC_GREF);
SAME(GS_IOCTL_GNTALLOC_DEALLOC_GREF, IOCTL_GNTALLOC_DEALLOC_GREF);
SAME(GS_IOCTL_GNTDEV_MAP_GRANT_REF, IOCTL_GNTDEV_MAP_GRANT_REF);
SAME(GS_IOCTL_GNTDEV_UNMAP_GRANT_REF, IOCTL_GNTDEV_UNMAP_GRANT_REF);
SAME(GS_IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR);
SAME(GS_GNTALLOC_FLAG_WRITABLE, GNTALLOC_FLAG_WRITABLE);
SAME(sizeof(struct gs_gntalloc_alloc_gref), sizeof(struct ioctl_gntalloc_alloc_gref));
LAYOUT(gs_gntalloc_alloc_gref, ioctl_gntalloc_alloc_gref, domid, domid);
LAYOUT(gs_gntalloc_alloc_gref, ioctl_gntalloc_alloc_gref, flags, flags);
LAYOUT(gs_gntalloc_alloc_gref, ioctl_gntalloc_alloc_gref, count, count);
LAYOUT(gs_gntalloc_alloc_gref, ioctl_gntalloc_alloc_gref, index, index);
LAYOUT(gs_gntalloc_alloc_gref, ioctl_gntalloc_alloc_gref, gref_ids, gref_ids);
SAME(sizeof(struct gs_gntalloc_dealloc_gref), sizeof(struct ioctl_gntalloc_dealloc_gref));
LAYOUT(gs_gntalloc_dealloc_gref, ioctl_gntalloc_dealloc_gref, count, count);
SAME(sizeof(struct gs_gntdev_grant_ref), sizeof(struct ioctl_gntdev_grant_ref));
LAYOUT(gs_gntdev_grant_ref, ioctl_gntdev_grant_ref, ref, ref);
SAME(sizeof(struct gs_gntdev_map_grant_ref), sizeof(struct ioctl_gntdev_map_grant_ref));
LAYOUT(gs_gntdev_map_grant_ref, ioctl_gntdev_map_grant_ref, index, index);
LAYOUT(gs_gntdev_map_grant_ref, ioctl_gntdev_map_grant_ref, refs, refs);
SAME(sizeof(struct gs_gntdev_unmap_grant_ref), sizeof(struct ioctl_gntdev_unmap_grant_ref));
LAYOUT(gs_gntdev_unmap_grant_ref, ioctl_gntdev_unmap_grant_ref, count, count);
SAME(sizeof(struct gs_gntdev_get_offset_for_vaddr),
     sizeof(struct ioctl_gntdev_get_offset_for_vaddr));
LAYOUT(gs_gntdev_get_offset_for_vaddr, ioctl_gntdev_get_offset_for_vaddr, count, count);
SAME(sizeof(struct gs_iocb), sizeof(struct iocb));
LAYOUT(gs_iocb, iocb, aio_lio_opcode, aio_lio_opcode);
LAYOUT(gs_iocb, iocb, aio_fildes, aio_fildes);
LAYOUT(gs_iocb, iocb, aio_buf, aio_buf);
LAYOUT(gs_iocb, iocb, aio_nbytes, aio_nbytes);
LAYOUT(gs_iocb, iocb, aio_offset, aio_offset);
LAYOUT(gs_iocb, iocb, aio_flags, aio_flags);
SAME(sizeof(struct gs_io_event), sizeof(struct io_event));
LAYOUT(gs_io_event, io_event, res, res);
SAME(GS_IOCB_CMD_PREAD, IOCB_CMD_PREAD);
SAME(GS_IOCB_CMD_PWRITE, IOCB_CMD_PWRITE);
#ifdef NEGATIVE_CONTROL
SAME(GS_IOCTL_GNTDEV_MAP_GRANT_REF, IOCTL_GNTDEV_UNMAP_GRANT_REF);
#endif
int main(void) { return 0; }
"""


def _check_against(headers: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    checker = tmp_path / "check.c"
    checker.write_text(_CHECKER)
    return subprocess.run(
        [
            "gcc",
            "-fsyntax-only",
            "-Wno-unused-function",
            f'-DHDR_ALLOC="{headers / "gntalloc.h"}"',
            f'-DHDR_DEV="{headers / "gntdev.h"}"',
            f'-DGNTSTRESS_C="{SOURCE}"',
            *extra,
            str(checker),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def uapi_headers(
    debian_tree: tuple[TreeRepo, list[str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """include/uapi/xen of the oldest and the newest release the suite imported, by tag."""
    tree, tags = debian_tree
    found: dict[str, Path] = {}
    for tag in tags:
        out = tmp_path_factory.mktemp(f"uapi-{tag}")
        for name in ("gntalloc.h", "gntdev.h"):
            text = subprocess.run(
                ["git", "--git-dir", str(tree.path), "show", f"{tag}:include/uapi/xen/{name}"],
                capture_output=True, text=True, check=True, timeout=60,
            ).stdout  # fmt: skip
            (out / name).write_text(text)
        found[tag] = out
    return found


@pytest.mark.usefixtures("gcc")
@pytest.mark.slow
@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_ioctl_numbers_and_layouts_match_uapi_headers(
    which: str, uapi_headers: dict[str, Path], tmp_path: Path
) -> None:
    """gntstress's own copies of the ioctl numbers and structures against the kernel's uapi
    headers, taken from the releases the suite checked out (not from this machine)."""
    tags = list(uapi_headers)
    headers = uapi_headers[tags[0] if which == "oldest" else tags[-1]]
    done = _check_against(headers, tmp_path)
    assert done.returncode == 0, done.stderr
    negative = _check_against(headers, tmp_path, "-DNEGATIVE_CONTROL")
    assert negative.returncode != 0 and "IOCTL_GNTDEV_UNMAP_GRANT_REF" in negative.stderr


# ---------------------------------------------------------------------------------------------
# The real binary on this machine
# ---------------------------------------------------------------------------------------------


def run(binary: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_list(binary: Path) -> None:
    done = run(binary, "--list")
    assert done.returncode == 0
    assert done.stdout.splitlines() == list(SUBTESTS)


@pytest.mark.skipif(ON_XEN, reason="this machine has Xen grant devices")
def test_everything_skips_without_xen(binary: Path) -> None:
    done = run(binary)
    assert done.returncode == 0, done.stderr
    assert all(line.startswith("GNTSTRESS") for line in done.stdout.splitlines())
    report = parse_output(done.stdout)
    assert report.clean
    assert [r.name for r in report.results] == list(SUBTESTS)
    for r in report.results:
        assert r.status is Status.SKIP
        assert "/dev/xen/gntalloc" in r.detail or "/dev/xen/gntdev" in r.detail
    assert report.summary is not None
    summary = report.summary
    assert (summary.passed, summary.failed, summary.skipped) == (0, 0, len(SUBTESTS))


def test_child_crash_is_isolated(binary: Path) -> None:
    done = run(binary, "--selftest-crash", "--only", "self-map,churn")
    assert done.returncode == 1
    report = parse_output(done.stdout, expected=["selftest-crash", "self-map", "churn"])
    assert report.clean
    crash = report.result("selftest-crash")
    assert crash is not None
    assert crash.status is Status.FAIL and crash.signal == 7
    assert crash.detail.startswith("killed by signal 7 (SIGBUS)")
    assert [r.name for r in report.results] == ["selftest-crash", "self-map", "churn"]
    assert report.summary is not None and report.summary.failed == 1


def test_child_past_its_deadline_is_killed(binary: Path) -> None:
    done = run(binary, "--selftest-hang", "--timeout", "1", "--only", "fork", timeout=30)
    assert done.returncode == 1
    report = parse_output(done.stdout, expected=["selftest-hang", "fork"])
    assert report.clean
    hang = report.result("selftest-hang")
    assert hang is not None and hang.status is Status.FAIL and hang.timed_out
    assert report.result("fork") is not None


@pytest.mark.parametrize(
    "args",
    [
        ["--only", "bogus"],
        ["--only", "selftest-crash"],
        ["--pages", "0"],
        ["--pages", "1025"],
        ["--timeout", "x"],
        ["--frobnicate"],
        ["extra-argument"],
        ["--selftest-backend", "xen"],
    ],
)
def test_usage_errors_exit_2(binary: Path, args: list[str]) -> None:
    done = run(binary, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("gntstress: ")


def test_only_runs_in_canonical_order(binary: Path) -> None:
    done = run(binary, "--only", "churn,self-map")
    report = parse_output(done.stdout, expected=["self-map", "churn"])
    assert report.clean
    assert [r.name for r in report.results] == ["self-map", "churn"]


def test_subtest_logic_on_ordinary_memory(binary: Path) -> None:
    """--selftest-backend anon: memfd pages stand in for the grant, so every subtest's own
    logic runs here. The GUP users must pass on ordinary memory, and mremap-grow must FAIL
    because a memfd mapping, unlike gntdev's, has no VM_DONTEXPAND (the FAIL path, for real)."""
    done = run(
        binary,
        "--selftest-backend",
        "anon",
        "--soak-seconds",
        "1",
        "--churn",
        "64",
        "--policy-loops",
        "4",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = parse_output(done.stdout)
    assert report.clean and report.selftest_backend
    assert all(r.detail.startswith(gntstress.SELFTEST_BACKEND_MARK) for r in report.results)
    status = {r.name: r.status for r in report.results}
    assert status.pop("mremap-grow") is Status.FAIL
    # The O_DIRECT subtests need a filesystem that takes O_DIRECT; the soak needs
    # kernel.numa_balancing on (the test does not change the machine's sysctl).
    maybe_skipped = {"odirect-read", "odirect-write", "io-submit", "numa-soak", "mbind-soak"}
    for name, st in status.items():
        assert st is Status.PASS or (name in maybe_skipped and st is Status.SKIP), name
    fork = report.result("fork")
    assert fork is not None and "SIGSEGV" in fork.detail
    churn = report.result("churn")
    assert churn is not None and "cycles=64" in churn.detail
    # every split, fork, mprotect, munmap and mremap step kept the data (memfd loses no page)
    lifecycle = report.result("policy-lifecycle")
    assert lifecycle is not None and "5 rounds" in lifecycle.detail
    assert lifecycle.detail.endswith("[not judged on the selftest backend]")
    assert "after mprotect: 0, after mremap: 0" in lifecycle.detail


def test_expected_subtests_follow_only() -> None:
    assert expected_subtests(["--soak-seconds", "10"]) == SUBTESTS
    assert expected_subtests(["--only", "odirect-read"]) == ("odirect-read",)
    assert expected_subtests(["--only=fork,churn", "--only", "fork"]) == ("fork", "churn")
    report = parse_output(
        "GNTSTRESS odirect-read PASS errno=0 detail=ok\nGNTSTRESS-SUMMARY pass=1 fail=0 skip=0\n",
        expected_subtests(["--only", "odirect-read"]),
    )
    assert report.clean and not report.missing
