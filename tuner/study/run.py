"""The search loop behind ``tuner optimize``: one Optuna trial per config, each measured in a child.

Budget: ``study.trials`` counts *measured* trials of the study (a resumed study continues toward the
same total); skipped configs (a validity rule) are PRUNED with their reason; a config already measured
is not measured again (the trial reuses the earlier result, ``duplicate_of``) unless ``remeasure``.
Stops on: the budget, ``timeout_s``, ``patience`` trials without improving the plateau or the knee,
the search space exhausted, or ``max_consecutive_failures`` failures of the same cause (an error).
Ctrl-C marks the running trial FAIL with ``failure.kind = "interrupted"`` and re-raises; running the
same command again resumes.

The per-trial work (suggest, claim, measure, record, spool) is :class:`tuner.study.objective.Objective`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.analysis.knee import KneeResult, find_knee
from tuner.config.spec import Spec
from tuner.errors import StorageError, StudyError
from tuner.execution.runner import resolve_model_path
from tuner.platform import usable_cores
from tuner.search.samplers import make_sampler
from tuner.search.space import RuleContext, distributions, grid_size
from tuner.study import spool
from tuner.study.ledger import fail_stale_trials, is_yield, study_progress, trial_records
from tuner.study.objective import Objective, _root_message, _TrialFailedError
from tuner.study.storage import is_storage_error, open_storage, redact, scrub, storage_errors, storage_url
from tuner.study.studies import open_study, worker_identity

EventSink = Callable[[dict[str, Any]], None]
WAIT_POLL_S = 0.5  # how often a worker whose budget is in flight elsewhere looks again
IMPROVEMENT = 0.01  # a plateau gain below 1 % is noise, not progress (patience)
MAX_CONSECUTIVE_DUPLICATES = 200


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

    current: dict[str, int] = {}
    lost: list[str] = []  # set when a measured result could not be written to the storage
    objective = Objective(
        spec=spec,
        study=study,
        url=url,
        model_path=model_path,
        ctx=ctx,
        dists=dists,
        fixed=fixed,
        target=target,
        remeasure=remeasure,
        max_age_s=max_age_s,
        worker=worker,
        spool_file=spool_file,
        emit=emit,
        measured=lambda: state.measured,
        current=current,
        lost=lost,
    )
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


def _cause(failure: str) -> str:
    """A failure line without its numbers: two OOMs at 512 and 530 MiB are the same cause."""
    return re.sub(r"\d+(?:\.\d+)?", "#", failure)


def _enumerable(spec: Spec) -> bool:
    return all(a.kind != "range" or a.is_int or a.step is not None for a in spec.searched_axes().values())


def _knee(study: optuna.Study, spec: Spec) -> KneeResult:
    return find_knee(trial_records(study.get_trials(deepcopy=False)), spec.knee.tolerance, bootstrap=0)
