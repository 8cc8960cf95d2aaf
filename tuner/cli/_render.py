"""Rich rendering of report objects (shared by optimize and report)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tuner.text import format_params

_AXES = ("pool_size", "threads", "requests_per_sync", "batch_size")


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


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
            num(m.get("qps")),
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
        f"failed {t['failed']}, skipped {t['pruned']}",
        markup=True,
    )
    best, knee = report.get("best"), report.get("knee")
    if best:
        console.print(
            f"[bold]best[/]  #{best['number']}  {format_params(best['params'])}  ->  "
            f"{num(best['metrics'].get('qps'))} qps, p99 {num(best['metrics'].get('latency_p99_ms'))} ms",
            markup=True,
        )
    if knee:
        conf = knee.get("confidence")
        sure = f", confidence {conf:.0%}" if isinstance(conf, float) else ""
        status = "[green]confirmed[/]" if knee["confirmed"] else "[yellow]not confirmed[/]"
        console.print(
            f"[bold]knee[/]  #{knee['number']}  {format_params(knee['params'])}  ->  "
            f"{num(knee['metrics'].get('qps'))} qps  ({status}{sure})",
            markup=True,
        )
        bottleneck = knee["metrics"].get("bottleneck")
        if bottleneck:
            console.print(f"      bottleneck stage: [bold]{bottleneck}[/]", markup=True)
    console.print(f"      {report.get('knee_reason', '')}")
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
