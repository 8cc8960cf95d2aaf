"""The report object of one study (the DESIGN.md JSON contract), built from its trials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.analysis.drift import DriftSeries, drift_series, drifted, normalise_records
from tuner.analysis.knee import DEFAULT_TOLERANCE, TrialRecord, find_knee, merge_repeats
from tuner.analysis.paired import paired_decision
from tuner.analysis.pareto import pareto_front
from tuner.metrics import METRICS
from tuner.search.space import config_key
from tuner.study.confirm import confirmation_rounds
from tuner.study.ledger import trial_records
from tuner.text import format_params
from tuner.trial_attrs import config_of, failure_of, is_duplicate, qps_of

#: metrics shown in a record (the rest stay in the storage)
_SHOWN = (*METRICS, "qps_runs", "qps_spread", "qps_raw", "drift_factor")


def record_dict(record: TrialRecord, *, all_metrics: bool = False) -> dict[str, Any]:
    metrics = dict(record.metrics) if all_metrics else {k: record.metrics[k] for k in _SHOWN if k in record.metrics}
    for k, v in record.metrics.items():
        if k.startswith("stage.") or k == "bottleneck":
            metrics[k] = v
    return {"number": record.number, "params": dict(record.params), "metrics": metrics}


def study_report(
    study: optuna.Study,
    *,
    top: int = 10,
    bootstrap: int = 200,
    trials: Sequence[FrozenTrial] | None = None,
) -> dict[str, Any]:
    """``{"study", "platform", "trials", "best", "knee", "pareto", ...}`` for one study."""
    trials = list(trials if trials is not None else study.get_trials(deepcopy=False))
    attrs = study.user_attrs
    tolerance = float(attrs.get("knee_tolerance", DEFAULT_TOLERANCE))
    objectives = [tuple(o) for o in attrs.get("objectives", [["qps", "maximize"]])]
    records = trial_records(trials)
    drift_doc, series = _drift(trials, tolerance)
    if drift_doc is not None and series is not None:
        drift_doc["corrected"] = bool(attrs.get("drift_correction"))
        if drift_doc["corrected"]:
            # measure.drift_correction: the analysis reads qps as if measured when the reference first was
            records = normalise_records(records, series)
    knee = find_knee(records, tolerance, bootstrap=bootstrap)
    counts = {"complete": 0, "failed": 0, "pruned": 0, "running": 0, "duplicates": 0, "confirmation": 0, "drift": 0}
    failed = []
    skipped = []
    for t in trials:
        counts["confirmation"] += "confirm" in t.user_attrs
        counts["drift"] += "drift" in t.user_attrs
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
            counts["duplicates"] += is_duplicate(t)
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
            failure = failure_of(t) or {
                "kind": "worker-lost",
                "message": "no result recorded: the worker stopped sending heartbeats mid-trial (it died or lost "
                "the database); the config was re-queued",
            }
            failed.append(
                {
                    "number": t.number,
                    "params": config_of(t),
                    "reason": failure.get("message"),
                    "kind": failure.get("kind"),
                }
            )
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
            skipped.append({"number": t.number, "params": config_of(t), "reason": t.user_attrs.get("skip_reason")})
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            counts["running"] += 1
    feasible = [r for r in records if r.feasible]
    ranked = sorted(feasible, key=lambda r: -float(r.metrics.get("qps", 0.0)))
    front = pareto_front(records, objectives) if len(objectives) > 1 else ([knee.best] if knee.best else [])
    knee_doc = None
    if knee.knee is not None:
        knee_doc = {
            **record_dict(knee.knee),
            "confirmed": knee.confirmed,
            "confidence": knee.confidence,
            "reason": knee.reason,
            "extend": [{"axis": axis, "beyond": value} for axis, value in knee.edge],
        }
    best_doc = record_dict(knee.best) if knee.best else None
    confirmation = _confirmation(trials, records, tolerance)
    tie_set = [best_doc] if best_doc else []
    decided_by = "search"
    if confirmation is not None:
        decided_by = "paired rounds"
        best_doc, tie_set = confirmation.pop("best_doc"), confirmation.pop("tie_docs")
        paired_knee, paired_reason = confirmation.pop("knee_doc"), confirmation.pop("knee_reason")
        same = knee_doc is not None and knee_doc["params"] == paired_knee["params"]
        knee_doc = {
            **paired_knee,
            # saturation evidence (a costlier config measured, the edge rule) is the search's to give
            "confirmed": bool(knee.confirmed),
            "confidence": confirmation["knee_confidence"],
            # the search's reason when it saw no saturation; else what the rounds showed
            "reason": knee.reason if not knee.confirmed else paired_reason,
            "extend": knee_doc["extend"] if knee_doc else [],
            "search_knee": None if same or knee_doc is None else knee_doc["params"],
        }
    return {
        "study": study.study_name,
        "workload": attrs.get("workload_name"),
        "spec_hash": attrs.get("spec_hash"),
        "platform": attrs.get("platform", {}),
        "objectives": [list(o) for o in objectives],
        "tolerance": tolerance,
        "plateau_qps": knee.plateau_qps,
        "trials": counts,
        "best": best_doc,
        "knee": knee_doc,
        "tie_set": tie_set,
        "decided_by": decided_by,
        "confirmation": confirmation,
        "drift": drift_doc,
        "knee_reason": knee_doc["reason"] if knee_doc else knee.reason,
        "pareto": [record_dict(r) for r in front],
        "top": [record_dict(r) for r in ranked[:top]],
        "failed": failed,
        "skipped": skipped,
    }


def _confirmation(trials: Sequence[Any], records: Sequence[TrialRecord], tolerance: float) -> dict[str, Any] | None:
    """The latest paired confirmation session, decided (:func:`tuner.analysis.paired.paired_decision`)."""
    rounds = confirmation_rounds(trials)
    if rounds is None or len(rounds["configs"]) < 2:
        return None
    keys = list(range(len(rounds["configs"])))
    params = dict(zip(keys, rounds["configs"], strict=True))
    try:
        decision = paired_decision(dict(zip(keys, rounds["qps_by_round"], strict=True)), params, tolerance)
    except ValueError:
        return None
    merged = {config_key(r.params): r for r in merge_repeats(records)}

    def doc(k: int) -> dict[str, Any]:
        record = merged.get(config_key(params[k]))
        base = record_dict(record) if record is not None else {"number": None, "params": params[k], "metrics": {}}
        ratio = decision.ratios[k]
        return {**base, "paired_ratio": ratio.mean, "paired_ratio_low": ratio.low, "paired_ratio_high": ratio.high}

    knee_ratio = decision.ratios[decision.knee]
    knee_reason = (
        f"paired rounds: {format_params(params[decision.knee], sort=True)} is the plateau reference"
        if decision.knee == decision.reference
        else f"paired rounds: {format_params(params[decision.knee], sort=True)} gives {knee_ratio.mean:.3f} "
        f"(95 % CI {knee_ratio.low:.3f}-{knee_ratio.high:.3f}) of the plateau reference "
        f"{format_params(params[decision.reference], sort=True)} over {knee_ratio.n} rounds; P(within "
        f"{tolerance:.0%}) = {decision.knee_confidence:.2f}"
    )
    return {
        "knee_reason": knee_reason,
        "session": rounds["session"],
        "rounds": len(rounds["qps_by_round"][0]),
        "trials": rounds["trials"],
        "reference": params[decision.reference],
        "knee_confidence": decision.knee_confidence,
        "configs": [
            {**doc(k), "qps_by_round": rounds["qps_by_round"][k], "in_tie_set": k in decision.tie_set} for k in keys
        ],
        "knee_doc": doc(decision.knee),
        "best_doc": doc(decision.best),
        "tie_docs": [doc(k) for k in decision.tie_set],
    }


def _drift(trials: Sequence[Any], tolerance: float) -> tuple[dict[str, Any] | None, DriftSeries | None]:
    """The reference config's measurements across the study, whether the machine drifted, and the series."""
    refs = [t for t in trials if isinstance(t.user_attrs.get("drift"), dict)]
    if not refs:
        return None, None
    number = int(refs[0].user_attrs["drift"]["reference"])
    by_number = {t.number: t for t in trials}
    points = [(t.number, qps_of(t)) for t in [by_number.get(number), *refs] if t is not None]
    usable = [(n, q) for n, q in points if q is not None and q > 0]
    if len(usable) < 2:
        return None, None
    series = drift_series(usable)
    moved = drifted(series, tolerance)
    message = None
    if moved:
        message = (
            f"the machine drifted {series.drift:.1%} during the study (the reference config measured "
            f"{min(q for _, q in series.points):.4g}-{max(q for _, q in series.points):.4g} qps), more than the knee "
            f"tolerance {tolerance:.0%}: trials measured at different times differ by that much (the paired "
            "confirmation cancels it; measure.drift_correction: true normalises every trial by the reference)"
        )
    return {
        "reference_trial": number,
        "reference": config_of(by_number[number]) if number in by_number else None,
        "points": [[n, q] for n, q in series.points],
        "relative": series.drift,
        "drifted": moved,
        "message": message,
    }, series
