"""The report object of one study (the DESIGN.md JSON contract), built from its trials.

The knee, the best, the plateau, the top-N ranking and the paired decision are taken over the study's rate
metric (``rate_metric``: ``qps``, or ``server_qps`` / ``offline_qps`` under ``load.scenario``; the analysis
reads the records' :func:`tuner.study.ledger.rate_view`). Every record in the report shows honest metrics
(:func:`record_dict`): ``metrics.qps`` is always the closed-loop qps, the rate stands under its own name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.analysis.drift import DriftSeries, drift_series, drifted, normalise_records
from tuner.analysis.knee import DEFAULT_TOLERANCE, TrialRecord, find_knee, merge_repeats
from tuner.analysis.pareto import pareto_front
from tuner.metrics import METRICS
from tuner.search.space import config_key
from tuner.study.confirm import confirmation_rounds, decide_rounds
from tuner.study.ledger import closed_loop_view, trial_records
from tuner.text import format_params
from tuner.trial_attrs import (
    config_of,
    edge_limits_of,
    failure_of,
    is_duplicate,
    is_feasible,
    qps_of,
    rate_metric_of,
)

#: metrics shown in a record (the rest stay in the storage)
_SHOWN = (*METRICS, "qps_runs", "qps_spread", "qps_raw", "drift_factor")


def record_dict(record: TrialRecord, *, all_metrics: bool = False, rate: str = "qps") -> dict[str, Any]:
    """``{"number", "params", "metrics"}`` of a record; ``rate``: the study's rate metric, whose rate view
    (the analysis' record) is turned back into honest metrics (:func:`tuner.study.ledger.closed_loop_view`)."""
    honest = closed_loop_view(record.metrics, rate)
    shown = (*_SHOWN, f"{rate}_raw") if rate != "qps" else _SHOWN
    metrics = dict(honest) if all_metrics else {k: honest[k] for k in shown if k in honest}
    for k, v in honest.items():
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
    """``{"study", "platform", "trials", "best", "knee", "pareto", ...}`` for one study.

    ``rate_metric`` names what the knee, the best, ``plateau_qps`` and the ``top`` ranking are decided on;
    ``infeasible`` lists the complete trials that broke a constraint or (``load.scenario: server``) met the
    latency bound at no rate, each with its reason.
    """
    trials = list(trials if trials is not None else study.get_trials(deepcopy=False))
    attrs = study.user_attrs
    tolerance = float(attrs.get("knee_tolerance", DEFAULT_TOLERANCE))
    objectives = [tuple(o) for o in attrs.get("objectives", [["qps", "maximize"]])]
    rate = rate_metric_of(attrs)
    records = trial_records(trials, rate=rate)
    drift_doc, series = _drift(trials, tolerance)
    if drift_doc is not None and series is not None:
        drift_doc["corrected"] = bool(attrs.get("drift_correction"))
        if drift_doc["corrected"]:
            # measure.drift_correction: the analysis reads qps as if measured when the reference first was
            records = normalise_records(records, series)
    # the next steps beyond the range this host's rules skip (stored by the study loop): hard edges
    limits = {config_key(params): reason for params, reason in edge_limits_of(attrs)}
    knee = find_knee(
        records,
        tolerance,
        bootstrap=bootstrap,
        rate_name=rate,
        blocked=(lambda params: limits.get(config_key(params))) if limits else None,
    )
    counts = {"complete": 0, "failed": 0, "pruned": 0, "running": 0, "duplicates": 0, "confirmation": 0, "drift": 0}
    failed = []
    skipped = []
    infeasible = []
    for t in trials:
        if "loadgen_confirm" in t.user_attrs:  # a tuner confirm run: reported as loadgen_confirmation, not a trial
            continue
        counts["confirmation"] += "confirm" in t.user_attrs
        counts["drift"] += "drift" in t.user_attrs
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
            counts["duplicates"] += is_duplicate(t)
            if not is_feasible(t) and not is_duplicate(t):
                infeasible.append({"number": t.number, "params": config_of(t), "reason": _infeasible_reason(t)})
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
    # the objectives name honest metrics: an objective qps is the closed-loop qps of the rate view
    honest_objectives = [("closed_qps" if m == "qps" and rate != "qps" else m, d) for m, d in objectives]
    front = pareto_front(records, honest_objectives) if len(objectives) > 1 else ([knee.best] if knee.best else [])
    by_number = {t.number: t for t in trials}
    knee_doc = None
    if knee.knee is not None:
        knee_doc = {
            **record_dict(knee.knee, rate=rate),
            "confirmed": knee.confirmed,
            "confidence": knee.confidence,
            "reason": knee.reason,
            "extend": [{"axis": axis, "beyond": value} for axis, value in knee.edge],
        }
    best_doc = record_dict(knee.best, rate=rate) if knee.best else None
    confirmation = _confirmation(trials, records, tolerance, rate)
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
    if rate != "qps":
        # what LoadGen said of the run behind each one's rate (VALID or INVALID and why)
        for doc in (best_doc, knee_doc, *tie_set):
            if doc and doc.get("number") is not None and "loadgen" not in doc:
                doc["loadgen"] = loadgen_verdict(by_number.get(doc["number"]), doc["metrics"])
    return {
        "study": study.study_name,
        "workload": attrs.get("workload_name"),
        "spec_hash": attrs.get("spec_hash"),
        "platform": attrs.get("platform", {}),
        "objectives": [list(o) for o in objectives],
        "tolerance": tolerance,
        "rate_metric": rate,
        "plateau_qps": knee.plateau_qps,
        "trials": counts,
        "best": best_doc,
        "knee": knee_doc,
        "tie_set": tie_set,
        "decided_by": decided_by,
        "confirmation": confirmation,
        "drift": drift_doc,
        "knee_reason": knee_doc["reason"] if knee_doc else knee.reason,
        "pareto": [record_dict(r, rate=rate) for r in front],
        "top": [record_dict(r, rate=rate) for r in ranked[:top]],
        "failed": failed,
        "infeasible": infeasible,
        "skipped": skipped,
        "loadgen_confirmation": _loadgen_confirmation(trials),
    }


def _infeasible_reason(trial: Any) -> str:
    """Why a complete trial is infeasible: the load's bound (its stored reason) or its constraints."""
    reason = trial.user_attrs.get("infeasible_reason")
    violations = [v for v in trial.user_attrs.get("constraints") or [] if isinstance(v, int | float) and v > 0]
    broke = f"broke {len(violations)} constraint{'s' if len(violations) > 1 else ''}" if violations else ""
    return "; ".join(x for x in (str(reason) if reason else "", broke) if x) or "infeasible"


def loadgen_verdict(trial: Any, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"result": "VALID" | "INVALID", "reasons": [...], "reason": ...}``: what LoadGen said of the run that
    set the trial's rate -- from the trial's ``applied["loadgen"]`` when it was read (reports skip it to read
    fast), else ``loadgen_valid`` alone (reasons unknown). None without LoadGen figures."""
    applied = (trial.user_attrs.get("applied") if trial is not None else None) or {}
    loadgen = applied.get("loadgen") if isinstance(applied, Mapping) else None
    if isinstance(loadgen, Mapping):
        runs = [r for r in loadgen.get("runs") or [] if isinstance(r, Mapping)]
        met = [r for r in runs if r.get("bound_met")]
        used = max(met, key=lambda r: float(r.get("rate_qps") or 0.0)) if met else None
        return {
            "result": str(loadgen.get("result") or (used or {}).get("result") or "INVALID"),
            "reasons": list((used or {}).get("reasons") or []),
            "reason": loadgen.get("reason"),
            "runs": len(runs),
        }
    valid = metrics.get("loadgen_valid")
    if isinstance(valid, int | float) and not isinstance(valid, bool):
        return {"result": "VALID" if valid >= 1 else "INVALID", "reasons": [], "reason": None, "runs": None}
    return None


def _confirmation(
    trials: Sequence[Any], records: Sequence[TrialRecord], tolerance: float, rate: str = "qps"
) -> dict[str, Any] | None:
    """The latest paired confirmation session, decided (:func:`tuner.study.confirm.decide_rounds`)."""
    rounds = confirmation_rounds(trials, rate=rate)
    decision = None if rounds is None else decide_rounds(rounds, tolerance)
    if rounds is None or decision is None:
        return None
    keys = list(range(len(rounds["configs"])))
    params = dict(zip(keys, rounds["configs"], strict=True))
    merged = {config_key(r.params): r for r in merge_repeats(records)}

    def doc(k: int) -> dict[str, Any]:
        record = merged.get(config_key(params[k]))
        base = (
            record_dict(record, rate=rate)
            if record is not None
            else {"number": None, "params": params[k], "metrics": {}}
        )
        ratio = decision.ratios[k]
        return {
            **base,
            "paired_ratio": ratio.mean,
            "paired_ratio_low": ratio.low,
            "paired_ratio_high": ratio.high,
            "tie_bound": decision.tie_bounds[k],
        }

    knee_ratio = decision.ratios[decision.knee]
    knee_reason = (
        f"paired rounds: {format_params(params[decision.knee], sort=True)} is the plateau reference"
        if decision.knee == decision.reference
        else f"paired rounds: {format_params(params[decision.knee], sort=True)} gives {knee_ratio.mean:.3f} "
        f"(95 % CI {knee_ratio.low:.3f}-{knee_ratio.high:.3f}) of the plateau reference "
        f"{format_params(params[decision.reference], sort=True)} over {knee_ratio.n} rounds; P(within "
        f"{tolerance:.0%}) = {decision.knee_confidence:.2f}"
    )
    if not decision.knee_proven:
        # it qualified by the tie set with its estimate in the band, not by the probability
        knee_reason += (
            f", below {decision.confidence:.0%}: not proven within the tolerance; it stands because it cannot be "
            f"told from the best (its ratio's upper bound against the best is {decision.tie_bounds[decision.knee]:.3f})"
            " and its estimate is in the band; more rounds (study.confirm.max_rounds) would tell"
        )
    best_note = None
    if decision.best_below_band:
        best_ratio = decision.ratios[decision.best]
        best_note = (
            f"the best, {format_params(params[decision.best], sort=True)}, is cheaper than the knee: it cannot be "
            f"told from the plateau (upper bound {decision.tie_bounds[decision.best]:.3f}), but its ratio "
            f"{best_ratio.mean:.3f} is below the {tolerance:.0%} band (P(within) = "
            f"{decision.probabilities[decision.best]:.2f}), so it is more likely outside the tolerance than in; "
            "more rounds (study.confirm.max_rounds) would tell"
        )
    interference = [
        {
            "params": params[found.config],
            "round": found.round,
            rate: found.qps,
            f"expected_{rate}": found.expected_qps,
            "p_value": found.p_value,
            "message": (
                f"round {found.round + 1} of {format_params(params[found.config], sort=True)} measured "
                f"{found.qps:.4g} {rate} where the other measurements predict {found.expected_qps:.4g} "
                f"({1.0 - found.qps / found.expected_qps:.0%} slower, outlier test p = {found.p_value:.2g}): left "
                "out as interference"
            ),
        }
        for found in decision.interference
    ]
    left_out = {(f.config, f.round) for f in decision.interference}
    return {
        "knee_reason": knee_reason,
        "best_note": best_note,
        "interference": interference,
        "session": rounds["session"],
        "rounds": len(rounds["qps_by_round"][0]),
        "trials": rounds["trials"],
        "reference": params[decision.reference],
        "knee_confidence": decision.knee_confidence,
        "configs": [
            {
                **doc(k),
                "qps_by_round": rounds["qps_by_round"][k],
                "left_out_rounds": [r for r in range(len(rounds["qps_by_round"][k])) if (k, r) in left_out],
                "in_tie_set": k in decision.tie_set,
            }
            for k in keys
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


def _loadgen_confirmation(trials: Sequence[Any]) -> dict[str, Any] | None:
    """The study's latest LoadGen confirmation (``tuner confirm``): its record (:mod:`tuner.study.loadgen_confirm`)
    with ``number`` (its trial) and ``count`` (the confirmations stored); None when there is none."""
    from tuner.study.loadgen_confirm import MARK

    marked = [t for t in trials if isinstance(t.user_attrs.get(MARK), dict) and t.state != TrialState.FAIL]
    if not marked:
        return None
    latest = max(marked, key=lambda t: t.number)
    return {**latest.user_attrs[MARK], "number": latest.number, "count": len(marked)}
