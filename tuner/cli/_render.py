"""Rich rendering of report objects (shared by optimize and report)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuner.text import finite_or_none, format_params

_AXES = ("pool_size", "threads", "requests_per_sync", "batch_size")
#: the accuracy guard's metrics a records table shows (a column only where a record has it) and their headers
_ACCURACY_COLUMNS = (
    ("accuracy_sqnr_db", "sqnr dB"),
    ("accuracy_top1_agreement", "top1 agree"),
    ("accuracy_top1", "top1"),
    ("accuracy_top1_drop", "top1 drop"),
)


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def qps_pm(metrics: Mapping[str, Any]) -> str:
    """``20.1 ± 0.6``: a trial's qps with the half-width of its 95 % interval (``-`` when unknown)."""
    qps = metrics.get("qps")
    if qps is None:
        return "-"
    low, high = finite_or_none(metrics.get("qps_ci_low")), finite_or_none(metrics.get("qps_ci_high"))
    half = num((high - low) / 2.0, 2) if low is not None and high is not None else "-"
    raw = finite_or_none(metrics.get("qps_raw"))
    # measure.drift_correction: the corrected figure, and what was measured beside it
    return f"{num(qps)} ± {half}" + (f" (measured {num(raw)})" if raw is not None else "")


def rate_text(metrics: Mapping[str, Any], rate: str) -> str:
    """The figure a knee or best was decided on: ``20.1 ± 0.6 qps``, or under a latency bound
    ``server_qps 14.2 at p99 48.1 ms (closed-loop qps 20.1 ± 0.6)``."""
    if rate == "qps":
        return f"{qps_pm(metrics)} qps"
    at = ""
    if rate == "server_qps" and metrics.get("server_latency_ms") is not None:
        at = f" at {num(metrics.get('server_latency_ms'), 3)} ms"
    return f"{rate} {num(metrics.get(rate))}{at} (closed-loop qps {qps_pm(metrics)})"


def loadgen_text(doc: Mapping[str, Any]) -> str:
    """``LoadGen VALID`` / ``LoadGen INVALID (why)`` of a report record (empty without LoadGen figures)."""
    verdict = doc.get("loadgen")
    if not isinstance(verdict, Mapping) or not verdict.get("result"):
        return ""
    why = "; ".join(str(r) for r in verdict.get("reasons") or [])
    return f"LoadGen {verdict['result']}" + (f" ({why})" if why else "")


def records_table(
    title: str, records: list[dict[str, Any]], mark: dict[int, str] | None = None, *, rate: str = "qps"
) -> Table:
    mark = mark or {}
    names: list[str] = []
    for r in records:
        for k in r["params"]:
            if k not in names:
                names.append(k)
    varying = [n for n in names if len({repr(r["params"].get(n)) for r in records}) > 1] or names[:4]
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    for n in varying:
        table.add_column(n.replace("options.", "opt.").replace("requests_per_sync", "req/sync"), justify="right")
    # pipelines: the stage that limits each trial
    bottleneck = any("bottleneck" in r["metrics"] for r in records)
    # the accuracy guard's figures, where the study has them
    accuracy = [(m, h) for m, h in _ACCURACY_COLUMNS if any(m in r["metrics"] for r in records)]
    # under a latency bound: the rate first (what the ranking is by), then the closed-loop figures
    served = (rate, *(("at ms",) if rate == "server_qps" else ())) if rate != "qps" else ()
    columns = (
        *served,
        "qps",
        "p50 ms",
        "p99 ms",
        "rss MiB",
        "cpu",
        "stable",
        *(h for _, h in accuracy),
        *(("bottleneck",) if bottleneck else ()),
    )
    for col in (*columns, ""):
        table.add_column(col, justify="right")
    for r in records:
        m = r["metrics"]
        rate_cells = [num(m.get(rate))] if rate != "qps" else []
        if rate == "server_qps":
            rate_cells.append(num(m.get("server_latency_ms"), 3))
        table.add_row(
            str(r["number"]),
            *[num(r["params"].get(n)) for n in varying],
            *rate_cells,
            qps_pm(m),
            num(m.get("latency_p50_ms"), 3),
            num(m.get("latency_p99_ms"), 3),
            num(m.get("peak_rss_mb"), 4),
            num(m.get("cpu_util"), 2),
            "-" if m.get("stable") is None else ("yes" if m.get("stable") else "no"),
            *(num(m.get(metric), 4) for metric, _ in accuracy),
            *((str(m.get("bottleneck", "-")),) if bottleneck else ()),
            mark.get(r["number"], ""),
        )
    return table


def render_report(console: Console, report: dict[str, Any], *, top: int = 10) -> None:
    """Best, knee (confirmed? confidence), top-N, Pareto front, failures."""
    t = report["trials"]
    console.print(
        f"[bold]{report['study']}[/]  complete {t['complete']} (reused {t.get('duplicates', 0)}), "
        f"failed {t['failed']}, skipped {t['pruned']}"
        + (f", confirmation {t['confirmation']}" if t.get("confirmation") else "")
        + (f", drift references {t['drift']}" if t.get("drift") else ""),
        markup=True,
    )
    best, knee = report.get("best"), report.get("knee")
    rate = str(report.get("rate_metric") or "qps")
    if rate != "qps":
        console.print(f"      knee and best decided on [bold]{rate}[/] (load.scenario)", markup=True)
    if best:
        verdict = loadgen_text(best)
        console.print(
            f"[bold]best[/]  #{best['number']}  {format_params(best['params'])}  ->  "
            f"{escape(rate_text(best['metrics'], rate))}, p99 {num(best['metrics'].get('latency_p99_ms'))} ms"
            + (f"; {escape(verdict)}" if verdict else ""),
            markup=True,
        )
    if knee:
        conf = knee.get("confidence")
        sure = f", confidence {conf:.0%}" if isinstance(conf, float) else ""
        status = "[green]confirmed[/]" if knee["confirmed"] else "[yellow]not confirmed[/]"
        verdict = loadgen_text(knee)
        console.print(
            f"[bold]knee[/]  #{knee['number']}  {format_params(knee['params'])}  ->  "
            f"{escape(rate_text(knee['metrics'], rate))}  ({status}{sure})"
            + (f"; {escape(verdict)}" if verdict else ""),
            markup=True,
        )
        bottleneck = knee["metrics"].get("bottleneck")
        if bottleneck:
            console.print(f"      bottleneck stage: [bold]{bottleneck}[/]", markup=True)
    console.print(f"      {report.get('knee_reason', '')}")
    if report.get("decided_by") == "paired rounds":
        c = report["confirmation"]
        console.print(
            f"      decided from {c['rounds']} paired rounds of {len(c['configs'])} configs (ratios to "
            f"{format_params(c['reference'], hide_ones=True)}); tie set with the best: "
            + "; ".join(format_params(d["params"], hide_ones=True) for d in report.get("tie_set") or [])
        )
        table = Table(title="paired confirmation", title_justify="left")
        for col in ("config", f"{rate} per round", "ratio to reference (95 %)", "tie set"):
            table.add_column(col)
        for d in c["configs"]:
            out = set(d.get("left_out_rounds") or [])
            table.add_row(
                format_params(d["params"], hide_ones=True),
                ", ".join(num(q) + (" (left out)" if r in out else "") for r, q in enumerate(d["qps_by_round"])),
                f"{num(d['paired_ratio'], 3)} [{num(d['paired_ratio_low'], 3)}, {num(d['paired_ratio_high'], 3)}]",
                "yes" if d["in_tie_set"] else "",
            )
        console.print(table)
        for found in c.get("interference") or []:
            console.print(f"      [yellow]interference:[/] {escape(found['message'])}", markup=True)
        if c.get("best_note"):
            console.print(f"      {escape(c['best_note'])}")
    drift = report.get("drift")
    if drift and drift.get("message"):
        console.print(f"[yellow]drift:[/] {drift['message']}", markup=True)
    marks: dict[int, str] = {}
    if best:
        marks[best["number"]] = "best"
    if knee:
        marks[knee["number"]] = (marks.get(knee["number"], "") + " knee").strip()
    if report.get("top"):
        console.print(
            records_table(f"top {min(top, len(report['top']))} by {rate}", report["top"][:top], marks, rate=rate)
        )
    if len(report.get("objectives", [])) > 1 and report.get("pareto"):
        console.print(
            records_table(
                "Pareto front (" + ", ".join(f"{m} {d}" for m, d in report["objectives"]) + ")",
                report["pareto"],
                marks,
                rate=rate,
            )
        )
    if report.get("infeasible"):
        table = Table(title="infeasible trials", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("params")
        table.add_column("reason")
        for f in report["infeasible"][-10:]:
            table.add_row(str(f["number"]), format_params(f["params"]), str(f["reason"])[:240])
        console.print(table)
    if report.get("failed"):
        table = Table(title="failed trials", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("params")
        table.add_column("reason")
        for f in report["failed"][-10:]:
            table.add_row(str(f["number"]), format_params(f["params"]), str(f["reason"])[:160])
        console.print(table)
    confirmation = report.get("loadgen_confirmation")
    if confirmation:
        c = confirmation
        pct = f"p{float(c.get('percentile') or 0.99) * 100:g}"
        bound = f" (bound {num(c['latency_bound_ms'])} ms)" if c.get("latency_bound_ms") is not None else ""
        outcome = f"[green]{c.get('result')}[/]" if c.get("valid") else f"[red]{c.get('result')}[/]"
        why = f": {escape('; '.join(map(str, c['reasons'])))}" if c.get("reasons") else ""
        console.print(
            f"[bold]LoadGen confirmation[/]  trial #{c.get('trial')} ({c.get('pick')}) "
            f"{escape(format_params(c.get('params') or {}))}, {c.get('scenario')} at {num(c.get('rate_qps'))} qps "
            f"(target {num(c.get('target_qps'))}), {pct} {num(c.get('percentile_latency_ms'))} ms{bound}  "
            f"{outcome}{why}",
            markup=True,
        )
        logs = ", ".join(f"{k} {v}" for k, v in (c.get("artifacts") or {}).items())
        console.print(
            f"      stored as trial #{c.get('number')} ({c.get('count')} confirmation(s)); LoadGen logs (Optuna "
            f"artifacts) in {escape(str(c.get('artifact_store')))}: {logs or '-'}",
            markup=True,
        )
