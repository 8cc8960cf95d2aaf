"""Figure data, charts: the plain chart dicts of a study (see :mod:`tuner.report.figures` for their shape)
-- saturation curve, latency vs qps, parameter importance, trial history -- and the figure set of a study.
Pure data: no plotting library is imported here.

The saturation curve, the importance and the history chart plot the study's rate metric (the report's
``rate_metric``: ``qps``, or ``server_qps`` / ``offline_qps`` under ``load.scenario``), the figure the
knee is taken over; the latency chart stays closed-loop (p99 latency against qps, both measured flat out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tuner.analysis.knee import TrialRecord, merge_repeats
from tuner.analysis.pareto import pareto_front
from tuner.report.axes import _log_axis, _qps, knee_axis, saturation_lines, series_axis
from tuner.text import first_line, format_params
from tuner.trial_attrs import is_duplicate, is_feasible, rate_of

#: at most this many lines on a saturation curve; with more values the curve shows the envelope only
MAX_LINES = 8
#: parameter importance samples at most this many trials (fANOVA grows with the number of trials)
MAX_IMPORTANCE_TRIALS = 1000
MIN_IMPORTANCE_TRIALS = 4


# ------------------------------------------------------------------------------------------- charts


def _rate(report: Mapping[str, Any]) -> str:
    return str(report.get("rate_metric") or "qps")


def _rate_label(rate: str) -> str:
    """The axis label of a rate: ``qps (samples/s)``, ``server_qps (samples/s at the latency bound)``."""
    if rate == "server_qps":
        return "server_qps (samples/s at the latency bound)"
    return f"{rate} (samples/s)"


def _marker(doc: Mapping[str, Any] | None, x_key: str, y_key: str, name: str, symbol: str) -> dict[str, Any] | None:
    if not doc:
        return None
    x = doc["params"].get(x_key) if x_key != "qps" else doc["metrics"].get("qps")
    y = doc["metrics"].get(y_key)
    if x is None or y is None:
        return None
    return {"x": x, "y": y, "name": f"{name} #{doc['number']}", "symbol": symbol}


def saturation_chart(records: Sequence[TrialRecord], report: Mapping[str, Any]) -> dict[str, Any]:
    """The saturation curve of one study: best rate (the report's ``rate_metric``) per value of its knee axis.

    ``records`` are the rate view (:func:`tuner.study.ledger.trial_records` with the report's rate), whose
    ``qps`` is the rate; the report's docs hold honest metrics, so the markers read the rate by name.
    """
    rate = _rate(report)
    merged = merge_repeats(records)
    x_axis = knee_axis(merged)
    by = series_axis(merged, x_axis)
    lines = saturation_lines(merged, x_axis, by)
    note = None
    if by and len(lines) > MAX_LINES:
        note = f"{len(lines)} values of {by}: showing the best {rate} over all of them"
        lines = saturation_lines(merged, x_axis, None)
    series = [
        {
            "name": line["name"],
            "x": line["x"],
            "y": line["y"],
            "mode": "lines+markers",
            "text": [f"trial #{n}" for n in line["numbers"]],
        }
        for line in lines
    ]
    hlines = []
    plateau = report.get("plateau_qps")
    tolerance = float(report.get("tolerance") or 0.1)
    if plateau:
        hlines.append({"y": plateau, "name": f"plateau {plateau:.4g} {rate}", "dash": False})
        hlines.append({"y": (1 - tolerance) * plateau, "name": f"knee threshold (-{tolerance:.0%})", "dash": True})
    markers = [
        m
        for m in (
            _marker(report.get("knee"), x_axis, rate, "knee", "star"),
            _marker(report.get("best"), x_axis, rate, "best", "diamond"),
        )
        if m
    ]
    if not series:
        note = f"no feasible trial with a {rate} measurement"
    return {
        "id": "saturation",
        "title": f"{report.get('study', '')}: saturation curve (best {rate} per {x_axis})",
        "kind": "xy",
        "x_label": x_axis,
        "y_label": _rate_label(rate),
        "x_log": _log_axis([x for s in series for x in s["x"]]),
        "axis": x_axis,
        "by": by,
        "series": series,
        "hlines": hlines,
        "markers": markers,
        "note": note,
    }


def latency_chart(records: Sequence[TrialRecord], report: Mapping[str, Any]) -> dict[str, Any]:
    """p99 latency against qps for every measured trial, with the Pareto front of (qps up, p99 down)."""
    metric = "latency_p99_ms"
    series = []
    for feasible, name, symbol in ((True, "feasible", "circle"), (False, "infeasible", "x")):
        points = [
            (r.metrics["qps"], r.metrics[metric], r.number)
            for r in records
            if r.feasible is feasible and _qps(r) is not None and isinstance(r.metrics.get(metric), int | float)
        ]
        if points:
            series.append(
                {
                    "name": f"{name} trials",
                    "x": [p[0] for p in points],
                    "y": [p[1] for p in points],
                    "mode": "markers",
                    "symbol": symbol,
                    "text": [f"trial #{p[2]}" for p in points],
                }
            )
    front = pareto_front(records, [("qps", "maximize"), (metric, "minimize")])
    if front:
        front = sorted(front, key=lambda r: r.metrics["qps"])
        series.append(
            {
                "name": "Pareto front",
                "x": [r.metrics["qps"] for r in front],
                "y": [r.metrics[metric] for r in front],
                "mode": "lines+markers",
                "text": [f"trial #{r.number}" for r in front],
            }
        )
    markers = [
        m
        for m in (
            _marker(report.get("knee"), "qps", metric, "knee", "star"),
            _marker(report.get("best"), "qps", metric, "best", "diamond"),
        )
        if m
    ]
    return {
        "id": "latency",
        "title": f"{report.get('study', '')}: p99 latency vs qps",
        "kind": "xy",
        "x_label": "qps (samples/s)",
        "y_label": "p99 latency (ms)",
        "x_log": False,
        "series": series,
        "hlines": [],
        "markers": markers,
        "note": None if series else "no trial with qps and p99 latency",
    }


def importance_chart(study: Any, report: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's parameter importance for the study's rate over the searched axes; a note says the method, or
    why it cannot be computed (too few trials, nothing varies)."""
    rate = _rate(report)
    values, note = param_importances(study, rate=rate)
    names = sorted(values, key=lambda k: values[k])
    series = [{"name": "importance", "x": [values[n] for n in names], "y": names, "mode": "bar"}] if values else []
    return {
        "id": "importance",
        "title": f"{report.get('study', '')}: parameter importance for {rate} (Optuna)",
        "kind": "barh",
        "x_label": "importance (normalised)",
        "y_label": "parameter",
        "x_log": False,
        "series": series,
        "hlines": [],
        "markers": [],
        "note": note,
        "values": values,
    }


def param_importances(study: Any, *, rate: str = "qps") -> tuple[dict[str, float], str | None]:
    """``({param: importance}, note)``: Optuna's ``get_param_importances`` on the study's complete,
    measured trials (target: ``rate``, the study's rate metric), on a seeded sample of at most
    :data:`MAX_IMPORTANCE_TRIALS`. The note says which method ran, or why there are no values."""
    import random

    trials = [
        t
        for t in study.trials
        if getattr(t.state, "name", "") == "COMPLETE"
        and not is_duplicate(t)
        and rate_of(t, rate) is not None
        and t.params
        and getattr(t, "distributions", None)
    ]
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return {}, f"too few measured trials for parameter importance ({len(trials)}; needs {MIN_IMPORTANCE_TRIALS})"
    varying = {n for n in {k for t in trials for k in t.params} if len({repr(t.params.get(n)) for t in trials}) > 1}
    if not varying:
        return {}, "no searched parameter varies among the measured trials"
    if len(trials) > MAX_IMPORTANCE_TRIALS:
        trials = random.Random(0).sample(trials, MAX_IMPORTANCE_TRIALS)
    try:
        import optuna

        memory = optuna.create_study(direction="maximize", storage=optuna.storages.InMemoryStorage())
        memory.add_trials(
            [
                optuna.trial.create_trial(
                    params=dict(t.params), distributions=dict(t.distributions), value=float(t.user_attrs[rate])
                )
                for t in trials
            ]
        )
        evaluator, method = _evaluator(optuna)
        values = optuna.importance.get_param_importances(memory, evaluator=evaluator)
    except Exception as err:  # optuna refuses some spaces (e.g. dynamic ones); the figure says why
        return {}, f"parameter importance not available: {first_line(err, 160)}"
    values = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
    if not values:
        return {}, "parameter importance not available: no parameter left after filtering"
    return values, method


def _evaluator(optuna: Any) -> tuple[Any, str]:
    """Optuna's default fANOVA when scikit-learn is installed (it needs it), else PED-ANOVA (scipy only)."""
    import importlib.util

    if importlib.util.find_spec("sklearn") is not None:
        return optuna.importance.FanovaImportanceEvaluator(seed=0), "method: fANOVA (Optuna's default)"
    return optuna.importance.PedAnovaImportanceEvaluator(), "method: PED-ANOVA (install scikit-learn for fANOVA)"


def history_chart(study: Any, report: Mapping[str, Any]) -> dict[str, Any]:
    """The rate (the report's ``rate_metric``) of every trial in order, the best feasible so far, failed
    trials at 0."""
    rate = _rate(report)
    done, failed = [], []
    best_x, best_y = [], []
    best = -math.inf
    for t in study.trials:
        state = getattr(t.state, "name", "")
        qps = rate_of(t, rate)
        if qps is not None:
            done.append((t.number, qps, is_duplicate(t)))
            if is_feasible(t) and qps > best:
                best = qps
            if best > -math.inf:
                best_x.append(t.number)
                best_y.append(best)
        elif state == "FAIL":
            failed.append(t.number)
    series = []
    if done:
        series.append(
            {
                "name": "measured",
                "x": [d[0] for d in done if not d[2]],
                "y": [d[1] for d in done if not d[2]],
                "mode": "markers",
                "text": [f"trial #{d[0]}" for d in done if not d[2]],
            }
        )
        reused = [d for d in done if d[2]]
        if reused:
            series.append(
                {
                    "name": "reused (duplicate config)",
                    "x": [d[0] for d in reused],
                    "y": [d[1] for d in reused],
                    "mode": "markers",
                    "symbol": "circle-open",
                }
            )
    if best_x:
        series.append({"name": "best feasible so far", "x": best_x, "y": best_y, "mode": "lines", "step": True})
    if failed:
        series.append({"name": "failed", "x": failed, "y": [0.0] * len(failed), "mode": "markers", "symbol": "x"})
    knee = report.get("knee")
    markers = []
    if knee and knee["metrics"].get(rate) is not None:
        markers.append(
            {"x": knee["number"], "y": knee["metrics"][rate], "name": f"knee #{knee['number']}", "symbol": "star"}
        )
    return {
        "id": "history",
        "title": f"{report.get('study', '')}: trial history",
        "kind": "xy",
        "x_label": "trial number",
        "y_label": _rate_label(rate),
        "x_log": False,
        "series": series,
        "hlines": [],
        "markers": markers,
        "note": None if series else "no trials yet",
    }


def drift_chart(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The drift reference's qps against the trial number, with the knee tolerance around its first value.

    None when the study has no drift references (``study.drift.every: 0``, or too few trials).
    """
    drift = report.get("drift")
    if not drift or not drift.get("points"):
        return None
    xs = [p[0] for p in drift["points"]]
    ys = [p[1] for p in drift["points"]]
    tolerance = float(report.get("tolerance") or 0.1)
    reference = format_params(drift.get("reference") or {}, hide_ones=True)
    return {
        "id": "drift",
        "title": f"{report.get('study', '')}: drift of the reference config ({reference})",
        "kind": "xy",
        "x_label": "trial number",
        "y_label": "reference qps (samples/s)",
        "x_log": False,
        "series": [{"name": "reference", "x": xs, "y": ys, "mode": "lines+markers"}],
        "hlines": [
            {"y": ys[0] * (1.0 + tolerance), "name": f"first +{tolerance:.0%}", "dash": True},
            {"y": ys[0] * (1.0 - tolerance), "name": f"first -{tolerance:.0%}", "dash": True},
        ],
        "markers": [],
        "note": drift.get("message") or f"moved {float(drift.get('relative') or 0.0):.1%} over the study",
    }


def study_figures(study: Any, report: Mapping[str, Any]) -> dict[str, Any]:
    """The figure set of one study: ``{"name", "title", "summary": [lines], "charts": [4 or 5 charts]}``.

    The fifth, the drift of the reference config (:func:`drift_chart`), when the study has drift references.

    ``study`` is a :class:`tuner.report.load.StudyData` (or anything with ``study_name``, ``trials`` of
    FrozenTrial-like rows and ``user_attrs``); ``report`` its :func:`~tuner.report.study_report`.
    """
    from tuner.study.ledger import trial_records

    rate = _rate(report)
    closed = trial_records(study.trials)
    records = closed if rate == "qps" else trial_records(study.trials, rate=rate)
    return {
        "name": report["study"],
        "title": report["study"],
        "summary": summary_lines(report),
        "charts": [
            saturation_chart(records, report),
            latency_chart(closed, report),
            importance_chart(study, report),
            history_chart(study, report),
            *([drift] if (drift := drift_chart(report)) is not None else []),
        ],
    }


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    def params(doc: Mapping[str, Any]) -> str:
        return format_params(doc["params"])

    platform = report.get("platform") or {}
    lines = [
        f"platform: {platform.get('cpu_model', '?')}, {platform.get('cpu_logical', '?')} logical cores"
        + (f", board {platform['board']}" if platform.get("board") else "")
        + (f", accelerators {', '.join(platform['accelerators'])}" if platform.get("accelerators") else "")
    ]
    t = report.get("trials") or {}
    lines.append(f"trials: {t.get('complete', 0)} complete, {t.get('failed', 0)} failed, {t.get('pruned', 0)} skipped")
    best, knee = report.get("best"), report.get("knee")
    rate = _rate(report)
    if best:
        lines.append(f"best: #{best['number']} {params(best)} -> {best['metrics'].get(rate) or 0:.4g} {rate}")
    if knee:
        conf = knee.get("confidence")
        sure = f", confidence {conf:.0%}" if isinstance(conf, float) else ""
        status = "confirmed" if knee.get("confirmed") else "not confirmed"
        lines.append(
            f"knee: #{knee['number']} {params(knee)} -> {knee['metrics'].get(rate) or 0:.4g} {rate} ({status}{sure})"
        )
    if report.get("knee_reason"):
        lines.append(str(report["knee_reason"]))
    return lines
