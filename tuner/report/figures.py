"""Figures of a study (and of a comparison): data first, then two renderers.

Each figure is first built as a plain *chart* dict (pure data, testable without any plotting library):

    {"id", "title", "kind": "xy" | "barh", "x_label", "y_label", "x_log",
     "series":  [{"name", "x": [...], "y": [...], "mode": "lines+markers" | "markers" | "lines",
                  "text": [...] (hover), "dash": bool, "symbol": "circle" | "x" | ...}],
     "hlines":  [{"y", "name", "dash"}],
     "markers": [{"x", "y", "name", "symbol"}],      # the knee, the best
     "note":    str | None}                           # e.g. why importance was left out

:func:`study_figures` builds the four figures of a study -- the **saturation curve** (best qps per value
of the knee axis, one line per batch size or other axis, knee and plateau marked), **latency vs qps**
with the Pareto front, Optuna's **parameter importance** and the **trial history** -- and
:func:`write_html` (plotly, one self-contained file, plotly.js inline) and :func:`write_pngs`
(matplotlib, Agg) render any list of figure sets. Plotting libraries are imported inside the
renderers only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.analysis import TrialRecord, merge_repeats, pareto_front
from tuner.errors import TunerError
from tuner.metrics import CORE_AXES

__all__ = [
    "importance_chart",
    "knee_axis",
    "saturation_chart",
    "saturation_lines",
    "series_axis",
    "study_figures",
    "write_html",
    "write_pngs",
]

#: at most this many lines on a saturation curve; with more values the curve shows the envelope only
MAX_LINES = 8
#: parameter importance samples at most this many trials (fANOVA grows with the number of trials)
MAX_IMPORTANCE_TRIALS = 1000
MIN_IMPORTANCE_TRIALS = 4


class FigureError(TunerError):
    """A figure could not be written (a plotting library is missing, the path is not writable)."""

    exit_code = 2


# --------------------------------------------------------------------------------------------- axes


def _resource_axis(name: str) -> bool:
    return name in CORE_AXES or (name.startswith("stages.") and name.endswith(".workers"))


def _distinct(records: Sequence[TrialRecord], name: str) -> int:
    return len({repr(r.params.get(name)) for r in records if name in r.params})


def knee_axis(records: Sequence[TrialRecord]) -> str:
    """The resource axis (pool size, threads, requests in flight, batch, stage workers) that varies most
    among ``records``; ties go to the earlier core axis. ``pool_size`` when none varies."""
    names: list[str] = list(CORE_AXES)
    for r in records:
        for name in r.params:
            if _resource_axis(name) and name not in names:
                names.append(name)
    best, count = "pool_size", 1
    for name in names:
        n = _distinct(records, name)
        if n > count:
            best, count = name, n
    return best


def series_axis(records: Sequence[TrialRecord], x_axis: str) -> str | None:
    """The axis that splits the saturation curve into lines: ``batch_size`` when it varies, else the
    most varying other axis (resource axes first, then backend options); None when nothing else varies."""
    if x_axis != "batch_size" and _distinct(records, "batch_size") > 1:
        return "batch_size"
    names: list[str] = []
    for r in records:
        for name in r.params:
            if name != x_axis and name not in names:
                names.append(name)
    names.sort(key=lambda n: (not _resource_axis(n), CORE_AXES.index(n) if n in CORE_AXES else len(CORE_AXES)))
    best, count = None, 1
    for name in names:
        n = _distinct(records, name)
        if n > count:
            best, count = name, n
    return best


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, int | float):
        return (0, float(value))
    return (1, str(value))


def _qps(record: TrialRecord) -> float | None:
    value = record.metrics.get("qps")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        return None
    return float(value)


def saturation_lines(records: Sequence[TrialRecord], x_axis: str, by: str | None) -> list[dict[str, Any]]:
    """Best qps per value of ``x_axis``, one line per value of ``by`` (or one line when ``by`` is None).

    ``records`` should be feasible and merged (:func:`~tuner.analysis.merge_repeats`). Each line is
    ``{"name", "value", "x": [...], "y": [...], "numbers": [...]}``, x sorted.
    """
    groups: dict[str, dict[str, Any]] = {}
    for r in records:
        qps = _qps(r)
        if qps is None or x_axis not in r.params:
            continue
        value = r.params.get(by) if by else None
        key = repr(value)
        line = groups.setdefault(key, {"value": value, "points": {}})
        x = r.params[x_axis]
        xkey = repr(x)
        old = line["points"].get(xkey)
        if old is None or qps > old[1]:
            line["points"][xkey] = (x, qps, r.number)
    out = []
    for line in sorted(groups.values(), key=lambda g: _sort_key(g["value"])):
        points = sorted(line["points"].values(), key=lambda p: _sort_key(p[0]))
        name = f"{by}={line['value']}" if by else "best qps"
        out.append(
            {
                "name": name,
                "value": line["value"],
                "x": [p[0] for p in points],
                "y": [p[1] for p in points],
                "numbers": [p[2] for p in points],
            }
        )
    return out


# ------------------------------------------------------------------------------------------- charts


def _marker(doc: Mapping[str, Any] | None, x_key: str, y_key: str, name: str, symbol: str) -> dict[str, Any] | None:
    if not doc:
        return None
    x = doc["params"].get(x_key) if x_key != "qps" else doc["metrics"].get("qps")
    y = doc["metrics"].get(y_key)
    if x is None or y is None:
        return None
    return {"x": x, "y": y, "name": f"{name} #{doc['number']}", "symbol": symbol}


def saturation_chart(records: Sequence[TrialRecord], report: Mapping[str, Any]) -> dict[str, Any]:
    """The saturation curve of one study: best qps per value of its knee axis."""
    merged = merge_repeats(records)
    x_axis = knee_axis(merged)
    by = series_axis(merged, x_axis)
    lines = saturation_lines(merged, x_axis, by)
    note = None
    if by and len(lines) > MAX_LINES:
        note = f"{len(lines)} values of {by}: showing the best qps over all of them"
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
        hlines.append({"y": plateau, "name": f"plateau {plateau:.4g} qps", "dash": False})
        hlines.append({"y": (1 - tolerance) * plateau, "name": f"knee threshold (-{tolerance:.0%})", "dash": True})
    markers = [
        m
        for m in (
            _marker(report.get("knee"), x_axis, "qps", "knee", "star"),
            _marker(report.get("best"), x_axis, "qps", "best", "diamond"),
        )
        if m
    ]
    if not series:
        note = "no feasible trial with a qps measurement"
    return {
        "id": "saturation",
        "title": f"{report.get('study', '')}: saturation curve (best qps per {x_axis})",
        "kind": "xy",
        "x_label": x_axis,
        "y_label": "qps (samples/s)",
        "x_log": _log_axis([x for s in series for x in s["x"]]),
        "axis": x_axis,
        "by": by,
        "series": series,
        "hlines": hlines,
        "markers": markers,
        "note": note,
    }


def _log_axis(values: Sequence[Any]) -> bool:
    nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return bool(nums) and len(nums) == len(values) and min(nums) > 0 and max(nums) / min(nums) >= 64


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
    """Optuna's parameter importance for qps over the searched axes; a note says the method, or why it
    cannot be computed (too few trials, nothing varies)."""
    values, note = param_importances(study)
    names = sorted(values, key=lambda k: values[k])
    series = [{"name": "importance", "x": [values[n] for n in names], "y": names, "mode": "bar"}] if values else []
    return {
        "id": "importance",
        "title": f"{report.get('study', '')}: parameter importance for qps (Optuna)",
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


def param_importances(study: Any) -> tuple[dict[str, float], str | None]:
    """``({param: importance}, note)``: Optuna's ``get_param_importances`` on the study's complete,
    measured trials (target: qps), on a seeded sample of at most :data:`MAX_IMPORTANCE_TRIALS`. The note
    says which method ran, or why there are no values."""
    import random

    trials = [
        t
        for t in study.trials
        if getattr(t.state, "name", "") == "COMPLETE"
        and "duplicate_of" not in t.user_attrs
        and isinstance(t.user_attrs.get("qps"), int | float)
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

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        memory = optuna.create_study(direction="maximize", storage=optuna.storages.InMemoryStorage())
        memory.add_trials(
            [
                optuna.trial.create_trial(
                    params=dict(t.params), distributions=dict(t.distributions), value=float(t.user_attrs["qps"])
                )
                for t in trials
            ]
        )
        evaluator, method = _evaluator(optuna)
        values = optuna.importance.get_param_importances(memory, evaluator=evaluator)
    except Exception as err:  # optuna refuses some spaces (e.g. dynamic ones); the figure says why
        return {}, f"parameter importance not available: {str(err).strip().splitlines()[0][:160]}"
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
    """qps of every trial in order, the best feasible qps so far, failed trials at 0."""
    done, failed = [], []
    best_x, best_y = [], []
    best = -math.inf
    for t in study.trials:
        state = getattr(t.state, "name", "")
        if state == "COMPLETE" and isinstance(t.user_attrs.get("qps"), int | float):
            qps = float(t.user_attrs["qps"])
            done.append((t.number, qps, "duplicate_of" in t.user_attrs))
            if t.user_attrs.get("feasible", True) and qps > best:
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
    if knee and knee["metrics"].get("qps") is not None:
        markers.append(
            {"x": knee["number"], "y": knee["metrics"]["qps"], "name": f"knee #{knee['number']}", "symbol": "star"}
        )
    return {
        "id": "history",
        "title": f"{report.get('study', '')}: trial history",
        "kind": "xy",
        "x_label": "trial number",
        "y_label": "qps (samples/s)",
        "x_log": False,
        "series": series,
        "hlines": [],
        "markers": markers,
        "note": None if series else "no trials yet",
    }


def study_figures(study: Any, report: Mapping[str, Any]) -> dict[str, Any]:
    """The figure set of one study: ``{"name", "title", "summary": [lines], "charts": [4 charts]}``.

    ``study`` is a :class:`tuner.report.load.StudyData` (or anything with ``study_name``, ``trials`` of
    FrozenTrial-like rows and ``user_attrs``); ``report`` its :func:`~tuner.report.study_report`.
    """
    from tuner.study import trial_records

    records = trial_records(study.trials)
    return {
        "name": report["study"],
        "title": report["study"],
        "summary": summary_lines(report),
        "charts": [
            saturation_chart(records, report),
            latency_chart(records, report),
            importance_chart(study, report),
            history_chart(study, report),
        ],
    }


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    def params(doc: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in doc["params"].items())

    platform = report.get("platform") or {}
    lines = [
        f"platform: {platform.get('cpu_model', '?')}, {platform.get('cpu_logical', '?')} logical cores"
        + (f", board {platform['board']}" if platform.get("board") else "")
        + (f", accelerators {', '.join(platform['accelerators'])}" if platform.get("accelerators") else "")
    ]
    t = report.get("trials") or {}
    lines.append(f"trials: {t.get('complete', 0)} complete, {t.get('failed', 0)} failed, {t.get('pruned', 0)} skipped")
    best, knee = report.get("best"), report.get("knee")
    if best:
        lines.append(f"best: #{best['number']} {params(best)} -> {best['metrics'].get('qps', 0):.4g} qps")
    if knee:
        conf = knee.get("confidence")
        sure = f", confidence {conf:.0%}" if isinstance(conf, float) else ""
        status = "confirmed" if knee.get("confirmed") else "not confirmed"
        lines.append(
            f"knee: #{knee['number']} {params(knee)} -> {knee['metrics'].get('qps', 0):.4g} qps ({status}{sure})"
        )
    if report.get("knee_reason"):
        lines.append(str(report["knee_reason"]))
    return lines


# ----------------------------------------------------------------------------------------- plotly


_PLOTLY_SYMBOLS = {"star": "star", "diamond": "diamond", "x": "x", "circle": "circle", "circle-open": "circle-open"}


def _plotly_figure(chart: Mapping[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    if chart["kind"] == "barh":
        for s in chart["series"]:
            fig.add_trace(go.Bar(x=s["x"], y=s["y"], orientation="h", name=s["name"]))
    else:
        for s in chart["series"]:
            fig.add_trace(
                go.Scatter(
                    x=s["x"],
                    y=s["y"],
                    mode=s.get("mode", "lines+markers"),
                    name=s["name"],
                    text=s.get("text"),
                    marker={"symbol": _PLOTLY_SYMBOLS.get(s.get("symbol", "circle"), "circle")},
                    line={"dash": "dash" if s.get("dash") else "solid", "shape": "hv" if s.get("step") else "linear"},
                )
            )
        for m in chart.get("markers", []):
            fig.add_trace(
                go.Scatter(
                    x=[m["x"]],
                    y=[m["y"]],
                    mode="markers+text",
                    name=m["name"],
                    text=[m["name"]],
                    textposition="top center",
                    marker={
                        "symbol": _PLOTLY_SYMBOLS.get(m.get("symbol"), "star"),
                        "size": 16,
                        "line": {"width": 1, "color": "black"},
                    },
                )
            )
        for h in chart.get("hlines", []):
            fig.add_hline(
                y=h["y"],
                line_dash="dash" if h.get("dash") else "solid",
                line_color="grey",
                annotation_text=h["name"],
                annotation_position="bottom right",
            )
    if chart.get("x_log"):
        fig.update_xaxes(type="log")
    if chart.get("note"):
        fig.add_annotation(
            text=chart["note"],
            xref="paper",
            yref="paper",
            x=0.5,
            y=1.0,
            showarrow=False,
            yanchor="bottom",
            font={"color": "#a15c00"},
        )
    fig.update_layout(
        barmode="group",
        title=chart["title"],
        xaxis_title=chart["x_label"],
        yaxis_title=chart["y_label"],
        template="plotly_white",
        height=480,
        legend={"orientation": "v"},
    )
    return fig


def _escape(text: str) -> str:
    import html

    return html.escape(str(text))


def render_html(sets: Sequence[Mapping[str, Any]], title: str) -> str:
    """One self-contained HTML page (plotly.js inline once) with every chart of every figure set."""
    try:
        import plotly.io as pio
    except ImportError:
        raise FigureError("plotly is not installed: pip install plotly (a dependency of tuner)") from None
    parts = []
    first = True
    for figure_set in sets:
        parts.append(f"<section><h2>{_escape(figure_set['title'])}</h2>")
        if figure_set.get("summary"):
            parts.append("<ul>" + "".join(f"<li>{_escape(s)}</li>" for s in figure_set["summary"]) + "</ul>")
        for extra in figure_set.get("tables", []):
            parts.append(extra)
        for chart in figure_set["charts"]:
            fig = _plotly_figure(chart)
            parts.append(
                pio.to_html(
                    fig,
                    include_plotlyjs=True if first else False,
                    full_html=False,
                    div_id=_slug(f"{figure_set['name']}-{chart['id']}"),
                    config={"displaylogo": False, "responsive": True},
                )
            )
            first = False
        parts.append("</section>")
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}"
        "section{margin-bottom:2.5em}h2{border-bottom:1px solid #ddd}li{margin:.2em 0}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:.25em .6em;"
        "text-align:right}th{background:#f4f4f4}</style></head><body>"
        f"<h1>{_escape(title)}</h1>\n{body}\n"
        '<p style="color:#888">made by tuner (plotly, self-contained)</p></body></html>\n'
    )


def write_html(sets: Sequence[Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    path = Path(path)
    text = render_html(sets, title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise FigureError(f"cannot write {path}: {err.strerror}") from None
    return path


# ------------------------------------------------------------------------------------- matplotlib


_MPL_SYMBOLS = {"star": "*", "diamond": "D", "x": "x", "circle": "o", "circle-open": "o"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "study"


def _png(chart: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.4), dpi=110)
    try:
        if chart["kind"] == "barh":
            n = len(chart["series"])
            height = 0.8 / max(n, 1)
            for i, s in enumerate(chart["series"]):
                rows = [j + (i - (n - 1) / 2) * height for j in range(len(s["y"]))]
                ax.barh(rows, s["x"], height=height, label=s["name"] if n > 1 else None)
                ax.set_yticks(range(len(s["y"])), [str(y) for y in s["y"]])
            if n > 1:
                ax.legend(loc="best", fontsize=8)
        else:
            for s in chart["series"]:
                mode = s.get("mode", "lines+markers")
                symbol = s.get("symbol", "circle")
                kwargs: dict[str, Any] = {
                    "marker": _MPL_SYMBOLS.get(symbol, "o") if "markers" in mode else None,
                    "linestyle": ("--" if s.get("dash") else "-") if "lines" in mode else "none",
                    "label": s["name"],
                }
                if s.get("step"):
                    kwargs["drawstyle"] = "steps-post"
                if symbol == "circle-open":
                    kwargs["markerfacecolor"] = "none"
                if mode == "markers":
                    kwargs["alpha"] = 0.75
                    kwargs["markersize"] = 5
                ax.plot(s["x"], s["y"], **kwargs)
            for h in chart.get("hlines", []):
                ax.axhline(h["y"], color="grey", linestyle="--" if h.get("dash") else "-", linewidth=1, label=h["name"])
            for m in chart.get("markers", []):
                ax.scatter(
                    [m["x"]],
                    [m["y"]],
                    marker=_MPL_SYMBOLS.get(m.get("symbol"), "*"),
                    s=260,
                    zorder=5,
                    edgecolors="black",
                    label=m["name"],
                )
                ax.annotate(m["name"], (m["x"], m["y"]), textcoords="offset points", xytext=(8, 8), fontsize=9)
            if chart.get("x_log"):
                ax.set_xscale("log", base=2)
            if chart["series"] or chart.get("markers"):
                ax.legend(loc="best", fontsize=8, framealpha=0.85)
        ax.set_title(chart["title"], fontsize=11)
        ax.set_xlabel(chart["x_label"])
        ax.set_ylabel(chart["y_label"])
        ax.grid(True, alpha=0.3)
        if chart.get("note"):
            ax.text(
                0.5,
                0.5 if not chart["series"] else 0.02,
                chart["note"],
                transform=ax.transAxes,
                ha="center",
                va="center" if not chart["series"] else "bottom",
                fontsize=10,
                color="#a15c00",
                wrap=True,
            )
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def write_pngs(sets: Sequence[Mapping[str, Any]], folder: str | Path) -> list[Path]:
    """One PNG per chart: ``FOLDER/<study>-<chart>.png``. Returns the paths written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise FigureError("matplotlib is not installed: pip install matplotlib (a dependency of tuner)") from None
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FigureError(f"cannot create {folder}: {err.strerror}") from None
    out = []
    for figure_set in sets:
        for chart in figure_set["charts"]:
            path = folder / f"{_slug(figure_set['name'])}-{chart['id']}.png"
            try:
                _png(chart, path)
            except OSError as err:
                raise FigureError(f"cannot write {path}: {err.strerror}") from None
            out.append(path)
    return out
