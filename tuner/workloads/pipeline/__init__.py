"""``kind: pipeline``: read -> decode -> preprocess -> batch -> infer -> postprocess stages on bounded queues.

:mod:`.kind` is the :class:`~tuner.workloads.base.WorkloadKind`; :mod:`.stages` validates the stage list
and holds each stage type's options; :mod:`.stage_work` is the work itself (JPEG decode, resize and
normalise, top-k, the delay stage); :mod:`.images` the image folder and the cached synthetic set;
:mod:`.flow` the queues, items and end-of-stream markers; :mod:`.workers` the worker loops;
:mod:`.accounting` per-stage busy time, queue fill and the bottleneck; :mod:`.engine` the
:class:`~tuner.workloads.pipeline.engine.Pipeline` that joins them; :mod:`.job` its trial job.
"""
