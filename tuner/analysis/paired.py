"""The paired decision: the knee and the tie set of configurations measured interleaved, in rounds.

When every configuration is measured once per *round* (round 0 of all of them, then round 1 ...), slow
drift of the machine (thermals, clocks, a neighbour's load) is shared by the configurations of one round.
Comparing each configuration with a *reference* round by round cancels it: the per-round ratio
``r_i = qps_c,i / qps_ref,i`` does not move when every qps of round ``i`` is multiplied by the same factor.

**Ratios** are summarised on the log scale: the mean of ``log r_i`` over the rounds where both were
measured, with its Student-t interval (standard error below), exponentiated. So the
ratio is a geometric mean, its interval is positive and asymmetric like the ratio itself, ``c`` against
``ref`` is exactly the inverse of ``ref`` against ``c``, and multiplicative noise becomes additive.

**The standard error** of a mean log ratio over ``n`` rounds is the larger of two estimates: its own
(the spread of its ``n`` log ratios, ``n - 1`` degrees of freedom) and the *pooled* one, ``sqrt(2 s^2 / n)``,
where ``s^2`` is the residual variance of the additive model ``log qps = config + round`` fitted to
every configuration's rounds (the randomized-block analysis; ``(C - 1)(R - 1)`` degrees of freedom for
``C`` configurations in ``R`` complete rounds, fewer where a round is missing), with the degrees of freedom
of the one used. Why: four rounds estimate one pair's spread badly -- on this project's 2-core VM a config
at 0.915 of the plateau drew log ratios with a spread of 0.013 in one run and 0.036 in the two others, so it was
"proven" within 10 % once in three -- while every configuration of a round shares the machine's noise,
and all of them together measure it well. The larger of the two keeps both honest: a lucky tight pair
cannot prove more than the machine's noise allows, and a configuration noisier than the rest keeps its
own spread. The additive model absorbs every round's common factor, so a drift still cancels.

**Decision** (``tolerance`` and ``confidence`` as given):

* **reference**: the configuration with the highest mean qps over its measured rounds (the plateau
  candidate), the mean taken on the log scale (the geometric mean): a drift common to a round then
  shifts every configuration measured in the same rounds equally and cannot change the reference, where
  an arithmetic mean would weight the rounds by the drift. Ties go to the cheaper configuration.
* **knee**: the cheapest configuration (:func:`tuner.analysis.knee.config_cost`, then peak memory when
  given, then the params' own order -- never the measured ratio, so noise does not choose between equals)
  whose mean ratio is ``>= 1 - tolerance`` with the stated confidence, one-sided: its probability
  ``P = F_t((mean(log r) - log(1 - tolerance)) / se, n - 1)`` (:func:`t_probability_at_least`) is
  ``>= confidence`` -- the same as the one-sided lower bound of the mean log ratio being
  ``>= log(1 - tolerance)``. ``knee_confidence`` is that ``P``. The reference always qualifies (its ratio is
  1 in every round, ``P = 1``), so it is the knee when no cheaper configuration does. When too few noisy
  rounds prove none of the cheap ones, a member of the tie set qualifies too if its estimate lies in the
  band (``P >= 1/2``, the mean ratio ``>= 1 - tolerance``): it cannot be told from the plateau and is more
  likely in the band than out, and its ``P`` says how sure that is. A tie member whose estimate is below
  the band does not (it could be the best, but is more likely outside the tolerance): the best can then be
  cheaper than the knee, which the report explains.
* **tie set**: the configurations that could be the best, by Hsu's multiple comparisons with the best
  (MCB; Gupta's subset selection): ``c`` is a member when ``mean(log r_c) + d * se_c >= 0``, ``d`` the
  one-sided many-to-one critical value for ``C - 1`` comparisons at ``confidence``
  (:func:`tuner.analysis.intervals.dunnett_quantile`, with ``se_c``'s degrees of freedom). The set then
  holds the truly best configuration with that confidence. Why not each pair's two-sided interval reaching
  1: the reference is *chosen* as the highest of ``C`` noisy means, and ``C - 1`` comparisons with it were
  made, which a one-pair interval ignores. ``tie_bounds`` holds each configuration's upper bound
  ``exp(mean + d se)``. **best** is the cheapest member.

**Interference** (before all of the above): a neighbour's burst on a shared machine can halve one
measurement while the rest of its round is normal -- on this project's 2-core VM one 3 s measurement of a
config at ~46 qps read 25.8 in all three of its windows. Such a dip is no property of the configuration
(interference only ever slows a run down), and in a paired design it widens every interval and moves the
reference. Each measurement is tested against the additive model ``log qps = config + round`` fitted to
*all the other* measurements (the externally studentized residual of regression diagnostics, one-sided to
the slow side, Bonferroni over the measurements): a measurement is left out when that test rejects at
``1 - confidence`` and it is slower than the others predict by more than the tolerance (a smaller dip cannot
change a decision at this tolerance, and the pooled error covers it). The most significant is left out
first and the fit repeated; a configuration keeps at least two rounds. ``interference`` lists what was left
out, with the qps the other measurements predicted, so the report can say it.

A configuration compared with the reference in fewer than two rounds has no interval (one ratio bounds
nothing): it is neither the knee (unless it is the reference) nor in the tie set. A non-finite or
non-positive qps counts as a missing round; callers pass feasible configurations only.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from tuner.analysis.intervals import CONFIDENCE, Interval, dunnett_quantile, t_probability_of, t_quantile
from tuner.analysis.knee import DEFAULT_TOLERANCE, config_cost

__all__ = ["Interference", "PairedDecision", "paired_decision"]

K = TypeVar("K", bound=Hashable)

#: relative slack in comparisons with 1 so that float rounding never flips a decision
_EPS = 1e-12


@dataclass(frozen=True)
class Interference(Generic[K]):
    """One measurement left out of the decision as interference (module docstring): configuration ``config``
    measured ``qps`` in round ``round`` where the other measurements predict ``expected_qps``; ``p_value`` is the
    outlier test's one-sided p-value times the number of measurements tested (Bonferroni)."""

    config: K
    round: int
    qps: float
    expected_qps: float
    p_value: float


@dataclass(frozen=True)
class PairedDecision(Generic[K]):
    """What :func:`paired_decision` concluded.

    ``tie_set`` is in cost order, cheapest first. ``ratios`` holds every configuration's ratio to the
    reference (geometric mean and its two-sided interval; ``cv`` is the standard deviation of the log
    ratios, about the relative spread of one round's ratio; NaN where it was never compared);
    ``probabilities`` the one-sided probability that its ratio is ``>= 1 - tolerance`` (NaN without an
    interval); ``tie_bounds`` the upper bound of its ratio that decides the tie set (1 for the reference,
    NaN without an interval); ``interference`` the measurements left out, in the order they were found;
    ``cost_order`` every configuration, cheapest first (the order the knee and the best are chosen in).
    """

    reference: K
    knee: K
    knee_confidence: float
    best: K
    tie_set: tuple[K, ...]
    ratios: Mapping[K, Interval]
    probabilities: Mapping[K, float]
    tie_bounds: Mapping[K, float]
    tolerance: float
    confidence: float
    interference: tuple[Interference[K], ...]
    cost_order: tuple[K, ...]

    def cheaper(self, a: K, b: K) -> bool:
        """``a`` comes before ``b`` in :attr:`cost_order`."""
        return self.cost_order.index(a) < self.cost_order.index(b)

    @property
    def best_below_band(self) -> bool:
        """The best is cheaper than the knee: it could be the best, but its estimate is below the band."""
        return self.cheaper(self.best, self.knee)

    @property
    def knee_proven(self) -> bool:
        """The knee is the reference or within the tolerance at the confidence (not only by the tie set)."""
        return self.knee == self.reference or self.knee_confidence >= self.confidence


def _log_qps(values: Sequence[float]) -> list[float]:
    out = []
    for v in values:
        x = float(v)
        out.append(math.log(x) if math.isfinite(x) and x > 0.0 else math.nan)
    return out


def _design(cells: Sequence[tuple[int, int]], configs: int, rounds: int) -> np.ndarray:
    """The additive model's design matrix for ``(config index, round)`` cells: one column per configuration,
    one per round but the first (the rounds' effects relative to it)."""
    design = np.zeros((len(cells), configs + rounds - 1))
    for row, (c, r) in enumerate(cells):
        design[row, c] = 1.0
        if r:
            design[row, configs + r - 1] = 1.0
    return design


def _pooled_variance(logs: Mapping[Any, Sequence[float]]) -> tuple[float, int] | None:
    """The residual variance of ``log qps = config + round`` over the measured cells, and its degrees of
    freedom (cells less fitted effects); None when nothing is left over to estimate it from."""
    keys = list(logs)
    rounds = len(logs[keys[0]])
    cells = [(c, r, x) for c, k in enumerate(keys) for r, x in enumerate(logs[k]) if math.isfinite(x)]
    if not cells:
        return None
    design = _design([(c, r) for c, r, _ in cells], len(keys), rounds)
    y = np.array([x for _, _, x in cells])
    fit, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(cells) - int(rank)
    if dof < 1:
        return None
    residual = y - design @ fit
    return float(residual @ residual) / dof, dof


def _interference(
    logs: Mapping[K, list[float]], tolerance: float, confidence: float
) -> list[tuple[K, int, float, float]]:
    """The measurements to leave out as interference (module docstring), most significant first:
    ``(config, round, expected log qps, Bonferroni p-value)``. ``logs`` is not changed."""
    keys = list(logs)
    rounds = len(logs[keys[0]])
    left_out: set[tuple[int, int]] = set()
    found: list[tuple[K, int, float, float]] = []
    dip = math.log(1.0 - tolerance)
    while True:
        cells = [
            (c, r)
            for c, k in enumerate(keys)
            for r in range(rounds)
            if math.isfinite(logs[k][r]) and (c, r) not in left_out
        ]
        if not cells:
            return found
        design = _design(cells, len(keys), rounds)
        y = np.array([logs[keys[c]][r] for c, r in cells])
        hat = design @ np.linalg.pinv(design)
        dof = len(cells) - int(np.linalg.matrix_rank(design))
        if dof < 2:  # the test needs a variance left over once the tested measurement is out
            return found
        residual = y - hat @ y
        sse = float(residual @ residual)
        kept = {c: sum(1 for cc, _ in cells if cc == c) for c in range(len(keys))}
        best: tuple[float, int, float] | None = None
        for i, (c, _) in enumerate(cells):
            leverage = float(hat[i, i])
            if leverage > 1.0 - 1e-9 or kept[c] <= 2:
                continue
            deleted = float(residual[i]) / (1.0 - leverage)  # the measurement less what the others predict
            if deleted >= dip:
                continue
            variance = max(sse - float(residual[i]) ** 2 / (1.0 - leverage), 0.0) / (dof - 1)
            # the externally studentized residual's lower tail: F(e_i / sqrt(s_(i)^2 (1 - h_i)))
            p = t_probability_of(float(residual[i]), math.sqrt(variance * (1.0 - leverage)), dof - 1, 0.0)
            if best is None or p < best[0]:
                best = (p, i, float(y[i]) - deleted)
        if best is None or best[0] * len(cells) > 1.0 - confidence:
            return found
        c, r = cells[best[1]]
        left_out.add((c, r))
        found.append((keys[c], r, best[2], min(best[0] * len(cells), 1.0)))


def _ratio_interval(
    logs: Sequence[float], confidence: float, pooled: tuple[float, int] | None, bound: float, comparisons: int
) -> tuple[Interval, float, float]:
    """The exponentiated Student-t interval of the mean of ``logs`` (log ratios of the rounds), with the
    standard error of the module docstring; the one-sided probability that the mean is ``>= bound``; and the
    MCB upper bound of the ratio for ``comparisons`` comparisons with the best (the tie set's test)."""
    n = len(logs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0, confidence), math.nan, math.nan
    mean = math.fsum(logs) / n
    if n == 1:
        return Interval(math.exp(mean), 0.0, math.inf, math.nan, 1, confidence), math.nan, math.nan
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / (n - 1))
    stderr, dof = sd / math.sqrt(n), n - 1
    if pooled is not None and math.sqrt(2.0 * pooled[0] / n) > stderr:
        stderr, dof = math.sqrt(2.0 * pooled[0] / n), pooled[1]
    half = t_quantile(confidence, dof) * stderr
    interval = Interval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), sd, n, confidence)
    tie_bound = math.exp(mean + dunnett_quantile(max(comparisons, 1), dof, confidence) * stderr)
    return interval, t_probability_of(mean, stderr, dof, bound), tie_bound


def paired_decision(
    qps_by_round: Mapping[K, Sequence[float]],
    params: Mapping[K, Mapping[str, Any]],
    tolerance: float = DEFAULT_TOLERANCE,
    confidence: float = CONFIDENCE,
    *,
    peak_rss_mb: Mapping[K, float] | None = None,
) -> PairedDecision[K]:
    """Decide the knee, the tie set and the best from configurations measured interleaved in rounds.

    ``qps_by_round[c][i]`` is configuration ``c``'s qps in round ``i`` (all sequences the same length,
    NaN where missing); ``params[c]`` its parameters (for the cost order); ``peak_rss_mb[c]``, when given,
    breaks cost ties (missing memory counts as infinite). The rules are in the module docstring.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not qps_by_round:
        raise ValueError("no configurations to decide between")
    keys = list(qps_by_round)
    rounds = {len(qps_by_round[k]) for k in keys}
    if len(rounds) != 1:
        raise ValueError(f"every configuration needs the same number of rounds, got {sorted(rounds)}")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"no params for {missing!r}")

    logs = {k: _log_qps(qps_by_round[k]) for k in keys}
    interference = tuple(
        Interference(k, r, float(qps_by_round[k][r]), math.exp(expected), p_value)
        for k, r, expected, p_value in _interference(logs, tolerance, confidence)
    )
    for found in interference:
        logs[found.config][found.round] = math.nan
    order = {k: i for i, k in enumerate(keys)}
    memory = peak_rss_mb or {}

    def cost(k: K) -> tuple[int, int, float]:
        mem = memory.get(k)
        mem_value = float(mem) if mem is not None and math.isfinite(float(mem)) else math.inf
        return (*config_cost(params[k]), mem_value)

    means = {}  # the mean log qps: a drift common to a round shifts it equally for every configuration
    for k in keys:
        measured = [x for x in logs[k] if math.isfinite(x)]
        if measured:
            means[k] = math.fsum(measured) / len(measured)
    if not means:
        raise ValueError("no configuration has a positive finite qps in any round")
    reference = min(means, key=lambda k: (-means[k], cost(k), order[k]))

    ratios: dict[K, Interval] = {}
    probabilities: dict[K, float] = {}
    tie_bounds: dict[K, float] = {}
    bound = math.log(1.0 - tolerance)
    ref_logs = logs[reference]
    pooled = _pooled_variance(logs)
    for k in keys:
        if k == reference:
            n = sum(1 for x in ref_logs if math.isfinite(x))
            ratios[k] = Interval(1.0, 1.0, 1.0, 0.0, n, confidence)
            probabilities[k] = 1.0
            tie_bounds[k] = 1.0
            continue
        diffs = [a - b for a, b in zip(logs[k], ref_logs, strict=True) if math.isfinite(a) and math.isfinite(b)]
        ratios[k], probabilities[k], tie_bounds[k] = _ratio_interval(diffs, confidence, pooled, bound, len(keys) - 1)

    # equal costs in the params' own order, not by the measured ratio: noise does not pick between them
    ranked = sorted(keys, key=lambda k: (cost(k), _canonical(params[k]), order[k]))
    tie_set = tuple(k for k in ranked if k == reference or (ratios[k].n >= 2 and tie_bounds[k] >= 1.0 - _EPS))
    # proven in the band; else (too few noisy rounds) a tie member whose estimate is in the band
    knee = next(k for k in ranked if probabilities[k] >= confidence or (k in tie_set and probabilities[k] >= 0.5))
    return PairedDecision(
        reference=reference,
        knee=knee,
        knee_confidence=probabilities[knee],
        best=tie_set[0],
        tie_set=tie_set,
        ratios=ratios,
        probabilities=probabilities,
        tie_bounds=tie_bounds,
        tolerance=tolerance,
        confidence=confidence,
        interference=interference,
        cost_order=tuple(ranked),
    )


def _canonical(params: Mapping[str, Any]) -> tuple[tuple[str, int, float, str], ...]:
    """A fixed order of configurations: by parameter name, numbers by value before anything else by text."""
    out = []
    for name in sorted(params):
        value = params[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((name, 0, float(value), ""))
        else:
            out.append((name, 1, 0.0, repr(value)))
    return tuple(out)
