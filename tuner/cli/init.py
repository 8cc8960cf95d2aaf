"""``tuner init``: draft a commented workload file from a model file (and what ``tuner run|optimize MODEL`` use)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tuner.cli._common import err_console, handle_errors

if TYPE_CHECKING:
    from tuner.config.spec import Spec

SHAPE_HELP = "NAME=D1,D2,...: the shape fed to input NAME (repeatable); an open dimension 0 stays the batch axis"
VALUE_HELP = "NAME=X: feed input NAME the constant X, e.g. a sample rate (repeatable)"


@handle_errors
def init(
    model: str = typer.Argument(..., help="an ONNX model (.onnx), an OpenVINO IR (.xml) or zoo:<name>"),
    output: Path = typer.Option(None, "--output", "-o", help="write the workload file here (default: print it)"),
    shape: list[str] = typer.Option(None, "--shape", help=SHAPE_HELP),
    value: list[str] = typer.Option(None, "--value", help=VALUE_HELP),
    backend: str = typer.Option(
        None, "--backend", help="onnxruntime | openvino | a plugin (default: openvino for .xml, else onnxruntime)"
    ),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --output file"),
) -> None:
    """Draft a workload file from a model: its inputs, a search sized to this machine, a ten-minute budget."""
    import sys

    from tuner.errors import SpecError
    from tuner.scaffold.draft import draft_workload, parse_shape_flags, parse_value_flags

    if output is not None and output.exists() and not force:
        raise SpecError(f"-o {output}: the file exists; pass --force to overwrite it")
    draft = draft_workload(
        model,
        shapes=parse_shape_flags(shape),
        values=parse_value_flags(value),
        backend=backend,
        out_dir=output.parent if output is not None else None,
    )
    if output is None:
        sys.stdout.write(draft.text)
    else:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(draft.text, encoding="utf-8")
        except OSError as err:
            raise SpecError(f"-o {output}: cannot write the workload file: {err.strerror or err}") from None
    for note in draft.notes:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True)
    if output is not None:
        err_console.print(f"wrote {output}", markup=False, soft_wrap=True)
        if draft.complete:
            err_console.print(f"next: tuner optimize {output}", markup=False, soft_wrap=True)


def workload_spec(target: Path, shape: list[str] | None, value: list[str] | None) -> Spec:
    """What ``tuner run|optimize TARGET`` measure: the workload file, or a model file drafted in memory.

    A model (``.onnx``, ``.xml``, ``zoo:<name>``) becomes the workload ``tuner init TARGET -o <name>.yaml``
    would write in the current directory (so the study is ``studies/<name>.db`` here); the draft's notes
    go to stderr. ``--shape`` / ``--value`` on a workload file are an error: they describe a model's inputs.
    """
    from tuner.config.spec import load_spec
    from tuner.errors import SpecError
    from tuner.scaffold.draft import is_model_argument, parse_shape_flags, parse_value_flags, spec_from_model

    if not is_model_argument(target):
        if shape or value:
            flag = "--shape" if shape else "--value"
            raise SpecError(
                f"{flag} applies to a model file (tuner run|optimize MODEL.onnx {flag} ...); {target} is a workload "
                "file: declare the input under workload.inputs instead"
            )
        return load_spec(target)
    spec, draft = spec_from_model(str(target), shapes=parse_shape_flags(shape), values=parse_value_flags(value))
    err_console.print(
        f"workload {draft.name} drafted from {target} as `tuner init` drafts it (`{draft.command} -o "
        f"{draft.name}.yaml` writes it to a file)",
        markup=False,
        soft_wrap=True,
    )
    for note in draft.notes:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True)
    return spec
