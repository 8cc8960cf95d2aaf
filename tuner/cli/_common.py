"""Shared CLI plumbing: error -> message + exit code, consoles, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tuner.errors import TunerError
from tuner.text import json_safe

F = TypeVar("F", bound=Callable[..., Any])

# Piped into a file or a CI log there is no terminal width: use a wide one rather than rich's 80
# columns, so tables keep their numbers instead of truncating them.
_PIPED_WIDTH = 160
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else _PIPED_WIDTH)
out_console = Console(highlight=False, width=None if sys.stdout.isatty() else _PIPED_WIDTH)


def quiet_optuna() -> None:
    """The process-wide set-up of the ``tuner`` command (never done by the library on import).

    Optuna logs every failed trial as a WARNING with a Python traceback; tuner says why a trial failed
    in one line of its own, so only Optuna's errors get through. Heartbeats (the documented way to
    recover the trials of dead workers) are "experimental" in Optuna: the command accepts that quietly.
    """
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def handle_errors(func: F) -> F:
    """Turn a :class:`TunerError` into one line on stderr and its exit code (2 for bad input)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TunerError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", markup=True, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]", markup=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(document: Any) -> None:
    """One JSON document on stdout (NaN/inf become null so any parser reads it)."""
    sys.stdout.write(json.dumps(json_safe(document), indent=2, default=str) + "\n")


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``--set axis=value`` pairs; values are parsed as YAML scalars (``2`` -> int, ``true`` -> bool)."""
    import yaml

    from tuner.errors import SpecError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: expected axis=value, e.g. --set pool_size=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list):
            raise SpecError(f"--set {item!r}: expected a single value, got a {type(value).__name__}")
        out[key.strip()] = value
    return out
