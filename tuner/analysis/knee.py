"""The saturation knee: the cheapest configuration whose throughput is within a tolerance of the plateau.

Pure functions over plain frozen records; no I/O. Definitions (``DESIGN.md``, "The knee"):

* **cost** (:func:`cost_key`): fewer samples in flight (``pool_size x requests_per_sync x batch_size``),
  then fewer threads, then less peak memory.
* **plateau**: the best feasible ``qps`` -- estimated noise-aware, see :func:`find_knee`.
* **knee**: the cheapest feasible configuration whose ``qps >= (1 - tolerance) * plateau``.
* **confirmed**: a configuration that costs strictly more (at least as many samples in flight *and* at
  least as many threads, more of one) was measured and did not beat the knee by more than the tolerance,
  and the best configuration is not still rising at the edge of the measured range (:func:`find_knee`).
* **confidence**: a bootstrap over the measured windows (over the repeats' qps where a trial has no
  windows) -- the fraction of resampled studies that pick the same configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.text import finite_or_none, format_params

__all__ = [
    "DEFAULT_TOLERANCE",
    "EDGE_AXES",
    "PLATEAU_STDERR",
    "KneeResult",
    "TrialRecord",
    "cost_key",
    "find_knee",
    "in_flight",
    "merge_repeats",
    "threads_of",
]

#: default ``knee.tolerance``: the knee is within 10 % of the plateau
DEFAULT_TOLERANCE = 0.10

#: the plateau is the highest ``qps - PLATEAU_STDERR * standard error`` (see :func:`find_knee`)
PLATEAU_STDERR = 1.0

_IN_FLIGHT_AXES = ("pool_size", "requests_per_sync", "batch_size")
#: the numeric resource axes the edge rule looks at (besides every ``stages.<name>.workers``)
EDGE_AXES = ("pool_size", "threads", "requests_per_sync", "batch_size")
_STAGE_PREFIX = "stages."
_STAGE_SUFFIX = ".workers"
#: relative slack in ``qps >= threshold`` so that float rounding never flips a decision
_EPS = 1e-12


@dataclass(frozen=True)
class TrialRecord:
    """One measured configuration: what the analysis reads from a study.

    ``params`` are the searched axes (``pool_size``, ``threads``, ``requests_per_sync``, ``batch_size``,
    ``options.*``, ``stages.<name>.workers``); ``metrics`` use the contract names (``qps``,
    ``latency_p99_ms``, ``peak_rss_mb``, ``window_qps`` ...). ``feasible`` is False when the trial broke a
    constraint; such a trial is never best, knee or on a Pareto front.
    """

    number: int
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    feasible: bool = True


@dataclass(frozen=True)
class KneeResult:
    """What :func:`find_knee` concluded. ``reason`` is one sentence a person can read.

    ``edge`` names, as ``(axis, value)`` pairs, the axes on which the best configuration is the costliest
    measured one and still rising (the search should extend ``axis`` beyond ``value``); empty otherwise.
    When it is not empty the knee is not confirmed and ``reason`` says so. ``limited`` names, as
    ``(axis, value, reason)``, the axes where the best is still rising but one more step is a config this
    host's validity rules skip (``blocked`` of :func:`find_knee`): a hard edge, said in ``reason``.
    """

    tolerance: float
    plateau_qps: float | None
    best: TrialRecord | None
    knee: TrialRecord | None
    confirmed: bool
    confidence: float | None
    reason: str
    edge: tuple[tuple[str, Any], ...] = ()
    limited: tuple[tuple[str, Any, str], ...] = ()


#: params -> why this host would skip that config (a validity rule's reason), or None
Blocked = Callable[[Mapping[str, Any]], str | None]


# ----------------------------------------------------------------------------------------------- cost


def _count(params: Mapping[str, Any], name: str) -> int:
    value = params.get(name)
    if value is None:
        return 1
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameter {name!r} must be a whole number, got {value!r}") from exc


def in_flight(params: Mapping[str, Any]) -> int:
    """Samples in flight: ``pool_size * requests_per_sync * batch_size``; a missing axis counts as 1."""
    total = 1
    for name in _IN_FLIGHT_AXES:
        total *= _count(params, name)
    return total


def threads_of(params: Mapping[str, Any]) -> int:
    """Compute threads: ``threads`` (missing = 1) plus every pipeline ``stages.<name>.workers``."""
    total = _count(params, "threads")
    for name in params:
        if name.startswith(_STAGE_PREFIX) and name.endswith(_STAGE_SUFFIX):
            total += _count(params, name)
    return total


def _peak_rss(metrics: Mapping[str, Any]) -> float:
    value = finite_or_none(metrics.get("peak_rss_mb"))
    # unknown memory is never assumed cheap
    return math.inf if value is None else value


def config_cost(params: Mapping[str, Any]) -> tuple[int, int]:
    """``(samples in flight, threads + stage workers)``: what 'cheaper' means for a configuration.

    The one cost order of the knee: the analysis (with memory as the last tie-break, :func:`cost_key`) and
    the knee sampler's plan both use it.
    """
    return in_flight(params), threads_of(params)


def cost_key(record: TrialRecord) -> tuple[int, int, float]:
    """``(in_flight, threads, peak_rss_mb)``: smaller is cheaper. Missing memory counts as infinite."""
    return (*config_cost(record.params), _peak_rss(record.metrics))


def _costs_more(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    """``a`` uses at least as many samples in flight and threads as ``b``, and more of one."""
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


# ------------------------------------------------------------------------------------------ merging


def _numbers(metrics: Mapping[str, Any], name: str) -> list[float]:
    raw = metrics.get(name)
    if not isinstance(raw, Iterable) or isinstance(raw, (str, bytes, Mapping)):
        return []
    return [w for w in (finite_or_none(v) for v in raw) if w is not None]


def _windows(metrics: Mapping[str, Any]) -> list[float]:
    return _numbers(metrics, "window_qps")


def _units(record: TrialRecord, repeated: bool) -> list[float]:
    """What the bootstrap resamples for one trial: its windows (two or more), else its repeats' qps
    (``qps_runs``, two or more), else -- when its configuration was measured in several trials -- its one
    window or its qps as one unit; else nothing (one number bounds nothing)."""
    windows = _windows(record.metrics)
    if len(windows) >= 2:
        return windows
    runs = _numbers(record.metrics, "qps_runs")
    if len(runs) >= 2:
        return runs
    if repeated:
        return windows or [float(record.metrics["qps"])]
    return []


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(repr(_freeze(v)) for v in value))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


_SCALARS = frozenset({int, float, str, bool, type(None)})


def _params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    # fast path (the common case): string names and plain scalar values -- the same key as below
    try:
        key = tuple(sorted(params.items()))
    except TypeError:
        key = None
    if key is not None:
        for k, v in key:
            if type(k) is not str or type(v) not in _SCALARS:
                break
        else:
            return key
    return tuple(sorted((str(k), _freeze(v)) for k, v in params.items()))


def _merge_group(group: Sequence[TrialRecord]) -> TrialRecord:
    if len(group) == 1:
        return group[0]
    first = group[0]
    metrics: dict[str, Any] = dict(first.metrics)
    names = {name for record in group for name in record.metrics}
    for name in names:
        if name == "window_qps":
            metrics[name] = [w for record in group for w in _windows(record.metrics)]
            continue
        values = [record.metrics[name] for record in group if name in record.metrics]
        numbers = [v for v in (finite_or_none(x) for x in values) if v is not None]
        if all(isinstance(v, bool) for v in values):
            metrics[name] = all(values)
        elif numbers and len(numbers) == len(values):
            metrics[name] = sum(numbers) / len(numbers)
        elif name not in metrics:
            metrics[name] = values[0]
    return TrialRecord(number=first.number, params=first.params, metrics=metrics, feasible=True)


def merge_repeats(trials: Iterable[TrialRecord], *, require_qps: bool = True) -> list[TrialRecord]:
    """Feasible trials (with a ``qps`` unless ``require_qps`` is False), one record per distinct
    ``params``, in first-measured order.

    A configuration measured several times becomes one record: the lowest trial number, the mean of each
    numeric metric (so ``qps`` is the mean qps), ``window_qps`` concatenated, ``stable`` true only if
    every repeat was stable. A configuration measured once is returned as is (the same object).
    """
    return [_merge_group(group) for group in _groups(trials, require_qps=require_qps)]


def _groups(trials: Iterable[TrialRecord], *, require_qps: bool = True) -> list[list[TrialRecord]]:
    """Usable trials grouped by ``params``, each group and the groups in trial-number order."""
    usable = (t for t in trials if t.feasible and (not require_qps or finite_or_none(t.metrics.get("qps")) is not None))
    groups: dict[tuple[tuple[str, Any], ...], list[TrialRecord]] = {}
    for record in sorted(usable, key=lambda t: t.number):
        groups.setdefault(_params_key(record.params), []).append(record)
    return list(groups.values())


# ------------------------------------------------------------------------------------------- the knee


@dataclass(frozen=True)
class _Config:
    record: TrialRecord
    cost: tuple[int, int, float]
    qps: float
    units: np.ndarray  # what the bootstrap resamples: windows, else the repeats' qps; may be empty
    stderr: float
    units_mean: float = 0.0


def _configs(trials: Iterable[TrialRecord]) -> list[_Config]:
    configs = []
    for group in _groups(trials):
        merged = _merge_group(group)
        qps = sum(float(r.metrics["qps"]) for r in group) / len(group)
        units: list[float] = []
        for r in group:
            units.extend(_units(r, len(group) > 1))
        arr = np.asarray(units, dtype=float)
        # ufuncs called directly: the same arithmetic as arr.mean() / arr.std(ddof=1), without their
        # per-call overhead (it dominates on studies with thousands of configurations)
        mean = np.add.reduce(arr) / arr.size if arr.size else 0.0
        stderr = 0.0
        if arr.size >= 2:
            dev = arr - mean
            stderr = math.sqrt(float(np.add.reduce(dev * dev)) / (arr.size - 1)) / math.sqrt(arr.size)
        configs.append(_Config(merged, cost_key(merged), qps, arr, stderr, float(mean)))
    # the order in which a knee is searched: cheapest first, then the faster, then the earlier; it is
    # canonical, so neither the result nor the bootstrap's random stream depends on the input order
    configs.sort(key=lambda c: (c.cost, -c.qps, c.record.number))
    return configs


def _choose(qps: np.ndarray, stderr: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Plateau and knee column for each row of ``qps`` (rows: studies, columns: configs, cheapest first)."""
    plateau = np.maximum((qps - PLATEAU_STDERR * stderr).max(axis=1), 0.0)
    threshold = (1.0 - tolerance) * plateau * (1.0 - _EPS)
    # the column that sets the plateau always passes, so every row has a knee
    knee = (qps >= threshold[:, None]).argmax(axis=1)
    return plateau, knee


def _edge_axes(params: Mapping[str, Any]) -> list[str]:
    """The numeric resource axes among ``params``, sorted by name."""
    names = [
        name
        for name in params
        if name in EDGE_AXES or (name.startswith(_STAGE_PREFIX) and name.endswith(_STAGE_SUFFIX))
    ]
    return sorted(name for name in names if finite_or_none(params[name]) is not None)


def _without(params: Mapping[str, Any], axis: str) -> tuple[tuple[str, Any], ...]:
    return _params_key({k: v for k, v in params.items() if k != axis})


def _edge(
    trials: Sequence[TrialRecord],
    configs: Sequence[_Config],
    best: _Config,
    knee: _Config,
    plateau: float,
    tolerance: float,
    blocked: Blocked | None = None,
) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any, str], ...]]:
    """The axes on which ``best`` is still rising at the edge of the measured range, and those of them where
    the next step is a config ``blocked`` says this host skips (see :func:`find_knee`)."""
    out = []
    limited = []
    for axis in _edge_axes(best.record.params):
        value = finite_or_none(best.record.params[axis])
        assert value is not None
        measured = [finite_or_none(c.record.params.get(axis)) for c in configs]
        if value < max(v for v in measured if v is not None):
            continue
        rest = _without(best.record.params, axis)
        # a larger value that was tried and broke a constraint is a hard edge: nothing to extend
        if any(
            not t.feasible
            and (v := finite_or_none(t.params.get(axis))) is not None
            and v > value
            and _without(t.params, axis) == rest
            for t in trials
        ):
            continue
        lower = [
            (v, c)
            for v, c in zip(measured, configs, strict=True)
            if v is not None and v < value and _without(c.record.params, axis) == rest
        ]
        if not lower:
            continue
        below = max(lower, key=lambda vc: vc[0])[1]
        # the gain the intervals prove (the best's lower end over the step below's upper end): noise alone
        # (a config measured a few % high) does not make a range look unfinished
        best_low, below_high = _ci_end(best, "qps_ci_low"), _ci_end(below, "qps_ci_high")
        gain = best_low / below_high - 1.0 if below_high > 0 else math.inf
        if not gain > tolerance / 2.0:
            continue
        # the knee is at risk if it is the best itself, or if one more step with the same gain would lift
        # the threshold above it
        if knee is best or knee.qps < (1.0 - tolerance) * plateau * (1.0 + gain) * (1.0 - _EPS):
            # one more step of the same size: a config the host's rules skip is a hard edge, nothing to extend
            raw, step = best.record.params[axis], best.record.params[axis] - below.record.params[axis]
            why = blocked({**best.record.params, axis: raw + step}) if blocked is not None else None
            if why:
                limited.append((axis, raw, why))
            else:
                out.append((axis, raw))
    return tuple(out), tuple(limited)


def _ci_end(config: _Config, name: str) -> float:
    """One end of ``config``'s qps interval (``qps_ci_low``/``qps_ci_high``); its qps when it has none."""
    value = finite_or_none(config.record.metrics.get(name))
    return config.qps if value is None else value


def _describe(params: Mapping[str, Any]) -> str:
    if not params:
        return "the default configuration"
    return format_params(params, sort=True)


def find_knee(
    trials: Sequence[TrialRecord],
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    rate_name: str = "qps",
    blocked: Blocked | None = None,
) -> KneeResult:
    """Find the saturation knee of a study.

    ``rate_name`` only names the figure in ``reason``: the records' ``qps`` may be a study's rate metric
    (``server_qps`` under a latency bound, :func:`tuner.study.ledger.rate_view`), decided on exactly alike.

    Infeasible trials and trials without a finite ``qps`` are ignored; a configuration (same ``params``)
    measured several times counts once, with its mean qps and all its windows (:func:`merge_repeats`).

    **The plateau is noise-aware.** The raw maximum of noisy measurements is biased upward (the winner's
    curse): when many configurations sit on the plateau, the largest of them is the one with the luckiest
    noise, the threshold rises with it and the knee drifts to costlier configurations, a different one
    on every run. So the plateau is the highest *lower one-standard-error bound*,
    ``max_i(qps_i - se_i)``, where ``se_i`` is the standard error of a configuration's mean window qps
    (``std(window_qps, ddof=1) / sqrt(n)``; between repeats when it has no windows; 0 when it was
    measured once without windows): the throughput that some configuration demonstrably sustains. With
    exact numbers (no windows) it is exactly the best qps, so the hand-made field-note tables keep
    their knees; with noisy windows it removes most of the upward drift (on simulated saturating curves
    over 16 pool sizes with 5 % noise on each of 5 windows, the knee stays within one step of the
    noise-free knee in about 95-98 % of runs instead of 86-89 % with the raw maximum), at the price of a
    slight lean to the cheaper side when the curve is still rising at the costliest measured point.

    ``best`` is the configuration with the highest (mean) qps. ``plateau_qps`` is the estimate above.

    **Confirmation.** The knee is confirmed when a configuration costing strictly more (at least as many
    samples in flight and threads, more of one) was measured. Every such configuration is then also
    within the tolerance by construction -- the plateau bounds them all, so
    ``knee_qps >= (1 - tolerance) * (qps_c - se_c)`` -- i.e. it did not beat the knee by more than the
    tolerance. Without one, the search has not shown saturation yet.

    **The edge rule.** A costlier configuration on one axis does not show saturation on another. So the
    knee is not confirmed either when the best configuration is still rising at the edge of the measured
    range: on some numeric resource axis (:data:`EDGE_AXES`, ``stages.<name>.workers``) the best's value is
    the largest measured value among the feasible configurations, the measured configuration one step
    lower on that axis (the largest smaller value, every other parameter equal) exists, and

    * the last step gained more than half the tolerance, as far as the intervals show it: ``gain =
      qps_ci_low(best) / qps_ci_high(below) - 1 > tolerance / 2`` (each end is the qps itself when the
      configuration has no interval), so a step that is within the noise does not look unfinished,
    * and that can move the knee: the knee is the best itself, or one more step with the same gain would
      lift the threshold above the knee, ``qps_knee < (1 - tolerance) * plateau * (1 + gain)``.

    (The second condition keeps a knee whose margin over the threshold already absorbs another such step:
    the Ascend JPEG decode table, 3 -> 4 threads gaining 5.3 %, keeps its confirmed knee at 3 threads.)
    A larger value on that axis (every other parameter equal) that was tried and was infeasible makes the
    edge a hard one, and the rule does not apply. So does one more step of the same size (``value + (value -
    below)``, every other parameter equal) that ``blocked`` -- the host's validity rules, given by the
    caller -- says would be skipped: threads 2 to 3 on a 2-core host that prunes oversubscribed configs is
    nothing to extend; such axes are in ``limited`` with the rule's reason, and ``reason`` says so.
    ``edge`` lists the axes with the best's value; ``reason`` reads "still rising at the edge of the range:
    extend AXIS beyond VALUE" (after the "saturation not reached yet" sentence when no costlier
    configuration was measured either).

    **Confidence.** ``bootstrap`` replicates: in each, every configuration's windows are resampled with
    replacement (where a trial has fewer than two windows, its repeats' ``qps_runs``; a configuration
    with neither keeps its qps) and their mean, re-centred on the configuration's qps, replaces its qps;
    the knee is chosen again. The confidence is the fraction of replicates that pick the same
    configuration. It is ``None`` when there is nothing to resample (no windows or repeats anywhere) or
    ``bootstrap`` is 0. Deterministic for a given ``seed``. The repeats' spread also sets the standard
    error of the plateau for such a trial, as repeats of a configuration in separate trials do.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap!r}")
    configs = _configs(trials)
    if not configs:
        reason = (
            "no trials to analyse"
            if not trials
            else f"no feasible trial with a {rate_name} measurement, so there is no plateau and no knee"
        )
        return KneeResult(tolerance, None, None, None, False, None, reason)

    qps = np.array([c.qps for c in configs])
    stderr = np.array([c.stderr for c in configs])
    plateau, chosen = _choose(qps[None, :], stderr, tolerance)
    plateau_qps, k = float(plateau[0]), int(chosen[0])
    knee = configs[k]
    best = max(configs, key=lambda c: (c.qps, -c.cost[0], -c.cost[1], -c.record.number))
    costlier = [c for c in configs if _costs_more(c.cost, knee.cost)]

    confidence: float | None = None
    if bootstrap > 0 and any(c.units.size for c in configs):
        rng = np.random.default_rng(seed)
        replicas = np.repeat(qps[None, :], bootstrap, axis=0)
        for j, c in enumerate(configs):
            if c.units.size:
                draws = c.units[rng.integers(0, c.units.size, size=(bootstrap, c.units.size))]
                replicas[:, j] = c.qps + np.add.reduce(draws, axis=1) / c.units.size - c.units_mean
        _, picks = _choose(replicas, stderr, tolerance)
        confidence = float(np.mean(picks == k))

    edge, limited = _edge(trials, configs, best, knee, plateau_qps, tolerance, blocked)

    pct = f"{tolerance:.0%}" if round(tolerance * 100, 6).is_integer() else f"{tolerance:.1%}"
    where = _describe(knee.record.params)
    rising = "still rising at the edge of the range: extend " + " and ".join(
        f"{axis} beyond {value}" for axis, value in edge
    )
    if edge and costlier:
        reason = rising
    elif costlier:
        n = len(costlier)
        reason = (
            f"saturation reached: {where} gives {knee.qps:.4g} {rate_name}, within {pct} of the "
            f"{plateau_qps:.4g} {rate_name} plateau, and {n} costlier configuration{'s' if n > 1 else ''} "
            f"measured did not beat it by more than that"
        )
    else:
        reason = (
            f"saturation not reached yet: no costlier configuration was measured beyond {where} "
            f"({knee.qps:.4g} {rate_name}, the cheapest within {pct} of the {plateau_qps:.4g} {rate_name} plateau)"
        )
        if edge:
            reason += f"; {rising}"
    for axis, value, why in limited:
        reason += f"; still rising at {axis} {value}, but this host's rules skip one more step ({why})"
    return KneeResult(
        tolerance=tolerance,
        plateau_qps=plateau_qps,
        best=best.record,
        knee=knee.record,
        confirmed=bool(costlier) and not edge,
        confidence=confidence,
        reason=reason,
        edge=edge,
        limited=limited,
    )
