"""Per-kind checks of a validated workload file: backend and options, pipeline stages, command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.config.axes import Axis, check_axis_value
from tuner.config.lines import _dotted, _LineMap, _nearest
from tuner.config.models import WorkloadFile
from tuner.errors import SpecError


def _check_backend(model: WorkloadFile, where: str, lines: _LineMap) -> None:
    from tuner.backends.registry import get_backend
    from tuner.errors import BackendError

    try:
        backend_cls = get_backend(model.workload.backend)
    except BackendError as err:
        raise SpecError(f"{where}:{lines.line(('workload', 'backend'))}: workload.backend: {err}") from None
    if backend_cls.needs_model and not model.workload.model:
        raise SpecError(
            f"{where}:{lines.line(('workload',))}: workload.model: missing; backend "
            f"{model.workload.backend!r} needs a model (zoo:<name> or a .onnx path)"
        )
    valid = backend_cls.option_names()
    for key in model.workload.options:
        if key not in valid:
            raise SpecError(
                f"{where}:{lines.line(('workload', 'options', key))}: workload.options.{key}: unknown option of "
                f"backend {model.workload.backend!r}{_nearest(key, valid)} (valid: {', '.join(valid) or 'none'})"
            )
    for key in model.search:
        if key.startswith("options.") and key[len("options.") :] not in valid:
            opt = key[len("options.") :]
            raise SpecError(
                f"{where}:{lines.line(('search', key))}: search.{key}: unknown option of backend "
                f"{model.workload.backend!r}{_nearest(opt, valid)} (valid: {', '.join(valid) or 'none'})"
            )
    # the fixed options must validate as a whole (types, ranges)
    try:
        backend_cls.validate_options(model.workload.options)
    except BackendError as err:
        raise SpecError(f"{where}:{lines.line(('workload', 'options'))}: workload.options: {err}") from None


def _check_pipeline(
    model: WorkloadFile,
    axes: Mapping[str, Axis],
    where: str,
    lines: _LineMap,
    base_dir: Path,
    *,
    validate_backend: bool,
) -> None:
    """The stage list, the ``stages.<name>.workers|queue`` axes, the image folder, and the infer backend."""
    from tuner.workloads.pipeline.stages import STAGE_TYPES, StageSpecError, validate_stages

    workload = model.workload
    if workload.stages is None:
        raise SpecError(
            f"{where}:{lines.line(('workload',))}: workload.stages: missing; kind: pipeline needs an ordered list "
            f"of stages (types: {', '.join(STAGE_TYPES)})"
        )
    try:
        stages = validate_stages(workload.stages)
    except StageSpecError as err:
        loc = ("workload", "stages", *err.loc)
        raise SpecError(f"{where}:{lines.line(loc)}: {_dotted(loc)}{err.detail}") from None
    by_name = {s.name: s for s in stages}
    for key in axes:
        if not key.startswith("stages."):
            continue
        at = f"{where}:{lines.line(('search', key))}: search.{key}"
        parts = key.split(".")
        if len(parts) != 3 or parts[2] not in ("workers", "queue"):
            raise SpecError(f"{at}: unknown axis; expected stages.<stage name>.workers or stages.<stage name>.queue")
        stage = by_name.get(parts[1])
        if stage is None:
            raise SpecError(
                f"{at}: unknown stage {parts[1]!r}{_nearest(parts[1], by_name)} (stages: {', '.join(by_name)})"
            )
        if stage.type == "infer" and parts[2] == "workers":
            raise SpecError(
                f"{at}: the infer stage's workers are its pool_size instances (each with requests_per_sync "
                "requests in flight); search pool_size and requests_per_sync"
            )
        if stage.type == "read" and parts[2] == "queue":
            raise SpecError(f"{at}: the read stage is the source; it has no input queue")
    if workload.images is not None and workload.synthetic is not None:
        raise SpecError(
            f"{where}:{lines.line(('workload', 'synthetic'))}: workload.synthetic: give images (a folder) or "
            "synthetic (a generated set), not both"
        )
    if workload.images is not None:
        from tuner.workloads.pipeline.images import ImagesError, list_images

        folder = Path(workload.images).expanduser()
        try:
            list_images(folder if folder.is_absolute() else base_dir / folder)
        except ImagesError as err:
            raise SpecError(
                f"{where}:{lines.line(('workload', 'images'))}: workload.images = {workload.images!r}: {err}"
            ) from None
    if any(s.type == "infer" for s in stages) and validate_backend:
        _check_backend(model, where, lines)


def _check_command(
    model: WorkloadFile, axes: Mapping[str, Axis], objectives: Sequence[tuple[str, str]], where: str, lines: _LineMap
) -> None:
    """Placeholders name known axes, searched axes are used, regexes and expressions compile."""
    from tuner.workloads.command.parse import MEASURED_BY_TUNER
    from tuner.workloads.command.template import check_workload, parse_metrics_declared

    workload = model.workload
    for key in axes:
        if key.startswith("stages."):
            raise SpecError(f"{where}:{lines.line(('search', key))}: search.{key}: stages are for kind: pipeline")
    for key, value in workload.options.items():
        check_axis_value(
            f"options.{key}", value, where=f"{where}:{lines.line(('workload', 'options', key))}: workload.options.{key}"
        )
    searched = {n: a for n, a in axes.items() if a.kind != "fixed"}
    problems = check_workload(workload, axes, searched)
    if problems:
        loc, message = problems[0]
        raw = _value_at(model, loc)
        shown = f" = {raw!r}" if isinstance(raw, str | int | float) and not isinstance(raw, bool) else ""
        raise SpecError(f"{where}:{lines.line(loc)}: {_dotted(loc)}{shown}: {message}")
    declared = parse_metrics_declared(workload.parse)
    if declared is None:
        return
    given = set(declared) | set(MEASURED_BY_TUNER)
    for i, (metric, _direction) in enumerate(objectives):
        if metric not in given:
            raise SpecError(
                f"{where}:{lines.line(('objectives', i))}: objectives[{i}]: {metric!r} is neither parsed from the "
                f"program's output (workload.parse gives {', '.join(declared)}) nor measured by tuner"
            )
    for metric in model.constraints:
        if metric not in given:
            raise SpecError(
                f"{where}:{lines.line(('constraints', metric))}: constraints.{metric}: neither parsed from the "
                f"program's output (workload.parse gives {', '.join(declared)}) nor measured by tuner"
            )


def _value_at(model: WorkloadFile, loc: Sequence[Any]) -> Any:
    current: Any = model.model_dump()
    for part in loc:
        try:
            current = current[part]
        except (KeyError, IndexError, TypeError):
            return None
    return current
