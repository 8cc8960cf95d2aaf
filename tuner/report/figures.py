"""Figures of a study (and of a comparison): data first, then two renderers.

Each figure is first built as a plain *chart* dict (pure data, testable without any plotting library):

    {"id", "title", "kind": "xy" | "barh", "x_label", "y_label", "x_log",
     "series":  [{"name", "x": [...], "y": [...], "mode": "lines+markers" | "markers" | "lines",
                  "text": [...] (hover), "dash": bool, "symbol": "circle" | "x" | ...}],
     "hlines":  [{"y", "name", "dash"}],
     "markers": [{"x", "y", "name", "symbol"}],      # the knee, the best
     "note":    str | None}                           # e.g. why importance was left out

:func:`study_figures` builds the figures of a study -- the **saturation curve** (best qps per value
of the knee axis, one line per batch size or other axis, knee and plateau marked), **latency vs qps**
with the Pareto front, Optuna's **parameter importance** and the **trial history**, plus the **drift** of
the reference config when the study re-measured one -- and
:func:`write_html` (plotly, one self-contained file, plotly.js inline) and :func:`write_pngs`
(matplotlib, Agg) render any list of figure sets. Plotting libraries are imported inside the
renderers only.

Modules: :mod:`tuner.report.axes` (axis choice, saturation lines), :mod:`tuner.report.charts` (the chart
dicts and figure sets), :mod:`tuner.report.plotly_html` and :mod:`tuner.report.matplotlib_png` (the
renderers); import each name from the module that defines it.
"""

from __future__ import annotations
