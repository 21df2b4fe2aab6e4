"""The command line: one invoke task collection, used by tasks.py (`invoke ...`) and by the
`kbisect` console script (invoke's Program), so both spell the same commands."""

from __future__ import annotations

from invoke.collection import Collection

from kbisect import __version__
from kbisect.cli import (
    bisect_tasks,
    browser_tasks,
    build_tasks,
    config_tasks,
    demo_tasks,
    lab_tasks,
    machine_tasks,
    pipeline_tasks,
    report_tasks,
    run_tasks,
    tree_tasks,
)
from kbisect.cli.program import KbisectProgram

ns = Collection()
ns.add_task(config_tasks.check)
ns.add_task(pipeline_tasks.nightly)
ns.add_task(tree_tasks.checkout)
variants_collection = Collection("variants", tree_tasks.variants_import)
variants_collection.add_task(tree_tasks.variants, default=True)
ns.add_collection(variants_collection)
ns.add_task(build_tasks.build)
ns.add_task(build_tasks.builds)
ns.add_task(lab_tasks.deploy)
ns.add_task(run_tasks.stress)
ns.add_task(run_tasks.run)
ns.add_collection(Collection("tree", tree_tasks.import_, tree_tasks.revs))
ns.add_collection(Collection("demo", demo_tasks.history))
ns.add_task(browser_tasks.browse)
ns.add_collection(Collection("results", browser_tasks.results_render, browser_tasks.results_diff))
ns.add_task(report_tasks.report)
bisect_collection = Collection("bisect", bisect_tasks.bisect_log, bisect_tasks.bisect_replay)
bisect_collection.add_task(bisect_tasks.bisect, default=True)
ns.add_collection(bisect_collection)
ns.add_collection(
    Collection(
        "lab",
        lab_tasks.lab_up,
        lab_tasks.lab_down,
        lab_tasks.lab_status,
        lab_tasks.lab_trust,
        lab_tasks.lab_clean,
        lab_tasks.lab_leases,
        lab_tasks.lab_lease,
        lab_tasks.lab_release,
        machine_tasks.lab_power,
        machine_tasks.lab_image,
        machine_tasks.lab_console,
    )
)
ns.add_collection(Collection("config", config_tasks.reference))


def program() -> KbisectProgram:
    """The `kbisect` program over the task collection."""
    return KbisectProgram(
        namespace=ns,
        version=__version__,
        name="kbisect",
        binary="kbisect",
        binary_names=["kbisect"],
    )


def main() -> None:
    """Entry point of the `kbisect` console script."""
    program().run()
