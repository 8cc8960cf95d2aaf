"""Figure renderer: every chart of any list of figure sets as one self-contained HTML page (plotly,
plotly.js inline once). plotly is imported inside the renderer only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.report.render_common import FigureError, slug

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
                    div_id=slug(f"{figure_set['name']}-{chart['id']}"),
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
