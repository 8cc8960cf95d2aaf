"""The pipeline workload's trial job: its section built in the parent, and its run in the trial child."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tuner.workloads.pipeline.flow import PipelineError
from tuner.workloads.pipeline.stages import STAGE_TYPES, StageConfig


def pipeline_job_section(spec: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``pipeline`` part of a trial job: validated stages and the image folder.

    Runs in the parent: a synthetic image set is generated (once, cached) here, never inside a trial.
    """
    from tuner.workloads.pipeline.images import synthetic_images
    from tuner.workloads.pipeline.stages import validate_stages

    workload = spec.workload
    stages = validate_stages(workload.stages)
    if any(s.type == "infer" for s in stages):
        from tuner.backends.registry import get_backend

        get_backend(workload.backend).validate_options(dict(options))
    if workload.images is not None:
        folder = Path(workload.images).expanduser()
        folder = folder if folder.is_absolute() else spec.base_dir / folder
    else:
        synth = workload.synthetic
        settings = synth.model_dump() if synth is not None else {}
        defaults = {"count": 64, "width": 1536, "height": 1024, "quality": 90, "seed": 0}
        folder = synthetic_images(**{**defaults, **settings})
    return {"stages": [s.to_dict() for s in stages], "images": str(folder.resolve())}


def run_pipeline_job(job: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Measure one pipeline configuration in this process (the trial child calls this)."""
    from tuner.backends.registry import get_backend
    from tuner.measurement.steady_state import MeasureSettings, measure_steady_state
    from tuner.workloads.pipeline.engine import Pipeline
    from tuner.workloads.pipeline.images import list_images

    section = job.get("pipeline") or {}
    stages = [StageConfig.from_dict(d) for d in section.get("stages", [])]
    if not stages:
        raise PipelineError("the job has no pipeline stages")
    for s in stages:
        if s.type not in STAGE_TYPES:
            raise PipelineError(f"unknown stage type {s.type!r}")
    images = list_images(Path(section["images"]))
    backend = None
    versions: dict[str, str] = {}
    if any(s.type == "infer" for s in stages):
        backend_cls = get_backend(job["backend"])
        model = Path(job["model"]) if job.get("model") else None
        backend = backend_cls(model, job.get("options", {}))
    # the infer stage's inputs: plan for this config (tuner.workloads.base.worker_job), fed by the backend
    pipeline = Pipeline(stages, images=images, params=job["params"], backend=backend, inputs=job.get("inputs"))

    def relay(event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "measure_start":
            pipeline.mark("start")
        elif name == "measure_end":
            pipeline.mark("end")
        emit(event)

    emit({"event": "load"})
    try:
        load_s = pipeline.load()
        pipeline.start()
        try:
            metrics = measure_steady_state(pipeline, MeasureSettings(**job["measure"]), relay)
        except BaseException:
            pipeline.abort()
            raise
        pipeline.stop()
        pipeline.check_counts()
        applied = pipeline.applied_options()
        if backend is not None:
            versions = backend.versions()
    finally:
        pipeline.close()
    import simplejpeg

    versions["simplejpeg"] = simplejpeg.__version__
    metrics.update(pipeline.stage_metrics())
    metrics["rps"] = metrics["qps"] / max(1, pipeline.infer_batch)
    metrics["load_s"] = load_s
    first = pipeline.completions[0][1] * 1000.0 if pipeline.completions else float("nan")
    metrics["first_request_ms"] = first
    metrics["pipeline_items_in"] = pipeline.items_in
    metrics["pipeline_items_out"] = pipeline.items_out
    metrics["pipeline_in_flight_max"] = pipeline.in_flight_max
    metrics["pipeline_capacity"] = pipeline.capacity
    return {"metrics": metrics, "applied": applied, "versions": versions}
