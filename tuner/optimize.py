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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from tuner import spool
from tuner.analysis import KneeResult, find_knee
from tuner.errors import StorageError, StudyError
from tuner.platform import usable_cores
from tuner.runner import measure_config, resolve_model_path
from tuner.samplers import make_sampler
from tuner.space import RuleContext, config_key, distributions, grid_size, skip_reason
from tuner.spec import Spec
from tuner.study import (
    Claim,
    claim,
    constraint_violations,
    fail_stale_trials,
    is_storage_error,
    is_yield,
    open_storage,
    open_study,
    redact,
    scrub,
    storage_errors,
    storage_url,
    study_progress,
    trial_records,
    worker_identity,
)

EventSink = Callable[[dict[str, Any]], None]
WAIT_POLL_S = 0.5  # how often a worker whose budget is in flight elsewhere looks again
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
    url = storage_url(storage) if storage else spec.storage_url()
    with storage_errors("lost the study storage", url):
        return _optimize(
            spec,
            url=url,
            new=new,
            remeasure=remeasure,
            trials=trials,
            timeout_s=timeout_s,
            allow_platform_mix=allow_platform_mix,
            on_event=on_event,
        )


def _optimize(
    spec: Spec,
    *,
    url: str,
    new: bool,
    remeasure: bool,
    trials: int | None,
    timeout_s: float | None,
    allow_platform_mix: bool,
    on_event: EventSink | None,
) -> OptimizeResult:
    emit = on_event or (lambda _e: None)
    model_path = resolve_model_path(spec)  # a missing or corrupt model is an error before any study is touched
    store = open_storage(url, heartbeat_s=spec.study.heartbeat_s, grace_s=spec.study.heartbeat_grace_s)
    sampler = make_sampler(spec)

    def notice(text: str) -> None:
        emit({"event": "notice", "message": text})

    spool_file = spool.spool_path(spec, url)
    with storage_errors("cannot use study storage", url):
        study = open_study(
            spec, store, sampler=sampler, new=new, allow_platform_mix=allow_platform_mix, on_notice=notice
        )
        for lost, number in spool.flush(study, spool_file):
            notice(f"wrote trial {lost}'s result from the local spool {spool_file} into the study as trial {number}")
        # a resumed study must not replay the seed's sequence from the start (every proposal a duplicate,
        # until MAX_CONSECUTIVE_DUPLICATES stops it): seed + trials so far, still deterministic. Not for
        # grid, whose stored grid ids index the seed's shuffle
        existing = len(study.get_trials(deepcopy=False))
        if existing and spec.study.sampler != "grid":
            study.sampler = make_sampler(spec, seed=(spec.study.seed + existing) % 2**32)
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

    # a trial far past its timeout is dead even where no heartbeat says so
    max_age_s = spec.study.trial_timeout_s * spec.measure.repeats + spec.study.heartbeat_grace_s + 60
    worker = worker_identity()
    state = _State()
    with storage_errors("cannot read study", url):
        progress = study_progress(study, max_age_s=max_age_s)
        state.measured, state.distinct = progress.measured, progress.distinct
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
        try:
            return measure_trial(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("failure", {"kind": "interrupted", "message": "interrupted by the user (Ctrl-C)"})
            raise

    def measure_trial(trial: Trial) -> Any:
        current["number"] = trial.number
        params = {name: fixed[name] if name in fixed else _suggest(trial, name, dists[name]) for name in spec.axes}
        trial.set_user_attr("config", params)
        trial.set_user_attr("worker", worker)
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
        # every worker of the study agrees who measures what (see tuner.study.claim)
        decision = claim(study, trial, config_key(params), target=target, remeasure=remeasure, max_age_s=max_age_s)
        if decision.reuse is not None:
            return _reuse(study, trial, decision.reuse, spec)
        if not decision.measure:
            _stand_back(trial, decision)
        result = measure_config(spec, params, model_path=model_path, on_event=emit)
        # the result, as plain data first: if the storage is gone it goes to the spool instead
        attrs: dict[str, Any] = {name: _jsonable(value) for name, value in result.metrics.items()}
        attrs["applied"] = dict(result.applied)
        attrs["wall_s"] = result.wall_s
        constraints: dict[str, float] = {}
        values: list[Any] = []
        failed: str | None = None
        if not result.ok:
            assert result.failure is not None
            attrs["failure"] = result.failure.to_dict()
            attrs["feasible"] = False
            failed = result.failure.describe()
        else:
            violations = constraint_violations(result.metrics, spec.model.model_dump()["constraints"])
            attrs["constraints"] = violations
            attrs["feasible"] = all(v <= 0 for v in violations)
            constraints = dict(zip(spec.constraints, violations, strict=True))
            values = [result.metrics.get(m) for m, _ in spec.objectives]
            if any(v is None or not math.isfinite(float(v)) for v in values):
                attrs["failure"] = {"kind": "error", "message": f"objective metric missing or NaN: {values}"}
                failed = "objective metric missing or not finite"
        try:
            for name, value in attrs.items():
                trial.set_user_attr(name, value)
            for metric, value in constraints.items():
                trial.set_constraint(metric, value)
        except Exception as err:
            if not is_storage_error(err, url):
                raise
            _spool_result(study, trial, params, attrs, constraints, values, failed, spool_file, url, err, lost)
            raise
        if failed:
            raise _TrialFailedError(failed)
        return [float(v) for v in values] if len(values) > 1 else float(values[0])

    current: dict[str, int] = {}
    lost: list[str] = []  # set when a measured result could not be written to the storage
    waiting_said = False
    stop_reason = "budget reached"
    while True:
        try:
            with storage_errors("lost the study storage", url):
                fail_stale_trials(study)  # trials of dead workers: FAIL, and re-queued for whoever is alive
                progress = study_progress(study, max_age_s=max_age_s)
        except StorageError as err:
            raise StorageError(f"{err}; no trial was in progress on this worker, nothing is lost") from None
        state.measured, state.distinct = progress.measured, progress.distinct
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
        if progress.in_flight and state.measured + progress.in_flight >= target and not progress.waiting:
            # the rest of the budget is being measured by other workers: wait for them (or for their death)
            if not waiting_said:
                emit({"event": "waiting", "in_flight": progress.in_flight, "measured": state.measured})
                waiting_said = True
            time.sleep(WAIT_POLL_S)
            continue
        waiting_said = False
        current.clear()
        try:
            study.optimize(objective, n_trials=1, catch=(_TrialFailedError,), gc_after_trial=False)
        except Exception as err:
            if lost:
                raise StorageError(lost[0]) from None
            if is_storage_error(err, url):
                number = current.get("number")
                what = "nothing is lost" if number is None else f"trial {number} was not measured, nothing is lost"
                raise StorageError(
                    f"lost the study storage {redact(url)}: {scrub(_root_message(err), url)}; {what}. Run the same "
                    "command again when it is back: the study resumes"
                ) from None
            raise
        if "number" not in current:
            stop_reason = "the sampler stopped the study (grid exhausted)"
            break
        with storage_errors("lost the study storage", url):
            t = study.get_trials(deepcopy=False)[current["number"]]
        state.new_trials.append(t.number)
        outcome = _account(t, state)
        if outcome == "yielded":
            # workers with the same seed propose the same configs in the same order: diverge from here
            study.sampler.reseed_rng()
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
            if len(state.failures) >= limit and len({_cause(f) for f in state.failures[-limit:]}) == 1:
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


def _account(t: optuna.trial.FrozenTrial, state: _State) -> str:
    if "duplicate_of" in t.user_attrs or is_yield(t):
        state.consecutive_duplicates += 1
        return "duplicate" if "duplicate_of" in t.user_attrs else "yielded"
    state.consecutive_duplicates = 0
    if t.state == TrialState.PRUNED:
        return "skipped"
    state.measured += 1  # the loop refreshes this from the study; a stop right after a trial must count it
    if t.state == TrialState.COMPLETE:
        state.failures.clear()
        return "measured-ok"
    failure = t.user_attrs.get("failure") or {}
    state.failures.append(f"{failure.get('kind', 'error')}: {str(failure.get('message', ''))[:160]}")
    return "measured-failed"


#: attributes of a trial's own (not copied when it reuses an earlier trial's measurement)
_OWN_ATTRS = ("config", "duplicate_of", "constraints", "feasible", "worker", "claimed", "spool_id", "spooled_from")


def _stand_back(trial: Trial, decision: Claim) -> None:
    """Another worker measures this config, or the budget is taken: PRUNED, with the reason."""
    trial.set_user_attr("yielded", {"to": decision.yielded_to, "reason": decision.reason})
    trial.set_user_attr("skip_reason", decision.reason)
    raise optuna.TrialPruned(decision.reason)


def _spool_result(
    study: optuna.Study,
    trial: Trial,
    params: dict[str, Any],
    attrs: dict[str, Any],
    constraints: dict[str, float],
    values: list[Any],
    failed: str | None,
    path: Any,
    url: str,
    err: BaseException,
    lost: list[str],
) -> None:
    """Keep a measured result that the storage refused, and say where (or say that it is lost)."""
    item = spool.entry(
        study,
        trial,
        state=TrialState.FAIL if failed else TrialState.COMPLETE,
        values=None if failed else [float(v) for v in values],
        user_attrs={**attrs, "config": params},
        constraints=constraints,
    )
    cause = scrub(_root_message(err), url)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    qps = attrs.get("qps")
    result = f"qps {qps:.4g}" if isinstance(qps, int | float) and not failed else (failed or "no qps")
    try:
        spool.append(path, item)
    except OSError as spool_err:
        lost.append(
            f"lost the study storage {redact(url)} ({cause}) and could not keep the result locally either "
            f"({path}: {spool_err.strerror}): trial {trial.number} ({shown}; {result}) was NOT saved. Earlier "
            "trials are in the study; run the same command again when the storage is back"
        )
        return
    lost.append(
        f"lost the study storage {redact(url)} ({cause}); trial {trial.number}'s result ({shown}; {result}) is kept "
        f"in {path} and will be written into the study by the next run of the same command"
    )


def _root_message(err: BaseException) -> str:
    from tuner.study import _first_line, _root_cause

    return _first_line(_root_cause(err))


def _cause(failure: str) -> str:
    """A failure line without its numbers: two OOMs at 512 and 530 MiB are the same cause."""
    return re.sub(r"\d+(?:\.\d+)?", "#", failure)


def _set_constraints(trial: Trial, spec: Spec, violations: list[float]) -> None:
    trial.set_user_attr("constraints", violations)
    trial.set_user_attr("feasible", all(v <= 0 for v in violations))
    for metric, value in zip(spec.constraints, violations, strict=True):
        trial.set_constraint(metric, value)


def _reuse(study: optuna.Study, trial: Trial, number: int, spec: Spec) -> Any:
    earlier = study.get_trials(deepcopy=False)[number]
    trial.set_user_attr("duplicate_of", number)
    for key, value in earlier.user_attrs.items():
        if key not in _OWN_ATTRS:
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
