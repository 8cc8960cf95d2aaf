"""The search loop behind ``tuner optimize``: :class:`StudyRun`, one Optuna trial per config, each measured in a child.

Budget: ``study.trials`` counts *measured* trials of the study (a resumed study continues toward the
same total); skipped configs (a validity rule) are PRUNED with their reason; a config already measured
is not measured again (the trial reuses the earlier result, ``duplicate_of``) unless ``remeasure``.
Stops on: the budget, ``timeout_s``, ``patience`` trials without improving the plateau or the knee (both
of the study's rate metric: ``qps``, or ``server_qps`` / ``offline_qps`` under ``load.scenario``),
the search space exhausted, or ``max_consecutive_failures`` failures of the same cause (an error).
Ctrl-C marks the running trial FAIL with ``failure.kind = "interrupted"`` and re-raises; running the
same command again resumes.

One trial's work (suggest, claim, measure, record, spool) is :class:`tuner.study.objective.TrialAttempt`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.analysis.knee import Blocked, KneeResult, find_knee
from tuner.config.spec import Spec
from tuner.config.storage_url import resolve_storage_url
from tuner.errors import StorageError, StudyError, TunerError
from tuner.execution.runner import resolve_model_path
from tuner.platform import usable_cores
from tuner.search.rules import HostThreads, RuleContext, skip_reason
from tuner.search.samplers import make_sampler
from tuner.search.space import distributions, grid_size
from tuner.study import spool
from tuner.study.confirm import confirmation_rounds, run_confirmation
from tuner.study.extra_trials import measure_as_trial
from tuner.study.ledger import fail_stale_trials, study_progress, trial_records
from tuner.study.objective import TrialAttempt, TrialFailedError, TrialSettings, root_message
from tuner.study.storage import is_storage_error, open_storage, redact, scrub, storage_errors
from tuner.study.studies import open_study, worker_identity
from tuner.trial_attrs import (
    EDGE_LIMITS,
    config_of,
    failure_of,
    is_duplicate,
    is_feasible,
    is_measured,
    is_yield,
    rate_of,
)

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
    #: what the paired confirmation round did (``{"rounds": 0, "reason": ...}`` when it did not run)
    confirmation: dict[str, Any] | None = None
    #: the drift references this run measured (trial numbers)
    drift_trials: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RunOptions:
    """What the command line may override for one run of a study."""

    new: bool = False
    remeasure: bool = False
    trials: int | None = None
    timeout_s: float | None = None
    allow_platform_mix: bool = False
    #: run the paired confirmation round after the search (``--no-confirm``: False)
    confirm: bool = True


def optimize(
    spec: Spec,
    *,
    storage: str | None = None,
    new: bool = False,
    remeasure: bool = False,
    trials: int | None = None,
    timeout_s: float | None = None,
    allow_platform_mix: bool = False,
    confirm: bool = True,
    on_event: EventSink | None = None,
) -> OptimizeResult:
    """Run (or resume) the study of ``spec``; see the module docstring for the rules.

    ``storage`` (from ``--storage``) resolves against the current directory, the file's ``study.storage``
    against the workload file's folder (:func:`tuner.config.storage_url.resolve_storage_url`).
    """
    url = resolve_storage_url(storage, base_dir=Path.cwd()) if storage else spec.storage_url()
    options = RunOptions(
        new=new,
        remeasure=remeasure,
        trials=trials,
        timeout_s=timeout_s,
        allow_platform_mix=allow_platform_mix,
        confirm=confirm,
    )
    with storage_errors("lost the study storage", url):
        return StudyRun(spec, url, options, on_event).run()


class StudyRun:
    """One worker's run of one study: opens it, runs trials until a stop rule says so, and accounts for them.

    State it owns: the measured count and distinct configs as every worker sees them (refreshed from the
    study before each trial), the consecutive duplicates and failures of this worker, the plateau and
    knee so far (patience), and the trials this run added.
    """

    def __init__(self, spec: Spec, url: str, options: RunOptions, on_event: EventSink | None = None) -> None:
        self.spec = spec
        self.url = url
        self.options = options
        self.emit: EventSink = on_event or (lambda _e: None)
        self.target = options.trials or spec.study.trials
        self.deadline = time.monotonic() + (options.timeout_s or spec.study.timeout_s or math.inf)
        self.space = grid_size(spec) if _enumerable(spec) else math.inf
        # a trial far past its timeout is dead even where no heartbeat says so
        self.max_age_s = spec.study.trial_timeout_s * spec.measure.max_runs + spec.study.heartbeat_grace_s + 60
        self.measured = 0
        self.distinct = 0
        self.consecutive_duplicates = 0
        self.failures: list[str] = []
        self.since_improvement = 0
        self.rate = spec.model.load.rate_metric  #: what the knee and the plateau are taken over
        self.best_qps = 0.0  #: the plateau of the rate so far
        self.knee_number: int | None = None
        self.new_trials: list[int] = []
        self.drift_trials: list[int] = []
        self.measured_at_drift = 0

    # ------------------------------------------------------------------------------------ the loop

    def run(self) -> OptimizeResult:
        # a missing or corrupt model, or a precision variant that cannot be built, is an error before any study;
        # every variant the space reaches is built here, never in a trial
        model_path = resolve_model_path(self.spec, on_event=self.emit)
        study = self._open()
        settings = self._trial_settings(study, model_path)
        waiting_said = False
        while True:
            in_flight, waiting = self._refresh(study)
            reason = self.stop_reason()
            if reason:
                break
            if in_flight and self.measured + in_flight >= self.target and not waiting:
                # the rest of the budget is being measured by other workers: wait for them (or for their death)
                if not waiting_said:
                    self.emit({"event": "waiting", "in_flight": in_flight, "measured": self.measured})
                    waiting_said = True
                time.sleep(WAIT_POLL_S)
                continue
            waiting_said = False
            trial = self.run_trial(study, settings)
            if trial is None:
                reason = "the sampler stopped the study (grid exhausted)"
                break
            reason = self.account(study, trial)
            if reason:
                break
            self.remeasure_drift_reference(study, settings)
        confirmation = self.confirm(study, settings)
        with storage_errors("lost the study storage", self.url):
            knee = self._final_knee(study, settings.rules)
        return OptimizeResult(
            study_name=study.study_name,
            storage=redact(self.url),
            stop_reason=reason,
            measured=self.measured,
            knee=knee,
            new_trials=self.new_trials,
            confirmation=confirmation,
            drift_trials=self.drift_trials,
        )

    def _open(self) -> optuna.Study:
        spec = self.spec
        store = open_storage(self.url, heartbeat_s=spec.study.heartbeat_s, grace_s=spec.study.heartbeat_grace_s)
        self.spool_file = spool.spool_path(spec, self.url)
        with storage_errors("cannot use study storage", self.url):
            study = open_study(
                spec,
                store,
                sampler=make_sampler(spec),
                new=self.options.new,
                allow_platform_mix=self.options.allow_platform_mix,
                on_notice=self._notice,
            )
            for lost, number in spool.flush(study, self.spool_file):
                self._notice(
                    f"wrote trial {lost}'s result from the local spool {self.spool_file} into the study as trial "
                    f"{number}"
                )
            # a resumed study must not replay the seed's sequence from the start (every proposal a duplicate,
            # until MAX_CONSECUTIVE_DUPLICATES stops it): seed + trials so far, still deterministic. Not for
            # grid, whose stored grid ids index the seed's shuffle
            existing = len(study.get_trials(deepcopy=False))
            if existing and spec.study.sampler != "grid":
                study.sampler = make_sampler(spec, seed=(spec.study.seed + existing) % 2**32)
        with storage_errors("cannot read study", self.url):
            self._refresh(study, fail_stale=False)
            knee = self._knee(study)
        self.best_qps = knee.plateau_qps or 0.0
        self.knee_number = knee.knee.number if knee.knee else None
        self.emit(
            {
                "event": "study",
                "name": study.study_name,
                "storage": redact(self.url),
                "measured": self.measured,
                "target": self.target,
                "space": self.space,
            }
        )
        return study

    def _trial_settings(self, study: optuna.Study, model_path: Path | None) -> TrialSettings:
        spec = self.spec
        return TrialSettings(
            spec=spec,
            study=study,
            url=self.url,
            model_path=model_path,
            rules=_rule_context(spec, usable_cores()),
            distributions=distributions(spec),
            fixed={n: a.default for n, a in spec.axes.items() if a.kind == "fixed"},
            target=self.target,
            remeasure=self.options.remeasure,
            max_age_s=self.max_age_s,
            worker=worker_identity(),
            spool_file=self.spool_file,
            emit=self.emit,
        )

    def _notice(self, text: str) -> None:
        self.emit({"event": "notice", "message": text})

    def _refresh(self, study: optuna.Study, *, fail_stale: bool = True) -> tuple[int, int]:
        """Re-read the study as every worker sees it; returns ``(in flight elsewhere, waiting)``."""
        try:
            with storage_errors("lost the study storage", self.url):
                if fail_stale:
                    fail_stale_trials(study)  # trials of dead workers: FAIL, and re-queued for whoever is alive
                progress = study_progress(study, max_age_s=self.max_age_s)
        except StorageError as err:
            raise StorageError(f"{err}; no trial was in progress on this worker, nothing is lost") from None
        self.measured, self.distinct = progress.measured, progress.distinct
        return progress.in_flight, progress.waiting

    # ------------------------------------------------------------------------------------ stop rules

    def stop_reason(self) -> str:
        """Why the run stops before the next trial ('' to go on)."""
        if self.measured >= self.target:
            return f"budget reached ({self.measured} measured trials)"
        if time.monotonic() >= self.deadline:
            return "timeout_s reached"
        if self.distinct >= self.space:
            return f"search space exhausted (all {self.space} configs tried)"
        if self.consecutive_duplicates >= MAX_CONSECUTIVE_DUPLICATES:
            return "the sampler keeps proposing measured configs; the search has converged"
        return ""

    # ------------------------------------------------------------------------------------ one trial

    def run_trial(self, study: optuna.Study, settings: TrialSettings) -> FrozenTrial | None:
        """Ask Optuna for one trial and let a :class:`TrialAttempt` run it; the finished trial (None: no trial)."""
        attempt = TrialAttempt(settings, index=self.measured + 1)
        try:
            study.optimize(attempt, n_trials=1, catch=(TrialFailedError,), gc_after_trial=False)
        except Exception as err:
            if attempt.lost:
                raise StorageError(attempt.lost) from None
            if is_storage_error(err, self.url):
                number = attempt.number
                what = "nothing is lost" if number is None else f"trial {number} was not measured, nothing is lost"
                raise StorageError(
                    f"lost the study storage {redact(self.url)}: {scrub(root_message(err), self.url)}; {what}. Run "
                    "the same command again when it is back: the study resumes"
                ) from None
            raise
        if attempt.number is None:
            return None
        with storage_errors("lost the study storage", self.url):
            return study.get_trials(deepcopy=False)[attempt.number]

    # ------------------------------------------------------------------------------------ after the search

    def confirm(self, study: optuna.Study, settings: TrialSettings) -> dict[str, Any]:
        """The paired confirmation round (:mod:`tuner.study.confirm`), unless skipped or already done."""
        section = self.spec.study.confirm
        if not self.options.confirm or section.rounds == 0:
            return {"rounds": 0, "reason": "skipped (--no-confirm or study.confirm.rounds: 0)"}
        trials = study.get_trials(deepcopy=False)
        searched = [t.number for t in trials if is_measured(t)]
        done = confirmation_rounds(trials)
        if done is not None and (not searched or min(done["trials"]) > max(searched)):
            return {"rounds": 0, "reason": "already confirmed: no trial measured since the last confirmation"}
        with storage_errors("lost the study storage", self.url):
            return run_confirmation(
                settings,
                rounds=section.rounds,
                max_configs=section.max_configs,
                seed=self.spec.study.seed,
                max_rounds=section.max_rounds,
            )

    def remeasure_drift_reference(self, study: optuna.Study, settings: TrialSettings) -> None:
        """Every ``study.drift.every`` measured trials, measure the reference config again (the drift series)."""
        every = self.spec.study.drift.every
        if not every or self.measured - self.measured_at_drift < every or self.measured >= self.target:
            return
        self.measured_at_drift = self.measured
        trials = study.get_trials(deepcopy=False)
        # a config that served the study's rate (under a latency bound: one that met it); the drift series
        # itself is its closed-loop qps, the steadiest figure of the machine
        reference = next(
            (t for t in trials if is_measured(t) and (rate_of(t, self.rate) or 0.0) > 0 and is_feasible(t)), None
        )
        if reference is None:
            return
        marks = {"drift": {"reference": reference.number, "after": self.measured}}
        self.emit({"event": "drift_reference", "params": config_of(reference), "after": self.measured})
        with storage_errors("lost the study storage", self.url):
            trial = measure_as_trial(settings, config_of(reference), marks)
        self.drift_trials.append(trial.number)

    # ------------------------------------------------------------------------------------ accounting

    def account(self, study: optuna.Study, trial: FrozenTrial) -> str:
        """Count a finished trial, say how it ended, and apply the rules that look at results ('' to go on)."""
        self.new_trials.append(trial.number)
        outcome = self._outcome(trial)
        if outcome == "yielded":
            # workers with the same seed propose the same configs in the same order: diverge from here
            study.sampler.reseed_rng()
        self.emit(
            {
                "event": "trial_end",
                "number": trial.number,
                "state": trial.state.name,
                "outcome": outcome,
                "qps": trial.user_attrs.get("qps"),
                **({self.rate: trial.user_attrs.get(self.rate)} if self.rate != "qps" else {}),
                "failure": failure_of(trial).get("message"),
                "skip_reason": trial.user_attrs.get("skip_reason"),
            }
        )
        if outcome == "measured-ok":
            return self._after_result(study)
        if outcome == "measured-failed":
            self.since_improvement += 1
            self._check_failures(study)
        return ""

    def _outcome(self, trial: FrozenTrial) -> str:
        if is_duplicate(trial) or is_yield(trial):
            self.consecutive_duplicates += 1
            return "duplicate" if is_duplicate(trial) else "yielded"
        self.consecutive_duplicates = 0
        if trial.state == TrialState.PRUNED and not trial.user_attrs.get("stopped_early"):
            return "skipped"
        self.measured += 1  # the loop refreshes this from the study; a stop right after a trial must count it
        if trial.state == TrialState.PRUNED:
            self.since_improvement += 1
            return "stopped-early"
        if trial.state == TrialState.COMPLETE:
            self.failures.clear()
            return "measured-ok"
        failure = failure_of(trial)
        self.failures.append(f"{failure.get('kind', 'error')}: {str(failure.get('message', ''))[:160]}")
        return "measured-failed"

    def _after_result(self, study: optuna.Study) -> str:
        """Patience: the plateau or the knee must move within ``study.patience`` measured trials."""
        knee = self._knee(study)
        plateau = knee.plateau_qps or 0.0
        improved = plateau > self.best_qps * (1 + IMPROVEMENT) or (
            knee.knee is not None and knee.knee.number != self.knee_number
        )
        self.best_qps = max(self.best_qps, plateau)
        self.knee_number = knee.knee.number if knee.knee else self.knee_number
        self.since_improvement = 0 if improved else self.since_improvement + 1
        self.emit(
            {
                "event": "knee",
                "plateau_qps": knee.plateau_qps,
                "rate_metric": self.rate,
                "knee": dict(knee.knee.params) if knee.knee else None,
                "confirmed": knee.confirmed,
            }
        )
        patience = self.spec.study.patience
        if patience and self.since_improvement >= patience:
            return f"patience: {self.since_improvement} trials without improving the plateau or the knee"
        return ""

    def _check_failures(self, study: optuna.Study) -> None:
        limit = self.spec.study.max_consecutive_failures
        if len(self.failures) >= limit and len({_cause(f) for f in self.failures[-limit:]}) == 1:
            raise StudyError(
                f"study {study.study_name!r} stopped: {limit} consecutive trials failed the same way "
                f"({self.failures[-1]}); earlier trials are kept. Fix the cause and run the same command to resume"
            )

    def _knee(self, study: optuna.Study, blocked: Blocked | None = None) -> KneeResult:
        records = trial_records(study.get_trials(deepcopy=False), rate=self.rate)
        return find_knee(records, self.spec.knee.tolerance, bootstrap=0, blocked=blocked)

    def _final_knee(self, study: optuna.Study, rules: RuleContext) -> KneeResult:
        """The knee after the run, its edge rule told which next steps this host's rules skip; those steps are
        stored on the study (``edge_limits``: ``[{"params", "reason"}]``) for the report, which cannot ask the
        rules (they need the backend and this host)."""
        asked: list[dict[str, Any]] = []

        def blocked(params: Mapping[str, Any]) -> str | None:
            try:
                reason = skip_reason(params, rules)
            except (TunerError, ValueError):
                # a step the kind cannot count threads for (a value it would refuse): no rule says it is
                # skipped, so the edge advice stands -- the trials measured are never lost to this question
                return None
            if reason:
                asked.append({"params": dict(params), "reason": reason})
            return reason

        knee = self._knee(study, blocked)
        if asked or study.user_attrs.get(EDGE_LIMITS):
            study.set_user_attr(EDGE_LIMITS, asked)
        return knee


def _cause(failure: str) -> str:
    """A failure line without its numbers: two OOMs at 512 and 530 MiB are the same cause."""
    return re.sub(r"\d+(?:\.\d+)?", "#", failure)


def _enumerable(spec: Spec) -> bool:
    return all(a.kind != "range" or a.is_int or a.step is not None for a in spec.searched_axes().values())


def _rule_context(spec: Spec, cores: int) -> RuleContext:
    """What the validity rules know: the cores, and the kind's host-thread count of a config (oversubscription)."""
    from tuner.workloads.registry import get_kind

    kind = get_kind(spec.workload.kind)()

    def host_threads(params: Mapping[str, Any]) -> HostThreads | None:
        return kind.host_threads(spec, params, usable_cores=cores)

    return RuleContext(cores, spec.study.allow_oversubscription, host_threads)
