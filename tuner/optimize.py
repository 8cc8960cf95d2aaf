"""The search loop behind ``tuner optimize``: one Optuna trial per config, each measured in a child.

Budget: ``study.trials`` counts *measured* trials of the study (a resumed study continues toward the
same total); skipped configs (a validity rule) are PRUNED with their reason; a config already measured
is not measured again (the trial reuses the earlier result, ``duplicate_of``) unless ``remeasure``.
Stops on: the budget, ``timeout_s``, ``patience`` trials without improving the plateau or the knee,
the search space exhausted, or ``max_consecutive_failures`` failures of the same cause (an error).
Ctrl-C marks the running trial FAIL with ``failure.kind = "interrupted"`` and re-raises; running the
same command again resumes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from tuner.analysis import KneeResult, find_knee
from tuner.errors import StudyError
from tuner.platform import usable_cores
from tuner.runner import measure_config, resolve_model_path
from tuner.samplers import make_sampler
from tuner.space import RuleContext, config_key, distributions, grid_size, skip_reason
from tuner.spec import Spec
from tuner.study import (
    config_of,
    constraint_violations,
    is_measured,
    open_storage,
    open_study,
    redact,
    trial_records,
)

EventSink = Callable[[dict[str, Any]], None]
IMPROVEMENT = 0.01  # a plateau gain below 1 % is noise, not progress (patience)
MAX_CONSECUTIVE_DUPLICATES = 200


class _TrialFailedError(Exception):
    """Raised inside the objective so Optuna records the trial as FAIL (caught by ``optimize``)."""


@dataclass
class OptimizeResult:
    study_name: str
    storage: str
    stop_reason: str
    measured: int
    knee: KneeResult | None = None
    new_trials: list[int] = field(default_factory=list)


@dataclass
class _State:
    measured: int = 0
    distinct: int = 0
    consecutive_duplicates: int = 0
    failures: list[str] = field(default_factory=list)
    since_improvement: int = 0
    best_qps: float = 0.0
    knee_number: int | None = None
    new_trials: list[int] = field(default_factory=list)


def optimize(
    spec: Spec,
    *,
    storage: str | None = None,
    new: bool = False,
    remeasure: bool = False,
    trials: int | None = None,
    timeout_s: float | None = None,
    allow_platform_mix: bool = False,
    on_event: EventSink | None = None,
) -> OptimizeResult:
    """Run (or resume) the study of ``spec``; see the module docstring for the rules."""
    emit = on_event or (lambda _e: None)
    url = storage or spec.storage_url()
    store = open_storage(url)
    sampler = make_sampler(spec)
    study = open_study(spec, store, sampler=sampler, new=new, allow_platform_mix=allow_platform_mix)
    model_path = resolve_model_path(spec)
    backend_cpu_bound = True
    if spec.workload.kind == "pool":
        from tuner.backends.registry import get_backend

        backend_cpu_bound = bool(get_backend(spec.workload.backend).cpu_bound)
    ctx = RuleContext(usable_cores(), spec.study.allow_oversubscription, backend_cpu_bound)
    dists = distributions(spec)
    fixed = {n: a.default for n, a in spec.axes.items() if a.kind == "fixed"}
    target = trials or spec.study.trials
    deadline = time.monotonic() + (timeout_s or spec.study.timeout_s or math.inf)
    space = grid_size(spec) if _enumerable(spec) else math.inf

    state = _State()
    known: dict[Any, int] = {}
    for t in study.get_trials(deepcopy=False):
        if is_measured(t):
            state.measured += 1
        if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs:
            key = config_key(config_of(t))
            if key not in known:
                state.distinct += 1
            if t.state == TrialState.COMPLETE or key not in known:
                known[key] = t.number
    knee0 = _knee(study, spec)
    state.best_qps = knee0.plateau_qps or 0.0
    state.knee_number = knee0.knee.number if knee0.knee else None
    emit(
        {
            "event": "study",
            "name": study.study_name,
            "storage": redact(url),
            "measured": state.measured,
            "target": target,
            "space": space,
        }
    )

    def objective(trial: Trial) -> Any:
        params = {name: fixed[name] if name in fixed else _suggest(trial, name, dists[name]) for name in spec.axes}
        trial.set_user_attr("config", params)
        emit(
            {
                "event": "trial_start",
                "number": trial.number,
                "params": params,
                "index": state.measured + 1,
                "target": target,
            }
        )
        reason = skip_reason(params, ctx)
        if reason:
            trial.set_user_attr("skip_reason", reason)
            raise optuna.TrialPruned(reason)
        key = config_key(params)
        if key in known and not remeasure:
            return _reuse(study, trial, known[key], spec)
        result = None
        try:
            result = measure_config(spec, params, model_path=model_path, on_event=emit)
        except KeyboardInterrupt:
            trial.set_user_attr("failure", {"kind": "interrupted", "message": "interrupted by the user (Ctrl-C)"})
            raise
        for name, value in result.metrics.items():
            trial.set_user_attr(name, _jsonable(value))
        trial.set_user_attr("applied", dict(result.applied))
        trial.set_user_attr("wall_s", result.wall_s)
        if not result.ok:
            assert result.failure is not None
            trial.set_user_attr("failure", result.failure.to_dict())
            trial.set_user_attr("feasible", False)
            raise _TrialFailedError(result.failure.describe())
        violations = constraint_violations(result.metrics, spec.model.model_dump()["constraints"])
        _set_constraints(trial, spec, violations)
        values = [result.metrics.get(m) for m, _ in spec.objectives]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            trial.set_user_attr("failure", {"kind": "error", "message": f"objective metric missing or NaN: {values}"})
            raise _TrialFailedError("objective metric missing or not finite")
        return [float(v) for v in values] if len(values) > 1 else float(values[0])

    stop_reason = "budget reached"
    while True:
        if state.measured >= target:
            stop_reason = f"budget reached ({state.measured} measured trials)"
            break
        if time.monotonic() >= deadline:
            stop_reason = "timeout_s reached"
            break
        if state.distinct >= space:
            stop_reason = f"search space exhausted (all {space} configs tried)"
            break
        if state.consecutive_duplicates >= MAX_CONSECUTIVE_DUPLICATES:
            stop_reason = "the sampler keeps proposing measured configs; the search has converged"
            break
        before = len(study.get_trials(deepcopy=False))
        study.optimize(objective, n_trials=1, catch=(_TrialFailedError,), gc_after_trial=False)
        trials_now = study.get_trials(deepcopy=False)
        if len(trials_now) == before:
            stop_reason = "the sampler stopped the study (grid exhausted)"
            break
        t = trials_now[-1]
        state.new_trials.append(t.number)
        outcome = _account(t, state, known)
        emit(
            {
                "event": "trial_end",
                "number": t.number,
                "state": t.state.name,
                "outcome": outcome,
                "qps": t.user_attrs.get("qps"),
                "failure": (t.user_attrs.get("failure") or {}).get("message"),
                "skip_reason": t.user_attrs.get("skip_reason"),
            }
        )
        if outcome == "measured-ok":
            knee = _knee(study, spec)
            improved = (knee.plateau_qps or 0.0) > state.best_qps * (1 + IMPROVEMENT) or (
                knee.knee is not None and knee.knee.number != state.knee_number
            )
            state.best_qps = max(state.best_qps, knee.plateau_qps or 0.0)
            state.knee_number = knee.knee.number if knee.knee else state.knee_number
            state.since_improvement = 0 if improved else state.since_improvement + 1
            emit(
                {
                    "event": "knee",
                    "plateau_qps": knee.plateau_qps,
                    "knee": dict(knee.knee.params) if knee.knee else None,
                    "confirmed": knee.confirmed,
                }
            )
            if spec.study.patience and state.since_improvement >= spec.study.patience:
                stop_reason = f"patience: {state.since_improvement} trials without improving the plateau or the knee"
                break
        if outcome == "measured-failed":
            state.since_improvement += 1
            limit = spec.study.max_consecutive_failures
            if len(state.failures) >= limit and len(set(state.failures[-limit:])) == 1:
                raise StudyError(
                    f"study {study.study_name!r} stopped: {limit} consecutive trials failed the same way "
                    f"({state.failures[-1]}); earlier trials are kept. Fix the cause and run the same command to "
                    "resume"
                )
    return OptimizeResult(
        study_name=study.study_name,
        storage=redact(url),
        stop_reason=stop_reason,
        measured=state.measured,
        knee=_knee(study, spec),
        new_trials=state.new_trials,
    )


def _account(t: optuna.trial.FrozenTrial, state: _State, known: dict[Any, int]) -> str:
    key = config_key(config_of(t))
    if "duplicate_of" in t.user_attrs:
        state.consecutive_duplicates += 1
        return "duplicate"
    state.consecutive_duplicates = 0
    if key not in known:
        state.distinct += 1
    if t.state == TrialState.PRUNED:
        known.setdefault(key, t.number)
        return "skipped"
    state.measured += 1
    if t.state == TrialState.COMPLETE:
        known[key] = t.number
        state.failures.clear()
        return "measured-ok"
    known.setdefault(key, t.number)
    failure = t.user_attrs.get("failure") or {}
    state.failures.append(f"{failure.get('kind', 'error')}: {str(failure.get('message', ''))[:160]}")
    return "measured-failed"


def _set_constraints(trial: Trial, spec: Spec, violations: list[float]) -> None:
    trial.set_user_attr("constraints", violations)
    trial.set_user_attr("feasible", all(v <= 0 for v in violations))
    for metric, value in zip(spec.constraints, violations, strict=True):
        trial.set_constraint(metric, value)


def _reuse(study: optuna.Study, trial: Trial, number: int, spec: Spec) -> Any:
    earlier = study.get_trials(deepcopy=False)[number]
    trial.set_user_attr("duplicate_of", number)
    for key, value in earlier.user_attrs.items():
        if key not in ("config", "duplicate_of", "constraints", "feasible"):
            trial.set_user_attr(key, value)
    if earlier.user_attrs.get("constraints") is not None:
        _set_constraints(trial, spec, list(earlier.user_attrs["constraints"]))
    if earlier.state != TrialState.COMPLETE:
        reason = f"already tried as trial {number} ({earlier.state.name.lower()})"
        trial.set_user_attr("skip_reason", reason)
        raise optuna.TrialPruned(reason)
    values = earlier.values
    return list(values) if len(values) > 1 else values[0]


def _suggest(trial: Trial, name: str, dist: Any) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise StudyError(f"axis {name!r}: unsupported distribution {dist!r}")


def _enumerable(spec: Spec) -> bool:
    return all(a.kind != "range" or a.is_int or a.step is not None for a in spec.searched_axes().values())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _knee(study: optuna.Study, spec: Spec) -> KneeResult:
    return find_knee(trial_records(study.get_trials(deepcopy=False)), spec.knee.tolerance, bootstrap=0)
