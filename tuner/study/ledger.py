"""Trial records: what each trial of a study counts for, and how the workers of one study share it.

A trial is *measured* (it spent the budget), a duplicate, a yield, a skip, or died with its worker;
:func:`known_configs` and :func:`study_progress` count the study as every worker sees it, :func:`claim`
decides without a lock which worker measures a config, and :func:`trial_records` turns complete
trials into analysis records.
"""

from __future__ import annotations

import datetime as _dt
import math
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study.optuna_internals import heartbeat_enabled, storage_of, study_id_of
from tuner.trial_attrs import TrialAttrs, config_of, is_duplicate, is_feasible, is_measured, is_yield


def constraint_violations(metrics: Mapping[str, Any], constraints: Mapping[str, Any]) -> list[float]:
    """Optuna-style constraint values (<= 0 feasible), one per constraint, in file order."""
    out: list[float] = []
    for metric, bound in constraints.items():
        value = metrics.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(1.0)
            continue
        lo = bound["min"] if isinstance(bound, Mapping) else bound.min
        hi = bound["max"] if isinstance(bound, Mapping) else bound.max
        worst = -1.0
        if hi is not None:
            worst = max(worst, float(value) - float(hi))
        if lo is not None:
            worst = max(worst, float(lo) - float(value))
        out.append(worst if worst > 0 else -1.0)
    return out


def _key(trial: FrozenTrial) -> Any:
    from tuner.search.space import config_key

    return config_key(config_of(trial))


def known_configs(trials: Sequence[FrozenTrial]) -> dict[Any, int]:
    """Config key -> the trial that settled it: a complete measurement if any, else the first failure/skip.

    Duplicates, yields, interrupted, spooled and died trials settle nothing (their config is open).
    """
    known: dict[Any, int] = {}
    complete: set[Any] = set()
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED):
            continue
        if is_duplicate(t) or is_yield(t):
            continue
        if t.state == TrialState.FAIL and not is_measured(t):
            continue
        key = _key(t)
        if key not in known or (t.state == TrialState.COMPLETE and key not in complete):
            known[key] = t.number
            if t.state == TrialState.COMPLETE:
                complete.add(key)
    return known


def _alive_running(trials: Sequence[FrozenTrial], me: int, max_age_s: float) -> list[FrozenTrial]:
    now = _dt.datetime.now()
    host = socket.gethostname()
    out = []
    for t in trials:
        if t.state != TrialState.RUNNING or t.number == me:
            continue
        started = t.datetime_start
        # far past any trial's timeout: its worker is gone even if no heartbeat says so. Only for trials of
        # this host: Optuna stamps trials with the local clock of the worker, and clocks and time zones of
        # other machines may differ (their dead trials are found by the heartbeat)
        if (
            started is not None
            and (t.user_attrs.get("worker") or {}).get("host") == host
            and (now - started.replace(tzinfo=None)).total_seconds() > max_age_s
        ):
            continue
        out.append(t)
    return out


def claimed_running(trials: Sequence[FrozenTrial], me: int = -1, max_age_s: float = math.inf) -> list[FrozenTrial]:
    """RUNNING trials (other than ``me``) whose worker is measuring them right now."""
    return [t for t in _alive_running(trials, me, max_age_s) if t.user_attrs.get("claimed")]


@dataclass(frozen=True)
class Claim:
    """What a trial may do with its config: measure it, reuse an earlier trial, or stand back."""

    measure: bool = False
    reuse: int | None = None
    yielded_to: int | None = None
    reason: str = ""


#: the longest a new trial waits for lower-numbered trials of other workers to decide (then goes on)
CLAIM_WAIT_S = 10.0
_GAVE_UP: set[tuple[int, int]] = set()


def claim(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    key: Any,
    *,
    target: int,
    remeasure: bool = False,
    max_age_s: float = math.inf,
) -> Claim:
    """Decide, across every worker of the study, whether ``trial`` measures its config ``key``.

    Workers agree without a lock, bakery-style: a trial first waits until every running trial with a
    lower number has decided (set ``claimed``, or finished), then stands back if the config is
    measured or claimed by another trial, or if the measured trials plus the claimed ones already fill
    the budget of ``target``; otherwise it claims the config. So N workers on one study measure each
    config once and stop at the budget together.
    """
    me = trial.number
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        trials = study.get_trials(deepcopy=False)
        running = _alive_running(trials, me, max_age_s)
        undecided = [
            t
            for t in running
            if t.number < me and not t.user_attrs.get("claimed") and (study_id_of(study), t.number) not in _GAVE_UP
        ]
        if not undecided:
            break
        if time.monotonic() > deadline:
            # a worker that died between starting a trial and deciding: wait for it once, not for every trial
            _GAVE_UP.update((study_id_of(study), t.number) for t in undecided)
            break
        time.sleep(0.05)
    if not remeasure:
        earlier = known_configs(trials).get(key)
        if earlier is not None and earlier != me:
            return Claim(reuse=earlier)
        for t in running:
            if t.user_attrs.get("claimed") and _key(t) == key:
                return Claim(yielded_to=t.number, reason=f"trial {t.number} (another worker) is measuring this config")
    measured = sum(1 for t in trials if is_measured(t))
    busy = [t for t in running if t.user_attrs.get("claimed")]
    if measured + len(busy) >= target:
        return Claim(
            reason=f"the budget is taken: {measured} measured and {len(busy)} being measured by other workers "
            f"of {target}"
        )
    trial.set_user_attr("claimed", True)
    return Claim(measure=True)


@dataclass(frozen=True)
class Progress:
    """The study as every worker sees it: the budget spent, configs settled, trials in flight elsewhere."""

    measured: int
    distinct: int
    in_flight: int
    waiting: int


def study_progress(study: optuna.Study, *, max_age_s: float = math.inf) -> Progress:
    trials = study.get_trials(deepcopy=False)
    return Progress(
        measured=sum(1 for t in trials if is_measured(t)),
        distinct=len(known_configs(trials)),
        in_flight=len(claimed_running(trials, max_age_s=max_age_s)),
        waiting=sum(1 for t in trials if t.state == TrialState.WAITING),
    )


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of dead workers FAIL and re-queue them (Optuna's heartbeat machinery)."""
    if heartbeat_enabled(storage_of(study)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


#: closed-loop figures that describe ``qps`` alone (its windows, interval, spread, repeats): a rate view drops
#: them, so nothing reads them as figures of the rate
CLOSED_LOOP_ONLY: tuple[str, ...] = ("window_qps", "qps_ci_low", "qps_ci_high", "qps_cv", "qps_runs", "qps_spread")


def rate_view(metrics: Mapping[str, Any], rate: str) -> dict[str, Any] | None:
    """A trial's metrics as the analysis reads them when the study's rate metric is ``rate``.

    ``rate == "qps"``: the metrics as they are. Otherwise ``qps`` holds the rate's value (``server_qps``,
    ``offline_qps``, which also stays under its own name), the closed-loop ``qps`` is kept as ``closed_qps``
    and :data:`CLOSED_LOOP_ONLY` is dropped -- so the knee, the Pareto front and the paired decision, which
    read ``qps``, decide on the rate unchanged. None when the trial has no finite value of ``rate``.
    :func:`closed_loop_view` turns such a view back into honest metrics.
    """
    if rate == "qps":
        return dict(metrics)
    value = metrics.get(rate)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        return None
    view = {k: v for k, v in metrics.items() if k not in CLOSED_LOOP_ONLY}
    if "qps" in metrics:
        view["closed_qps"] = metrics["qps"]
    view["qps"] = float(value)
    return view


def closed_loop_view(metrics: Mapping[str, Any], rate: str) -> dict[str, Any]:
    """The honest metrics of a record the analysis read through :func:`rate_view`: ``qps`` is the closed-loop
    qps again, the rate (as the analysis used it: a repeat's mean, drift-corrected when the study corrects
    drift) stands under its own name, and ``qps_raw`` -- the rate as measured, before drift correction --
    becomes ``<rate>_raw``. Metrics of a ``qps`` study, or without ``closed_qps``, come back as they are."""
    out = dict(metrics)
    if rate == "qps" or "closed_qps" not in out:
        return out
    out[rate] = out["qps"]
    out["qps"] = out.pop("closed_qps")
    if "qps_raw" in out:
        out[f"{rate}_raw"] = out.pop("qps_raw")
    return out


def trial_records(trials: Sequence[FrozenTrial], *, include_duplicates: bool = False, rate: str = "qps") -> list[Any]:
    """Complete trials as analysis records (duplicates left out: they are the same measurement).

    ``rate``: the study's rate metric (:func:`tuner.trial_attrs.rate_metric_of`); other than ``qps`` each
    record's metrics are its :func:`rate_view`, and trials without the rate are left out.
    """
    from tuner.analysis.knee import TrialRecord

    out = []
    for t in trials:
        if t.state != TrialState.COMPLETE or t.user_attrs.get("qps") is None:
            continue
        if is_duplicate(t) and not include_duplicates:
            continue
        metrics = rate_view(TrialAttrs.read(t.user_attrs).metrics, rate)
        if metrics is None:
            continue
        out.append(
            TrialRecord(
                number=t.number,
                params=config_of(t),
                metrics=metrics,
                feasible=is_feasible(t),
            )
        )
    return out
