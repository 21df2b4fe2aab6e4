"""One posterior over where the first bad commit is, learned from every run.

The commits to bisect are numbered in topological order (parents first): the good ends, then the
commits reachable from the bad end but not from a good end. A hypothesis is "commit h is the
first bad commit": then a commit is bad exactly when h is among its ancestors (or is it). Two more
hypotheses say the ends do not reproduce: "a good end is itself bad" (h is a good end) and "the
bad end is good" (h is NONE, the last index). They get a small prior (`Priors.ends`); the commits
in between share the rest equally.

The predicate is noisy: a bad commit passes with the unknown rate `miss`, a good one fails with
the unknown rate `false_alarm`. Each has a Beta prior and is integrated out exactly: under a
hypothesis the runs split into those at bad commits and those at good commits, and each side's
passes and fails are Beta-binomial. So every run, at the ends or anywhere else, teaches both the
culprit's position and the noise, and no rate is learned only from commits already decided.

The next commit to run is the one whose run tells most about the hypothesis (the mutual
information of its outcome, in bits), divided by what the run costs. The search stops when one
hypothesis has the asked confidence, or when the likeliest hypotheses cannot be told apart by any
commit that can still be tested (untestable commits around the culprit: the suspects).

Everything here is arithmetic on lists: no git, no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

TINY = 1e-300


Mixture = tuple[tuple[float, float, float], ...]
"""A prior on a rate: (weight, alpha, beta) of each Beta component."""


@dataclass(frozen=True)
class Priors:
    miss: Mixture = ((0.5, 0.02, 20.0), (0.5, 1.0, 3.0))
    """P(pass | bad): even odds between a deterministic predicate (mean 0.001) and an
    intermittent bug (mean 0.25, worth four runs). With the first, one pass at a commit
    that failed elsewhere says much; the runs soon tell which of the two it is."""
    false_alarm: Mixture = ((1.0, 0.05, 4.95),)
    """P(fail | good): mean 0.01 (infrastructure trouble is ERROR, not a fail)."""
    ends: float = 0.02
    """Prior that the good end is in fact bad, and again that the bad end is in fact good."""


DETERMINISTIC = Priors(miss=((1.0, 0.02, 20.0),), false_alarm=((1.0, 0.02, 20.0),))
"""For a predicate that cannot be flaky (a build): each rate has mean 0.001."""


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _marginal(prior: Mixture, hits: float, others: float) -> tuple[float, float]:
    """log P(`hits` and `others`) with the rate of a hit integrated out, and the predicted
    chance that the next run is an `other`."""
    logs = [math.log(w) + _log_beta(a + hits, b + others) - _log_beta(a, b) for w, a, b in prior]
    top = max(logs)
    weights = [math.exp(x - top) for x in logs]
    total = sum(weights)
    nxt = sum(
        wt * (b + others) / (a + b + hits + others)
        for wt, (_, a, b) in zip(weights, prior, strict=True)
    )
    return top + math.log(total), nxt / total


def _h2(p: float) -> float:
    """Binary entropy in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _bits(mask: int) -> list[int]:
    """The indices of the set bits of `mask`, lowest first."""
    text = bin(mask)[:1:-1]
    return [i for i, ch in enumerate(text) if ch == "1"]


class Topology:
    """Which commits are bad under each hypothesis. `anc[j]` is the bit set of commit j's
    ancestors among the positions (itself included); a linear range has the fast paths."""

    def __init__(self, parents: Sequence[Sequence[int]]) -> None:
        self.size = len(parents)
        self.linear = all(list(ps) == ([i - 1] if i else []) for i, ps in enumerate(parents))
        self.anc: list[int] = []
        if not self.linear:
            for i, ps in enumerate(parents):
                mask = 1 << i
                for p in ps:
                    if p >= i:
                        raise ValueError(f"position {i}: parent {p} is not before it")
                    mask |= self.anc[p]
                self.anc.append(mask)
        self._bits: dict[int, list[int]] = {}

    def ancestors(self, j: int) -> list[int]:
        if self.linear:
            return list(range(j + 1))
        if j not in self._bits:
            self._bits[j] = _bits(self.anc[j])
        return self._bits[j]

    def is_bad(self, j: int, h: int) -> bool:
        """Whether commit j is bad when h is the first bad commit (h == size: none is)."""
        if h >= self.size:
            return False
        return h <= j if self.linear else bool(self.anc[j] >> h & 1)

    def bad_side_sums(self, values: Sequence[int]) -> list[float]:
        """For each hypothesis h (NONE included): the sum of values[j] over the commits j that
        are bad under h."""
        out = [0.0] * (self.size + 1)
        if self.linear:
            acc = 0.0
            for h in range(self.size - 1, -1, -1):
                acc += values[h]
                out[h] = acc
            return out
        for j, value in enumerate(values):
            if value:
                for h in self.ancestors(j):
                    out[h] += value
        return out

    def bad_mass(self, weights: Sequence[float], candidates: Sequence[int]) -> list[float]:
        """For each candidate commit j: the sum of weights[h] over the hypotheses under which j
        is bad."""
        if self.linear:
            prefix = [0.0]
            for w in weights[: self.size]:
                prefix.append(prefix[-1] + w)
            return [prefix[j + 1] for j in candidates]
        live = [(h, w) for h, w in enumerate(weights[: self.size]) if w > 1e-15]
        return [sum(w for h, w in live if self.anc[j] >> h & 1) for j in candidates]

    def tells_apart(self, h: int, other: int, testable: Sequence[int]) -> bool:
        """Whether some testable commit is bad under one hypothesis and good under the other."""
        if self.linear:
            lo, hi = min(h, other), max(h, other)
            return any(lo <= j < hi for j in testable)
        return any(self.is_bad(j, h) != self.is_bad(j, other) for j in testable)


@dataclass
class Evidence:
    """What the runs said, per position."""

    passes: list[int]
    fails: list[int]
    untestable: set[int] = field(default_factory=set)

    @classmethod
    def empty(cls, size: int) -> Evidence:
        return cls([0] * size, [0] * size)

    def add(self, position: int, failed: bool) -> None:
        if failed:
            self.fails[position] += 1
        else:
            self.passes[position] += 1

    def runs(self, position: int) -> int:
        return self.passes[position] + self.fails[position]


@dataclass(frozen=True)
class Belief:
    """The posterior after some runs."""

    p: list[float]
    """P(h) for every hypothesis; the last one is NONE (no commit is bad)."""
    fail_if_bad: list[float]
    """For each h: the predicted chance that a bad commit fails, given h and the runs."""
    fail_if_good: list[float]
    miss: float
    """The posterior mean of P(pass | bad) (averaged over the hypotheses)."""
    false_alarm: float
    log_evidence: float = 0.0
    """log P(the runs) under the priors: how well this noise model explains them."""

    @property
    def best(self) -> int:
        return max(range(len(self.p)), key=self.p.__getitem__)

    def entropy(self) -> float:
        return -sum(x * math.log2(x) for x in self.p if x > 0)


def prior_weights(size: int, goods: Sequence[int], priors: Priors) -> list[float]:
    """Prior P(h): the good ends share `ends`, NONE has `ends`, the rest share what is left."""
    inner = size - len(goods)
    weights = [0.0] * (size + 1)
    for g in goods:
        weights[g] = priors.ends / len(goods)
    share = (1 - 2 * priors.ends) / max(inner, 1)
    for h in range(size):
        if h not in goods:
            weights[h] = share
    weights[size] = priors.ends
    return weights


def believe(
    topology: Topology, prior: Sequence[float], evidence: Evidence, priors: Priors
) -> Belief:
    """The posterior over the hypotheses, the noise rates integrated out."""
    bad_passes = topology.bad_side_sums(evidence.passes)
    bad_fails = topology.bad_side_sums(evidence.fails)
    total_p, total_f = sum(evidence.passes), sum(evidence.fails)
    logs: list[float] = []
    fail_bad: list[float] = []
    fail_good: list[float] = []
    for h, w in enumerate(prior):
        bp, bf = bad_passes[h], bad_fails[h]
        bad_log, bad_next = _marginal(priors.miss, bp, bf)
        good_log, good_next = _marginal(priors.false_alarm, total_f - bf, total_p - bp)
        logs.append(math.log(w) + bad_log + good_log if w > 0 else -math.inf)
        fail_bad.append(bad_next)
        fail_good.append(1 - good_next)
    top = max(logs)
    raw = [math.exp(x - top) if x > -math.inf else 0.0 for x in logs]
    total = sum(raw)
    p = [x / total for x in raw]
    miss = sum(ph * (1 - fb) for ph, fb in zip(p, fail_bad, strict=True))
    alarm = sum(ph * fg for ph, fg in zip(p, fail_good, strict=True))
    return Belief(p, fail_bad, fail_good, miss, alarm, top + math.log(total))


def worst_case(
    topology: Topology,
    prior: Sequence[float],
    evidence: Evidence,
    priors: Priors,
    h: int,
    ruled_out: float,
) -> Belief:
    """The posterior of the noise model least favourable to h among those the runs have not
    ruled out.

    The miss prior is a mixture of models (a deterministic predicate, an intermittent bug); the
    mixture's P(h) leans on the prior odds between them, and early runs that happen to agree
    with a deterministic predicate can make it sure of a wrong commit at a flaky one. So P(h) is
    also asked of each model alone, unless the runs leave that model a posterior weight below
    `ruled_out`: a culprit is only as sure as the model least favourable to it."""
    if len(priors.miss) == 1:
        return believe(topology, prior, evidence, priors)
    models = []
    for weight, a, b in priors.miss:
        alone = Priors(((1.0, a, b),), priors.false_alarm, priors.ends)
        belief = believe(topology, prior, evidence, alone)
        models.append((math.log(weight) + belief.log_evidence, belief))
    top = max(log for log, _ in models)
    total = sum(math.exp(log - top) for log, _ in models)
    kept = [belief for log, belief in models if math.exp(log - top) / total >= ruled_out]
    return min(kept, key=lambda belief: belief.p[h])


def information(
    topology: Topology, belief: Belief, candidates: Sequence[int], about: int | None = None
) -> list[float]:
    """For each candidate commit: the expected information (bits) one more run there gives about
    the hypothesis: H(outcome) - H(outcome | hypothesis). With `about`, only about whether
    that hypothesis is the true one: what a run does for a culprit that has to become sure."""
    p = belief.p
    a = [ph * q for ph, q in zip(p, belief.fail_if_bad, strict=True)]
    b = [ph * q for ph, q in zip(p, belief.fail_if_good, strict=True)]
    total_b = sum(b)
    a_in = topology.bad_mass(a, candidates)
    b_in = topology.bad_mass(b, candidates)
    fails = [min(1.0, max(0.0, a_in[i] + total_b - b_in[i])) for i in range(len(candidates))]
    if about is not None:
        return [
            _about(topology, belief, j, fail, about)
            for j, fail in zip(candidates, fails, strict=True)
        ]
    c = [ph * _h2(q) for ph, q in zip(p, belief.fail_if_bad, strict=True)]
    d = [ph * _h2(q) for ph, q in zip(p, belief.fail_if_good, strict=True)]
    total_d = sum(d)
    c_in = topology.bad_mass(c, candidates)
    d_in = topology.bad_mass(d, candidates)
    return [max(0.0, _h2(fail) - c_in[i] - total_d + d_in[i]) for i, fail in enumerate(fails)]


def fail_chance(topology: Topology, belief: Belief, j: int) -> float:
    """The predicted chance that a run at commit j fails."""
    rates = zip(belief.p, belief.fail_if_bad, belief.fail_if_good, strict=True)
    return sum(
        ph * (fb if topology.is_bad(j, h) else fg)
        for h, (ph, fb, fg) in enumerate(rates)
        if ph > 1e-15
    )


def _about(topology: Topology, belief: Belief, j: int, fail: float, h: int) -> float:
    """The information a run at j gives about whether h is the true hypothesis, its chance
    to fail being `fail`."""
    ph = belief.p[h]
    if ph >= 1.0:
        return 0.0
    q_h = belief.fail_if_bad[h] if topology.is_bad(j, h) else belief.fail_if_good[h]
    q_else = min(1.0, max(0.0, (fail - ph * q_h) / (1 - ph)))
    return max(0.0, _h2(fail) - ph * _h2(q_h) - (1 - ph) * _h2(q_else))


def suspects(topology: Topology, belief: Belief, testable: Sequence[int]) -> list[int]:
    """The hypotheses no testable commit tells apart from the likeliest one (it included)."""
    best = belief.best
    live = [h for h, x in enumerate(belief.p) if x > 1e-12 or h == best]
    return [h for h in live if h == best or not topology.tells_apart(best, h, testable)]


def runs_left(belief: Belief, confidence: float, bits_per_run: float) -> float:
    """A rough estimate of the runs still needed: the log-odds the best hypothesis still has to
    gain, at the information the next run is expected to give."""
    p = min(max(belief.p[belief.best], 1e-9), 1 - 1e-12)
    gap = math.log2(confidence / (1 - confidence)) - math.log2(p / (1 - p))
    if gap <= 0:
        return 0.0
    return gap / max(bits_per_run, 0.05) / 2 + 1
