"""``tuner studies``: what a storage holds."""

from __future__ import annotations

from typing import Any

import typer

from tuner.cli._common import handle_errors, out_console, print_json
from tuner.text import format_params


@handle_errors
def studies(
    storage: str = typer.Argument(..., help="a .db path or a SQLAlchemy URL"),
    json_out: bool = typer.Option(False, "--json", help="print a JSON list, one object per study"),
) -> None:
    """Every study in a storage with its platform, trial counts, best qps and knee."""
    from tuner.report.listing import study_summary
    from tuner.report.load import REPORT_SKIP, load_studies, parse_ref
    from tuner.report.summary import study_report

    ref = parse_ref(storage)
    # the listing needs the knee, not how sure it is: no bootstrap (it is the slow part on big studies)
    rows = [
        study_summary(s, study_report(s, trials=s.trials, bootstrap=0))
        for s in load_studies(ref.url, [ref.study] if ref.study else None, skip_attrs=REPORT_SKIP)
    ]
    if json_out:
        print_json(rows)
        return
    _render(rows, ref.shown)


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _render(rows: list[dict[str, Any]], where: str) -> None:
    from rich.table import Table

    table = Table(title=f"studies in {where}", title_justify="left")
    for col in ("study", "platform", "complete", "failed", "skipped", "best qps", "knee", "knee qps"):
        text = col in ("study", "platform", "knee")
        table.add_column(col, justify="left" if text else "right", overflow="fold", no_wrap=not text)
    for r in rows:
        p = r["platform"]
        platform = f"{r['platform_tag'] or '?'}\n{p.get('cpu_model') or '?'}, {p.get('cpu_logical') or '?'} cores"
        if p.get("board"):
            platform += f"\n{p['board']}"
        t = r["trials"]
        best, knee = r.get("best"), r.get("knee")
        knee_text = "-"
        if knee:
            knee_text = format_params(knee["params"], hide_ones=True)
            knee_text += "" if knee.get("confirmed") else " (not confirmed)"
        table.add_row(
            r["study"],
            platform,
            str(t.get("complete", 0)),
            str(t.get("failed", 0)),
            str(t.get("pruned", 0)),
            _num(best["qps"]) if best else "-",
            knee_text,
            _num(knee["qps"]) if knee else "-",
        )
    out_console.print(table)
