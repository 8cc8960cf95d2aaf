"""``kind: pipeline``: the workload kind of a staged pipeline (see :mod:`tuner.workloads.pipeline.engine`).

Host threads (the oversubscription rule): the pipeline's stages run *in series* per item, so at most the
bottleneck stage keeps all its workers busy while the others wait on their queues (on a 2-core box the
ResNet-50 pipeline's decode and preprocess workers are busy 7 % and 3 % of the time at its knee). A
config is therefore counted as its largest concurrent demand: the infer stage's (what its backend says
``pool_size`` instances compute on, ``Backend.host_threads``) or the workers of one CPU stage (read,
decode, preprocess, batch, postprocess; ``stages.<name>.workers`` of the config, else the stage's
``workers``; ``delay`` only sleeps), whichever is larger. A stage with more workers than the cores can
never run them at once: pruned. Adding the stages up instead would prune every config of
``workloads/pipeline-resnet50.yaml`` on 2 cores (each of its five CPU stages has a worker), and adding
only the workers beyond each stage's first would still prune half of them, its known-good knee (threads
2, 2 decode and 2 preprocess workers) among them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import SpecError
from tuner.measurement.result import EventSink
from tuner.search.rules import HostThreads
from tuner.workloads.base import WorkloadKind, backend_host_threads, worker_job
from tuner.workloads.pipeline.images import ImagesError, list_images
from tuner.workloads.pipeline.job import pipeline_job_section, run_pipeline_job
from tuner.workloads.pipeline.stages import STAGE_TYPES, StageSpecError, validate_stages

if TYPE_CHECKING:
    from tuner.config.checks import CheckContext
    from tuner.config.spec import Spec

#: stage types whose workers compute nothing on the host (infer's demand is its backend's)
_NOT_ON_HOST = frozenset({"infer", "delay"})


class PipelineKind(WorkloadKind):
    """Stages joined by bounded queues, the infer stage on ``workload.backend``; measured in the worker child."""

    name = "pipeline"

    def check(self, ctx: CheckContext) -> None:
        """The stage list, the ``stages.<name>.workers|queue`` axes, the image folder, and the infer backend."""
        workload = ctx.workload
        if workload.stages is None:
            raise ctx.error(
                ("workload", "stages"),
                f"missing; kind: pipeline needs an ordered list of stages (types: {', '.join(STAGE_TYPES)})",
            )
        try:
            stages = validate_stages(workload.stages)
        except StageSpecError as err:
            raise SpecError(ctx.at(("workload", "stages", *err.loc)) + err.detail) from None
        by_name = {s.name: s for s in stages}
        for key in ctx.axes:
            if not key.startswith("stages."):
                continue
            parts = key.split(".")
            loc = ("search", key)
            if len(parts) != 3 or parts[2] not in ("workers", "queue"):
                raise ctx.error(loc, "unknown axis; expected stages.<stage name>.workers or stages.<stage name>.queue")
            stage = by_name.get(parts[1])
            if stage is None:
                raise ctx.error(
                    loc, f"unknown stage {parts[1]!r}{ctx.nearest(parts[1], by_name)} (stages: {', '.join(by_name)})"
                )
            if stage.type == "infer" and parts[2] == "workers":
                raise ctx.error(
                    loc,
                    "the infer stage's workers are its pool_size instances (each with requests_per_sync requests "
                    "in flight); search pool_size and requests_per_sync",
                )
            if stage.type == "read" and parts[2] == "queue":
                raise ctx.error(loc, "the read stage is the source; it has no input queue")
        if workload.images is not None and workload.synthetic is not None:
            raise ctx.error(
                ("workload", "synthetic"), "give images (a folder) or synthetic (a generated set), not both"
            )
        if workload.images is not None:
            folder = Path(workload.images).expanduser()
            try:
                list_images(folder if folder.is_absolute() else ctx.base_dir / folder)
            except ImagesError as err:
                raise ctx.error(("workload", "images"), str(err), show_value=True) from None
        if any(s.type == "infer" for s in stages):
            ctx.check_backend()

    def host_threads(self, spec: Spec, params: Mapping[str, Any], *, usable_cores: int) -> HostThreads | None:
        """The larger of the infer stage's demand and one CPU stage's workers (see the module docstring)."""
        stages = validate_stages(spec.workload.stages)
        best: HostThreads | None = None
        if any(s.type == "infer" for s in stages):
            infer = backend_host_threads(spec, params, usable_cores=usable_cores)
            if infer is not None:
                best = HostThreads(infer.count, f"infer stage: {infer.origin}")
        for stage in stages:
            if stage.type in _NOT_ON_HOST:
                continue
            workers = int(params.get(f"stages.{stage.name}.workers", stage.workers))
            if best is None or workers > best.count:
                best = HostThreads(workers, f"stage {stage.name!r}: {workers} workers, the largest stage")
        return best

    def uses_backend(self, spec: Spec) -> bool:
        return any(isinstance(s, Mapping) and s.get("type") == "infer" for s in spec.workload.stages or ())

    def build_job(self, spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
        job = worker_job(spec, params, model_path)
        job["pipeline"] = pipeline_job_section(spec, job["options"])  # stages; images (a synthetic set made here)
        return job

    def run_in_child(self, job: dict[str, Any], emit: EventSink) -> dict[str, Any]:
        return run_pipeline_job(job, emit)
