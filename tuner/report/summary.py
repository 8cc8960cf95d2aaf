"""The report object of one study (the DESIGN.md JSON contract), built from its trials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.analysis.knee import DEFAULT_TOLERANCE, TrialRecord, find_knee
from tuner.analysis.pareto import pareto_front
from tuner.metrics import METRICS
from tuner.study.ledger import trial_records
from tuner.trial_attrs import config_of, failure_of, is_duplicate

#: metrics shown in a record (the rest stay in the storage)
_SHOWN = (*METRICS, "qps_runs", "qps_spread")


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
    knee = find_knee(records, tolerance, bootstrap=bootstrap)
    counts = {"complete": 0, "failed": 0, "pruned": 0, "running": 0, "duplicates": 0}
    failed = []
    skipped = []
    for t in trials:
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
        "best": record_dict(knee.best) if knee.best else None,
        "knee": knee_doc,
        "knee_reason": knee.reason,
        "pareto": [record_dict(r) for r in front],
        "top": [record_dict(r) for r in ranked[:top]],
        "failed": failed,
        "skipped": skipped,
    }
