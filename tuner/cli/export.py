"""``tuner export``: a study's best, knee or any trial as a deployable file, with provenance."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from tuner.cli._common import err_console, handle_errors


@handle_errors
def export(
    storage: str = typer.Argument(..., help="a .db path, a SQLAlchemy URL, or file.db:study-name"),
    pick: str = typer.Option("knee", "--pick", help="best | knee | trial:N"),
    fmt: str = typer.Option(
        "tuner", "--format", "-f", help="tuner (alias yaml) | json | env | onnxruntime | openvino | triton"
    ),
    output: str = typer.Option(
        None,
        "--output",
        "-o",
        help="file to write; a folder (existing, or ending in /) gets a default name in it; default: stdout",
    ),
    study: str = typer.Option(None, "--study", help="the study, when the storage holds several"),
) -> None:
    """Write the chosen configuration as a workload file, env file, runtime options or Triton config."""
    from tuner.errors import StorageError
    from tuner.export.formats import canonical, default_filename, render
    from tuner.export.select import select
    from tuner.report.load import REPORT_SKIP, load_one_study, parse_ref
    from tuner.report.summary import study_report

    fmt = canonical(fmt)
    ref = parse_ref(storage, study)
    data = load_one_study(ref, skip_attrs=REPORT_SKIP)
    selection = select(data, study_report(data, trials=data.trials), pick)
    text = render(selection, fmt)
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    path = Path(output).expanduser()
    if output.endswith(("/", "\\")) or path.is_dir():
        path = path / default_filename(selection, fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err.strerror}") from None
    qps = selection.metrics.get("qps")
    shown = f", {qps:.4g} qps" if isinstance(qps, int | float) else ""
    err_console.print(
        f"wrote {path} ({fmt}: {selection.study} trial #{selection.number}, {selection.pick}{shown})",
        soft_wrap=True,
    )
