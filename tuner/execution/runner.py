"""Spec + params -> a child-process job -> a measured (or failed) result, with repeats."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.config.spec import Spec
from tuner.errors import SpecError
from tuner.execution.child import run_job
from tuner.measurement.result import EventSink, TrialResult, aggregate_repeats


def resolve_model_path(spec: Spec) -> Path | None:
    """Build/locate the workload's model once, in the parent (so a zoo build never counts in a trial)."""
    ref = spec.workload.model
    if not ref:
        return None
    from tuner.models.zoo import check_model_file, resolve_model

    path = resolve_model(ref, spec.base_dir)
    # an ONNX file is checked before any trial; other formats (OpenVINO IR, a vendor's file for a command)
    # are the runtime's to judge
    onnx_expected = path.suffix.lower() == ".onnx" or (
        spec.workload.kind == "pool" and spec.workload.backend == "onnxruntime"
    )
    if not ref.startswith("zoo:") and onnx_expected:
        check_model_file(path)
    return path


def build_job(spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
    """The JSON job a trial runs for ``params`` (a worker child's, or a ``kind: command`` program's)."""
    if spec.workload.kind == "command":
        from tuner.workloads.command.job import build_command_job

        return build_command_job(spec, params, model_path)
    options = dict(spec.workload.options)
    for key, value in params.items():
        if key.startswith("options."):
            options[key[len("options.") :]] = value
    if spec.workload.kind == "pool":
        from tuner.backends.registry import get_backend

        get_backend(spec.workload.backend).validate_options(options)
    measure = spec.measure.model_dump(exclude={"repeats"})
    job = {
        "kind": spec.workload.kind,
        "backend": spec.workload.backend,
        "model": str(model_path) if model_path else None,
        "options": options,
        "params": dict(params),
        "measure": measure,
        "spec_path": str(spec.path) if spec.path else None,
    }
    if spec.workload.kind == "pipeline":
        from tuner.workloads.pipeline.job import pipeline_job_section

        job["pipeline"] = pipeline_job_section(spec, options)  # stages; images (a synthetic set made here, once)
    return job


def measure_config(
    spec: Spec,
    params: Mapping[str, Any],
    *,
    model_path: Path | None = None,
    repeats: int | None = None,
    timeout_s: float | None = None,
    on_event: EventSink | None = None,
) -> TrialResult:
    """Measure ``params`` ``repeats`` times, each in a fresh child; the median repeat with its spread."""
    repeats = repeats or spec.measure.repeats
    if repeats < 1:
        raise SpecError(f"repeats must be >= 1, got {repeats}")
    if model_path is None:
        model_path = resolve_model_path(spec)
    job = build_job(spec, params, model_path)
    run = run_job
    if job["kind"] == "command":
        from tuner.workloads.command.job import run_command_job

        run = run_command_job  # type: ignore[assignment]
    results: list[TrialResult] = []
    for i in range(repeats):
        if on_event:
            on_event({"event": "repeat", "index": i + 1, "of": repeats})
        result = run(
            job,
            timeout_s=timeout_s or spec.study.trial_timeout_s,
            memory_limit_mb=spec.study.memory_limit_mb,
            on_event=on_event,
        )
        results.append(result)
        if not result.ok:
            return result
    return aggregate_repeats(results) if repeats > 1 else results[0]
