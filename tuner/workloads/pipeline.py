"""The pipeline workload: ordered stages joined by bounded queues, each stage with its own worker threads.

Data flow (see :mod:`tuner.workloads.stages` for the stage types)::

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

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuner.backends.base import Backend, Instance, RuntimeConfig
from tuner.errors import BackendError, TunerError
from tuner.workloads.stages import (
    STAGE_TYPES,
    Delay,
    StageConfig,
    decode_jpeg,
    preprocess_image,
    top_k,
)

__all__ = ["Pipeline", "PipelineError", "StageFailed", "run_pipeline_job"]

Clock = Callable[[], float]
DRAIN_TIMEOUT_S = 60.0
_POLL_S = 0.05


class PipelineError(TunerError):
    """The pipeline broke an invariant (items lost or duplicated, did not drain) or cannot be built."""


class StageFailed(TunerError):
    """A stage's work raised; the message names the stage."""

    def __init__(self, stage: str, stage_type: str, err: BaseException) -> None:
        super().__init__(f"stage {stage!r} ({stage_type}) failed: {type(err).__name__}: {err}")
        self.stage = stage
        self.error = err


class _Abort(Exception):
    """Raised inside a worker when the pipeline is aborting."""


class _End:
    """End-of-stream marker."""

    __slots__ = ()


END = _End()


class Item:
    """One image on its way: its number, when its read started, and what the last stage made of it."""

    __slots__ = ("id", "t0", "payload")

    def __init__(self, id_: int, t0: float, payload: Any) -> None:
        self.id = id_
        self.t0 = t0
        self.payload = payload


class Batch:
    """``batch_size`` rows: the real items (padding rows at the end have none), the array, the outputs."""

    __slots__ = ("items", "data", "outputs")

    def __init__(self, items: list[Item], data: Any) -> None:
        self.items = items
        self.data = data
        self.outputs: Any = None


def _samples(x: Any) -> int:
    return len(x.items) if isinstance(x, Batch) else 1


class _Queue(queue.Queue):  # type: ignore[type-arg]
    """A bounded queue that knows its exact peak and its time-weighted occupancy (under its own mutex)."""

    def __init__(self, maxsize: int, clock: Clock) -> None:
        self._clock = clock
        super().__init__(maxsize)

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self.peak = 0  # since the last reset_peak()
        self.peak_total = 0
        self._area = 0.0
        self._last = self._clock()

    def _tick(self) -> None:
        now = self._clock()
        self._area += len(self.queue) * (now - self._last)
        self._last = now

    def _put(self, item: Any) -> None:
        self._tick()
        self.queue.append(item)
        n = len(self.queue)
        if n > self.peak:
            self.peak = n
        if n > self.peak_total:
            self.peak_total = n

    def _get(self) -> Any:
        self._tick()
        return self.queue.popleft()

    def area(self) -> float:
        with self.mutex:
            self._tick()
            return self._area

    def reset_peak(self) -> None:
        with self.mutex:
            self.peak = len(self.queue)


class _Worker:
    """Counters of one worker thread (written by it, read by snapshots)."""

    __slots__ = ("count", "busy", "since")

    def __init__(self) -> None:
        self.count = 0
        self.busy = 0.0
        self.since: float | None = None

    def busy_at(self, now: float) -> float:
        since = self.since
        return self.busy + (now - since if since is not None else 0.0)


class _Stage:
    def __init__(self, config: StageConfig, index: int, workers: int, queue_depth: int, clock: Clock) -> None:
        self.config = config
        self.name = config.name
        self.type = config.type
        self.index = index
        self.workers = workers
        self.queue_depth = queue_depth
        self.inbox: _Queue | None = None if config.type == "read" else _Queue(queue_depth, clock)
        self.counters = [_Worker() for _ in range(workers)]
        self.threads: list[threading.Thread] = []
        self.finished = 0
        self.lock = threading.Lock()
        self.work: Callable[[Any], Any] = lambda x: x

    def snapshot(self, now: float) -> tuple[int, float, float]:
        count = sum(w.count for w in self.counters)
        busy = sum(w.busy_at(now) for w in self.counters)
        area = self.inbox.area() if self.inbox is not None else 0.0
        return count, busy, area


class Pipeline:
    """Builds the stages, runs them until :meth:`stop`, and checks counts. Implements :class:`tuner.measure.Source`.

    ``batch_size`` of the measured source is 1: one completion per image.
    """

    batch_size = 1

    def __init__(
        self,
        stages: Sequence[StageConfig],
        *,
        images: Sequence[Path],
        params: Mapping[str, Any],
        backend: Backend | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        if not images:
            raise PipelineError("the pipeline has no input images")
        self.configs = list(stages)
        self.images = list(images)
        self.params = dict(params)
        self.backend = backend
        self.pool_size = int(self.params.get("pool_size", 1))
        self.threads = int(self.params.get("threads", 1))
        self.requests_per_sync = int(self.params.get("requests_per_sync", 1))
        self.infer_batch = int(self.params.get("batch_size", 1))
        self.completions: list[tuple[float, float]] = []
        self.instances: list[Instance] = []
        self.applied: dict[str, Any] = {}
        self._clock = clock
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

    # -------------------------------------------------------------------------------- capacity
    @property
    def capacity(self) -> int:
        """The most items that can be in flight: every queue full, every worker holding what it can."""
        total = 0
        batch, rps = self.infer_batch, self.requests_per_sync
        for s in self.stages:
            per = batch if any(t.type == "batch" for t in self.stages[: s.index]) else 1
            if s.inbox is not None:
                total += s.inbox.maxsize * per
            if s.type == "batch":
                total += s.workers * batch
            elif s.type == "infer":
                total += s.workers * rps * batch
            else:
                total += s.workers * per
        return total

    # -------------------------------------------------------------------------------- lifecycle
    def load(self) -> float:
        """Open the infer stage's instances, prepare the stages' work; return the seconds it took."""
        t0 = self._clock()
        layout, size = "nchw", 224
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
                )
                self.instances.append(self.backend.open(config))
            templates = [inst.prepare_inputs() for inst in self.instances]
            arr = _template_array(templates[0])
            if arr is not None:
                shape = tuple(arr.shape)
                if len(shape) == 4 and shape[1] == 3:
                    layout, size = "nchw", int(shape[2])
                elif len(shape) == 4 and shape[3] == 3:
                    layout, size = "nhwc", int(shape[1])
            self.applied = dict(self.instances[0].applied_options())
            self.applied["pipeline_feed"] = "images" if arr is not None else "backend's own inputs (opaque)"
        self.applied["stages"] = {
            s.name: {"type": s.type, "workers": s.workers, **({"queue": s.queue_depth} if s.inbox else {})}
            for s in self.stages
        }
        self.applied["preprocess_input"] = {"layout": layout, "size": size}
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

    def _make_work(self, s: _Stage, layout: str, size: int, templates: list[Any]) -> Callable[[Any], Any]:
        opts = s.config.options
        if s.type == "decode":
            resize = 0
            if opts.get("reduce"):
                nxt = next((t for t in self.stages[s.index + 1 :] if t.type == "preprocess"), None)
                if nxt is not None:
                    p_size = nxt.config.options.get("size") or size
                    resize = nxt.config.options.get("resize") or round(p_size * 256 / 224)
            library, fast = opts.get("library", "simplejpeg"), bool(opts.get("fast"))
            decode_jpeg(self._file_bytes(0), library=library, min_side=resize, fast=fast)  # fail at load

            def decode(item: Item) -> Item:
                item.payload = decode_jpeg(item.payload, library=library, min_side=resize, fast=fast)
                return item

            return decode
        if s.type == "preprocess":
            p_size = int(opts.get("size") or size)
            resize = int(opts.get("resize") or round(p_size * 256 / 224))
            if resize < p_size:
                raise PipelineError(f"stage {s.name!r}: resize {resize} is smaller than size {p_size}")
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

    # -------------------------------------------------------------------------------- counting
    @property
    def items_in(self) -> int:
        return self._next_id

    @property
    def items_out(self) -> int:
        return self._done

    def check_counts(self) -> None:
        """Items read == items completed, each once. Call after :meth:`stop`."""
        n_in, n_out = self._next_id, self._done
        if self._dupes or n_in != n_out or len(self._seen) != n_out:
            lost = n_in - len(self._seen)
            raise PipelineError(
                f"items lost or duplicated: read {n_in}, completed {n_out} ({lost} lost, {len(self._dupes)} "
                f"duplicated{', e.g. #' + str(self._dupes[0]) if self._dupes else ''})"
            )

    def _sink(self, x: Any) -> None:
        now = self._clock()
        items = x.items if isinstance(x, Batch) else [x]
        with self._sink_lock:
            for item in items:
                if item.id in self._seen:
                    self._dupes.append(item.id)
                    continue
                self._seen.add(item.id)
                self._done += 1
                self.completions.append((now, now - item.t0))

    # -------------------------------------------------------------------------------- marks
    def mark(self, name: str) -> None:
        """Snapshot every stage's counters (at ``measure_start`` / ``measure_end``)."""
        now = self._clock()
        self._marks[name] = (now, [s.snapshot(now) for s in self.stages])
        if name == "start":
            for s in self.stages:
                if s.inbox is not None:
                    s.inbox.reset_peak()
        elif name == "end":
            self._peaks = [s.inbox.peak if s.inbox is not None else 0 for s in self.stages]

    def stage_metrics(self) -> dict[str, Any]:
        """``stage.<name>.{qps,busy,queue,queue_max,workers}`` over the measured part, and ``bottleneck``."""
        if "start" not in self._marks or "end" not in self._marks:
            return {}
        (t0, a), (t1, b) = self._marks["start"], self._marks["end"]
        span = max(t1 - t0, 1e-9)
        out: dict[str, Any] = {}
        busiest: tuple[float, int, str] | None = None
        for s, (c0, b0, q0), (c1, b1, q1), peak in zip(self.stages, a, b, self._peaks, strict=True):
            busy = (b1 - b0) / (s.workers * span)
            out[f"stage.{s.name}.qps"] = (c1 - c0) / span
            out[f"stage.{s.name}.busy"] = busy
            out[f"stage.{s.name}.workers"] = s.workers
            if s.inbox is not None:
                out[f"stage.{s.name}.queue"] = (q1 - q0) / span / s.inbox.maxsize
                out[f"stage.{s.name}.queue_max"] = peak
            # ties go to the later stage: it is the one whose full input queue holds up the others
            key = (round(busy, 3), s.index, s.name)
            if busiest is None or key > busiest:
                busiest = key
        if busiest is not None:
            out["bottleneck"] = busiest[2]
        return out

    # -------------------------------------------------------------------------------- workers
    def _guard(self, s: _Stage, target: Callable[[], None]) -> None:
        try:
            target()
        except _Abort:
            pass
        except StageFailed as err:
            self._fail(err)
        except BaseException as err:  # noqa: BLE001 - reported through failed()
            self._fail(StageFailed(s.name, s.type, err))
        finally:
            self._worker_done(s)

    def _fail(self, err: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = err
        self._abort.set()
        self._stop_reading.set()

    def _worker_done(self, s: _Stage) -> None:
        with s.lock:
            s.finished += 1
            last = s.finished == s.workers
        if last and not self._abort.is_set() and s.index + 1 < len(self.stages):
            nxt = self.stages[s.index + 1]
            try:
                for _ in range(nxt.workers):
                    self._put(nxt, END)
            except _Abort:
                pass

    def _get(self, s: _Stage) -> Any:
        inbox, abort = s.inbox, self._abort
        assert inbox is not None
        while True:
            try:
                return inbox.get(timeout=_POLL_S)
            except queue.Empty:
                if abort.is_set():
                    raise _Abort from None

    def _put(self, nxt: _Stage, x: Any) -> None:
        inbox, abort = nxt.inbox, self._abort
        assert inbox is not None
        while True:
            try:
                inbox.put(x, timeout=_POLL_S)
                return
            except queue.Full:
                if abort.is_set():
                    raise _Abort from None

    def _emit(self, s: _Stage, x: Any) -> None:
        if s.index + 1 < len(self.stages):
            self._put(self.stages[s.index + 1], x)
        else:
            self._sink(x)

    def _run_read(self, s: _Stage, w: _Worker) -> None:
        clock, stop = self._clock, self._stop_reading
        n_files = len(self.images)
        while not stop.is_set():
            with self._id_lock:
                i = self._next_id
                self._next_id += 1
                in_flight = self._next_id - self._done
                if in_flight > self.in_flight_max:
                    self.in_flight_max = in_flight
            t0 = clock()
            w.since = t0
            try:
                data = self._file_bytes(i % n_files)
            except BaseException as err:
                # the item was counted in; an error fails the trial, so counts are not checked
                raise StageFailed(s.name, s.type, err) from None
            w.busy += clock() - t0
            w.since = None
            w.count += 1
            self._emit(s, Item(i, t0, data))

    def _run_map(self, s: _Stage, w: _Worker) -> None:
        clock, work = self._clock, s.work
        while True:
            x = self._get(s)
            if x is END:
                return
            t0 = clock()
            w.since = t0
            y = work(x) if not self._draining.is_set() else x
            w.busy += clock() - t0
            w.since = None
            w.count += _samples(x)
            self._emit(s, y)

    def _run_batch(self, s: _Stage, w: _Worker) -> None:
        clock, size = self._clock, self.infer_batch
        pending: list[Item] = []
        while True:
            x = self._get(s)
            if x is not END:
                pending.append(x)
            if len(pending) == size or (x is END and pending):
                t0 = clock()
                w.since = t0
                rows = [it.payload for it in pending]
                while len(rows) < size:  # a partial batch at the end: pad with its last row
                    rows.append(rows[-1])
                if self._draining.is_set():
                    batch = Batch(pending, None)
                else:
                    batch = Batch(pending, np.stack(rows) if isinstance(rows[0], np.ndarray) else rows)
                for it in pending:
                    it.payload = None
                w.busy += clock() - t0
                w.since = None
                w.count += len(pending)
                pending = []
                self._emit(s, batch)
            if x is END:
                return

    def _run_infer_sync(self, s: _Stage, w: _Worker, inst: Instance, feed: _Feeder) -> None:
        clock = self._clock
        while True:
            batch = self._get(s)
            if batch is END:
                return
            t0 = clock()
            w.since = t0
            if not self._draining.is_set():
                batch.outputs = inst.infer(feed(batch.data))
            batch.data = None
            w.busy += clock() - t0
            w.since = None
            w.count += len(batch.items)
            self._emit(s, batch)

    def _run_infer_async(self, s: _Stage, w: _Worker, inst: Instance, feed: _Feeder) -> None:
        clock, rps = self._clock, self.requests_per_sync
        ended = False
        while not ended:
            batches: list[Batch] = []
            while len(batches) < rps:
                x = self._get(s)
                if x is END:
                    ended = True
                    break
                batches.append(x)
            if not batches:
                return
            t0 = clock()
            w.since = t0
            sync = _Round(len(batches))
            if self._draining.is_set():
                sync.pending = 0
            else:
                for b in batches:
                    inst.submit(feed(b.data), sync.callback(b))
                sync.wait(self._abort)
            w.busy += clock() - t0
            w.since = None
            if sync.errors:
                raise StageFailed(s.name, s.type, sync.errors[0])
            for b in batches:
                b.data = None
                w.count += len(b.items)
                self._emit(s, b)


class _Round:
    """``requests_per_sync`` submissions and the wait for all of them (the pool workload's sync)."""

    def __init__(self, count: int) -> None:
        self.pending = count
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._done = threading.Event()

    def callback(self, batch: Batch) -> Callable[[BaseException | None], None]:
        def done(err: BaseException | None, result: Any = None) -> None:
            if err is not None:
                self.errors.append(err)
            with self._lock:
                self.pending -= 1
                last = self.pending == 0
            if last:
                self._done.set()

        return done

    def wait(self, abort: threading.Event) -> None:
        while not self._done.wait(_POLL_S):
            if abort.is_set():
                raise _Abort


class _Feeder:
    """Turns a batch array into the backend's inputs, following the instance's own prepared inputs.

    ``{name: array}`` with one array, or a bare array: the batch replaces it (same shape, cast to its
    dtype). Anything else (the ``sim`` backend's opaque inputs) is passed as prepared: the images flow
    through the pipeline for counting and timing, the backend models its own work.
    """

    def __init__(self, template: Any) -> None:
        self.template = template
        self.name: str | None = None
        arr = _template_array(template)
        self.shape = tuple(arr.shape) if arr is not None else None
        self.dtype = arr.dtype if arr is not None else None
        if isinstance(template, dict) and arr is not None:
            self.name = next(iter(template))

    def __call__(self, data: Any) -> Any:
        if self.shape is None or not isinstance(data, np.ndarray):
            return self.template
        if tuple(data.shape) != self.shape:
            raise BackendError(
                f"the pipeline makes batches of shape {tuple(data.shape)} but the model input is {self.shape}; "
                "set the preprocess stage's size/layout to the model's input"
            )
        if data.dtype != self.dtype:
            data = data.astype(self.dtype)
        return {self.name: data} if self.name is not None else data


def _template_array(template: Any) -> np.ndarray | None:
    if isinstance(template, np.ndarray):
        return template
    if isinstance(template, dict) and len(template) == 1:
        value = next(iter(template.values()))
        if isinstance(value, np.ndarray):
            return value
    return None


def _first_rows(outputs: Any, rows: int) -> np.ndarray | None:
    candidates = outputs if isinstance(outputs, list | tuple) else [outputs]
    for c in candidates:
        if isinstance(c, np.ndarray) and c.ndim >= 1 and c.shape[0] >= rows and c.dtype.kind in "fiu":
            return c
    return None


# ------------------------------------------------------------------------------------------- the job


def pipeline_job_section(spec: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``pipeline`` part of a trial job: validated stages and the image folder.

    Runs in the parent: a synthetic image set is generated (once, cached) here, never inside a trial.
    """
    from tuner.workloads.images import synthetic_images
    from tuner.workloads.stages import validate_stages

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
    from tuner.measure import MeasureSettings, measure_steady_state
    from tuner.workloads.images import list_images

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
    pipeline = Pipeline(stages, images=images, params=job["params"], backend=backend)

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
