"""``tuner report``: tables, the knee and figures of the studies in a storage."""

from __future__ import annotations

from pathlib import Path

import typer

from tuner.cli._common import err_console, handle_errors, out_console, print_json


@handle_errors
def report(
    storage: str = typer.Argument(..., help="a .db path, a SQLAlchemy URL, or file.db:study-name"),
    study: str = typer.Option(None, "--study", help="report this study only (default: every study in the storage)"),
    json_out: bool = typer.Option(
        False, "--json", help="print the report object (a JSON list when the storage holds several studies)"
    ),
    html: Path = typer.Option(None, "--html", help="write one self-contained interactive HTML file with the figures"),
    png: Path = typer.Option(None, "--png", help="write the figures as PNG files into this folder"),
    top: int = typer.Option(10, "--top", min=1, help="rows in the top-N table"),
) -> None:
    """Best, knee (confirmed? how sure?), top-N, Pareto front, failures; figures as HTML and PNG."""
    from tuner.report.load import REPORT_SKIP, load_ref, parse_ref
    from tuner.report.summary import study_report

    studies = load_ref(parse_ref(storage, study), skip_attrs=REPORT_SKIP)
    reports = [study_report(s, top=top, trials=s.trials) for s in studies]
    if html or png:
        from tuner.report.charts import study_figures
        from tuner.report.matplotlib_png import write_pngs
        from tuner.report.plotly_html import write_html

        figures = [study_figures(s, r) for s, r in zip(studies, reports, strict=True)]
        if html:
            title = "tuner report: " + ", ".join(r["study"] for r in reports)
            write_html(figures, html, title=title)
            err_console.print(f"wrote {html}")
        if png:
            for path in write_pngs(figures, png):
                err_console.print(f"wrote {path}")
    if json_out:
        print_json(reports[0] if len(reports) == 1 else reports)
        return
    from tuner.cli._render import render_report

    for i, doc in enumerate(reports):
        if i:
            out_console.print()
        render_report(out_console, doc, top=top)
