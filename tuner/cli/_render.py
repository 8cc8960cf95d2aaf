"""Rich rendering of report objects (shared by optimize and report)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from tuner.text import finite_or_none, format_params

_AXES = ("pool_size", "threads", "requests_per_sync", "batch_size")


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


def records_table(title: str, records: list[dict[str, Any]], mark: dict[int, str] | None = None) -> Table:
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
    for col in ("qps", "p50 ms", "p99 ms", "rss MiB", "cpu", "stable", *(("bottleneck",) if bottleneck else ()), ""):
        table.add_column(col, justify="right")
    for r in records:
        m = r["metrics"]
        table.add_row(
            str(r["number"]),
            *[num(r["params"].get(n)) for n in varying],
            qps_pm(m),
            num(m.get("latency_p50_ms"), 3),
            num(m.get("latency_p99_ms"), 3),
            num(m.get("peak_rss_mb"), 4),
            num(m.get("cpu_util"), 2),
            "-" if m.get("stable") is None else ("yes" if m.get("stable") else "no"),
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
    if best:
        console.print(
            f"[bold]best[/]  #{best['number']}  {format_params(best['params'])}  ->  "
            f"{qps_pm(best['metrics'])} qps, p99 {num(best['metrics'].get('latency_p99_ms'))} ms",
            markup=True,
        )
    if knee:
        conf = knee.get("confidence")
        sure = f", confidence {conf:.0%}" if isinstance(conf, float) else ""
        status = "[green]confirmed[/]" if knee["confirmed"] else "[yellow]not confirmed[/]"
        console.print(
            f"[bold]knee[/]  #{knee['number']}  {format_params(knee['params'])}  ->  "
            f"{qps_pm(knee['metrics'])} qps  ({status}{sure})",
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
        for col in ("config", "qps per round", "ratio to reference (95 %)", "tie set"):
            table.add_column(col)
        for d in c["configs"]:
            table.add_row(
                format_params(d["params"], hide_ones=True),
                ", ".join(num(q) for q in d["qps_by_round"]),
                f"{num(d['paired_ratio'], 3)} [{num(d['paired_ratio_low'], 3)}, {num(d['paired_ratio_high'], 3)}]",
                "yes" if d["in_tie_set"] else "",
            )
        console.print(table)
    drift = report.get("drift")
    if drift and drift.get("message"):
        console.print(f"[yellow]drift:[/] {drift['message']}", markup=True)
    marks: dict[int, str] = {}
    if best:
        marks[best["number"]] = "best"
    if knee:
        marks[knee["number"]] = (marks.get(knee["number"], "") + " knee").strip()
    if report.get("top"):
        console.print(records_table(f"top {min(top, len(report['top']))} by qps", report["top"][:top], marks))
    if len(report.get("objectives", [])) > 1 and report.get("pareto"):
        console.print(
            records_table(
                "Pareto front (" + ", ".join(f"{m} {d}" for m, d in report["objectives"]) + ")", report["pareto"], marks
            )
        )
    if report.get("failed"):
        table = Table(title="failed trials", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("params")
        table.add_column("reason")
        for f in report["failed"][-10:]:
            table.add_row(str(f["number"]), format_params(f["params"]), str(f["reason"])[:160])
        console.print(table)
