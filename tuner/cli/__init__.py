"""cli: the ``tuner`` command line. One module per command: parse, call, render.

Heavy imports live inside command bodies, so ``tuner --help`` stays instant; only the CLI prints, exits,
and sets up process-wide logging and warning filters (:func:`tuner.cli._common.quiet_optuna`). May import
every package; nothing imports it.
"""

from __future__ import annotations

import typer

from tuner.cli import run as _run
from tuner.cli._common import quiet_optuna

app = typer.Typer(
    name="tuner",
    help="Declarative workload tuning for ML inference: find the saturation knee of pool size, threads, "
    "requests in flight and batch size.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    """``--version``: tuner's version and the runtimes installed beside it (package metadata only)."""
    if not value:
        return
    from tuner.platform import runtime_versions, tuner_version

    typer.echo(f"tuner {tuner_version()}")
    for name, version in runtime_versions().items():
        typer.echo(f"{name} {version}")
    raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        expose_value=False,
        callback=_print_version,
        help="print tuner's version and the runtimes it found, then exit",
    ),
) -> None:
    """tuner: measure, search, find the knee, report, export."""
    quiet_optuna()


app.command("run")(_run.run)

for _name in ("init", "optimize", "report", "compare", "export", "confirm", "studies", "dashboard"):
    try:
        _module = __import__(f"tuner.cli.{_name}", fromlist=[_name])
    except ModuleNotFoundError:
        continue
    app.command(_name)(getattr(_module, _name))


def main() -> None:
    app()
