"""The ``knee`` sampler: search the way the field notes do, then pin the knee down.

1. **Ramp.** From the cheapest config, walk each resource axis in turn (``pool_size``,
   ``requests_per_sync``, ``batch_size``, ``threads``) along 1, 2, 4, 8, ... until qps stops rising by
   more than the tolerance; then bisect between the last value below and the first value within the
   tolerance of the line's best, and carry the cheapest good value on to the next axis. Other axes
   (backend options, stage workers) are tried value by value at that point and the best is kept.
2. **Pin the knee.** With the plateau P from everything measured, the knee is the cheapest config with
   qps >= (1 - tolerance) P. qps does not fall when a resource *shrinks*, so a measured config under the
   threshold rules out every config it dominates (no more of any resource, same other axes). The planner
   measures the costliest config cheaper than the knee that is not yet ruled out, until none is left;
   then, cheapest first, every config costing no less than the knee and no more than the cheapest config
   clearly in the band (qps >= (1 - tolerance / 2) P), since single measurements put the knee anywhere
   in between; then one costlier neighbour of the knee so that the knee is confirmed.
3. **Explore.** The remaining budget measures the unmeasured neighbours of the knee and of the best
   config (one grid step along each axis), then unmeasured configs at random (seeded); only a space
   that cannot be enumerated (a float range without a step) falls back to TPE.

The plan is a pure function of the trials measured so far (:meth:`KneePlanner.next`), so it resumes,
and it is deterministic for a given seed. "qps" above is the study's rate metric
(:func:`tuner.trial_attrs.rate_metric_of`): ``server_qps`` under a latency bound (``load.scenario: server``),
where a config that met the bound at no rate is infeasible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from tuner.analysis.knee import config_cost
from tuner.search.space import config_key
from tuner.trial_attrs import config_of, is_feasible, is_open_failure, rate_metric_of, rate_of

RESOURCE_AXES = ("pool_size", "requests_per_sync", "batch_size", "threads")


def _is_resource(name: str) -> bool:
    return name in RESOURCE_AXES or (name.startswith("stages.") and name.endswith(".workers"))


@dataclass(frozen=True)
class Observation:
    params: Mapping[str, Any]
    qps: float | None  # None: pending, failed or infeasible
    feasible: bool = True


class KneePlanner:
    """Decides the next config to measure from the observations so far (None: hand over to the fallback)."""

    def __init__(self, grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any], tolerance: float) -> None:
        self.grid = {k: self._ordered(k, v) for k, v in grid.items()}
        self.fixed = dict(fixed)
        self.tolerance = tolerance
        self.order = [a for a in RESOURCE_AXES if a in self.grid]
        self.order += sorted(a for a in self.grid if _is_resource(a) and a not in self.order)
        self.order += [a for a in self.grid if not _is_resource(a)]

    @staticmethod
    def _ordered(name: str, values: Sequence[Any]) -> list[Any]:
        if _is_resource(name) or all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return sorted(values)
        return list(values)

    # ------------------------------------------------------------------------------------ plan
    def next(self, observations: Sequence[Observation]) -> dict[str, Any] | None:
        seen: dict[tuple[Any, ...], list[Observation]] = {}
        for ob in observations:
            seen.setdefault(config_key(self._full(ob.params)), []).append(ob)

        def qps(cfg: Mapping[str, Any]) -> float | None:
            obs = seen.get(config_key(cfg))
            vals = [o.qps for o in obs or [] if o.qps is not None and o.feasible]
            return sum(vals) / len(vals) if vals else None

        def visited(cfg: Mapping[str, Any]) -> bool:
            return config_key(cfg) in seen

        center = {**self.fixed, **{a: v[0] for a, v in self.grid.items()}}
        for axis in self.order:
            values = self.grid[axis]
            if _is_resource(axis):
                pick = self._ramp(axis, values, center, qps, visited)
            else:
                pick = self._try_each(axis, values, center, qps, visited)
            if isinstance(pick, dict):
                return pick
            center[axis] = pick
        return self._pin(seen, qps, visited)

    def explore(self, observations: Sequence[Observation], rng: np.random.Generator) -> dict[str, Any] | None:
        """After the plan: unmeasured neighbours of the knee and of the best config (one grid step along
        each axis), then a random unmeasured config; None when every config was tried."""
        seen = {config_key(self._full(ob.params)): ob for ob in observations}
        scored = [(self._full(ob.params), ob.qps) for ob in observations if ob.qps is not None and ob.feasible]
        anchors: list[dict[str, Any]] = []
        if scored:
            plateau = max(q for _, q in scored)
            good = [cfg for cfg, q in scored if q >= (1 - self.tolerance) * plateau]
            anchors = [min(good, key=config_cost), max(scored, key=lambda s: s[1])[0]]
        for base in anchors:
            for axis in self.order:
                values = self.grid[axis]
                i = values.index(base[axis]) if base[axis] in values else None
                if i is None:
                    continue
                for j in (i + 1, i - 1):
                    if 0 <= j < len(values):
                        cfg = {**base, axis: values[j]}
                        if config_key(cfg) not in seen:
                            return cfg
        unvisited = [cfg for cfg in self._configs() if config_key(cfg) not in seen]
        if not unvisited:
            return None
        return unvisited[int(rng.integers(len(unvisited)))]

    def _full(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **{a: v[0] for a, v in self.grid.items()}, **params}

    def _ramp(self, axis: str, values: list[Any], center: dict[str, Any], qps: Any, visited: Any) -> Any:
        """Doubling ramp then bisection on one axis; returns a config to measure, or the chosen value."""
        ramp = _doubling(values)
        prev: float | None = None
        for v in ramp:
            cfg = {**center, axis: v}
            if not visited(cfg):
                return cfg
            q = qps(cfg)
            if q is None:
                continue
            if prev is not None and q < prev * (1 + self.tolerance):
                break
            prev = q
        line = [(v, qps({**center, axis: v})) for v in values]
        measured = [(v, q) for v, q in line if q is not None]
        if not measured:
            return center[axis]
        best = max(q for _, q in measured)
        threshold = (1 - self.tolerance) * best
        first_ok = next(v for v, q in measured if q >= threshold)
        below = [v for v, q in measured if q < threshold and v < first_ok]
        lo = below[-1] if below else None
        between = [v for v in values if (lo is None or v > lo) and v < first_ok]
        unvisited = [v for v in between if not visited({**center, axis: v})]
        if lo is not None and unvisited:
            return {**center, axis: unvisited[len(unvisited) // 2]}
        return first_ok

    def _try_each(self, axis: str, values: list[Any], center: dict[str, Any], qps: Any, visited: Any) -> Any:
        for v in values:
            cfg = {**center, axis: v}
            if not visited(cfg):
                return cfg
        scored = [(qps({**center, axis: v}), i, v) for i, v in enumerate(values)]
        scored = [s for s in scored if s[0] is not None]
        return max(scored, key=lambda s: (s[0], -s[1]))[2] if scored else center[axis]

    def _pin(self, seen: Mapping[Any, list[Observation]], qps: Any, visited: Any) -> dict[str, Any] | None:
        measured = []
        for obs in seen.values():
            cfg = self._full(obs[0].params)
            q = qps(cfg)
            if q is not None:
                measured.append((cfg, q))
        if not measured:
            return None
        plateau = max(q for _, q in measured)
        threshold = (1 - self.tolerance) * plateau
        good = [cfg for cfg, q in measured if q >= threshold]
        knee = min(good, key=config_cost)
        knee_cost = config_cost(knee)
        bad = [cfg for cfg, q in measured if q < threshold]
        candidates = []
        for cfg in self._configs():
            if visited(cfg) or config_cost(cfg) >= knee_cost:
                continue
            if any(self._dominated(cfg, b) for b in bad):
                continue
            candidates.append(cfg)
        if candidates:
            return max(candidates, key=config_cost)
        # the knee above is read from single noisy measurements: every config it could be once the noise is
        # allowed for -- costing no less than it and no more than the cheapest config clearly in the band
        # (within half the tolerance of the plateau) -- is measured too, cheapest first, so the decision
        # after the search chooses between the same configs on every run (no domination rule here: it
        # reads the same noisy numbers, and more threads in flight can be slower on a small host)
        clear_cost = min(config_cost(cfg) for cfg, q in measured if q >= (1 - self.tolerance / 2) * plateau)
        uncertain = [cfg for cfg in self._configs() if not visited(cfg) and knee_cost <= config_cost(cfg) <= clear_cost]
        if uncertain:
            return min(uncertain, key=lambda cfg: (config_cost(cfg), config_key(cfg)))
        # confirmation: one measured config costlier than the knee
        if not any(config_cost(cfg) > knee_cost for cfg, _ in measured):
            for axis in self.order:
                if not _is_resource(axis):
                    continue
                values = self.grid[axis]
                i = values.index(knee[axis])
                if i + 1 < len(values):
                    cfg = {**knee, axis: values[i + 1]}
                    if not visited(cfg):
                        return cfg
        return None

    def _dominated(self, cfg: Mapping[str, Any], by: Mapping[str, Any]) -> bool:
        """``cfg`` uses no more of any resource than ``by`` and agrees on every other axis."""
        for axis in self.grid:
            if _is_resource(axis):
                if cfg[axis] > by[axis]:
                    return False
            elif cfg[axis] != by[axis]:
                return False
        return True

    def _configs(self) -> list[dict[str, Any]]:
        import itertools

        names = list(self.grid)
        return [
            {**self.fixed, **dict(zip(names, combo, strict=True))}
            for combo in itertools.product(*(self.grid[n] for n in names))
        ]


def _doubling(values: list[Any]) -> list[Any]:
    """1, 2, 4, 8, ... of a sorted axis: the smallest value >= twice the previous, and always the last."""
    out = [values[0]]
    for v in values[1:]:
        if v >= 2 * out[-1] if out[-1] > 0 else v > out[-1]:
            out.append(v)
    if out[-1] != values[-1]:
        out.append(values[-1])
    return out


class KneeSampler(BaseSampler):
    """Optuna sampler around :class:`KneePlanner`; independent sampling goes to ``fallback``.

    ``rate``: the metric the plan reads (None: the study's ``rate_metric`` attribute, read once).
    """

    def __init__(
        self,
        grid: Mapping[str, Sequence[Any]],
        fixed: Mapping[str, Any],
        distributions: Mapping[str, BaseDistribution],
        tolerance: float,
        fallback: BaseSampler,
        seed: int = 0,
        rate: str | None = None,
    ) -> None:
        self._planner = KneePlanner(grid, fixed, tolerance)
        self._seed = seed
        self._distributions = dict(distributions)
        self._fallback = fallback
        self._rate = rate

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        if self._rate is None:
            self._rate = rate_metric_of(study.user_attrs)
        observations = [
            observation_of(t, self._rate)
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and not is_open_failure(t)
        ]
        cfg = self._planner.next(observations)
        if cfg is None:
            cfg = self._planner.explore(observations, np.random.default_rng([self._seed, trial.number]))
        if cfg is None:
            return {}
        return {k: cfg[k] for k in search_space}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._fallback.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._fallback.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()


def observation_of(t: FrozenTrial, rate: str = "qps") -> Observation:
    """A trial as the planner sees it: its full config, and its ``rate`` (the study's rate metric) when it
    completed feasibly."""
    return Observation(params=config_of(t), qps=rate_of(t, rate), feasible=is_feasible(t))
