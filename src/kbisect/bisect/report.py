"""A bisection's report: JSON (the source for everything else), text for the terminal and mail,
and JUnit (through kbisect.results.junit).

`posterior` in the JSON is the search step by step, for plots: `commits` is how many positions
the posterior is over (the ends included, in topological order, the good ends first), and `runs`
has one entry per predicate run: `run` (1-based), `position` and `commit` run, its `outcome`,
the likeliest first bad commit after it (`best`, `best_position`; `best` is null for "the bad end
is good"), its probability `p_best`, the posterior's `entropy` in bits, and `top`: up to eight
[position, commit, probability] of the likeliest hypotheses (probability at least 0.001).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from kbisect.bisect.engine import BisectResult, StepVerdict
from kbisect.bisect.request import BisectRequest
from kbisect.results.junit import write_bisection_junit
from kbisect.tree.git import Git
from kbisect.tree.repos import TreeRepo


def describe_commit(tree: TreeRepo, commit: str) -> dict[str, Any]:
    """Subject, author, date and files of a commit."""
    with Git(tree.path) as g:
        head = g.run("show", "-s", "--format=%H%n%s%n%an <%ae>%n%aI", commit).splitlines()
        files = g.run("show", "--format=", "--name-only", "-m", "--first-parent", commit)
    return {
        "commit": head[0],
        "subject": head[1] if len(head) > 1 else "",
        "author": head[2] if len(head) > 2 else "",
        "date": head[3] if len(head) > 3 else "",
        "files": [f for f in files.splitlines() if f.strip()],
    }


def _verdict(v: StepVerdict) -> dict[str, Any]:
    data = asdict(v)
    data["runs"] = v.runs
    data["confidence"] = round(v.confidence, 4)
    return data


def to_json(
    result: BisectResult, request: BisectRequest, tree: TreeRepo, bisection_id: int
) -> dict[str, Any]:
    culprit = describe_commit(tree, result.culprit) if result.culprit else None
    suspects = [describe_commit(tree, c) for c in result.suspects]
    data: dict[str, Any] = {
        "id": bisection_id,
        "status": result.status.value,
        "exit_code": result.exit_code,
        "message": result.message,
        "tree": request.tree,
        "good": request.good,
        "bad": request.bad,
        "good_given": request.good_given,
        "bad_given": request.bad_given,
        "variant": request.variant,
        "predicate": request.predicate,
        "command": request.command,
        "job": request.job,
        "test": request.test,
        "host": request.host,
        "culprit": culprit,
        "suspects": suspects,
        "ends": [_verdict(v) for v in result.ends],
        "steps": [_verdict(v) for v in result.steps],
        "validations": [
            {
                "name": check.name,
                "expected": check.expected,
                "verdict": check.verdict.verdict if check.verdict else None,
                "ok": check.ok,
                "note": check.note,
                "detail": _verdict(check.verdict) if check.verdict else None,
            }
            for check in result.validations
        ],
        "flags": list(result.flags),
        "confidence": result.confidence,
        "restarts": result.restarts,
        "runs": result.runs,
        "predicate_seconds": result.predicate_seconds,
        "miss_rate": result.miss_rate,
        "false_alarm_rate": result.false_alarm_rate,
        "posterior": {"commits": result.commits, "runs": result.trace},
    }
    data["text"] = to_text(data)
    return data


def to_text(data: dict[str, Any]) -> str:
    lines = [f"bisection {data['id']}: {data['status'].upper()}: {data['message']}"]
    culprit = data.get("culprit")
    if culprit:
        lines += [
            "",
            f"culprit  {culprit['commit']}",
            f"subject  {culprit['subject']}",
            f"author   {culprit['author']}  ({culprit['date']})",
            "files    "
            + ", ".join(culprit["files"][:12])
            + (f" and {len(culprit['files']) - 12} more" if len(culprit["files"]) > 12 else ""),
        ]
    for suspect in data.get("suspects", []):
        lines.append(f"suspect  {suspect['commit'][:12]} {suspect['subject']}")
    for flag in data.get("flags", []):
        lines.append(f"note     {flag}")
    lines += ["", "verdict  commit        runs  pass  fail  skip  err  confidence  phase"]
    for item in [*data.get("ends", []), *data.get("steps", [])]:
        lines.append(_row(item, item["phase"]))
    if data.get("validations"):
        lines += ["", "validation"]
        for check in data["validations"]:
            ok = {True: "ok", False: "CONTRADICTED", None: "not run"}[check["ok"]]
            got = check["verdict"] or "-"
            note = f" ({check['note']})" if check["note"] else ""
            lines.append(
                f"  {check['name']:<8} expected {check['expected']:<4} got {got:<4} {ok}{note}"
            )
    lines += [
        "",
        f"{data['runs']} predicate runs ({data['predicate_seconds']} s), "
        f"{len(data.get('steps', []))} commits between the ends tried, "
        f"probability {data['confidence']:.3f}; estimated chance a bad commit passes "
        f"{data['miss_rate']:.3f}, a good one fails {data['false_alarm_rate']:.3f}",
    ]
    return "\n".join(lines) + "\n"


def _row(item: dict[str, Any], phase: str) -> str:
    return (
        f"{item['verdict']:<8} {item['commit'][:12]}  {item['runs']:>4}  {item['passes']:>4}  "
        f"{item['fails']:>4}  {item['skips']:>4}  {item['errors']:>3}  "
        f"{item['confidence']:>10.4f}  {phase}"
    )


def write_junit(data: dict[str, Any], path: Path) -> Path:
    return write_bisection_junit(data, path)
