"""``tuner run``: measure one configuration in a child process."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from tuner.cli._common import err_console, handle_errors, out_console, parse_sets, print_json
from tuner.cli._render import qps_pm
from tuner.cli.init import SHAPE_HELP, VALUE_HELP
from tuner.text import format_params


@handle_errors
def run(
    workload: Path = typer.Argument(
        ..., help="workload YAML file, or a model (.onnx, .xml, zoo:<name>) drafted as `tuner init` does"
    ),
    shape: list[str] = typer.Option(None, "--shape", help=f"a model argument: {SHAPE_HELP}"),
    value: list[str] = typer.Option(None, "--value", help=f"a model argument: {VALUE_HELP}"),
    set_: list[str] = typer.Option(
        None, "--set", "-s", help="axis=value (repeatable); unset axes take their first choice or low bound"
    ),
    json_out: bool = typer.Option(False, "--json", help="print one JSON document: {params, metrics, ...}"),
    repeats: int = typer.Option(None, "--repeats", min=1, help="measure N times in fresh processes (median)"),
    timeout: float = typer.Option(None, "--timeout", help="seconds before the child is killed"),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="the file is a 'tuner export --format tuner' file: check that this machine reproduces the study's "
        "qps and p99 (exit 1 when not)",
    ),
    verify_tolerance: float = typer.Option(
        0.10, "--verify-tolerance", min=0.0, max=0.99, help="--verify: allowed shortfall (qps) / excess (p99)"
    ),
) -> None:
    """Measure one configuration: warm-up, steady-state windows, metrics."""
    from tuner.cli.init import workload_spec
    from tuner.errors import SpecError, TrialFailed
    from tuner.execution.runner import measure_config
    from tuner.platform import fingerprint

    provenance = None
    if verify:
        from tuner.export.provenance import read_provenance_file

        provenance = read_provenance_file(workload)
        if set_:
            raise SpecError("--verify re-measures the exported configuration as it is; drop --set")
    spec = workload_spec(workload, shape, value)
    params = spec.resolve_params(parse_sets(set_))
    with err_console.status("loading model ...") as status:

        def on_event(event: dict[str, Any]) -> None:
            status.update(_progress_text(event))

        result = measure_config(spec, params, repeats=repeats, timeout_s=timeout, on_event=on_event)
    if not result.ok:
        assert result.failure is not None
        if json_out:
            print_json({"params": dict(params), "failure": result.failure.to_dict()})
        raise TrialFailed(f"{workload}: trial failed: {result.failure.describe()}")
    document = {
        "params": dict(result.params),
        "metrics": dict(result.metrics),
        "applied": dict(result.applied),
        "versions": dict(result.versions),
        "platform": fingerprint(),
    }
    verdict = None
    if provenance is not None:
        from tuner.export.verify import verify as check

        verdict = check(provenance, result.metrics, tolerance=verify_tolerance, params=result.params)
        document["verify"] = verdict.to_dict()
    if json_out:
        print_json(document)
    else:
        _render(document)
        if verdict is not None:
            style = "green" if verdict.reproduced else "bold red"
            lines = verdict.lines()
            out_console.print(lines[0], style=style, markup=False, soft_wrap=True)
            for line in lines[1:]:
                out_console.print(line, soft_wrap=True, markup=False)
    if verdict is not None and not verdict.reproduced:
        raise typer.Exit(1)


def _progress_text(event: dict[str, Any]) -> str:
    name = event.get("event")
    if name == "load":
        return "loading runtimes ..."
    if name == "warmup":
        return f"warming up ({event.get('warmup_s')} s) ..."
    if name == "window":
        mark = "stable" if event.get("stable") else "not stable yet"
        return f"window {event['index']}: {event['qps']:.2f} qps ({mark})"
    if name == "repeat":
        if event.get("auto") and "relative_half_width" in event:
            return (
                f"repeat {event['index']} (at most {event['of']}): qps interval ±{event['relative_half_width']:.1%} "
                f"> target {event['target_ci']:.1%} ..."
            )
        return f"repeat {event['index']}/{event['of']} ..."
    if name == "accuracy":
        return f"accuracy guard: {event.get('samples')} reference samples against fp32 ..."
    return str(name)


def _render(document: dict[str, Any]) -> None:
    from rich.table import Table

    params = document["params"]
    table = Table(title="tuner run: " + format_params(params), show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in document["metrics"].items():
        if key == "qps":
            shown = qps_pm(document["metrics"])  # with the half-width of its 95 % interval
        elif isinstance(value, float) and not math.isfinite(value):
            shown = "-"
        elif isinstance(value, float):
            shown = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
        elif isinstance(value, list):
            shown = ", ".join(f"{v:.3g}" for v in value)
        else:
            shown = str(value)
        table.add_row(key, shown)
    out_console.print(table)
    if not document["metrics"].get("stable", True):
        err_console.print(
            "[yellow]not stable:[/] the windows did not agree within measure.stability before measure.max_s; "
            "raise max_s or window_s, or close other programs",
            markup=True,
        )
