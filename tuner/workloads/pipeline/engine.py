"""The pipeline workload: ordered stages joined by bounded queues, each stage with its own worker threads.

Data flow (see :mod:`tuner.workloads.pipeline.stages` for the stage types)::

    read -> [q] -> decode x w -> [q] -> preprocess x w -> [q] -> batch x w -> [q] -> infer x pool -> ... -> sink

**Flow control.** Every stage but ``read`` pulls from its own bounded input queue (``queue`` items deep);
a worker that cannot put its result downstream blocks, so a slow stage stops every stage before it
(backpressure) and nothing piles up: at any time at most ``capacity`` items are in flight (every queue
full, every worker holding one item, every batch worker a batch). ``read`` is closed-loop: it reads the
next file as soon as the first queue has room, so the pipeline runs at the pace of its slowest stage.

**Counting.** ``read`` numbers every item it makes; the sink (after the last stage) records each item once.
At the end of a trial ``read`` stops, end-of-stream markers follow the last items through every stage
(each stage's last worker to finish passes one marker per worker of the next stage; a batch worker flushes
its partial batch padded to ``batch_size``, the padding dropped at the sink), every worker exits, and
then items read must equal items completed, with no number seen twice -- otherwise the trial fails.

**Threads, not processes.** The stages' heavy work runs in C with the GIL released (libjpeg-turbo through
simplejpeg, numpy's array loops, ONNX Runtime's ``run``), so worker threads of one process scale across
cores without copying decoded images between processes; ``bench/stage_parallelism.py`` measures it.

**Metrics** (over the measured part only; see :func:`run_pipeline_job`): the contract metrics per image,
end to end (``qps`` = images/s; a latency runs from the start of its ``read`` to the end of the last
stage; ``rps`` = infer requests (batches) per second), and per stage ``stage.<name>.qps`` (images/s
through it), ``stage.<name>.busy`` (busy fraction per worker: time inside the stage's work, not waiting
to get or put, over workers x seconds), ``stage.<name>.queue`` (mean fill of its input queue, 0..1,
time-weighted) and ``stage.<name>.queue_max`` (items), and ``bottleneck``: the stage with the highest
busy fraction per worker. By the utilisation law a stage with ``m`` workers and service time ``S`` is busy
``X * S / m`` of the time at throughput ``X``, so the stage closest to 1 is the one whose ceiling
``m / S`` the pipeline runs into; blocked puts are not counted as busy, so stages held up by it stay low.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.backends.base import Backend, Instance, RuntimeConfig
from tuner.errors import TunerError
from tuner.workloads.pipeline.accounting import _Accounting
from tuner.workloads.pipeline.flow import DRAIN_TIMEOUT_S, Batch, Clock, Item, PipelineError, StageFailed, _Stage
from tuner.workloads.pipeline.stage_work import Delay, decode_jpeg, preprocess_image, top_k
from tuner.workloads.pipeline.stages import StageConfig
from tuner.workloads.pipeline.workers import _Feeder, _first_rows, _template_array, _WorkerLoops, image_key

__all__ = ["Pipeline"]


class Pipeline(_Accounting, _WorkerLoops):
    """Builds the stages, runs them until :meth:`stop`, and checks counts.

    Implements :class:`tuner.measurement.steady_state.Source`.

    ``batch_size`` of the measured source is 1: one completion per image. ``clock`` stamps every item,
    queue and busy interval; ``sleep`` is what ``delay`` stages wait with (both injectable for tests).
    ``inputs``: the configuration's plan of the infer stage's ``inputs:`` (:func:`tuner.config.inputs.plan_inputs`),
    handed to every instance as ``RuntimeConfig.inputs``; the image input's height and width are the
    preprocess stage's default crop.
    """

    batch_size = 1

    def __init__(
        self,
        stages: Sequence[StageConfig],
        *,
        images: Sequence[Path],
        params: Mapping[str, Any],
        backend: Backend | None = None,
        inputs: Mapping[str, Any] | None = None,
        clock: Clock = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not images:
            raise PipelineError("the pipeline has no input images")
        self.configs = list(stages)
        self.images = list(images)
        self.params = dict(params)
        self.inputs: dict[str, Any] = dict(inputs or {})
        self.backend = backend
        self.pool_size = int(self.params.get("pool_size", 1))
        self.threads = int(self.params.get("threads", 1))
        self.requests_per_sync = int(self.params.get("requests_per_sync", 1))
        self.infer_batch = int(self.params.get("batch_size", 1))
        self.completions: list[tuple[float, float]] = []
        self.instances: list[Instance] = []
        self.applied: dict[str, Any] = {}
        self._clock = clock
        self._sleep = sleep
        self._stop_reading = threading.Event()
        self._draining = threading.Event()  # after the measured part: items pass through without work
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._id_lock = threading.Lock()
        self._next_id = 0
        self._done = 0
        self._seen: set[int] = set()
        self._dupes: list[int] = []
        self._sink_lock = threading.Lock()
        self.in_flight_max = 0
        self._marks: dict[str, tuple[float, list[tuple[int, float, float]]]] = {}
        self._preloaded: list[bytes] | None = None
        self.stages: list[_Stage] = []
        for i, cfg in enumerate(self.configs):
            workers = (
                self.pool_size
                if cfg.type == "infer"
                else int(self.params.get(f"stages.{cfg.name}.workers", cfg.workers))
            )
            depth = int(self.params.get(f"stages.{cfg.name}.queue", cfg.queue))
            self.stages.append(_Stage(cfg, i, workers, depth, clock))
        if any(s.type == "infer" for s in self.stages) and backend is None:
            raise PipelineError("the pipeline has an infer stage but no backend")

    # -------------------------------------------------------------------------------- lifecycle
    def load(self) -> float:
        """Open the infer stage's instances, prepare the stages' work; return the seconds it took."""
        t0 = self._clock()
        # the crop: the declared image input's height and width (a backend with opaque inputs, e.g. sim), then
        # the image input the instances really prepared; 224 x 224 NCHW when neither tells
        declared = (_geometry(entry.get("shape")) for entry in self.inputs.values())
        layout, size = next((g for g in declared if g is not None), ("nchw", (224, 224)))
        infer = next((s for s in self.stages if s.type == "infer"), None)
        templates: list[Any] = []
        if infer is not None:
            assert self.backend is not None
            for index in range(self.pool_size):
                config = RuntimeConfig(
                    threads=self.threads,
                    batch_size=self.infer_batch,
                    requests_per_sync=self.requests_per_sync,
                    pool_size=self.pool_size,
                    index=index,
                    inputs=self.inputs,
                )
                self.instances.append(self.backend.open(config))
            templates = [inst.prepare_inputs() for inst in self.instances]
            arr = _template_array(templates[0])
            if arr is not None:
                layout, size = _geometry(arr.shape) or (layout, size)
            self.applied = dict(self.instances[0].applied_options())
            self.applied["pipeline_feed"] = "images" if arr is not None else "backend's own inputs (opaque)"
            if arr is not None:
                name = _input_name(templates[0], self.instances[0])
                self.applied["pipeline_input"] = {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype)}
        self.applied["stages"] = {
            s.name: {"type": s.type, "workers": s.workers, **({"queue": s.queue_depth} if s.inbox else {})}
            for s in self.stages
        }
        height, width = size
        shown: dict[str, Any] = {"size": height} if height == width else {"height": height, "width": width}
        self.applied["preprocess_input"] = {"layout": layout, **shown}
        if any(s.type == "read" and s.config.options.get("preload") for s in self.stages):
            self._preloaded = [p.read_bytes() for p in self.images]
        for s in self.stages:
            try:
                s.work = self._make_work(s, layout, size, templates)
            except TunerError:
                raise
            except Exception as err:  # a corrupt first image, a decode library that is not installed ...
                raise StageFailed(s.name, s.type, err) from None
        return self._clock() - t0

    def _make_work(self, s: _Stage, layout: str, size: tuple[int, int], templates: list[Any]) -> Callable[[Any], Any]:
        opts = s.config.options
        if s.type == "decode":
            resize = 0
            if opts.get("reduce"):
                nxt = next((t for t in self.stages[s.index + 1 :] if t.type == "preprocess"), None)
                if nxt is not None:
                    side = nxt.config.options.get("size") or max(size)
                    resize = nxt.config.options.get("resize") or round(side * 256 / 224)
            library, fast = opts.get("library", "simplejpeg"), bool(opts.get("fast"))
            decode_jpeg(self._file_bytes(0), library=library, min_side=resize, fast=fast)  # fail at load

            def decode(item: Item) -> Item:
                item.payload = decode_jpeg(item.payload, library=library, min_side=resize, fast=fast)
                return item

            return decode
        if s.type == "preprocess":
            # an explicit size is a square crop; else the image input's height and width
            p_size = (int(opts["size"]), int(opts["size"])) if opts.get("size") else size
            resize = int(opts.get("resize") or round(max(p_size) * 256 / 224))
            if resize < max(p_size):
                shown_size = p_size[0] if p_size[0] == p_size[1] else f"{p_size[0]}x{p_size[1]}"
                raise PipelineError(f"stage {s.name!r}: resize {resize} is smaller than size {shown_size}")
            p_layout = opts.get("layout") or layout
            mean, std = tuple(opts.get("mean", (0.485, 0.456, 0.406))), tuple(opts.get("std", (0.229, 0.224, 0.225)))

            def preprocess(item: Item) -> Item:
                item.payload = preprocess_image(
                    item.payload, resize=resize, size=p_size, mean=mean, std=std, layout=p_layout
                )
                return item

            return preprocess
        if s.type == "delay":
            return Delay(
                float(opts.get("ms", 0.0)),
                float(opts.get("jitter_ms", 0.0)),
                opts.get("fail_after"),
                int(opts.get("seed", 0)),
                sleep=self._sleep,
            )
        if s.type == "postprocess":
            k = int(opts.get("top_k", 5))

            def postprocess(batch: Batch) -> Batch:
                logits = _first_rows(batch.outputs, len(batch.items) if isinstance(batch, Batch) else 1)
                if logits is not None:
                    idx, _scores = top_k(logits[: len(batch.items)], k)
                    for item, row in zip(batch.items, idx, strict=True):
                        item.payload = row
                return batch

            return postprocess
        if s.type == "infer":
            self._feeds = [_Feeder(t) for t in templates]
        return lambda x: x

    def _file_bytes(self, index: int) -> bytes:
        if self._preloaded is not None:
            return self._preloaded[index % len(self._preloaded)]
        return self.images[index % len(self.images)].read_bytes()

    def start(self) -> None:
        # downstream first, so nothing waits on a stage that has not started
        for s in reversed(self.stages):
            for w in range(s.workers):
                target = self._target(s, w)
                t = threading.Thread(target=self._guard, args=(s, target), daemon=True, name=f"tuner-{s.name}-{w}")
                s.threads.append(t)
        for s in reversed(self.stages):
            for t in s.threads:
                t.start()

    def _target(self, s: _Stage, w: int) -> Callable[[], None]:
        counters = s.counters[w]
        if s.type == "read":
            return lambda: self._run_read(s, counters)
        if s.type == "batch":
            return lambda: self._run_batch(s, counters)
        if s.type == "infer":
            inst, feed = self.instances[w], self._feeds[w]
            if self.requests_per_sync == 1:
                return lambda: self._run_infer_sync(s, counters, inst, feed)
            return lambda: self._run_infer_async(s, counters, inst, feed)
        return lambda: self._run_map(s, counters)

    def stop(self, timeout_s: float = DRAIN_TIMEOUT_S, *, skip_work: bool = True) -> None:
        """Stop reading, let every item in flight reach the sink, join every worker; raise what went wrong.

        With ``skip_work`` (after the measured part) the items still in flight pass through every stage
        without its work, so the drain takes milliseconds, not seconds of inference; they still go through
        every queue and worker, so the count check covers them.
        """
        if skip_work:
            self._draining.set()
        self._stop_reading.set()
        deadline = time.monotonic() + timeout_s
        stuck: list[str] = []
        for s in self.stages:
            for t in s.threads:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive() and s.name not in stuck:
                    stuck.append(s.name)
        if stuck and self._error is None:
            self._abort.set()
            raise PipelineError(
                f"the pipeline did not drain within {timeout_s:g} s after the trial (still running: {', '.join(stuck)})"
            )
        if self._error is not None:
            raise self._error

    def abort(self, timeout_s: float = 10.0) -> None:
        """Stop every worker without draining (after an error)."""
        self._abort.set()
        self._stop_reading.set()
        deadline = time.monotonic() + timeout_s
        for s in self.stages:
            for t in s.threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for inst in self.instances:
            inst.close()
        self.instances.clear()

    def failed(self) -> BaseException | None:
        return self._error

    def applied_options(self) -> dict[str, Any]:
        return dict(self.applied)


def _geometry(shape: Any) -> tuple[str, tuple[int, int]] | None:
    """(layout, (height, width)) of a 4-D 3-channel image shape (NCHW, else NHWC); None for anything else."""
    if shape is None or len(shape) != 4:
        return None
    dims = [int(d) for d in shape]
    if dims[1] == 3:
        return "nchw", (dims[2], dims[3])
    if dims[3] == 3:
        return "nhwc", (dims[1], dims[2])
    return None


def _input_name(template: Any, instance: Instance) -> str | None:
    """The model's name of the image input of ``template`` (a backend may key its inputs by index)."""
    key = image_key(template)
    if isinstance(key, str):
        return key
    feeds = instance.feeds
    if key is not None and feeds:
        position = list(template).index(key)
        if position < len(feeds):
            return feeds[position].name
    return None
