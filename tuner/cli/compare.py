"""``tuner compare``: studies from different storages or platforms side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tuner.cli._common import err_console, handle_errors, out_console, print_json
from tuner.cli._render import num
from tuner.text import format_params


@handle_errors
def compare(
    studies: list[str] = typer.Argument(
        ..., help="two or more of: a .db path, a SQLAlchemy URL, file.db:study-name, URL#study-name"
    ),
    json_out: bool = typer.Option(False, "--json", help="print the comparison as one JSON document"),
    html: Path = typer.Option(None, "--html", help="write the overlay figures as one self-contained HTML file"),
    png: Path = typer.Option(None, "--png", help="write the overlay figures as PNG files into this folder"),
    axis: str = typer.Option(None, "--axis", help="align on this axis (default: the one that varies most)"),
) -> None:
    """Platforms, best and knee per platform, ratios to the first, the same axis values aligned."""
    from tuner.errors import StudyError
    from tuner.report.compare import CompareItem, compare_studies
    from tuner.report.load import REPORT_SKIP, load_ref, parse_ref
    from tuner.report.summary import study_report
    from tuner.study.ledger import trial_records
    from tuner.trial_attrs import rate_metric_of

    items = []
    for text in studies:
        ref = parse_ref(text)
        for study in load_ref(ref, skip_attrs=REPORT_SKIP):
            items.append(
                CompareItem(
                    report=study_report(study, trials=study.trials),
                    # the records the study's knee was taken over: its rate (server_qps under a latency bound)
                    records=trial_records(study.trials, rate=rate_metric_of(study.user_attrs)),
                    workload_text=study.user_attrs.get("workload_text"),
                    storage=study.storage,
                )
            )
    if len(items) < 2:
        raise StudyError(
            f"compare needs at least two studies; {', '.join(studies)} hold {len(items)}. Give two storages, "
            "or a storage that holds several studies"
        )
    doc = compare_studies(items, axis=axis)
    from rich.markup import escape

    for warning in doc["warnings"]:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", markup=True, soft_wrap=True)
    if html or png:
        from tuner.report.compare import compare_figures
        from tuner.report.matplotlib_png import write_pngs
        from tuner.report.plotly_html import write_html

        figures = [compare_figures(doc)]
        if html:
            write_html(figures, html, title=figures[0]["title"])
            err_console.print(f"wrote {html}")
        if png:
            for path in write_pngs(figures, png):
                err_console.print(f"wrote {path}")
    if json_out:
        print_json(doc)
        return
    _render(doc)


def _short(params: dict[str, Any]) -> str:
    """Axes not at 1 (the knee's distinguishing settings), e.g. ``pool_size=6, batch_size=2``."""
    return format_params(params, hide_ones=True)


def _render(doc: dict[str, Any]) -> None:
    from rich.table import Table

    studies = doc["studies"]
    platforms = Table(title="platforms", title_justify="left")
    platforms.add_column("")
    for s in studies:
        platforms.add_column(s["label"])
    platforms.add_row("study", *[s["study"] for s in studies])
    platforms.add_row("platform tag", *[s["platform_tag"] for s in studies])
    for key in ("cpu_model", "cpu_logical", "memory_mb", "board", "accelerators", "os"):
        values = [s["platform"].get(key) for s in studies]
        mark = " *" if key in doc["platform_diff"] else ""
        platforms.add_row(key + mark, *[", ".join(v) if isinstance(v, list) else num(v) for v in values])
    out_console.print(platforms)

    rates = [str(s.get("rate_metric") or "qps") for s in studies]
    shown = rates[0] if len(set(rates)) == 1 else "rate"
    summary = Table(title=f"best and knee (ratios to {doc['baseline']})", title_justify="left")
    columns = ("", f"best {shown}", "x", "knee", f"knee {shown}", "x", "confirmed", "knee p99 ms", "x")
    for col in columns:
        summary.add_column(col, justify="right" if col not in ("", "knee") else "left")
    for s, r, rate in zip(studies, doc["ratios"], rates, strict=True):
        best, knee = s.get("best") or {}, s.get("knee") or {}
        mark = f" ({rate})" if shown == "rate" else ""
        summary.add_row(
            s["label"],
            num((best.get("metrics") or {}).get(rate)) + mark,
            num(r["best_qps"], 3),
            _short(knee.get("params", {})) if knee else "-",
            num((knee.get("metrics") or {}).get(rate)) + mark,
            num(r["knee_qps"], 3),
            ("yes" if knee.get("confirmed") else "no") if knee else "-",
            num((knee.get("metrics") or {}).get("latency_p99_ms"), 3),
            num(r["knee_latency_p99_ms"], 3),
        )
    out_console.print(summary)

    aligned = Table(title=f"best {shown} per {doc['axis']} (ratio to {doc['baseline']})", title_justify="left")
    aligned.add_column(doc["axis"], justify="right")
    for s in studies:
        aligned.add_column(s["label"], justify="right")
    for row in doc["aligned"]:
        cells = []
        for i, q in enumerate(row["qps"]):
            if q is None:
                cells.append("-")
            elif i == 0:
                cells.append(num(q))
            else:
                cells.append(f"{num(q)} (x{num(row['ratio'][i], 3)})")
        aligned.add_row(num(row["value"]), *cells)
    out_console.print(aligned)
