"""The pipeline's plumbing: items and batches, the bounded queues between stages, per-worker counters.

See :mod:`tuner.workloads.pipeline.engine` for the data flow, flow control and counting these implement.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from tuner.errors import TunerError
from tuner.workloads.pipeline.stages import StageConfig

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
