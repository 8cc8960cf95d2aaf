"""One trial of ``tuner optimize``: propose a config, agree with the other workers, measure, record.

:class:`Objective` is what the loop (:mod:`tuner.study.run`) hands to Optuna for each trial. It suggests
the config, skips it when a validity rule says so (PRUNED with the reason), asks the study who measures
it (:func:`tuner.study.ledger.claim`): a config already measured reuses that trial (``duplicate_of``), one
another worker is measuring or a budget taken by others stands back (``yielded``). Otherwise it measures
the config in a child and writes the result; a result the storage refuses goes to the local spool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import Trial, TrialState

from tuner.config.spec import Spec
from tuner.execution.runner import measure_config
from tuner.search.space import RuleContext, config_key, skip_reason, suggest
from tuner.study import spool
from tuner.study.ledger import Claim, claim, constraint_violations
from tuner.study.storage import _first_line, _root_cause, is_storage_error, redact, scrub


class _TrialFailedError(Exception):
    """Raised inside the objective so Optuna records the trial as FAIL (caught by ``optimize``)."""


@dataclass(eq=False)
class Objective:
    """Optuna's objective for one study on this worker: ``study.optimize(objective, ...)``."""

    spec: Spec
    study: optuna.Study
    url: str
    model_path: Path | None
    ctx: RuleContext
    dists: Mapping[str, Any]
    fixed: Mapping[str, Any]
    target: int
    remeasure: bool
    max_age_s: float
    worker: dict[str, Any]
    spool_file: Path
    emit: Callable[[dict[str, Any]], None]
    #: the measured trials the loop counts so far (the ``index`` of a trial_start event is one more)
    measured: Callable[[], int]
    #: the number of the trial in progress (the loop clears it before each trial)
    current: dict[str, int] = field(default_factory=dict)
    #: set when a measured result could not be written to the storage
    lost: list[str] = field(default_factory=list)

    def __call__(self, trial: Trial) -> Any:
        try:
            return self.measure_trial(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("failure", {"kind": "interrupted", "message": "interrupted by the user (Ctrl-C)"})
            raise

    def measure_trial(self, trial: Trial) -> Any:
        spec, study, url, emit, fixed, dists = self.spec, self.study, self.url, self.emit, self.fixed, self.dists
        self.current["number"] = trial.number
        params = {name: fixed[name] if name in fixed else suggest(trial, name, dists[name]) for name in spec.axes}
        trial.set_user_attr("config", params)
        trial.set_user_attr("worker", self.worker)
        emit(
            {
                "event": "trial_start",
                "number": trial.number,
                "params": params,
                "index": self.measured() + 1,
                "target": self.target,
            }
        )
        reason = skip_reason(params, self.ctx)
        if reason:
            trial.set_user_attr("skip_reason", reason)
            raise optuna.TrialPruned(reason)
        # every worker of the study agrees who measures what (see tuner.study.ledger.claim)
        decision = claim(
            study, trial, config_key(params), target=self.target, remeasure=self.remeasure, max_age_s=self.max_age_s
        )
        if decision.reuse is not None:
            return _reuse(study, trial, decision.reuse, spec)
        if not decision.measure:
            _stand_back(trial, decision)
        result = measure_config(spec, params, model_path=self.model_path, on_event=emit)
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
            _spool_result(
                study, trial, params, attrs, constraints, values, failed, self.spool_file, url, err, self.lost
            )
            raise
        if failed:
            raise _TrialFailedError(failed)
        return [float(v) for v in values] if len(values) > 1 else float(values[0])


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
    return _first_line(_root_cause(err))


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
