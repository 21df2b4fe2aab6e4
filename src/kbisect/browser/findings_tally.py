"""What a set of an experiment's cells says toward its findings, as plain JSON data (a "tally"),
and tallies merged: the findings of all the cells are made from the merged tally of any split
of them. The findings page keeps a tally per run, so a render reads only the cells of the runs
that changed since the last one (kbisect.browser.findings_page).

A tally holds, per variant (its name without the experiment's prefix): its cell count; each
subtest's first place (cell id, position in the cell); per subtest and host the pooled counts
(passes, fails, errors, skips); per host the cells that ran their subtests without kernel
evidence of a failure (they pass the pseudo-subtest ``cell`` when it exists); and per subtest
each distinct way it failed, [tag, first cell that shows it, detail, its run]. Then cells per
run, and per revision and per host the distinct facts the cells' commits and fingerprints give.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kbisect.browser.expect import failures_of
from kbisect.lab.probe import BUILD_PARAM
from kbisect.pipeline.regressions import pool
from kbisect.results.model import CellRecord, ResultStatus

Tally = dict[str, Any]

PER_CELL_FACTS = ("lava_job", "lava_job_url")  # which LAVA job ran a cell: not a host fact


def _variant() -> dict[str, Any]:
    return {"cells": 0, "order": {}, "pools": {}, "clean": {}, "ways": {}}


def tally(cells: Sequence[CellRecord], prefix: str) -> Tally:
    """The tally of ``cells`` (in id order), variants named without ``prefix``."""
    variants: dict[str, dict[str, Any]] = {}
    runs: dict[str, int] = {}
    revs: dict[str, dict[str, Any]] = {}
    hosts: dict[str, dict[str, Any]] = {}
    for cell in cells:
        cell_id = int(cell.id or 0)
        v = variants.setdefault(cell.variant.removeprefix(prefix), _variant())
        v["cells"] += 1
        for seq, sub in enumerate(cell.subtests):
            v["order"].setdefault(sub.name, [cell_id, seq])
        if cell.subtests and not (cell.evidence and cell.status is ResultStatus.FAIL):
            v["clean"][cell.host] = v["clean"].get(cell.host, 0) + 1
        run = str(int(cell.run_id or 0))
        runs[run] = runs.get(run, 0) + 1
        rev = revs.setdefault(cell.rev, {"cells": 0, "commits": [], "dom0": [], "xen": []})
        rev["cells"] += 1
        fp = cell.fingerprint
        for field, value in (
            ("commits", cell.commit[:12] if cell.commit else None),
            ("dom0", fp.get("dom0_release")),
            ("xen", fp.get("xen_version")),
        ):
            if value and value not in rev[field]:
                rev[field].append(value)
        host = hosts.setdefault(cell.host, {"cells": 0, "facts": {}})
        host["cells"] += 1
        for key, value in fp.items():
            if key in PER_CELL_FACTS:
                continue
            if key == "dom0_cmdline":  # the build's own word apart: one line for all builds
                value = " ".join(w for w in value.split() if not w.startswith(BUILD_PARAM))
            if value and value not in host["facts"].setdefault(key, []):
                host["facts"][key].append(value)
    for line, counts in pool(cells).items():
        pools = variants[line.variant.removeprefix(prefix)]["pools"]
        into = pools.setdefault(line.subtest, {}).setdefault(line.host, [0, 0, 0, 0])
        for i, n in enumerate((counts.passes, counts.fails, counts.errors, counts.skips)):
            into[i] += n
    run_of = {int(c.id or 0): int(c.run_id or 0) for c in cells}
    for (name, variant), ways in failures_of(cells).items():
        found = [[tag, cell_id, detail, run_of[cell_id]] for tag, cell_id, detail in ways]
        variants[variant.removeprefix(prefix)]["ways"][name] = found
    return {"variants": variants, "runs": runs, "revs": revs, "hosts": hosts}


def merge(tallies: Iterable[Tally]) -> Tally:
    """One tally of the cells of all ``tallies`` (each of cells none of the others has)."""
    out: Tally = {"variants": {}, "runs": {}, "revs": {}, "hosts": {}}
    for t in tallies:
        for name, v in t["variants"].items():
            into = out["variants"].setdefault(name, _variant())
            into["cells"] += v["cells"]
            for sub, place in v["order"].items():
                known = into["order"].get(sub)
                into["order"][sub] = place if known is None else min(known, place)
            for sub, by_host in v["pools"].items():
                mine = into["pools"].setdefault(sub, {})
                for host, counts in by_host.items():
                    mine[host] = [
                        a + b for a, b in zip(mine.get(host, [0] * 4), counts, strict=True)
                    ]
            _add_counts(into["clean"], v["clean"])
            for sub, ways in v["ways"].items():
                into["ways"].setdefault(sub, []).extend(ways)
        _add_counts(out["runs"], t["runs"])
        for rev, facts in t["revs"].items():
            into = out["revs"].setdefault(rev, {"cells": 0, "commits": [], "dom0": [], "xen": []})
            into["cells"] += facts["cells"]
            for field in ("commits", "dom0", "xen"):
                into[field] += [x for x in facts[field] if x not in into[field]]
        for host, facts in t["hosts"].items():
            into = out["hosts"].setdefault(host, {"cells": 0, "facts": {}})
            into["cells"] += facts["cells"]
            for key, values in facts["facts"].items():
                have = into["facts"].setdefault(key, [])
                have += [x for x in values if x not in have]
    for v in out["variants"].values():
        for sub, ways in v["ways"].items():
            v["ways"][sub] = _first_ways(ways)
    return out


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def _first_ways(ways: list[list[Any]]) -> list[list[Any]]:
    """Each way (tag) once, with the first cell that shows it, in the order they first showed
    (a stable sort: one cell's ways are in one tally, in their order)."""
    out: list[list[Any]] = []
    for way in sorted(ways, key=lambda w: int(w[1])):
        if all(w[0] != way[0] for w in out):
            out.append(way)
    return out
