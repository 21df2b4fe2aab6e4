"""The results browser without a browser: pages, escaping, links that stay inside the results
directory, paged logs, incremental rendering, diffs, the server and the tasks.

``make_results`` builds a results store through the ResultsStore API (two nightly runs
classified by the regression tracker, an open regression, a bisection with a report and a
bisect log, logs as files, one of them a symbolic link out of the results directory, and
markup in a subtest name, a detail, a reason, a fingerprint, log lines and a commit subject);
test_browser_chromium.py looks at the same site in a real browser.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest

from kbisect.browser import diff_runs, render_diff, render_site
from kbisect.browser import lines as browser_lines
from kbisect.browser.diff import ORDER, diff_pools, kind_of
from kbisect.browser.logs import (
    INLINE_MAX_BYTES,
    INLINE_MAX_LINES,
    LOG_PAGE_LINES,
    MAX_LINE_CHARS,
    inline_log,
    lines_html,
    read_log,
)
from kbisect.browser.runpage import pool_of, variant_table_of
from kbisect.browser.safety import Resolver, safe_file
from kbisect.browser.serve import serving
from kbisect.pipeline.regressions import Pool, classify_run, pool, variant_table
from kbisect.results.model import (
    BuildRecord,
    CellRecord,
    Evidence,
    LogKind,
    LogRef,
    ResultStatus,
    RunRecord,
    RunStatus,
    SubtestKey,
    SubtestRecord,
    TrialRecord,
)
from kbisect.results.store import ResultsStore

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
EVIL_NAME = '<script>alert("subtest")</script>'
EVIL_DETAIL = "<img src=x onerror=\"document.body.setAttribute('data-pwned','detail')\">"
EVIL_LOG = "<script>document.body.setAttribute('data-pwned','log')</script>"
EVIL_SUBJECT = "gntdev: <script>alert('subject')</script> map grants VM_IO"
SECRET = "TOP-SECRET-OUTSIDE-THE-RESULTS"
SUBTESTS = ["self-map", "odirect-read", "odirect-write", EVIL_NAME]
CONSOLE_LINES = 4500
EVIDENCE_LINE = 2100
BUILD_KEY = "0123456789abcdef01234567"


@dataclass
class Built:
    store: ResultsStore
    results: Path
    outside: Path
    runs: list[int]
    regressed_cell: int
    linked_out_cell: int
    bisection: int
    regression: int


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _cell(
    store: ResultsStore,
    run_id: int,
    rev: str,
    variant: str,
    repeat: int,
    failing: tuple[str, ...] = (),
    *,
    logs: tuple[LogRef, ...] = (),
    evidence: tuple[Evidence, ...] = (),
    minutes: int = 0,
) -> int:
    subtests = tuple(
        SubtestRecord(
            name,
            ResultStatus.FAIL if name in failing else ResultStatus.PASS,
            14 if name in failing else 0,
            EVIL_DETAIL if name == EVIL_NAME else ("Bad address" if name in failing else "ok"),
        )
        for name in SUBTESTS
    )
    when = T0 + timedelta(days=run_id, minutes=minutes)
    return store.record_cell(
        run_id,
        CellRecord(
            tree="debian-6.1",
            rev=rev,
            variant=variant,
            profile="xen-dom0",
            host="qemu",
            job="gntstress",
            repeat=repeat,
            status=ResultStatus.FAIL if failing else ResultStatus.PASS,
            reason=f"{', '.join(failing)} FAIL <b>bold?</b>" if failing else "",
            commit="c0ffee" * 6 + "c0ff",
            build_key=BUILD_KEY,
            started=when,
            finished=when + timedelta(seconds=42),
            fingerprint={"xen_version": "4.17.7", "cpu": "<script>alert('cpu')</script>"},
            subtests=subtests,
            logs=logs,
            evidence=evidence,
        ),
    )


def add_run(store: ResultsStore, day: int, rev: str, vm_io_fails: bool = False) -> int:
    """A classified nightly run: vm-mixedmap and vm-io at ``rev``, two repeats each."""
    run = store.start_run(
        "nightly", pipeline="nightly", meta={"revs": [rev]}, started=T0 + timedelta(days=day)
    )
    for variant in ("gntdev-numa/vm-mixedmap", "gntdev-numa/vm-io"):
        failing = ("odirect-read",) if vm_io_fails and variant.endswith("vm-io") else ()
        for repeat in (1, 2):
            _cell(store, run.id, rev, variant, repeat, failing)
    store.finish_run(run.id, RunStatus.FINISHED, finished=T0 + timedelta(days=day, hours=1))
    classify_run(store, run.id)
    return run.id


def make_results(tmp_path: Path) -> Built:
    results = tmp_path / "results"
    outside = tmp_path / "outside"
    _write(outside / "secret.log", f"{SECRET}\n")
    store = ResultsStore(results)
    store.record_build(
        BuildRecord(BUILD_KEY, "built", "builds/build.log", meta={"release": "6.1.192+"})
    )
    _write(
        results / "builds" / "build.log", "".join(f"  CC drivers/xen/f{i}.o\n" for i in range(5))
    )

    first = add_run(store, 1, "v6.1.170-3")
    run = store.start_run("nightly", pipeline="nightly", started=T0 + timedelta(days=2))
    cell_dir = f"runs/{run.id}/debian-6.1/v6.1.192-2/vm-io/qemu/gntstress/r1"
    _write(
        results / cell_dir / "job-output.log",
        f"GNTSTRESS odirect-read FAIL errno=14 detail=Bad address\n{EVIL_LOG}\n",
    )
    _write(
        results / cell_dir / "dmesg.log",
        f"[ 14.2] xen: grant table\n[ 14.3] {EVIL_LOG}\n[ 14.4] gntdev: mmap\n",
    )
    console = [f"[ {i}.0] console line {i}" for i in range(1, CONSOLE_LINES + 1)]
    console[EVIDENCE_LINE - 1] = "[ 2100.0] BUG: Bad page map in process gntstress"
    _write(results / cell_dir / "console.log", "\n".join(console) + "\n")
    regressed = _cell(
        store,
        run.id,
        "v6.1.192-2",
        "gntdev-numa/vm-io",
        1,
        ("odirect-read",),
        logs=(
            LogRef(LogKind.JOB_OUTPUT, f"{cell_dir}/job-output.log"),
            LogRef(LogKind.DMESG, f"{cell_dir}/dmesg.log"),
            LogRef(LogKind.CONSOLE, f"{cell_dir}/console.log"),
            LogRef(LogKind.BUILD_LOG, "builds/build.log"),
        ),
        evidence=(
            Evidence(
                "bad-page-map",
                LogKind.CONSOLE,
                EVIDENCE_LINE,
                ("[ 2100.0] BUG: Bad page map in process gntstress", f"[ 2100.1] {EVIL_LOG}"),
            ),
        ),
    )
    _cell(store, run.id, "v6.1.192-2", "gntdev-numa/vm-io", 2, ("odirect-read",), minutes=1)
    # a log that is a symbolic link out of the results directory
    link = results / f"runs/{run.id}/leak/console.log"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside / "secret.log")
    linked_out = _cell(
        store,
        run.id,
        "v6.1.192-2",
        "gntdev-numa/vm-mixedmap",
        1,
        logs=(LogRef(LogKind.CONSOLE, f"runs/{run.id}/leak/console.log"),),
        minutes=2,
    )
    _cell(store, run.id, "v6.1.192-2", "gntdev-numa/vm-mixedmap", 2, minutes=3)
    _write(results / f"runs/{run.id}/junit.xml", "<testsuites/>\n")
    store.finish_run(run.id, RunStatus.FINISHED, finished=T0 + timedelta(days=2, hours=1))
    classify_run(store, run.id)
    (regression,) = store.regressions("open")

    bisection = store.create_bisection(
        {"tree": "debian-6.1", "good": ["v6.1.170-3"], "bad": "v6.1.192-2", "predicate": "job"}
    )
    culprit, parent = "b" * 40, "a" * 40
    for seq, (phase, commit, outcome) in enumerate(
        [("good-end", parent, "pass"), ("bad-end", culprit, "fail"), ("step", culprit, "fail")]
    ):
        store.add_trial(bisection.id, TrialRecord(seq, phase, commit, outcome, "odirect-read"))
    verdict = {
        "commit": culprit,
        "phase": "step",
        "verdict": "bad",
        "passes": 0,
        "fails": 1,
        "skips": 0,
        "errors": 0,
        "confidence": 0.9987,
        "identity": None,
        "detail": "odirect-read FAIL",
        "runs": 1,
    }
    store.finish_bisection(
        bisection.id,
        "confirmed",
        {
            "id": bisection.id,
            "status": "confirmed",
            "message": "first bad commit found and confirmed",
            "tree": "debian-6.1",
            "good_given": ["v6.1.170-3"],
            "bad_given": "v6.1.192-2",
            "culprit": {
                "commit": culprit,
                "subject": EVIL_SUBJECT,
                "author": "A U Thor <a@example.org>",
                "date": "2026-03-02T10:00:00+00:00",
                "files": ["drivers/xen/gntdev.c"],
            },
            "suspects": [],
            "ends": [{**verdict, "phase": "bad-end"}],
            "steps": [verdict],
            "validations": [
                {
                    "name": "culprit",
                    "expected": "bad",
                    "verdict": "bad",
                    "ok": True,
                    "note": "",
                    "detail": verdict,
                },
                {
                    "name": "parent",
                    "expected": "good",
                    "verdict": "good",
                    "ok": True,
                    "note": "",
                    "detail": {**verdict, "commit": parent, "verdict": "good", "passes": 3},
                },
            ],
            "flags": [],
            "confidence": 0.997,
            "restarts": 0,
            "runs": 3,
            "predicate_seconds": 12.5,
            "miss_rate": 0.05,
            "false_alarm_rate": 0.01,
            "text": f"bisection {bisection.id}: CONFIRMED\nculprit {culprit}\n",
        },
    )
    _write(
        results / "bisect" / str(bisection.id) / "bisect.log",
        f"git bisect start '{culprit}' '{parent}'\n# bad: [{culprit}] {EVIL_SUBJECT}\n"
        f"git bisect bad {culprit}\n",
    )
    _write(results / "bisect" / str(bisection.id) / "report.txt", "report\n")
    store.link_bisection(regression.id, bisection.id)
    return Built(
        store, results, outside, [first, run.id], regressed, linked_out, bisection.id, regression.id
    )


@pytest.fixture
def built(tmp_path: Path) -> Built:
    b = make_results(tmp_path)
    yield b
    b.store.close()


def pages(site: Path) -> dict[str, str]:
    return {
        p.relative_to(site).as_posix(): p.read_text()
        for p in site.rglob("*.html")
        if not p.name.startswith(".")
    }


# -- pages -----------------------------------------------------------------------------------------


def test_site_has_every_page_and_the_index_is_newest_first(built: Built) -> None:
    report = render_site(built.store)
    site = built.results / "site"
    first, second = built.runs
    got = pages(site)
    assert "index.html" in report.written and (site / "style.css").is_file()
    for page in (
        f"run/{second}/index.html",
        f"run/{second}/diff.html",
        f"run/{second}/cell-{built.regressed_cell}.html",
        f"bisect/{built.bisection}.html",
        f"build/{BUILD_KEY}.html",
    ):
        assert page in got, page
    assert any(p.startswith(f"run/{second}/rev-v6.1.192-2-") for p in got)
    assert any(p.startswith("lines/") for p in got)
    index = got["index.html"]
    assert f'href="bisect/{built.bisection}.html"' in index  # open regression -> bisection
    runs_table = index.split('id="runs"')[1]
    assert runs_table.index(f'href="run/{second}/index.html"') < runs_table.index(
        f'href="run/{first}/index.html"'
    )
    run_page = got[f"run/{second}/index.html"]
    assert 'class="mc out-REGRESSION"' in run_page
    assert f'href="../../bisect/{built.bisection}.html"' in run_page
    variants = next(v for k, v in got.items() if k.startswith(f"run/{second}/rev-"))
    assert "gntdev-numa/vm-io" in variants and "0/2" in variants  # odirect-read: 0 of 2 passed


def test_a_running_run_without_cells_and_links_to_junit(built: Built) -> None:
    running = built.store.start_run("stress", meta={"host": "qemu"}, started=T0 + timedelta(days=9))
    render_site(built.store)
    site = built.results / "site"
    page = (site / f"run/{running.id}/index.html").read_text()
    assert 'class="st st-running"' in page and "0 of 0 rows" not in page
    index = (site / "index.html").read_text().split('id="runs"')[1]
    assert index.index(f'href="run/{running.id}/index.html"') < index.index(
        f'href="run/{built.runs[1]}/index.html"'
    )
    cell = (site / f"run/{built.runs[1]}/cell-{built.regressed_cell}.html").read_text()
    assert f'href="../../../runs/{built.runs[1]}/junit.xml"' in cell


def test_untrusted_text_is_escaped_on_every_page(built: Built) -> None:
    render_site(built.store)
    got = pages(built.results / "site")
    for name, html in got.items():
        own = html.count("<script>(function () {")
        assert html.count("<script") == own, f"{name} has a <script> that is not the filter's"
        assert "<img" not in html and "<b>" not in html, name
    cell = got[f"run/{built.runs[1]}/cell-{built.regressed_cell}.html"]
    assert "&lt;script&gt;alert(&#34;subtest&#34;)&lt;/script&gt;" in cell  # subtest name
    assert "&lt;img src=x onerror=" in cell  # detail
    assert "&lt;script&gt;document.body.setAttribute(&#39;data-pwned&#39;,&#39;log&#39;)" in cell
    assert "&lt;script&gt;alert(&#39;cpu&#39;)" in cell  # fingerprint
    bisection = got[f"bisect/{built.bisection}.html"]
    assert "gntdev: &lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;" in bisection


def test_control_characters_are_shown_as_escapes(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    run = store.start_run("run", started=T0)
    _write(tmp_path / "results" / "runs" / "x.log", "colour \x1b[31mred\x1b[0m\r\n")
    store.record_cell(
        run.id,
        CellRecord(
            "t",
            "r",
            "",
            "p",
            "h",
            "j",
            1,
            ResultStatus.PASS,
            reason="bell \x07",
            logs=(LogRef(LogKind.JOB_OUTPUT, "runs/x.log"),),
        ),
    )
    render_site(store)
    html = next(v for k, v in pages(tmp_path / "results" / "site").items() if "/cell-" in k)
    assert "\x1b" not in html and "\x07" not in html
    assert "colour \\x1b[31mred\\x1b[0m" in html and "bell \\x07" in html
    store.close()


def test_a_cell_page_shows_every_part_of_an_unusual_cell(tmp_path: Path) -> None:
    """Cell pages are built in Python: the parts the common cells lack, escaped as well."""
    results = tmp_path / "results"
    store = ResultsStore(results)
    run = store.start_run("adhoc", started=T0)
    _write(results / "runs/c/a.log", "first <b>\nsecond\n")
    _write(results / "runs/c/b.log", "other\n")
    _write(results / "runs/c/.hidden/c.log", "hidden\n")
    _write(results / "runs/c/junit.xml", "<testsuites/>\n")
    bare = store.record_cell(
        run.id,
        CellRecord("t<1>", "r1", "", "p&q", "h", "j", 3, ResultStatus.ERROR, reason="boom <i>"),
    )
    full = store.record_cell(
        run.id,
        CellRecord(
            "t<1>",
            "r1",
            "v/1",
            "p&q",
            "h",
            "j",
            1,
            ResultStatus.FAIL,
            patch_hash="ph<1>",
            build_key="bk",
            fingerprint={"cpu": "<b>x</b>"},
            subtests=(
                SubtestRecord("s<1>", ResultStatus.FAIL, 5, "d<", 9, True),
                SubtestRecord("s2", ResultStatus.SKIP, 99999, ""),
            ),
            logs=(
                LogRef(LogKind.CONSOLE, "runs/c/a.log"),
                LogRef(LogKind.CONSOLE, "runs/./c/b.log"),
                LogRef(LogKind.DMESG, "runs/c/.hidden/c.log"),
                LogRef(LogKind.JUNIT, "runs/c/junit.xml"),
                LogRef(LogKind.JOB_OUTPUT, "runs/c/missing.log"),
            ),
            evidence=(
                Evidence("sig<1>", LogKind.CONSOLE, 2, ("l<1>", "l2"), ("also<1>",), False, 3),
            ),
        ),
    )
    render_site(store)
    got = pages(results / "site")
    page = got[f"run/{run.id}/cell-{bare}.html"]
    assert "<h1>" in page and "t&lt;1&gt; r1 (as is) on h: j #3" in page
    assert '<p class="note">boom &lt;i&gt;</p>' in page
    assert "no subtests" in page and "no logs" in page and "none recorded" in page
    page = got[f"run/{run.id}/cell-{full}.html"]
    assert "patch ph&lt;1&gt;" in page and 'href="../../build/bk.html"' in page
    assert "<td>s&lt;1&gt;</td>" in page and "(signal 9, SIGKILL)" in page and "(timed out)" in page
    assert "EIO (5)" in page and '<td class="mono">99999</td>' in page  # a number without a name
    # two logs of one kind get anchors of their own; the evidence links to its line
    assert 'id="console-L1"' in page and 'id="console-2-L1"' in page
    assert 'href="#console-L2">line 2</a>' in page and "first &lt;b&gt;" in page
    assert "also also&lt;1&gt;" in page and "weak: does not fail the cell" in page
    assert "and 3 more like it" in page and "l&lt;1&gt;\nl2</pre>" in page
    assert 'id="dmesg-L1"' in page and ">hidden</span>" in page  # a dot-directory is fine
    assert 'href="../../../runs/c/junit.xml">junit.xml</a>' in page
    assert '<p id="job-output"><strong>job output</strong>: <span class="muted">missing' in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>" not in page and "<i>" not in page
    store.close()


def test_short_logs_inline_as_the_general_reader_shows_them(tmp_path: Path) -> None:
    texts = [
        "",
        "\n",
        "one",
        "one\ntwo\n",
        "a\n\n",
        "<tag> & 'quotes' \"\n",
        "crlf\r\nline\r\n",
        "esc \x1b[1m\n",
        "x" * (MAX_LINE_CHARS + 10) + "\n",
        "é ünïcode\n",
        "\n".join(str(i) for i in range(INLINE_MAX_LINES)) + "\n",
        "\n".join(str(i) for i in range(INLINE_MAX_LINES + 1)) + "\n",
    ]
    fast_ones = 0
    for i, content in enumerate(texts):
        path = tmp_path / f"{i}.log"
        path.write_bytes(content.encode())
        general = read_log(path)
        fast = inline_log(str(path), path.stat().st_size, "p-")
        unusual = "\r" in content or "\x1b" in content or MAX_LINE_CHARS < len(content) < 5000
        if fast is None:  # left to the general reader: unusual text, or too long to inline
            assert unusual or not general.inline, repr(content)
            continue
        fast_ones += 1
        assert general.inline and not unusual
        assert fast == (lines_html(general.lines, 1, "p-"), len(general.lines)), repr(content)
    assert fast_ones == 8  # all but CRs, escapes, a long line and one line too many
    too_big = tmp_path / "big.log"
    too_big.write_bytes(b"y\n" * (INLINE_MAX_BYTES // 2 + 1))
    assert inline_log(str(too_big), too_big.stat().st_size, "p-") is None


def test_short_logs_with_any_one_character_inline_only_when_plain(tmp_path: Path) -> None:
    """The inline reader leaves every control character (but tab and newline, ASCII or not,
    C1 ones too) to the general reader, which shows it as an escape."""
    path = tmp_path / "one.log"
    for code in [*range(0x100), 0x2028, 0xFFFD, 0x1F600]:
        path.write_bytes(f"a{chr(code)}b\n".encode())
        fast = inline_log(str(path), path.stat().st_size, "p-")
        control = (code < 0x20 and code not in (0x09, 0x0A)) or 0x7F <= code <= 0x9F
        assert (fast is None) == control, hex(code)
        if fast is not None:
            general = read_log(path)
            assert fast == (lines_html(general.lines, 1, "p-"), len(general.lines)), hex(code)


def test_long_logs_are_paged_and_evidence_links_to_its_line(built: Built) -> None:
    render_site(built.store)
    site = built.results / "site"
    page = site / f"run/{built.runs[1]}/cell-{built.regressed_cell}.html"
    html = page.read_text()
    links = re.findall(r'href="(\.\./\.\./log/[0-9a-f]+-(\d)\.html)"', html)
    assert sorted({int(n) for _, n in links}) == [1, 2, 3]  # 4,500 lines, 2,000 a page
    evidence = re.search(r'href="(\.\./\.\./log/[0-9a-f]+-2\.html)#L2100"', html)
    assert evidence is not None
    log_page = (page.parent / evidence.group(1)).resolve()
    text = log_page.read_text()
    assert 'id="L2100"' in text and "BUG: Bad page map" in text
    assert f'id="L{LOG_PAGE_LINES}"' not in text and f'id="L{2 * LOG_PAGE_LINES + 1}"' not in text
    raw = re.search(r'<a href="([^"]+)">raw file</a>', text)
    assert raw is not None
    assert (log_page.parent / unquote(raw.group(1))).resolve().name == "console.log"
    # the short logs are on the cell page itself, with anchors per line
    assert 'id="dmesg-L2"' in html and 'id="job-output-L1"' in html


def test_no_link_leaves_the_results_directory(built: Built) -> None:
    render_site(built.store)
    site = built.results / "site"
    root = built.results.resolve()
    for name, html in pages(site).items():
        assert SECRET not in html and str(built.outside) not in html, name
        for target in re.findall(r'href="([^"#]+)', html):
            assert "://" not in target, (name, target)
            real = ((site / name).parent / unquote(target)).resolve()
            assert real.is_relative_to(root), (name, target)
            assert real.exists(), (name, target)
    cell = (site / f"run/{built.runs[1]}/cell-{built.linked_out_cell}.html").read_text()
    assert "not shown: it is outside the results directory" in cell
    assert not re.search(r'href="[^"]*leak', cell)


def test_file_references_are_checked(built: Built, tmp_path: Path) -> None:
    results = built.results
    with pytest.raises(ValueError, match="relative to the results directory"):
        LogRef(LogKind.DMESG, "../outside/secret.log")
    with pytest.raises(ValueError, match="relative to the results directory"):
        LogRef(LogKind.DMESG, "/etc/passwd")
    resolver = Resolver(results)
    for bad in (
        "../outside/secret.log",
        "runs/../../outside/secret.log",
        "/etc/passwd",
        "",
        "a\\b",
    ):
        assert resolver.file(bad) is None, bad
        assert safe_file(results, bad) is None, bad
    assert resolver.file(f"runs/{built.runs[1]}/leak/console.log") is None  # symlinked file
    (results / "runs" / "outdir").symlink_to(built.outside, target_is_directory=True)
    assert resolver.file("runs/outdir/secret.log") is None  # symlinked directory
    assert safe_file(results, "runs/outdir/secret.log") is None
    (results / "runs" / "inside.log").symlink_to(results / "builds" / "build.log")
    found = resolver.file("runs/inside.log")  # a symlink that stays inside is fine
    assert found is not None and found[0] == str((results / "builds" / "build.log").resolve())
    assert resolver.file("runs") is None  # directories are not files
    assert resolver.file("builds/./build.log") is not None


def test_files_are_opened_only_as_they_are_checked(built: Built) -> None:
    """Resolver.open keeps what Resolver.file finds open, and refuses what it refuses."""
    results = built.results
    resolver = Resolver(results)
    (results / "runs" / "outdir").symlink_to(built.outside, target_is_directory=True)
    (results / "runs" / "inside.log").symlink_to(results / "builds" / "build.log")
    os.mkfifo(results / "runs" / "fifo.log")
    (results / "runs" / "dir.log").mkdir()
    checked = [
        "../outside/secret.log",
        "runs/../../outside/secret.log",
        "/etc/passwd",
        "",
        "a\\b",
        f"runs/{built.runs[1]}/leak/console.log",  # a symlink out
        "runs/outdir/secret.log",  # through a symlinked directory
        "runs/inside.log",  # a symlink that stays inside
        "runs/fifo.log",  # not a regular file (and opening it does not block)
        "runs/dir.log",
        "runs",
        "runs/missing.log",
        "builds/./build.log",
        "builds/build.log",
    ]
    for relative in checked:
        found = Resolver(results).file(relative)
        opened = resolver.open(relative)
        if found is None:
            assert opened is None, relative
            continue
        assert opened is not None, relative
        real, fd, st = opened
        try:
            assert (real, st.st_ino, st.st_size) == (found[0], found[1].st_ino, found[1].st_size)
            assert os.read(fd, st.st_size + 1) == Path(real).read_bytes()
        finally:
            os.close(fd)
    assert sum(1 for r in checked if Resolver(results).file(r) is not None) == 3


# -- incremental -----------------------------------------------------------------------------------


def snapshot(site: Path) -> dict[str, int]:
    return {p.relative_to(site).as_posix(): p.stat().st_mtime_ns for p in site.rglob("*.html")}


def test_one_new_run_rewrites_only_what_changed(built: Built) -> None:
    site = built.results / "site"
    first = render_site(built.store)
    assert first.skipped == 0 and len(first.written) > 20
    before = snapshot(site)
    again = render_site(built.store)
    assert again.written == [] and again.runs == [] and again.skipped > 10
    assert snapshot(site) == before

    time.sleep(0.01)
    third = add_run(built.store, 3, "v6.1.192-2", vm_io_fails=True)  # the regression stays open
    report = render_site(built.store)
    assert report.runs == [third]
    after = snapshot(site)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == set(report.written) - {"style.css"}
    assert any(p.startswith(f"run/{third}/cell-") for p in changed)
    assert "index.html" in changed
    assert not any(
        p.startswith((f"run/{built.runs[0]}/", f"run/{built.runs[1]}/")) for p in changed
    )
    assert not any(p.startswith(("bisect/", "build/", "log/")) for p in changed)
    lines = {p for p in changed if p.startswith("lines/")}
    assert lines and len(lines) == 2  # the two variants' lines got a run; nothing else
    assert render_site(built.store).written == []


def test_a_replaced_cell_rerenders_its_run_and_removes_the_old_page(built: Built) -> None:
    site = built.results / "site"
    third = add_run(built.store, 3, "v6.1.192-2")
    render_site(built.store)
    old = built.store.cells(third)[0]
    assert (site / f"run/{third}/cell-{old.id}.html").is_file()
    new_id = built.store.record_cell(third, old)  # the same identity: replaced, new id
    report = render_site(built.store)
    assert report.runs == [third]
    assert f"run/{third}/cell-{new_id}.html" in report.written
    assert f"run/{third}/cell-{old.id}.html" in report.removed
    assert not (site / f"run/{third}/cell-{old.id}.html").exists()


def test_store_signatures_change_with_a_run_and_marks_keep_the_rest(built: Built) -> None:
    store = built.store
    first, second = built.runs
    marks: dict[str, object] = {}
    sigs, builds = store.signatures(marks)
    assert set(sigs) == {first, second} and sigs[first] != sigs[second]
    assert builds[BUILD_KEY].startswith("built|")
    assert store.signatures(marks)[0] == sigs  # nothing new: the same, from the marks
    old = store.cells(second)[0]
    store.record_cell(second, old)  # replaced: a new id
    third = add_run(store, 3, "v6.1.192-2")
    again, _ = store.signatures(marks)
    assert again[first] == sigs[first]
    assert again[second] != sigs[second] and third in again
    assert store.signatures({})[0] == again  # the marks' shortcut agrees with counting anew
    store.record_changes(first, store.changes(first))  # replaced whole: new rowids
    assert store.signatures(marks)[0][first] != again[first]


def test_store_reads_runs_together_as_it_reads_each(built: Built) -> None:
    store = built.store
    first, second = built.runs
    empty = store.start_run("stress", started=T0 + timedelta(days=8)).id
    for _ in range(10):  # runs between: the first and the last are far apart by cell id
        add_run(store, 4, "v6.1.192-2", vm_io_fails=True)
    last = add_run(store, 5, "v6.1.192-2")
    ids = [first, second, empty, last]
    cells, changes = store.cells_of_runs(ids), store.changes_of_runs(ids)
    assert set(cells) == set(changes) == set(ids) and cells[empty] == []
    for run_id in ids:
        assert cells[run_id] == store.cells(run_id)
        assert changes[run_id] == store.changes(run_id)
    assert any(c.evidence and c.logs for c in cells[second])  # children came along
    together = store.cells_of_runs([second, second + 1])  # neighbours: by cell id range
    assert together[second] == store.cells(second)
    assert store.cells_of_runs([]) == {} and store.changes_of_runs([]) == {}


def test_variant_tables_from_the_run_pools_match_the_pipeline(built: Built) -> None:
    cells = built.store.cells(built.runs[1])
    pools = pool_of(cells)
    bare = CellRecord("t", "r", "", "p", "h", "j", 1, ResultStatus.ERROR, id=99)  # no subtests
    skipped = SubtestRecord("s", ResultStatus.SKIP)
    odd = CellRecord("t", "r", "v", "p", "h", "j", 2, ResultStatus.MISS, subtests=(skipped,))
    for some in (cells, [*cells, bare, odd, bare]):
        assert pool_of(some) == pool(some)
        assert list(pool_of(some)) == list(pool(some))  # the same order too
    for tree, rev in {(c.tree, c.rev) for c in cells}:
        at_rev = [c for c in cells if c.tree == tree and c.rev == rev]
        assert variant_table_of(pools, at_rev, tree, rev) == variant_table(at_rev, rev)


def test_a_render_leaves_the_garbage_collector_as_it_found_it(built: Built) -> None:
    assert gc.isenabled()
    render_site(built.store)
    assert gc.isenabled()  # off while rendering only
    gc.disable()
    try:
        render_site(built.store, full=True)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_full_and_layout_changes_rerender_but_write_nothing_new(built: Built) -> None:
    site = built.results / "site"
    render_site(built.store)
    before = snapshot(site)
    full = render_site(built.store, full=True)
    assert full.written == [] and full.unchanged > 20 and sorted(full.runs) == built.runs
    manifest = json.loads((site / ".manifest.json").read_text())
    manifest["layout"] = "something else"
    (site / ".manifest.json").write_text(json.dumps(manifest))
    assert render_site(built.store).written == []
    assert snapshot(site) == before
    (site / ".manifest.json").write_text("{not json")  # a broken manifest: render all again
    assert render_site(built.store).written == []


def test_parallel_render_gives_the_same_site(built: Built, tmp_path: Path) -> None:
    for day in range(3, 30):
        add_run(built.store, day, f"v6.1.{170 + day}-1", vm_io_fails=day % 5 == 0)
    one = tmp_path / "one"
    two = tmp_path / "two"
    render_site(built.store, one, jobs=1)
    report = render_site(built.store, two, jobs=2)
    assert len(report.runs) == len(built.store.runs())
    assert pages(one) == pages(two)


# -- diff ------------------------------------------------------------------------------------------


def test_diff_of_two_runs(built: Built) -> None:
    first, second = built.runs
    d = diff_runs(built.store, first, second)
    broke = [r for r in d.rows if r.kind == "BROKE"]
    assert [(r.line[1], r.line[5], r.rev_a, r.rev_b) for r in broke] == [
        ("gntdev-numa/vm-io", "odirect-read", "v6.1.170-3", "v6.1.192-2")
    ]
    text = d.text()
    assert "BROKE" in text and "PASS 2/2 -> FAIL 0/2" in text
    assert "1 changed (1 broke, 0 fixed, 0 other)" in text
    _, page = render_diff(built.store, first, second)
    html = page.read_text()
    assert 'class="cls cls-BROKE"' in html and "odirect-read" in html
    assert "&lt;script&gt;" not in html or "<script>" not in html
    back = diff_runs(built.store, second, first)
    assert [r.kind for r in back.changed] == ["FIXED"]


def _line_wise_diff(a: dict[SubtestKey, Pool], b: dict[SubtestKey, Pool]) -> tuple[list, int]:
    """The diff's rule spelled out line by line: revisions both runs tested are paired, then
    one left over on each side; the rest is only in one run."""
    lines: dict[tuple[str, ...], tuple[dict[str, Pool], dict[str, Pool]]] = {}
    for side, pools in enumerate((a, b)):
        for key, p in pools.items():
            lines.setdefault(key.line, ({}, {}))[side][key.rev] = p
    rows, same = [], 0
    for line, (in_a, in_b) in sorted(lines.items()):
        pairs: list[tuple[str | None, str | None]] = [(r, r) for r in in_a if r in in_b]
        left_a = [r for r in in_a if r not in in_b]
        left_b = [r for r in in_b if r not in in_a]
        if len(left_a) == 1 and len(left_b) == 1:
            pairs.append((left_a[0], left_b[0]))
        else:
            pairs += [(r, None) for r in left_a] + [(None, r) for r in left_b]
        for ra, rb in pairs:
            pa, pb = in_a.get(ra) if ra else None, in_b.get(rb) if rb else None
            kind = kind_of(pa, pb)
            if kind is None:
                same += 1
            else:
                rows.append((kind, line, ra, rb))
    rows.sort(key=lambda r: (ORDER.index(r[0]), r[1], r[3] or r[2] or ""))
    return rows, same


def test_diff_pairs_subtests_as_the_line_wise_rule_does() -> None:
    rng = random.Random(7)
    for _ in range(200):
        pools: list[dict[SubtestKey, Pool]] = [{}, {}]
        for side in (0, 1):
            for _ in range(rng.randint(0, 12)):
                key = SubtestKey(
                    "t", rng.choice("xyz"), rng.choice("vw"), "p", "h", "j", rng.choice("st")
                )
                pools[side][key] = Pool(rng.randint(0, 2), rng.randint(0, 2), rng.randint(0, 1))
        run_a = RunRecord(1, "nightly", None, T0, None, RunStatus.FINISHED, {})
        run_b = RunRecord(2, "nightly", None, T0, None, RunStatus.FINISHED, {})
        d = diff_pools(run_a, run_b, pools[0], pools[1])
        got = [(r.kind, r.line, r.rev_a, r.rev_b) for r in d.rows]
        assert (got, d.same) == _line_wise_diff(pools[0], pools[1])


# -- the server and the tasks ----------------------------------------------------------------------


def _fetch(port: int, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def _get(port: int, path: str) -> int:
    return _fetch(port, path).status


def test_server_serves_the_site_and_nothing_outside(built: Built) -> None:
    render_site(built.store)
    run = built.runs[1]
    with serving(built.results / "site", built.results) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/site/index.html"
        assert server.httpd.server_address[0] == "127.0.0.1"
        port = server.port
        assert _get(port, "/site/index.html") == 200
        assert _get(port, f"/site/run/{run}/cell-{built.regressed_cell}.html") == 200
        page = _fetch(port, "/site/index.html")
        assert page.getheader("Content-Type") == "text/html"
        assert page.getheader("X-Content-Type-Options") == "nosniff"
        raw = _fetch(port, "/builds/build.log")  # raw files the site links: plain text
        assert raw.status == 200 and raw.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert raw.getheader("Content-Security-Policy") == "default-src 'none'; sandbox"
        (built.results / "runs" / "page.html").write_text("<script>alert(1)</script>")
        assert _get(port, "/runs/page.html") == 404  # no page links it (test_browse_server.py)
        assert _get(port, f"/runs/{run}/leak/console.log") == 404  # symlink out
        assert _get(port, "/kbisect.sqlite") == 404
        assert _get(port, "/kbisect.sqlite-wal") == 404
        assert _get(port, "/runs/") == 404  # no listings
        assert _get(port, "/../outside/secret.log") == 404
        assert _get(port, "/%2e%2e/outside/secret.log") == 404


def _program(tmp_path: Path) -> Path:
    """A script running the browser tasks as the kbisect command line will."""
    script = tmp_path / "kb.py"
    script.write_text(
        textwrap.dedent(
            """
            from invoke.collection import Collection
            from kbisect.cli import browser_tasks
            from kbisect.cli.program import KbisectProgram

            ns = Collection()
            ns.add_task(browser_tasks.browse)
            ns.add_collection(
                Collection("results", browser_tasks.results_render, browser_tasks.results_diff)
            )
            KbisectProgram(namespace=ns, name="kbisect", binary="kbisect").run()
            """
        )
    )
    return script


def _env(built: Built) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KBISECT_ROOT"}
    env["KBISECT_RESULTS"] = str(built.results)
    return env


def test_tasks_render_and_diff(built: Built, tmp_path: Path) -> None:
    script = _program(tmp_path)

    def kb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), *args],
            cwd=tmp_path,
            env=_env(built),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = kb("results.render")
    assert done.returncode == 0, done.stderr
    assert "pages written" in done.stdout and "site: " in done.stdout
    assert (built.results / "site" / "index.html").is_file()
    first, second = built.runs
    done = kb("results.diff", str(first), str(second))
    assert done.returncode == 0, done.stderr
    assert "BROKE" in done.stdout and "odirect-read" in done.stdout
    assert (built.results / "site" / "diff" / f"{first}-{second}.html").is_file()
    done = kb("results.diff", str(first), "999")
    assert done.returncode == 2 and "no run 999" in done.stderr
    done = kb("results.diff", "one", "two")
    assert done.returncode == 2 and "expected a run id" in done.stderr
    helped = kb("results.render", "--help")
    assert "--out" in helped.stdout and "--full" in helped.stdout


def test_browse_prints_the_url_serves_and_stops_on_ctrl_c(built: Built, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(_program(tmp_path)), "browse"],
        cwd=tmp_path,
        env=_env(built),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            found = re.search(r"http://127\.0\.0\.1:(\d+)/site/index\.html", line)
            url = found.group(0) if found else ""
        assert url
        port = int(url.split(":")[2].split("/")[0])
        assert _get(port, "/site/index.html") == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out
    with pytest.raises(OSError):
        _get(port, "/site/index.html")


def test_a_fixed_regression_rerenders_the_run_that_opened_it(built: Built) -> None:
    render_site(built.store)
    third = add_run(built.store, 3, "v6.1.192-2")  # vm-io passes again: FIXED
    assert built.store.regressions("open") == []
    report = render_site(built.store)
    assert report.runs == [built.runs[1], third]
    page = (built.results / f"site/run/{built.runs[1]}/index.html").read_text()
    assert "opened here at v6.1.192-2" in page and "still open" not in page
    assert f'fixed in <a href="../{third}/index.html">run {third}</a>' in page


def test_every_browser_task_has_a_docstring_and_help_for_every_flag() -> None:
    from kbisect.cli import browser_tasks

    for t in (browser_tasks.results_render, browser_tasks.results_diff, browser_tasks.browse):
        assert t.__doc__ and t.__doc__.strip(), t.name
        for arg in t.get_arguments():
            assert arg.help, f"{t.name} --{arg.name} has no help"
    assert browser_tasks.results_render.name == "render"
    assert browser_tasks.results_diff.name == "diff"
    assert browser_tasks.browse.name == "browse"


def test_a_full_block_of_a_line_stays_as_a_full_render_writes_it(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line's page of older runs does not change once its block is full: an incremental render
    after a newer run leaves it as a full render would write it (it once said "of N runs")."""
    monkeypatch.setattr(browser_lines, "LINE_PAGE_RUNS", 2)
    site = built.results / "site"
    add_run(built.store, 3, "v6.1.192-2")
    add_run(built.store, 4, "v6.1.192-2")  # four runs: two full blocks of two
    render_site(built.store)
    blocks = sorted(site.glob("lines/*-1.html"))
    assert blocks, "no page of older runs was made"
    add_run(built.store, 5, "v6.1.192-2")  # a fifth: no new full block
    render_site(built.store)
    incremental = {p.name: p.read_bytes() for p in blocks}
    render_site(built.store, full=True)
    assert {p.name: p.read_bytes() for p in blocks} == incremental
