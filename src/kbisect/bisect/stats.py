"""How hard a bisection looks (Policy), and what a run at a commit is expected to cost.

The model itself (Beta priors on the two noise rates, the posterior over the culprit's position)
is kbisect.bisect.posterior.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_BUILD_SECONDS = 600.0
"""A compile's cost when the store has timed no build of the profile."""
DEFAULT_BOOT_SECONDS = 60.0
"""A reboot's cost when the host has no recorded boot."""

RETIRED = frozenset({"alpha", "max_runs", "validate_runs", "restarts"})
"""Policy names of the step-by-step engine, found in stored requests: ignored on resume."""


@dataclass(frozen=True)
class Policy:
    """How hard to look."""

    confidence: float = 0.99
    """Stop when the likeliest first bad commit has this posterior probability."""
    min_runs: int = 1
    """The --repeat floor: runs at a commit, once it is run, before the search moves on."""
    end_runs: int = 0
    """Runs at each end before the search (0: as many as the evidence asks, maybe none)."""
    run_budget: int = 250
    """Predicate runs at most (--max-runs); then the bisection stops (aborted)."""
    infra_retries: int = 2
    """Infrastructure errors tolerated at one commit before it counts as untestable."""
    budget_seconds: float | None = None
    revert_runs: int = 6
    """Runs at most of the bad end with the culprit reverted (the revert check)."""
    deterministic: bool = False
    """The predicate always gives the same answer for a commit (a build): one run each."""

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence {self.confidence}: expected more than 0.5, less than 1")

    @classmethod
    def stored(cls, data: Mapping[str, Any]) -> Policy:
        """The policy of a stored request (names of older kbisect versions are dropped)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - RETIRED
        if unknown:
            raise ValueError(f"unknown policy settings: {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in known})


class TrialCosts:
    """Seconds a run at a commit is expected to take, from what kbisect knows: a commit run
    before in this bisection is built (its build is in the store), so it costs the run alone;
    one that needs a compile adds the build time; one that is not what the host runs now adds
    a boot. The run, build and boot times start as given and follow what the runs took."""

    def __init__(
        self,
        run_seconds: float = 60.0,
        build_seconds: float = 0.0,
        boot_seconds: float = 0.0,
        built: Callable[[str], bool] | None = None,
    ) -> None:
        self.run_seconds = run_seconds
        self.build_seconds = build_seconds
        self.boot_seconds = boot_seconds
        self.built = built or (lambda _: False)
        self._seen: set[str] = set()
        self._last: str | None = None
        self._repeat: list[float] = []
        self._fresh: list[float] = []

    def __call__(self, commit: str) -> float:
        cost = self._typical(self._repeat, self.run_seconds)
        if commit not in self._seen and not self.built(commit):
            extra = self._typical(self._fresh, cost + self.build_seconds) - cost
            cost += max(extra, 0.0)
        if commit != self._last:
            cost += self.boot_seconds
        return max(cost, 1e-3)

    def ran(self, commit: str, seconds: float) -> None:
        """Learn from a run that ended."""
        (self._repeat if commit in self._seen else self._fresh).append(seconds)
        self._seen.add(commit)
        self._last = commit

    @staticmethod
    def _typical(values: list[float], default: float) -> float:
        if not values:
            return default
        ordered = sorted(values[-9:])
        return ordered[len(ordered) // 2]


@dataclass(frozen=True)
class BuildFacts:
    """What the artifact store says about builds of one (tree, variant, profile): the commits
    built already, and the typical compile time (None when none was timed)."""

    built: frozenset[str]
    build_seconds: float | None

    @classmethod
    def of(
        cls,
        metas: Iterable[Mapping[str, Any]],
        *,
        tree: str,
        variant: str,
        profile: str,
        identity: Mapping[str, Any],
    ) -> BuildFacts:
        """From the artifacts' meta.json: a commit counts as built only when its artifact is
        of the same tree, variant and profile (its identity too: a changed config rebuilds);
        the compile time is the median over every timed build of the profile."""
        same = json.dumps(identity, sort_keys=True)
        built: set[str] = set()
        durations: list[float] = []
        for meta in metas:
            if meta.get("profile") != profile:
                continue
            seconds = meta.get("duration_s")
            if isinstance(seconds, int | float) and seconds > 0:
                durations.append(float(seconds))
            current = json.dumps(meta.get("profile_identity"), sort_keys=True) == same
            if current and meta.get("tree") == tree and meta.get("variant") == variant:
                built.add(str(meta.get("commit")))
        typical = statistics.median(durations) if durations else None
        return cls(frozenset(built), typical)

    def costs(self, run_seconds: float, boot_seconds: float) -> TrialCosts:
        """The cost model of a bisection that builds (and boots, when boot_seconds > 0)."""
        build = DEFAULT_BUILD_SECONDS if self.build_seconds is None else self.build_seconds
        return TrialCosts(run_seconds, build, boot_seconds, built=self.built.__contains__)
