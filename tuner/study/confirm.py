"""The paired confirmation round: after the search, the configs that could be the knee or the best, interleaved.

Why: on a shared machine the same config moves by ±10 % between runs, and slowly (neighbours, heat), so two
configs measured minutes apart differ by the drift as much as by themselves. Measured in rounds -- every
candidate once per round, in a shuffled order, each in a fresh process -- a config's per-round ratio to
the plateau candidate cancels what the round shares (:mod:`tuner.analysis.paired` decides from those
ratios).

Candidates (:func:`candidates`): the plateau config itself, then the configs whose qps interval reaches
``1 - tolerance`` of the plateau's lower bound (could be the knee) cheapest first -- in cost order, equal
costs in the params' own order, so which configs fill the slots does not depend on how each one's noise
fell -- then the configs whose interval reaches the plateau's (could be the best), nearest first; at most
``study.confirm.max_configs``, of which (from three on) one is kept for the plateau's nearest rival, so
the tie set is decided between the configs that could be the best and not only among the cheap ones.
After ``study.confirm.rounds`` rounds, one more is measured at a time, up to ``study.confirm.max_rounds``,
while the knee is undecided (:func:`undecided`: not proven within the tolerance, it stands by the tie
set; or a config cheaper than the knee could be the best): a noisy run pays for the rounds it needs, a
calm one for none.
With ``study.confirm.window_s`` each round measures a fixed length (warm-up, then ``measure.stable_windows``
windows of that length, no waiting for stability): more short rounds beat
fewer long ones. The knee is decided among the cheap ones, and the tie set is what the rounds
cannot tell from the plateau, so a cheap config that ties it is the best. Each round's measurements are
trials of the study marked
``confirm = {"session", "round", "slot", "config"}``; a session is one confirmation of one run of the
command, and the report decides from the latest complete one.

Under a latency bound (``load.scenario`` server / offline) everything here reads the study's rate metric
(``server_qps``, ``offline_qps``) instead of ``qps``: the candidates come from the rate view of the records
(:func:`tuner.study.ledger.rate_view`, where ``qps`` is the rate and no closed-loop interval is left, so a
candidate's bounds are its rate), and each round's figure is the rate the trial served.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tuner.analysis.knee import TrialRecord, config_cost, merge_repeats
from tuner.analysis.paired import PairedDecision, paired_decision
from tuner.config.spec import Spec
from tuner.search.space import config_key
from tuner.study.extra_trials import measure_as_trial
from tuner.study.ledger import trial_records
from tuner.study.objective import TrialSettings
from tuner.text import finite_or_none, format_params
from tuner.trial_attrs import rate_of

EventSink = Callable[[dict[str, Any]], None]


def _bounds(record: TrialRecord) -> tuple[float, float, float]:
    """``(qps, low, high)``; without an interval the bounds are the qps itself."""
    qps = float(record.metrics["qps"])
    low = finite_or_none(record.metrics.get("qps_ci_low"))
    high = finite_or_none(record.metrics.get("qps_ci_high"))
    return qps, qps if low is None else low, qps if high is None else high


def candidates(records: Sequence[TrialRecord], tolerance: float, max_configs: int) -> list[TrialRecord]:
    """The configs worth confirming (see the module docstring), plateau first; empty when fewer than two."""
    feasible = [r for r in merge_repeats(records) if r.feasible and finite_or_none(r.metrics.get("qps")) is not None]
    if len(feasible) < 2 or max_configs < 2:
        return []
    by_qps = sorted(feasible, key=lambda r: -_bounds(r)[0])
    plateau = by_qps[0]
    _, plateau_low, _ = _bounds(plateau)
    could_be_best = [r for r in by_qps[1:] if _bounds(r)[2] >= plateau_low]
    # cost order, then the params' own order: which configs fill the slots does not depend on their noise
    could_be_knee = sorted(
        (r for r in feasible if r is not plateau and _bounds(r)[2] >= (1 - tolerance) * plateau_low),
        key=lambda r: (config_cost(r.params), config_key(r.params)),
    )
    chosen: list[TrialRecord] = [plateau]

    def fill(pool: Sequence[TrialRecord], upto: int) -> None:
        for r in pool:
            if len(chosen) >= upto:
                return
            if all(config_key(r.params) != config_key(c.params) for c in chosen):
                chosen.append(r)

    # from three slots on, one is kept for the plateau's nearest rival, so the tie set is decided between
    # the configs that could be the best, not only among the cheap ones
    kept = 1 if max_configs >= 3 and could_be_best else 0
    fill(could_be_knee, max_configs - kept)
    fill([*could_be_best, *could_be_knee], max_configs)
    return chosen if len(chosen) >= 2 else []


def run_confirmation(
    settings: TrialSettings, *, rounds: int, max_configs: int, seed: int, max_rounds: int | None = None
) -> dict[str, Any]:
    """Measure the candidates ``rounds`` times, interleaved, then one more round at a time while the knee is
    undecided (:func:`undecided`) and fewer than ``max_rounds`` were measured; returns what was done (for the
    run's result, ``extra_rounds`` with the reasons)."""
    spec, study = settings.spec, settings.study
    rate = spec.model.load.rate_metric
    chosen = candidates(trial_records(study.get_trials(deepcopy=False), rate=rate), spec.knee.tolerance, max_configs)
    if not chosen or rounds < 1:
        return {"rounds": 0, "configs": [], "reason": "fewer than two candidate configs"}
    if spec.study.confirm.window_s is not None:
        settings = replace(settings, spec=_with_window(spec, spec.study.confirm.window_s))
    session = uuid.uuid4().hex[:12]
    rng = random.Random(seed)
    configs = [dict(r.params) for r in chosen]
    settings.emit({"event": "confirm_start", "configs": configs, "rounds": rounds, "session": session})
    numbers: list[int] = []
    most = max(rounds, max_rounds or rounds)
    extra: list[str] = []
    r = 0
    while r < most:
        if r >= rounds:
            why = undecided(study.get_trials(deepcopy=False), session, spec.knee.tolerance, rate)
            if why is None:
                break
            extra.append(why)
            settings.emit({"event": "confirm_more", "round": r + 1, "of": most, "reason": why})
        order = list(range(len(configs)))
        rng.shuffle(order)
        for slot, i in enumerate(order):
            marks = {"confirm": {"session": session, "round": r, "slot": slot, "config": i}}
            settings.emit(
                {"event": "confirm_trial", "round": r + 1, "of": rounds if r < rounds else most, "params": configs[i]}
            )
            trial = measure_as_trial(settings, configs[i], marks)
            numbers.append(trial.number)
        r += 1
    settings.emit({"event": "confirm_end", "session": session, "trials": numbers})
    return {"rounds": r, "configs": configs, "session": session, "trials": numbers, "extra_rounds": extra}


def undecided(trials: Sequence[Any], session: str, tolerance: float, rate: str = "qps") -> str | None:
    """Why one more round is needed after the rounds of ``session`` so far, or None when the knee is decided.

    Undecided: the paired decision's knee is not the reference and its probability of being within the
    tolerance is below the confidence -- it is not proven, it stands because it is in the tie set (it could be
    the best) with its estimate in the band, which a noisy round can make of almost any cheap config; or a
    config cheaper than the knee is in the tie set -- it could be the best, but its estimate is below the band,
    and more rounds would tell whether it is in the band (the knee) or out.
    """
    done = confirmation_rounds(trials, rate=rate)
    if done is None or done["session"] != session:
        return None
    decision = decide_rounds(done, tolerance)
    if decision is None:
        return None
    configs = done["configs"]
    if not decision.knee_proven:
        return (
            f"the knee {format_params(configs[decision.knee], sort=True)} is not proven within {tolerance:.0%}: "
            f"P = {decision.knee_confidence:.2f} < {decision.confidence:.0%} (it stands by the tie set)"
        )
    if decision.best_below_band:
        return (
            f"{format_params(configs[decision.best], sort=True)}, cheaper than the knee, could be the best (tie "
            f"set) but is neither in nor out of the {tolerance:.0%} band: P = "
            f"{decision.probabilities[decision.best]:.2f}"
        )
    return None


def decide_rounds(done: Mapping[str, Any], tolerance: float) -> PairedDecision[int] | None:
    """The paired decision over :func:`confirmation_rounds`' result, each config keyed by its index; None with
    fewer than two configs or nothing to decide from (no positive rate in any round)."""
    if len(done["configs"]) < 2:
        return None
    keys = range(len(done["configs"]))
    try:
        return paired_decision(
            dict(zip(keys, done["qps_by_round"], strict=True)), dict(zip(keys, done["configs"], strict=True)), tolerance
        )
    except ValueError:
        return None


def _with_window(spec: Spec, window_s: float) -> Spec:
    """``spec`` measuring a fixed length: warm-up, then ``measure.stable_windows`` windows of ``window_s``.

    The stability rule is off (the rounds, not a longer measurement, average the noise out), so every round
    costs the same; one run each (``measure.repeats`` is for the search).
    """
    measure = spec.measure
    update = {
        "window_s": window_s,
        "stability": 0.999,
        "max_s": max(measure.max_s, measure.warmup_s + window_s),
        "repeats": 1,  # the rounds are the repeats
    }
    model = spec.model.model_copy(update={"measure": measure.model_copy(update=update)})
    return replace(spec, model=model)


def confirmation_rounds(trials: Sequence[Any], *, rate: str = "qps") -> dict[str, Any] | None:
    """The latest confirmation session of a study's trials: ``{"session", "configs", "qps_by_round"}``.

    ``qps_by_round[i]`` holds config ``i``'s ``rate`` (the study's rate metric: qps unless the study runs
    under a latency bound) in rounds ``0..R-1`` (NaN where a measurement failed or, under a bound, no rate
    was served); ``configs[i]`` its params. Works on Optuna's trials and on the report's SQL rows alike.
    """
    sessions: dict[str, list[Any]] = {}
    for t in trials:
        mark = t.user_attrs.get("confirm")
        if isinstance(mark, Mapping) and mark.get("session"):
            sessions.setdefault(str(mark["session"]), []).append(t)
    if not sessions:
        return None
    latest = max(sessions.values(), key=lambda ts: max(t.number for t in ts))
    rounds = 1 + max(int(t.user_attrs["confirm"]["round"]) for t in latest)
    configs: dict[int, dict[str, Any]] = {}
    qps: dict[int, list[float]] = {}
    for t in latest:
        mark = t.user_attrs["confirm"]
        i = int(mark["config"])
        configs[i] = dict(t.user_attrs.get("config") or t.params)
        value = rate_of(t, rate)  # 0 (no rate met the bound) is a missing round to the paired decision
        qps.setdefault(i, [math.nan] * rounds)[int(mark["round"])] = math.nan if value is None else value
    order = sorted(configs)
    return {
        "session": str(latest[0].user_attrs["confirm"]["session"]),
        "configs": [configs[i] for i in order],
        "qps_by_round": [qps[i] for i in order],
        "trials": sorted(t.number for t in latest),
    }
