"""Tasks for the results browser: `results.render`, `results.diff` and `browse`."""

from __future__ import annotations

import os
from pathlib import Path

from invoke.context import Context

from kbisect.browser import SITE_DIR, render_diff, render_site, serve
from kbisect.browser.expect import Expected, expectations_of
from kbisect.cli.arguments import port_number, positive_int, run_id
from kbisect.cli.common import project, say
from kbisect.cli.common import task as kb_task
from kbisect.errors import UserError
from kbisect.results.store import ResultsStore

_OUT = "Site directory (default: site/ in the results directory)."
_JOBS = "Processes for a large render (default: the number of CPUs)."


def _results_dir(root: str | None) -> Path:
    return project(root, required=False).results_dir


def _expectations(root: str | None) -> dict[str, dict[str, Expected]]:
    """What the project's experiments expect of their variants (shown against the results)."""
    return expectations_of(project(root, required=False).experiments)


def _out(results: Path, out: str | None) -> Path:
    return Path(out).resolve() if out else results / SITE_DIR


def _render(store: ResultsStore, out: Path, full: bool, jobs: int, root: str | None) -> None:
    report = render_site(
        store,
        out,
        full=full,
        jobs=jobs or os.cpu_count() or 1,
        expectations=_expectations(root),
        experiments=project(root, required=False).experiments,
    )
    say(report.summary())
    if report.largest[1]:
        say(f"largest page rendered: {report.largest[0]} ({report.largest[1] / 1024:.0f} KiB)")
    say(f"site: {out / 'index.html'}")


@kb_task(
    help={
        "out": _OUT,
        "full": "Read and render every run again (still writing only the pages that changed).",
        "jobs": _JOBS,
    },
    checks={"jobs": positive_int},
    name="render",
)
def results_render(
    c: Context, out: str | None = None, full: bool = False, jobs: int = 0, root: str | None = None
) -> None:
    """Render the results store as a static site (works from file:// and from a web server).

    The site (default: results/site/, open index.html) has runs and bisections, run matrices
    with a filter, variants by subtest, cells, histories, builds and diffs. Incremental: only
    runs, lines, builds and bisections whose inputs changed are rendered, and a page is written
    only when its content changed. Prints the pages written, unchanged and not rendered, and
    the largest page. `--full` reads and renders everything again. See docs/browser.md.
    """
    results = _results_dir(root)
    with ResultsStore(results) as store:
        _render(store, _out(results, out), full, jobs, root)


@kb_task(
    help={
        "a": "The run to compare from (its id; see the index of the site).",
        "b": "The run to compare to.",
        "out": _OUT,
    },
    positional=["a", "b"],
    checks={"a": run_id, "b": run_id},
    name="diff",
)
def results_diff(
    c: Context, a: int, b: int, out: str | None = None, root: str | None = None
) -> None:
    """Compare two runs subtest by subtest (repeats pooled): print what broke, was fixed or
    changed, and what only one of them has; write the same as diff/A-B.html in the site.

    A line tested at another revision in each run is paired. Exit 2 when a run does not exist.
    """
    results = _results_dir(root)
    with ResultsStore(results) as store:
        d, page = render_diff(store, a, b, _out(results, out))
    print(d.text(), end="", flush=True)
    say(f"\npage: {page}")


@kb_task(
    help={
        "out": _OUT,
        "port": "Port on 127.0.0.1 (default: a free one).",
        "no_render": "Serve the site as it is, without rendering it first.",
        "jobs": _JOBS,
    },
    checks={"port": port_number, "jobs": positive_int},
)
def browse(
    c: Context,
    out: str | None = None,
    port: int = 0,
    no_render: bool = False,
    jobs: int = 0,
    root: str | None = None,
) -> None:
    """Render the site (incrementally) and serve it on 127.0.0.1 until Ctrl-C; prints the URL.

    The port is a free one unless `--port`. Only the pages the renderer wrote and the files of
    the results directory the store refers to are served (raw files as plain text), and only to
    requests whose Host is 127.0.0.1 or localhost: never the database under any name, nor the
    manifest, nor a symbolic link out of the results directory; no directory listings; every
    bad request a 4xx. See docs/browser.md.
    """
    results = _results_dir(root)
    site = _out(results, out)
    if not no_render:
        with ResultsStore(results) as store:
            _render(store, site, False, jobs, root)
    elif not (site / "index.html").is_file():
        raise UserError(f"no site in {site}: run `kbisect results.render` first")
    try:
        serve(site, results, port, say)
    except OSError as exc:
        raise UserError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror}") from None
