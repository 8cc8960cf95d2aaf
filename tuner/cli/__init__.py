"""The ``tuner`` command line. One module per command; heavy imports live inside command bodies."""

from __future__ import annotations

import typer

from tuner.cli import run as _run

app = typer.Typer(
    name="tuner",
    help="Declarative workload tuning for ML inference: find the saturation knee of pool size, threads, "
    "requests in flight and batch size.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """tuner: measure, search, find the knee, report, export."""


app.command("run")(_run.run)

for _name in ("optimize", "report", "compare", "export", "studies", "dashboard"):
    try:
        _module = __import__(f"tuner.cli.{_name}", fromlist=[_name])
    except ModuleNotFoundError:
        continue
    app.command(_name)(getattr(_module, _name))


def main() -> None:
    app()
