"""kbisect's bisection side by side with `git bisect run` and git-bayesect, on the same synthetic
histories and the same noisy predicate. Prints figures with their targets; asserts nothing.

python3 bench/bench_bisect.py [--trials 20] [--seeds 1[,2,...]] [--jobs 2]
                              [--cases all|NAME,...] [--no-bayesect] [--venv DIR]

Each history is a linear one made with real git (`git fast-import`, one small file changed per
commit, and a file `pos` holding the commit's position). Commit i is bad iff i >= the culprit; a
bad commit passes with the case's false-pass rate, a good one fails with its false-fail rate, and
the case's untestable commits exit 125 (never the culprit or its parent, so that the answer is
one commit). Culprits and noise are seeded: a run is repeatable. With several seeds (--seeds
1,2,3) the trials of every seed are pooled (each seed's trials are other histories: other
culprits, other noise): the table and the targets are judged on all of them, and a line per case
gives each seed's medians, so that a lucky or unlucky seed shows.

- kbisect: its engine (kbisect.bisect.engine.Bisector) in this process, on the history read by
  git (load_history), the revert check included in its runs;
- `git bisect run`: real git in a clone, with a script as the predicate (exit 125 for
  untestable commits); its runs are the script's calls;
- git-bayesect 1.2 (PyPI), installed into the bench's own virtualenv (--venv; never a dependency
  of kbisect) and driven through its Bisector class (what its `run` command does, without a
  checkout per run) at confidence 0.995; it has no skip in `run`, so the driver records an
  untestable pick as a skip (its `record(index, None)`) and counts the run, and moves a pick that
  is known untestable to the nearest testable commit.

The information bound is log2(commits) / the capacity of the noisy channel (bits per run): no
method can need fewer runs on average. With --trials 20 and 8 cases, about 10 minutes on 2 cores;
--seeds 1,2,3 at --jobs 1, about 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from kbisect.bisect.engine import Bisector
from kbisect.bisect.gitbisect import load_history
from kbisect.bisect.predicates import TrialOutcome, TrialResult
from kbisect.bisect.stats import Policy
from kbisect.results.model import TrialRecord

EPOCH = 1_700_000_000
FILES = 16
BAYESECT = "git-bayesect==1.2"
BAYESECT_CONFIDENCE = 0.995


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    commits: int = 300
    miss: float = 0.0
    """P(pass | bad)."""
    false_fail: float = 0.0
    """P(fail | good)."""
    untestable: int = 0
    """Untestable commits within 15 of the culprit."""
    culprit_at: str = ""
    """'first' (the first commit after the good end) or 'last' (the bad end); else seeded."""


CASES = [
    Case("untestable", "30% false passes, 11 untestable", miss=0.3, untestable=11),
    Case("clean", "noise-free"),
    Case("1000", "1000 commits, 30% false passes", commits=1000, miss=0.3),
    Case("50", "50% false passes", miss=0.5),
    Case("10+2", "10% false passes + 2% false fails", miss=0.1, false_fail=0.02),
    Case("30", "30% false passes", miss=0.3),
    Case("first", "30%, culprit right after good", miss=0.3, culprit_at="first"),
    Case("last", "30%, culprit = the bad end", miss=0.3, culprit_at="last"),
]


@dataclass(frozen=True)
class Trial:
    case: Case
    number: int
    culprit: int
    untestable: tuple[int, ...]
    seed: int
    """The noise's seed."""
    bench_seed: int
    """The --seeds value the trial was drawn from."""


@dataclass
class Outcome:
    tool: str
    case: str
    seed: int
    right: bool
    runs: int
    note: str = ""


# -- the histories and the trials --------------------------------------------------------------


def make_history(path: Path, n: int) -> list[str]:
    """A bare repository with a linear history of n commits; returns the ids, oldest first."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    chunks = []
    for i in range(n):
        message = f"change {i}\n"
        blob = f"line {i}\n"
        pos = f"{i}\n"
        chunks.append(
            f"commit refs/heads/main\nmark :{i + 1}\n"
            f"committer Bench <bench@example.org> {EPOCH + 60 * i} +0000\n"
            f"data {len(message)}\n{message}"
        )
        if i:
            chunks.append(f"from :{i}\n")
        chunks.append(f"M 100644 inline file{i % FILES}.txt\ndata {len(blob)}\n{blob}\n")
        chunks.append(f"M 100644 inline pos\ndata {len(pos)}\n{pos}\n")
    marks = path / "marks"
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet", f"--export-marks={marks}"],
        input="".join(chunks).encode(),
        check=True,
    )
    by_mark = dict(line.split() for line in marks.read_text().splitlines())
    return [by_mark[f":{i + 1}"] for i in range(n)]


def trials_of(case: Case, count: int, seed: int) -> list[Trial]:
    out = []
    for number in range(count):
        rng = random.Random(f"{seed}/{case.name}/{number}")
        n = case.commits
        culprit = {"first": 1, "last": n - 1}.get(case.culprit_at) or rng.randrange(2, n - 1)
        near = [
            i for i in range(max(1, culprit - 15), min(n - 1, culprit + 16))
            if i not in (culprit, culprit - 1)
        ]  # fmt: skip
        chosen = tuple(sorted(rng.sample(near, min(case.untestable, len(near)))))
        out.append(Trial(case, number, culprit, chosen, rng.randrange(1 << 30), seed))
    return out


class Noise:
    """The seeded predicate every tool is given: outcome of a run at position i."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.rng = random.Random(trial.seed)

    def run(self, i: int, fixed: bool = False) -> str:
        """'skip', 'pass' or 'fail'; `fixed`: the culprit is reverted on top."""
        if i in self.trial.untestable:
            return "skip"
        bad = i >= self.trial.culprit and not fixed
        draw = self.rng.random()
        if bad:
            return "pass" if draw < self.trial.case.miss else "fail"
        return "fail" if draw < self.trial.case.false_fail else "pass"


# -- kbisect -----------------------------------------------------------------------------------


class _Journal:
    def recorded(self) -> list[TrialRecord]:
        return []

    def add(self, trial: TrialRecord) -> None:
        pass

    def bisect_log(self, text: str) -> None:
        pass


class _Predicate:
    def __init__(self, noise: Noise, where: dict[str, int]) -> None:
        self.noise, self.where = noise, where

    def describe(self) -> str:
        return "synthetic"

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        fixed = revert is not None and self.where[revert.name] == self.noise.trial.culprit
        outcome = self.noise.run(self.where[commit], fixed)
        return TrialResult(TrialOutcome(outcome), identity=commit)


def run_kbisect(repo: str, trial: Trial, scratch: str) -> Outcome:
    shas = _shas(repo)
    where = {c: i for i, c in enumerate(shas)}

    def make_revert(commit: str) -> Path:
        patch = Path(scratch) / commit
        patch.write_text(commit)
        return patch

    result = Bisector(
        history=load_history(Path(repo), [shas[0]], shas[-1]),
        predicate=_Predicate(Noise(trial), where),
        policy=Policy(),
        journal=_Journal(),
        make_revert=make_revert,
        say=lambda _: None,
    ).run()
    right = result.culprit == shas[trial.culprit]
    status = result.status.value
    return Outcome("kbisect", trial.case.name, trial.bench_seed, right, result.runs, status)


_SHAS: dict[str, list[str]] = {}


def _shas(repo: str) -> list[str]:
    if repo not in _SHAS:
        _SHAS[repo] = json.loads((Path(repo) / "shas.json").read_text())
    return _SHAS[repo]


# -- git bisect run ----------------------------------------------------------------------------

_SCRIPT = """import json, os, random, sys
cfg = json.load(open(os.environ["BENCH_TRIAL"]))
count = os.environ["BENCH_TRIAL"] + ".calls"
calls = int(open(count).read()) if os.path.exists(count) else 0
open(count, "w").write(str(calls + 1))
i = int(open("pos").read())
if i in cfg["untestable"]:
    sys.exit(125)
draw = random.Random(cfg["seed"] * 1000 + calls).random()
if i >= cfg["culprit"]:
    sys.exit(0 if draw < cfg["miss"] else 1)
sys.exit(1 if draw < cfg["false_fail"] else 0)
"""


def run_git(repo: str, trial: Trial, scratch: str) -> Outcome:
    shas = _shas(repo)
    work = Path(scratch) / f"clone-{Path(repo).name}"
    if not work.exists():
        subprocess.run(["git", "clone", "-q", repo, str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "bisect", "reset", "-q"], capture_output=True)
    cfg = Path(scratch) / "trial.json"
    Path(f"{cfg}.calls").unlink(missing_ok=True)
    cfg.write_text(
        json.dumps(
            {"untestable": list(trial.untestable), "seed": trial.seed, "culprit": trial.culprit,
             "miss": trial.case.miss, "false_fail": trial.case.false_fail}
        )
    )  # fmt: skip
    script = Path(scratch) / "predicate.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "BENCH_TRIAL": str(cfg)}
    git = ["git", "-C", str(work)]
    subprocess.run([*git, "bisect", "start", shas[-1], shas[0]], check=True, capture_output=True)
    done = subprocess.run(
        [*git, "bisect", "run", sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    calls = int(Path(f"{cfg}.calls").read_text()) if Path(f"{cfg}.calls").exists() else 0
    first = next(
        (ln.split()[0] for ln in done.stdout.splitlines() if "is the first bad commit" in ln), None
    )
    subprocess.run([*git, "bisect", "reset", "-q"], capture_output=True)
    note = "" if first else "no single first bad commit"
    right = first == shas[trial.culprit]
    return Outcome("git bisect run", trial.case.name, trial.bench_seed, right, calls, note)


# -- git-bayesect ------------------------------------------------------------------------------

_DRIVER = """import json, random, sys
import numpy as np
from git_bayesect import Bisector
out = []
for t in json.load(sys.stdin):
    n, culprit = t["commits"], t["culprit"]
    untestable, known = set(t["untestable"]), set()
    rng = random.Random(t["seed"])
    b = Bisector(np.ones(n))  # index 0 is the newest commit, as git-bayesect orders them
    runs = 0
    while b.distribution.max() < t["confidence"] and runs < 1000:
        pos = n - 1 - b.select()
        if pos in known:
            pos = min((p for p in range(n) if p not in known), key=lambda p: (abs(p - pos), p))
        runs += 1
        if pos in untestable:
            known.add(pos)
            b.record(n - 1 - pos, None)
            continue
        draw = rng.random()
        if pos >= culprit:
            failed = draw >= t["miss"]
        else:
            failed = draw < t["false_fail"]
        b.record(n - 1 - pos, failed)
    found = n - 1 - int(np.argmax(b.distribution))
    out.append({"right": found == culprit, "runs": runs})
json.dump(out, sys.stdout)
"""


def bayesect_python(venv: Path) -> Path | None:
    """The bench virtualenv's python with git-bayesect (made on first use)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import git_bayesect"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing {BAYESECT} into {venv} (the bench's own virtualenv)", flush=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode == 0:
        pip = [str(python), "-m", "pip", "install", "-q", BAYESECT]
        made = subprocess.run(pip, capture_output=True, text=True)
    if made.returncode != 0:
        print(f"git-bayesect not available: {made.stderr.strip()[-300:]}")
        return None
    return python


def run_bayesect(python: Path, trials: list[Trial]) -> list[Outcome]:
    payload = [
        {"commits": t.case.commits, "culprit": t.culprit, "untestable": list(t.untestable),
         "seed": t.seed, "miss": t.case.miss, "false_fail": t.case.false_fail,
         "confidence": BAYESECT_CONFIDENCE}
        for t in trials
    ]  # fmt: skip
    done = subprocess.run(
        [str(python), "-c", _DRIVER], input=json.dumps(payload), capture_output=True, text=True,
        check=True, timeout=3600,
    )  # fmt: skip
    got = json.loads(done.stdout)
    return [
        Outcome("git-bayesect", t.case.name, t.bench_seed, g["right"], g["runs"])
        for t, g in zip(trials, got, strict=True)
    ]


# -- the bound ---------------------------------------------------------------------------------


def _h2(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def capacity(miss: float, false_fail: float) -> float:
    """Bits per run of the channel bad/good -> fail/pass, the best input mix (a grid search)."""
    best = 0.0
    for k in range(1, 1000):
        q = k / 1000  # P(the run is at a bad commit)
        fail = q * (1 - miss) + (1 - q) * false_fail
        best = max(best, _h2(fail) - q * _h2(miss) - (1 - q) * _h2(false_fail))
    return best


def bound(case: Case) -> float:
    return math.log2(case.commits) / capacity(case.miss, case.false_fail)


# -- running and printing ----------------------------------------------------------------------


def _worker(args: tuple[str, str, Trial, str]) -> Outcome:
    tool, repo, trial, scratch_root = args
    scratch = Path(scratch_root) / f"{tool.replace(' ', '-')}-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    if tool == "kbisect":
        return run_kbisect(repo, trial, str(scratch))
    return run_git(repo, trial, str(scratch))


def _p90(runs: list[int]) -> int:
    ordered = sorted(runs)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def table(cases: list[Case], results: list[Outcome], tools: list[str]) -> None:
    head = f"{'case':<36} {'bound':>5}"
    for tool in tools:
        head += f" | {tool:^21}"
    print(head)
    sub = f"{'':<36} {'':>5}" + "".join(f" | {'right':>6} {'med':>5} {'p90':>5}  " for _ in tools)
    print(sub)
    print("-" * len(head))
    for case in cases:
        line = f"{case.label:<36} {bound(case):>5.1f}"
        for tool in tools:
            got = [r for r in results if r.case == case.name and r.tool == tool]
            if not got:
                line += f" | {'-':>21}"
                continue
            runs = [r.runs for r in got]
            right = f"{sum(r.right for r in got)}/{len(got)}"
            line += f" | {right:>6} {statistics.median(runs):>5.1f} {_p90(runs):>5}  "
        print(line)


def per_seed(cases: list[Case], results: list[Outcome], tools: list[str]) -> None:
    """Each seed's median runs per case and tool (right/trials when not all were right)."""
    seeds = sorted({r.seed for r in results})
    print(f"\nmedian runs per seed ({', '.join(map(str, seeds))}), " + " / ".join(tools) + ":")
    for case in cases:
        cells = []
        for tool in tools:
            shown = []
            for seed in seeds:
                got = [r for r in results if (r.case, r.tool, r.seed) == (case.name, tool, seed)]
                if not got:
                    continue
                text = f"{statistics.median(r.runs for r in got):g}"
                if not all(r.right for r in got):
                    text += f" ({sum(r.right for r in got)}/{len(got)})"
                shown.append(text)
            cells.append(", ".join(shown) or "-")
        print(f"  {case.label:<36} " + " / ".join(cells))


def goals(results: list[Outcome]) -> None:
    def median(tool: str, case: str) -> float:
        return statistics.median(r.runs for r in results if r.tool == tool and r.case == case)

    def right(tool: str, case: str) -> float:
        got = [r.right for r in results if r.tool == tool and r.case == case]
        return sum(got) / len(got)

    mine = [r for r in results if r.tool == "kbisect"]
    print(f"\nkbisect right {sum(r.right for r in mine)}/{len(mine)} (target: every time)")
    cases = {r.case for r in mine}
    if "untestable" in cases:
        m = median("kbisect", "untestable")
        ok = "met" if m <= 30 else "NOT met"
        print(f"30% + untestable: median {m:.1f} runs (target <= 30: {ok})")
    if "clean" in cases and any(r.tool == "git bisect run" for r in results):
        m, g = median("kbisect", "clean"), median("git bisect run", "clean")
        ok = "met" if m <= 2 * g else "NOT met"
        print(f"noise-free: median {m:.1f} vs git bisect run {g:.1f} (target <= 2x: {ok})")
    flaky = [c for c in ("untestable", "1000", "50", "10+2", "30") if c in cases]
    for case in flaky:
        if not any(r.tool == "git-bayesect" and r.case == case for r in results):
            continue
        m, b = median("kbisect", case), median("git-bayesect", case)
        fewer = 1 - m / b
        met = fewer >= 0.2 and right("kbisect", case) >= right("git-bayesect", case)
        print(
            f"{case}: {fewer:.0%} fewer runs than git-bayesect @{BAYESECT_CONFIDENCE}, right "
            f"{right('kbisect', case):.0%} vs {right('git-bayesect', case):.0%} "
            f"(target >= 20% fewer at equal or better accuracy: {'met' if met else 'NOT met'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--seeds", "--seed", default="1", help="one seed, or several to pool: 1,2,3"
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--cases", default="all", help=",".join(c.name for c in CASES))
    parser.add_argument("--no-bayesect", action="store_true")
    parser.add_argument("--no-git", action="store_true")
    parser.add_argument(
        "--venv", type=Path, default=Path(tempfile.gettempdir()) / "kbisect-bench-venv"
    )
    args = parser.parse_args()
    cases = CASES if args.cases == "all" else [c for c in CASES if c.name in args.cases.split(",")]
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected integers separated by commas")
    python = None if args.no_bayesect else bayesect_python(args.venv)
    tools = ["kbisect"] + ([] if args.no_git else ["git bisect run"])
    began = time.monotonic()
    results: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="kbisect-bench-bisect-") as tmp:
        repos: dict[int, str] = {}
        for n in sorted({c.commits for c in cases}):
            path = Path(tmp) / f"h{n}.git"
            shas = make_history(path, n)
            (path / "shas.json").write_text(json.dumps(shas))
            repos[n] = str(path)
        every = [t for case in cases for seed in seeds for t in trials_of(case, args.trials, seed)]
        work = [(tool, repos[t.case.commits], t, tmp) for t in every for tool in tools]
        with ProcessPoolExecutor(args.jobs) as pool:
            results += list(pool.map(_worker, work, chunksize=4))
        if python is not None:
            results += run_bayesect(python, every)
            tools.append("git-bayesect")
        shutil.rmtree(Path(tmp) / "scratch", ignore_errors=True)
    pooled = f"seeds {args.seeds} pooled" if len(seeds) > 1 else f"seed {seeds[0]}"
    print(
        f"\n{args.trials * len(seeds)} trials per case ({args.trials} per seed, {pooled}); "
        f"kbisect at confidence "
        f"{Policy().confidence} (runs include its revert check), git-bayesect at "
        f"{BAYESECT_CONFIDENCE}; right = the reported first bad commit is the true one; "
        "med, p90 = predicate runs\n"
    )
    table(cases, results, tools)
    if len(seeds) > 1:
        per_seed(cases, results, tools)
    goals(results)
    wrong = [asdict(r) for r in results if not r.right and r.tool == "kbisect"]
    for r in wrong:
        print(f"  kbisect wrong: {r}")
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
