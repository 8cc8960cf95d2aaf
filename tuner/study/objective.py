"""One trial of ``tuner optimize``: propose a config, agree with the other workers, measure, record.

:class:`TrialAttempt` is what :class:`tuner.study.run.StudyRun` hands to Optuna for one trial. It suggests
the config, skips it when a validity rule says so (PRUNED with the reason), asks the study who measures
it (:func:`tuner.study.ledger.claim`): a config already measured reuses that trial (``duplicate_of``), one
another worker is measuring or a budget taken by others stands back (``yielded``). Otherwise it measures
the config in a child and writes the result (:class:`tuner.trial_attrs.TrialAttrs`); a result the storage
refuses goes to the local spool. The attempt keeps what the run needs to know afterwards: the trial's
number and, when a measured result could not be written, why (:attr:`TrialAttempt.lost`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import Trial, TrialState

from tuner.config.spec import Spec
from tuner.execution.runner import measure_config
from tuner.measurement.result import TrialResult
from tuner.search.rules import RuleContext, skip_reason
from tuner.search.space import config_key, suggest
from tuner.study import spool
from tuner.study.early_stop import EarlyStop
from tuner.study.ledger import Claim, claim, constraint_violations, trial_records
from tuner.study.storage import is_storage_error, redact, root_cause, scrub
from tuner.text import first_line, format_params
from tuner.trial_attrs import TrialAttrs


class TrialFailedError(Exception):
    """Raised inside the objective so Optuna records the trial as FAIL (caught by the run loop)."""


def root_message(err: BaseException) -> str:
    """The first line of the driver error under Optuna's and SQLAlchemy's wrappers."""
    return first_line(root_cause(err))


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of one run shares."""

    spec: Spec
    study: optuna.Study
    url: str
    model_path: Path | None
    rules: RuleContext
    distributions: Mapping[str, Any]
    fixed: Mapping[str, Any]
    target: int
    remeasure: bool
    max_age_s: float
    worker: dict[str, Any]
    spool_file: Path
    emit: Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class MeasuredOutcome:
    """A measured result as plain data, before it is written (so the spool can keep it instead)."""

    attrs: TrialAttrs
    constraints: dict[str, float]
    values: list[Any]
    failed: str | None


class TrialAttempt:
    """Optuna's objective for exactly one trial: ``study.optimize(TrialAttempt(settings, index=k), n_trials=1)``."""

    def __init__(self, settings: TrialSettings, *, index: int) -> None:
        self.settings = settings
        self.index = index  #: this trial's place in the budget (the trial_start event shows it)
        self.number: int | None = None  #: the Optuna trial number, once Optuna started the trial
        self.lost: str | None = None  #: set when a measured result could not be written to the storage

    def __call__(self, trial: Trial) -> Any:
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("failure", {"kind": "interrupted", "message": "interrupted by the user (Ctrl-C)"})
            raise

    def _run(self, trial: Trial) -> Any:
        s = self.settings
        self.number = trial.number
        params = {
            name: s.fixed[name] if name in s.fixed else suggest(trial, name, s.distributions[name])
            for name in s.spec.axes
        }
        _write(trial, TrialAttrs(config=params, worker=s.worker))
        s.emit(
            {"event": "trial_start", "number": trial.number, "params": params, "index": self.index, "target": s.target}
        )
        reason = skip_reason(params, s.rules)
        if reason:
            _write(trial, TrialAttrs(skip_reason=reason))
            raise optuna.TrialPruned(reason)
        # every worker of the study agrees who measures what (see tuner.study.ledger.claim)
        decision = claim(
            s.study, trial, config_key(params), target=s.target, remeasure=s.remeasure, max_age_s=s.max_age_s
        )
        if decision.reuse is not None:
            return _reuse(s.study, trial, decision.reuse, s.spec)
        if not decision.measure:
            _stand_back(trial, decision)
        stopper = EarlyStop(None, None)  # never stops
        if s.spec.study.early_stop:
            rate = s.spec.model.load.rate_metric
            records = trial_records(s.study.get_trials(deepcopy=False), rate=rate)
            stopper = EarlyStop.for_trial(records, params, s.spec.knee.tolerance, rate=rate)
        result = measure_config(
            s.spec, params, model_path=s.model_path, on_event=stopper.wrap(s.emit), should_stop=stopper.reason
        )
        if result.failure is not None and result.failure.kind == "stopped":
            reason = result.failure.message
            _write(
                trial,
                TrialAttrs(
                    metrics=dict(result.metrics), wall_s=result.wall_s, stopped_early=reason, skip_reason=reason
                ),
            )
            _report_windows(trial, stopper.windows)
            raise optuna.TrialPruned(reason)
        outcome = result_outcome(s.spec, result)
        try:
            _write(trial, outcome.attrs)
            for metric, value in outcome.constraints.items():
                trial.set_constraint(metric, value)
            _report_windows(trial, stopper.windows)
        except Exception as err:
            if not is_storage_error(err, s.url):
                raise
            self.lost = _spool_result(s, trial, params, outcome, err)
            raise
        if outcome.failed:
            raise TrialFailedError(outcome.failed)
        values = outcome.values
        return [float(v) for v in values] if len(values) > 1 else float(values[0])


def _report_windows(trial: Trial, windows: list[float]) -> None:
    """Each window's qps as an intermediate value (Optuna keeps them for single-objective studies only)."""
    if len(trial.study.directions) == 1:
        for step, value in enumerate(windows):
            trial.report(value, step)


def _write(trial: Trial, attrs: TrialAttrs) -> None:
    for name, value in attrs.to_user_attrs().items():
        trial.set_user_attr(name, value)


def result_outcome(spec: Spec, result: TrialResult) -> MeasuredOutcome:
    """The trial's attributes, constraint values and objective values for a measured result."""
    common = {"metrics": dict(result.metrics), "applied": dict(result.applied), "wall_s": result.wall_s}
    if not result.ok:
        assert result.failure is not None
        attrs = TrialAttrs(**common, failure=result.failure.to_dict(), feasible=False)
        return MeasuredOutcome(attrs, {}, [], result.failure.describe())
    violations = constraint_violations(result.metrics, spec.model.model_dump()["constraints"])
    values = [result.metrics.get(m) for m, _ in spec.objectives]
    failure, failed = None, None
    if any(v is None or not math.isfinite(float(v)) for v in values):
        failure = {"kind": "error", "message": f"objective metric missing or NaN: {values}"}
        failed = "objective metric missing or not finite"
    unserved = None if failure else unserved_reason(spec, result)
    attrs = TrialAttrs(
        **common,
        constraints=violations,
        feasible=all(v <= 0 for v in violations) and unserved is None,
        failure=failure,
        infeasible_reason=unserved,
    )
    return MeasuredOutcome(attrs, dict(zip(spec.constraints, violations, strict=True)), values, failed)


def unserved_reason(spec: Spec, result: TrialResult) -> str | None:
    """Why a ``load.scenario: server`` trial is infeasible: ``server_qps`` 0, no arrival rate met the latency
    bound (LoadGen's reason from ``applied["loadgen"]``); None when it served a rate, or for other scenarios.

    Such a trial is complete (its closed-loop figures are real measurements) but never knee or best; the
    study goes on.
    """
    if spec.model.load.scenario != "server":
        return None
    rate = result.metrics.get("server_qps")
    if isinstance(rate, int | float) and not isinstance(rate, bool) and math.isfinite(float(rate)) and rate > 0:
        return None
    loadgen = result.applied.get("loadgen") if isinstance(result.applied, Mapping) else None
    reason = loadgen.get("reason") if isinstance(loadgen, Mapping) else None
    bound = spec.model.load.latency_ms
    return str(
        reason
        or f"no arrival rate met the latency bound (p{spec.model.load.percentile * 100:g} <= {bound:g} ms, "
        "load.latency_ms)"
    )


def _stand_back(trial: Trial, decision: Claim) -> None:
    """Another worker measures this config, or the budget is taken: PRUNED, with the reason."""
    _write(
        trial, TrialAttrs(yielded={"to": decision.yielded_to, "reason": decision.reason}, skip_reason=decision.reason)
    )
    raise optuna.TrialPruned(decision.reason)


def _spool_result(
    s: TrialSettings, trial: Trial, params: dict[str, Any], outcome: MeasuredOutcome, err: BaseException
) -> str:
    """Keep a measured result that the storage refused; the message says where (or that it is lost)."""
    item = spool.entry(
        s.study,
        trial,
        state=TrialState.FAIL if outcome.failed else TrialState.COMPLETE,
        values=None if outcome.failed else [float(v) for v in outcome.values],
        user_attrs={**outcome.attrs.to_user_attrs(), "config": params},
        constraints=outcome.constraints,
    )
    cause = scrub(root_message(err), s.url)
    shown = format_params(params)
    qps = outcome.attrs.metrics.get("qps")
    failed = outcome.failed
    result = f"qps {qps:.4g}" if isinstance(qps, int | float) and not failed else (failed or "no qps")
    try:
        spool.append(s.spool_file, item)
    except OSError as spool_err:
        return (
            f"lost the study storage {redact(s.url)} ({cause}) and could not keep the result locally either "
            f"({s.spool_file}: {spool_err.strerror}): trial {trial.number} ({shown}; {result}) was NOT saved. "
            "Earlier trials are in the study; run the same command again when the storage is back"
        )
    return (
        f"lost the study storage {redact(s.url)} ({cause}); trial {trial.number}'s result ({shown}; {result}) is "
        f"kept in {s.spool_file} and will be written into the study by the next run of the same command"
    )


def _reuse(study: optuna.Study, trial: Trial, number: int, spec: Spec) -> Any:
    earlier = study.get_trials(deepcopy=False)[number]
    trial.set_user_attr("duplicate_of", number)
    for key, value in earlier.user_attrs.items():
        if key not in TrialAttrs.OWN:
            trial.set_user_attr(key, value)
    violations = earlier.user_attrs.get("constraints")
    if violations is not None:
        # infeasible_reason (no rate met the load's bound) came over with the measurement
        served = not earlier.user_attrs.get("infeasible_reason")
        _write(trial, TrialAttrs(constraints=list(violations), feasible=all(v <= 0 for v in violations) and served))
        for metric, value in zip(spec.constraints, violations, strict=True):
            trial.set_constraint(metric, value)
    if earlier.state != TrialState.COMPLETE:
        reason = f"already tried as trial {number} ({earlier.state.name.lower()})"
        trial.set_user_attr("skip_reason", reason)
        raise optuna.TrialPruned(reason)
    values = earlier.values
    return list(values) if len(values) > 1 else values[0]
