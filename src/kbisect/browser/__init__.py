"""The results browser: a static site rendered from the results store, and a local server.

- ``render_site(store, out)`` writes the site (``results/site`` by default), incrementally;
- ``diff_runs(store, a, b)`` compares two runs (``RunDiff.text()`` for a terminal);
- ``serve(site, results_dir)`` serves it on 127.0.0.1 without leaving the results directory.
"""

from kbisect.browser.diff import RunDiff, diff_runs, render_diff
from kbisect.browser.pages import SITE_DIR
from kbisect.browser.render import RenderReport, render_site
from kbisect.browser.serve import serve

__all__ = [
    "SITE_DIR",
    "RenderReport",
    "RunDiff",
    "diff_runs",
    "render_diff",
    "render_site",
    "serve",
]
