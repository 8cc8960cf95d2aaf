"""The pipeline's worker threads: their loops per stage type, end-of-stream, failure, and the infer feed.

A mixin of :class:`tuner.workloads.pipeline.engine.Pipeline`; the attributes it uses are set up there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuner.backends.base import Instance
from tuner.errors import BackendError
from tuner.workloads.pipeline.flow import (
    _POLL_S,
    END,
    Batch,
    Clock,
    Item,
    StageFailed,
    _Abort,
    _samples,
    _Stage,
    _Worker,
)


class _WorkerLoops:
    """What every worker thread runs: get from its inbox, do its stage's work, put downstream."""

    stages: list[_Stage]
    images: list[Path]
    infer_batch: int
    requests_per_sync: int
    in_flight_max: int
    _clock: Clock
    _stop_reading: threading.Event
    _draining: threading.Event
    _abort: threading.Event
    _error: BaseException | None
    _error_lock: threading.Lock
    _id_lock: threading.Lock
    _next_id: int
    _done: int
    _file_bytes: Callable[[int], bytes]
    _sink: Callable[[Any], None]

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

    The template is one request's inputs as the instance prepared them (from the workload's ``inputs:``
    plan where the backend feeds one). Its image input (:func:`image_key`) is replaced by the batch (same
    shape, cast to its dtype); every other input keeps its prepared array (a scalar sample rate, a state
    tensor). A bare array is replaced as a whole. Anything else (the ``sim`` backend's opaque inputs) is
    passed as prepared: the images flow through the pipeline for counting and timing, the backend models
    its own work.
    """

    def __init__(self, template: Any) -> None:
        self.template = template
        self.key = image_key(template)
        arr: np.ndarray | None = None
        if isinstance(template, np.ndarray):
            arr = template
        elif self.key is not None:
            arr = template[self.key]
        self.shape = tuple(arr.shape) if arr is not None else None
        self.dtype = arr.dtype if arr is not None else None

    def __call__(self, data: Any) -> Any:
        if self.shape is None or not isinstance(data, np.ndarray):
            return self.template
        if tuple(data.shape) != self.shape:
            raise BackendError(
                f"the pipeline makes batches of shape {tuple(data.shape)} but the model input is {self.shape}; "
                "set the preprocess stage's size/layout to the model's input (or leave size unset: it follows "
                "the input's declared height and width)"
            )
        if data.dtype != self.dtype:
            data = data.astype(self.dtype)
        if self.key is None:
            return data
        return {**self.template, self.key: data}


def _is_image(arr: Any) -> bool:
    return isinstance(arr, np.ndarray) and arr.ndim == 4 and arr.dtype.kind == "f"


def image_key(template: Any) -> Any:
    """The key of the image input in a dict of prepared inputs: the first 4-D float array (the model's
    order), else the only array; None for anything else (a bare array, opaque inputs)."""
    if not isinstance(template, dict) or not template:
        return None
    for key, value in template.items():
        if _is_image(value):
            return key
    if len(template) == 1:
        key, value = next(iter(template.items()))
        return key if isinstance(value, np.ndarray) else None
    return None


def _template_array(template: Any) -> np.ndarray | None:
    """The image array of one request's prepared inputs (see :func:`image_key`), or None."""
    if isinstance(template, np.ndarray):
        return template
    key = image_key(template)
    return template[key] if key is not None else None


def _first_rows(outputs: Any, rows: int) -> np.ndarray | None:
    candidates = outputs if isinstance(outputs, list | tuple) else [outputs]
    for c in candidates:
        if isinstance(c, np.ndarray) and c.ndim >= 1 and c.shape[0] >= rows and c.dtype.kind in "fiu":
            return c
    return None
