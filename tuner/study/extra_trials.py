"""Measurements the study loop adds outside Optuna's ask/tell: paired confirmation rounds and drift references.

Both re-measure configurations the search already measured, in fresh child processes, and store each
measurement as a trial of the study (so ``report``, ``compare``, ``export`` and a resumed study see them),
marked with the user attribute ``confirm`` (``{"session", "round", "slot", "config"}``) or ``drift``
(``{"reference", "after"}``). They never count toward the search budget (:func:`tuner.trial_attrs.is_measured`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.config.spec import Spec
from tuner.execution.runner import measure_config
from tuner.search.space import distributions
from tuner.study.objective import TrialSettings, result_outcome


def measure_as_trial(
    settings: TrialSettings, params: Mapping[str, Any], marks: Mapping[str, Any]
) -> optuna.trial.FrozenTrial:
    """Measure ``params`` once in a fresh child and add it to the study as a trial carrying ``marks``."""
    spec, study = settings.spec, settings.study
    result = measure_config(spec, dict(params), model_path=settings.model_path, on_event=settings.emit)
    outcome = result_outcome(spec, result)
    attrs = {**outcome.attrs.to_user_attrs(), "config": dict(params), "worker": settings.worker, **marks}
    dists = _searched(spec)
    ok = outcome.failed is None
    frozen = optuna.trial.create_trial(
        state=TrialState.COMPLETE if ok else TrialState.FAIL,
        values=[float(v) for v in outcome.values] if ok else None,
        params={k: params[k] for k in dists if k in params},
        distributions={k: d for k, d in dists.items() if k in params},
        user_attrs=attrs,
        system_attrs={f"constraints:{k}": float(v) for k, v in outcome.constraints.items()},
    )
    study.add_trial(frozen)
    return study.get_trials(deepcopy=False)[-1]


def _searched(spec: Spec) -> dict[str, Any]:
    fixed = {n for n, a in spec.axes.items() if a.kind == "fixed"}
    return {k: d for k, d in distributions(spec).items() if k not in fixed}
