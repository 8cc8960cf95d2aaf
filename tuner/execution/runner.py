"""Spec + params -> a trial job -> a measured (or failed) result, with repeats.

The workload kind (looked up by name, :mod:`tuner.workloads.registry`) builds the job. A kind that runs in
the worker child (``runs_in_worker``) is measured in a fresh ``python -m tuner.execution.worker`` started
by :func:`tuner.execution.child.run_job`; any other kind's own ``run`` launches and watches its program.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.config.spec import Spec
from tuner.errors import SpecError
from tuner.execution.child import run_job
from tuner.measurement.result import EventSink, TrialResult, aggregate_repeats
from tuner.workloads.registry import get_kind


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
        spec.workload.backend == "onnxruntime" and get_kind(spec.workload.kind)().uses_backend(spec)
    )
    if not ref.startswith("zoo:") and onnx_expected:
        check_model_file(path)
    return path


def build_job(spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
    """The JSON job a trial runs for ``params``: the workload kind's, with its ``kind`` added."""
    kind = get_kind(spec.workload.kind)()
    return {**kind.build_job(spec, params, model_path), "kind": spec.workload.kind}


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
    kind = get_kind(spec.workload.kind)()
    # a kind that runs in the worker child is started here (its run_in_child runs there); others run themselves
    run = run_job if kind.runs_in_worker else kind.run
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
