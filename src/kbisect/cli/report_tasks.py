"""`kbisect report`: an experiment's findings as a document to paste into a reply."""

from __future__ import annotations

import os
from pathlib import Path

from invoke.context import Context

from kbisect.browser import SITE_DIR
from kbisect.browser.findings import as_json, findings_page, gather
from kbisect.browser.findings_text import markdown
from kbisect.cli.arguments import run_id
from kbisect.cli.common import TaskResult, project, say, warn
from kbisect.cli.common import task as kb_task
from kbisect.config import Project
from kbisect.errors import UserError
from kbisect.results.store import ResultsStore


def _experiment_named(p: Project, name: str | None) -> str:
    known = ", ".join(sorted(p.experiments)) or "none"
    if not name:
        raise UserError(f"--experiment is required (experiments: {known})")
    if name not in p.experiments:
        raise UserError(f"no experiment {name!r} (experiments: {known})")
    return name


def _links(site: Path, output: str | None, links: str | None) -> str | None:
    """Where the report's links to cells start: as given, else the site's directory relative
    to the report file (or to the working directory, for stdout); None for `none`."""
    if links == "none":  # a report kept where the site is not, e.g. in the repository
        return None
    if links is not None:
        return links if not links or links.endswith("/") else links + "/"
    where = Path(output).resolve().parent if output else Path.cwd()
    return Path(os.path.relpath(site.resolve(), where)).as_posix() + "/"


@kb_task(
    help={
        "experiment": "The experiment (seeds/NAME/experiment.yaml).",
        "output": "Write the Markdown to this file (default: stdout; --json prints on stdout).",
        "since": "Only runs from this one on (its id; see the index of the site).",
        "host": "Only the cells of this host.",
        "links": "Where links to cells start: the site's URL or path (default: the site's "
        "directory relative to the report); `none`: name the runs and cells, link nothing.",
    },
    checks={"since": run_id},
)
def report(
    c: Context,
    experiment: str | None = None,
    output: str | None = None,
    since: int | None = None,
    host: str | None = None,
    links: str | None = None,
    json: bool = False,
    root: str | None = None,
) -> TaskResult | None:
    """Write an experiment's findings: the question, the variants (with where they were
    posted), per variant and subtest how often it failed over every run and host and whether
    that is what the experiment expects, the errno or signal seen, the kernels, Xen versions
    and host fingerprints, and links to the cells in the rendered site (`results.render`
    renders the same as findings/NAME.html). Markdown, short enough to paste into a reply on
    the list. An experiment without results gets a report that says so. See docs/browser.md.
    """
    p = project(root)
    name = _experiment_named(p, experiment)
    with ResultsStore(p.results_dir) as store:
        found = gather(store, p.experiments[name], since=since, host=host)
    site = p.results_dir / SITE_DIR
    base = _links(site, output if not json else None, links)
    if json:
        return TaskResult(as_json(found, base or ""))
    text = markdown(found, base)
    if output:
        out = Path(output)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text)
            tmp.replace(out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write {output}: {exc.strerror}") from None
        warn(f"report: {output} ({found.cells} cells); page: {site / findings_page(name)}")
    else:
        say(text.rstrip("\n"))
    return None
