"""``tuner confirm``: one long MLPerf LoadGen run of a study's knee, best or any trial, stored on the study.

Exit status: 0 when LoadGen called the run VALID, 1 when INVALID (the table or ``--json`` says why), 2 for bad
input (no such trial, no rate or bound to confirm at, LoadGen not installed).
"""

from __future__ import annotations

from typing import Any

import typer

from tuner.cli._common import err_console, handle_errors, out_console, print_json


@handle_errors
def confirm(
    storage: str = typer.Argument(..., help="a .db path, a SQLAlchemy URL, or file.db:study-name"),
    pick: str = typer.Option("knee", "--pick", help="knee | best | trial:N"),
    study: str = typer.Option(None, "--study", help="the study, when the storage holds several"),
    scenario: str = typer.Option(
        None,
        "--scenario",
        help="server | offline (default: the study's load.scenario; server needs the file's load.latency_ms)",
    ),
    duration_s: float = typer.Option(
        None,
        "--duration-s",
        help="LoadGen's minimum duration in seconds (default: LoadGen's own for the scenario, 600 s)",
    ),
    rate: float = typer.Option(
        None, "--rate", help="the arrival rate (Server) or expected rate (Offline) in samples/s, instead of the study's"
    ),
    rate_share: float = typer.Option(
        None,
        "--rate-share",
        help="confirm at this share (0..1] of the study's rate: headroom for a short search's optimistic tail",
    ),
    artifacts: str = typer.Option(
        None,
        "--artifacts",
        help="folder for the LoadGen logs (Optuna artifacts); default: <storage file>.artifacts/ beside a SQLite "
        "or journal file; required for a server storage",
    ),
    json_out: bool = typer.Option(False, "--json", help="print the confirmation record as JSON"),
) -> None:
    """Run the chosen configuration under MLPerf LoadGen at its rate; VALID/INVALID and why, kept on the study.

    Exit 0 when LoadGen calls the run VALID, 1 when INVALID.
    """
    from tuner.export.select import select
    from tuner.report.load import REPORT_SKIP, load_one_study, parse_ref
    from tuner.report.summary import study_report
    from tuner.study.loadgen_confirm import (
        artifacts_folder,
        open_study_for_writing,
        plan_confirmation,
        run_confirmation,
        spec_from_study,
    )
    from tuner.study.storage import redact

    ref = parse_ref(storage, study)
    data = load_one_study(ref, skip_attrs=REPORT_SKIP)
    name = data.study_name
    selection = select(data, study_report(data, trials=data.trials), pick)
    spec, notes = spec_from_study(data.user_attrs, name)
    plan = plan_confirmation(
        spec,
        study=name,
        pick=selection.pick,
        trial=selection.number,
        params=selection.params,
        metrics=selection.metrics,
        scenario=scenario,
        duration_s=duration_s,
        rate_qps=rate,
        rate_share=rate_share,
        notes=notes,
    )
    folder = artifacts_folder(ref.url, artifacts)
    writable = open_study_for_writing(ref.url, name)
    bound = f", p{plan.percentile * 100:g} <= {plan.latency_ms:g} ms" if plan.scenario == "server" else ""
    how_long = (
        f"a minimum of {plan.duration_s:g} s"
        if plan.duration_s is not None
        else "LoadGen's default minimum duration (600 s)"
    )
    err_console.print(
        f"confirming {name} trial #{plan.trial} ({selection.pick}) under LoadGen {plan.scenario.title()} at "
        f"{plan.target_qps:.4g} qps{bound}, {how_long}; {plan.rate_source}",
        soft_wrap=True,
        markup=False,
    )

    def progress(event: dict[str, Any]) -> None:
        if event.get("event") == "loadgen_confirm":
            err_console.print("the closed-loop part is measured; the LoadGen run started", markup=False)

    record = run_confirmation(writable, plan, url=ref.url, artifacts_dir=folder, emit=progress)
    if json_out:
        print_json({"study": name, "storage": redact(ref.url), **record})
    else:
        _render(record, name)
    if not record["valid"]:
        raise typer.Exit(1)


def _render(record: dict[str, Any], study: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tuner.cli._render import num
    from tuner.text import format_params

    scenario = str(record["scenario"])
    table = Table(title=f"LoadGen {scenario.title()} confirmation of {study}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("config", escape(f"trial #{record['trial']} ({record['pick']}): {format_params(record['params'])}"))
    table.add_row("scenario", scenario)
    table.add_row("target rate", escape(f"{num(record['target_qps'])} qps ({record['rate_source']})"))
    rate_name = "scheduled" if scenario == "server" else "samples/s"
    table.add_row(
        "LoadGen rate",
        f"{num(record['rate_qps'])} qps {rate_name}, {num(record['completed_qps'])} completed, "
        f"{record['query_count']} queries in {num(record['duration_s'], 3)} s",
    )
    pct = f"p{float(record['percentile']) * 100:g}"
    latency = f"{num(record['percentile_latency_ms'], 4)} ms"
    if record.get("latency_bound_ms") is not None:
        verdict = "within" if record.get("bound_met") else "NOT within"
        latency += f" ({verdict} the bound {num(record['latency_bound_ms'])} ms)"
    table.add_row(f"{pct} latency", latency)
    table.add_row("p50 latency", f"{num((record.get('latency_ms') or {}).get('p50'), 4)} ms")
    valid = bool(record["valid"])
    table.add_row("result", "[green]VALID[/]" if valid else "[red]INVALID[/]")
    if record.get("reasons"):
        table.add_row("why", escape("; ".join(str(r) for r in record["reasons"])))
    if record.get("early_stopping") and not valid:
        table.add_row("early stopping", escape(str(record["early_stopping"])))
    for error in record.get("errors") or []:
        table.add_row("LoadGen error", escape(str(error)))
    paths = record.get("artifact_paths") or {}
    table.add_row("logs", escape("\n".join(f"{which}: {path}" for which, path in paths.items()) or "-"))
    table.add_row("stored as", f"trial #{record.get('number')} (mark loadgen_confirm)")
    for note in record.get("notes") or []:
        table.add_row("note", escape(str(note)))
    out_console.print(table)
