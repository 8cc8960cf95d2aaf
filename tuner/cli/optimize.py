"""``tuner optimize``: search the space, record every trial in an SQL study, find the knee."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer

from tuner.cli._common import err_console, handle_errors, out_console, print_json
from tuner.cli.init import SHAPE_HELP, VALUE_HELP


@handle_errors
def optimize(
    workload: Path = typer.Argument(
        ..., help="workload YAML file, or a model (.onnx, .xml, zoo:<name>) drafted as `tuner init` does"
    ),
    shape: list[str] = typer.Option(None, "--shape", help=f"a model argument: {SHAPE_HELP}"),
    value: list[str] = typer.Option(None, "--value", help=f"a model argument: {VALUE_HELP}"),
    storage: str = typer.Option(
        None,
        "--storage",
        help="a .db path, journal:PATH, a .log/.journal file or any SQLAlchemy URL, relative to the current "
        "directory (default: the file's study.storage, else studies/<name>.db)",
    ),
    trials: int = typer.Option(None, "--trials", min=1, help="measured trials in the study (overrides the file)"),
    timeout: float = typer.Option(None, "--timeout", help="stop after this many seconds (overrides study.timeout_s)"),
    sampler: str = typer.Option(None, "--sampler", help="tpe | grid | random | gp | nsga2 | knee"),
    new: bool = typer.Option(False, "--new", help="start a fresh study even if one exists for this workload"),
    remeasure: bool = typer.Option(False, "--remeasure", help="measure configs again even if already measured"),
    allow_platform_mix: bool = typer.Option(
        False, "--allow-platform-mix", help="add trials to a study made on different hardware"
    ),
    no_confirm: bool = typer.Option(
        False, "--no-confirm", help="skip the paired confirmation round after the search (study.confirm)"
    ),
    json_out: bool = typer.Option(False, "--json", help="print the report object as JSON at the end"),
    top: int = typer.Option(10, "--top", help="rows in the top-N table"),
) -> None:
    """Run (or resume) the study of a workload and print the best config and the knee."""
    from tuner.cli.init import workload_spec
    from tuner.report.summary import study_report
    from tuner.study.run import optimize as run_optimize
    from tuner.study.storage import open_storage

    spec = workload_spec(workload, shape, value)
    if sampler:
        spec = _with_sampler(spec, sampler)
    from tuner.measurement.process import interrupt

    progress = _Progress()
    # `kill PID` stops like Ctrl-C (the study stays resumable); both also stop a trial whose launch swallowed them
    previous = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.signal(signal.SIGINT, interrupt)
    try:
        with progress:
            result = run_optimize(
                spec,
                storage=storage,
                new=new,
                remeasure=remeasure,
                trials=trials,
                timeout_s=timeout,
                allow_platform_mix=allow_platform_mix,
                confirm=not no_confirm,
                on_event=progress.on_event,
            )
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: the trial in progress is marked interrupted and will be measured again; every finished "
            "trial is in the study. Run the same command to resume"
        )
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    import optuna

    from tuner.config.storage_url import resolve_storage_url
    from tuner.study.storage import storage_errors

    url = resolve_storage_url(storage, base_dir=Path.cwd()) if storage else spec.storage_url()
    with storage_errors("cannot read the study back from", url):
        study = optuna.load_study(study_name=result.study_name, storage=open_storage(url, heartbeat=False))
        report = study_report(study, top=top)
    report["stop_reason"] = result.stop_reason
    if json_out:
        print_json(report)
        return
    from tuner.cli._render import render_report

    err_console.print(f"stopped: {result.stop_reason}")
    render_report(out_console, report, top=top)


def _with_sampler(spec: Any, sampler: str) -> Any:
    from tuner.config.models import SAMPLERS
    from tuner.config.spec import parse_spec
    from tuner.errors import SpecError

    if sampler not in SAMPLERS:
        raise SpecError(f"--sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    import yaml

    data = yaml.safe_load(spec.text)
    data.setdefault("study", {})["sampler"] = sampler
    return parse_spec(yaml.safe_dump(data, sort_keys=False), path=spec.path)


class _Progress:
    """A rich progress bar: trial k/n, current params, best qps, current knee."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]trial[/]"),
            MofNCompleteColumn(),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=err_console,
            transient=False,
        )
        self.task = self.progress.add_task("trials", total=1, status="")
        self.best = "-"
        self.knee = "-"
        self.current = ""

    def __enter__(self) -> _Progress:
        self.started = False  # shown from the first event on: an error before the study starts is one line
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def _update(self, child: str = "") -> None:
        status = f"{self.current} {child} | best {self.best} qps | knee {self.knee}"
        self.progress.update(self.task, status=status)

    def on_event(self, event: dict[str, Any]) -> None:
        from tuner.text import format_params

        if not self.started:
            self.progress.__enter__()
            self.started = True
        name = event.get("event")
        if name == "study":
            self.progress.update(self.task, total=event["target"], completed=event["measured"])
            err_console.print(f"study {event['name']} in {event['storage']} ({event['measured']} measured so far)")
        elif name == "notice":
            err_console.print(f"note: {event['message']}")
        elif name == "waiting":
            err_console.print(
                f"  waiting: the rest of the budget is being measured by other workers ({event['in_flight']} in flight)"
            )
        elif name == "trial_start":
            self.current = format_params({k: v for k, v in event["params"].items()})
            self._update("loading")
        elif name == "warmup":
            self._update("warm-up")
        elif name == "window":
            self._update(f"window {event['index']} {event['qps']:.3g} qps{' stable' if event['stable'] else ''}")
        elif name == "trial_end":
            outcome = event["outcome"]
            if outcome.startswith("measured") or outcome == "stopped-early":
                self.progress.advance(self.task)
            if outcome == "measured-failed":
                err_console.print(f"  trial {event['number']} failed: {event.get('failure')}")
            elif outcome == "stopped-early":
                err_console.print(f"  trial {event['number']} {event.get('skip_reason')}")
            elif outcome in ("skipped", "yielded"):
                err_console.print(f"  trial {event['number']} skipped: {event.get('skip_reason')}")
        elif name == "confirm_start":
            err_console.print(
                f"confirming {len(event['configs'])} configs in {event['rounds']} interleaved rounds: "
                + "; ".join(format_params(c, hide_ones=True) for c in event["configs"])
            )
        elif name == "confirm_more":
            err_console.print(f"  confirm round {event['round']} (up to {event['of']}): {event['reason']}")
        elif name == "confirm_trial":
            self.current = f"confirm round {event['round']}/{event['of']}: {format_params(event['params'])}"
            self._update("loading")
        elif name == "drift_reference":
            self.current = f"drift reference after {event['after']} trials: {format_params(event['params'])}"
            self._update("loading")
        elif name == "knee":
            self.best = f"{event['plateau_qps']:.4g}" if event.get("plateau_qps") else "-"
            knee = event.get("knee")
            self.knee = (format_params(knee) + (" (confirmed)" if event.get("confirmed") else "")) if knee else "-"
            self._update()
