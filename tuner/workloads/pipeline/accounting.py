"""The pipeline's accounting: capacity, the item count check, and per-stage metrics with the bottleneck.

A mixin of :class:`tuner.workloads.pipeline.engine.Pipeline`; the attributes it uses are set up there.
"""

from __future__ import annotations

import threading
from typing import Any

from tuner.workloads.pipeline.flow import Batch, Clock, PipelineError, _Stage


class _Accounting:
    """Counting items in and out, and the stage snapshots at ``measure_start`` / ``measure_end``."""

    stages: list[_Stage]
    infer_batch: int
    requests_per_sync: int
    completions: list[tuple[float, float]]
    _clock: Clock
    _next_id: int
    _done: int
    _seen: set[int]
    _dupes: list[int]
    _sink_lock: threading.Lock
    _marks: dict[str, tuple[float, list[tuple[int, float, float]]]]
    _peaks: list[int]

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
