"""Figure renderer: one PNG per chart (matplotlib, Agg). matplotlib is imported inside the renderer only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.report.render_common import FigureError, slug

# ------------------------------------------------------------------------------------- matplotlib


_MPL_SYMBOLS = {"star": "*", "diamond": "D", "x": "x", "circle": "o", "circle-open": "o"}


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
            path = folder / f"{slug(figure_set['name'])}-{chart['id']}.png"
            try:
                _png(chart, path)
            except OSError as err:
                raise FigureError(f"cannot write {path}: {err.strerror}") from None
            out.append(path)
    return out
