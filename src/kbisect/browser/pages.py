"""Pages: the Jinja environment, the site's file names, content keys and limits.

Every page is rendered by Jinja with autoescaping on, so text from kernels, hosts and patches
(subtest names, details, reasons, log lines, commit subjects, fingerprints) is escaped wherever it
lands; control characters are shown as escapes as well (``finalize``). No page carries the time
it was rendered, so a page whose inputs did not change renders to the same bytes.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined

import kbisect.browser.logs as logs_module
from kbisect import __version__
from kbisect.browser.fragments import cls, css, errname, kv_rows, log_section, st
from kbisect.browser.safety import slug, visible
from kbisect.results.model import Change, LogKind, ResultStatus

SITE_DIR = "site"
"""The site's directory in the results directory (unless told otherwise)."""
LAYOUT = 1
"""Bump when the site's layout changes in a way templates do not show (file names, manifest)."""
HISTORY_RUNS = 10
"""A cell page shows the same cell in this many runs up to its own (the line page: in all)."""
NOTABLE_MAX = 500
"""At most this many notable changes are listed on a run page."""

CLASS_ORDER = (
    Change.REGRESSION.value,
    Change.NEVER_PASSED.value,
    Change.STILL_FAILING.value,
    Change.FLAKY.value,
    Change.INFRA.value,
    Change.FIXED.value,
    Change.NEW.value,
)
"""Change classes shown in the matrix, the most important first (PASS and SKIP are not)."""
STATUSES = tuple(s.value for s in ResultStatus)
LOG_LABELS = {
    LogKind.JOB_OUTPUT.value: "job output",
    LogKind.DMESG.value: "dmesg",
    LogKind.CONSOLE.value: "console",
    LogKind.BUILD_LOG.value: "build log",
    LogKind.JUNIT.value: "JUnit",
    LogKind.LAVA_LOG.value: "LAVA job log",
}


def digest(data: bytes | str, size: int = 12) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.blake2b(raw, digest_size=size).hexdigest()


def key_of(*parts: Any) -> str:
    """A content key over JSON-able parts."""
    return digest(json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")))


def when(value: datetime | None) -> str:
    """``2026-01-01 02:00:00 UTC`` (isoformat is faster than strftime: two a cell page)."""
    if value is None:
        return "-"
    utc = value.astimezone(UTC)
    if utc.year < 1000:  # strftime does not pad the year with zeros
        return utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return utc.isoformat(" ", "seconds")[:19] + " UTC"


def vjoin(items: Iterable[object], sep: str = ", ") -> str:
    """Join untrusted strings (control characters shown as escapes); autoescaping follows."""
    return sep.join(visible(str(item)) for item in items)


@contextlib.contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector off, then as it was: a render makes hundreds of thousands of
    objects that live to its end (the manifest's entries, the caches of fragments, history rows
    and log facts), and the collector's passes over them would cost more than the few cycles
    they free."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _finalize(value: Any) -> Any:
    if type(value) is str:
        return visible(value)
    if value is None:
        return ""
    return value


def _bytecode_cache() -> FileSystemBytecodeCache | None:
    """Compiled templates in Jinja's private per-user temporary directory (it checks owner and
    mode), never in the site or results directory, which may come from elsewhere."""
    try:
        return FileSystemBytecodeCache()
    except RuntimeError:
        return None


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("kbisect.browser", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
        auto_reload=False,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters.update(when=when, errname=errname, css=css, vjoin=vjoin)
    env.globals.update(st=st, cls=cls, log=log_section, kv_rows=kv_rows)
    return env


def line_id(line: Sequence[str]) -> str:
    return digest(json.dumps(list(line)), 8)


def line_page(line: Sequence[str]) -> str:
    return f"lines/{line_id(line)}.html"


def line_block(line: Sequence[str], block: int) -> str:
    return f"lines/{line_id(line)}-{block + 1}.html"


def log_page(relative: str, number: int) -> str:
    return f"log/{digest(relative, 8)}-{number}.html"


def rev_page(run_id: int, tree: str, rev: str) -> str:
    return f"run/{run_id}/rev-{slug(rev)}-{digest(tree + chr(0) + rev, 4)}.html"


def cell_page(run_id: int, cell_id: int) -> str:
    return f"run/{run_id}/cell-{cell_id}.html"


def meta_items(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """A record's metadata as rows to read: lists and flat mappings written out, a list of
    records (a nightly's planned cells) counted, anything deeper shortened."""
    out = []
    for k, v in sorted(meta.items()):
        if isinstance(v, str):
            shown = v
        elif isinstance(v, list) and all(isinstance(x, str | int | float) for x in v):
            shown = ", ".join(map(str, v))
        elif isinstance(v, list):
            shown = f"{len(v)} planned" if k == "cells" else f"{len(v)} entries"
        elif isinstance(v, dict) and all(isinstance(x, str | int | float) for x in v.values()):
            shown = ", ".join(f"{a}={b}" for a, b in sorted(v.items()))
        else:
            shown = json.dumps(v, ensure_ascii=False)
        out.append((str(k), shown if len(shown) <= 300 else shown[:300] + " [...]"))
    return out


def layout_key(env: Environment) -> str:
    """Changes whenever anything that shapes pages changes: kbisect, the templates, the code
    that builds pages in Python (this package's modules), limits."""
    assert env.loader is not None
    sources = [env.loader.get_source(env, name)[0] for name in sorted(env.loader.list_templates())]
    code = [digest(p.read_bytes()) for p in sorted(Path(__file__).parent.glob("*.py"))]
    return key_of(
        LAYOUT,
        __version__,
        sources,
        code,
        HISTORY_RUNS,
        NOTABLE_MAX,
        logs_module.LOG_PAGE_LINES,
        logs_module.INLINE_MAX_LINES,
        logs_module.INLINE_MAX_BYTES,
        logs_module.MAX_LOG_BYTES,
    )
