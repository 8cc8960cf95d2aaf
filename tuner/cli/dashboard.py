"""``tuner dashboard``: open optuna-dashboard on a storage (optional extra ``tuner[dashboard]``)."""

from __future__ import annotations

import typer

from tuner.cli._common import err_console, handle_errors
from tuner.errors import TunerError


class MissingExtraError(TunerError):
    """An optional extra is not installed."""

    exit_code = 2


@handle_errors
def dashboard(
    storage: str = typer.Argument(..., help="a .db path or a SQLAlchemy URL"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="port to listen on"),
) -> None:
    """Serve optuna-dashboard for every study in the storage (Ctrl-C stops it)."""
    import importlib

    from tuner.report.load import parse_ref
    from tuner.study.storage import open_storage, redact

    try:
        optuna_dashboard = importlib.import_module("optuna_dashboard")
    except ImportError:
        raise MissingExtraError(
            "optuna-dashboard is not installed; install it with: pip install 'tuner[dashboard]' "
            "(or pip install optuna-dashboard)"
        ) from None
    ref = parse_ref(storage)
    store = open_storage(ref.url, create=False, heartbeat=False)
    err_console.print(f"optuna-dashboard for {redact(ref.url)} on http://{host}:{port}/  (Ctrl-C to stop)")
    optuna_dashboard.run_server(store, host=host, port=port)
