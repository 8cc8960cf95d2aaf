"""Run one measurement in a fresh child process and read one JSON result back.

The parent never measures in its own process. It starts ``python -m tuner.execution.worker`` (through
:func:`~tuner.measurement.process.run_process`: a new session, its whole process tree watched with psutil), feeds
it the job, and reads JSON-line events from its stdout: peak resident memory (summed over the tree)
and CPU time during the measured part. A crash, a signal, a timeout or running out of memory comes back
as a :class:`~tuner.measurement.process.Failure` carrying the exit code / signal and the last lines of
stderr; it never raises. Where NVML sees an NVIDIA GPU the parent samples it at the same polls
(:class:`~tuner.measurement.gpu.GpuWatch`: ``gpu_mem_peak_mb``, and ``gpu_util`` over the measured part), and a
failure whose error says the GPU ran out of memory is an ``oom`` one (:func:`~tuner.measurement.gpu.classify_gpu_oom`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil

from tuner.measurement.gpu import GpuWatch, classify_gpu_oom
from tuner.measurement.process import (
    Failure,
    FailureKind,
    ProcessOutcome,
    TreeWatcher,
    exit_failure,
    run_process,
    signal_name,
)
from tuner.measurement.result import EventSink, TrialResult


def run_job(
    job: Mapping[str, Any],
    *,
    timeout_s: float,
    memory_limit_mb: float | None = None,
    on_event: EventSink | None = None,
    poll_s: float = 0.1,
    python: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> TrialResult:
    """Run ``job`` in a ``python -m tuner.execution.worker`` child; always returns a :class:`TrialResult`.

    ``should_stop`` (asked while the child runs, see :func:`~tuner.measurement.process.run_process`) stops a
    trial early: the result is a ``stopped`` failure with the reason and the windows seen so far.
    """
    sink = on_event or (lambda _e: None)
    params = dict(job.get("params", {}))
    env = dict(os.environ)
    env.update(extra_env or {})
    events: list[dict[str, Any]] = []
    cpu_marks: dict[str, tuple[float, float]] = {}
    gpu = GpuWatch.start()  # None without NVML: no GPU metrics

    def on_line(raw: bytes, watcher: TreeWatcher) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        name = event.get("event")
        if name in ("measure_start", "measure_end"):
            _, cpu = watcher.sample()
            cpu_marks[name] = (time.monotonic(), cpu)
            if gpu is not None:
                gpu.mark(name, watcher.pids())
        events.append(event)
        sink(event)

    outcome = run_process(
        [python or sys.executable, "-m", "tuner.execution.worker"],
        timeout_s=timeout_s,
        memory_limit_mb=memory_limit_mb,
        poll_s=poll_s,
        env=env,
        stdin_data=json.dumps(job).encode(),
        on_stdout_line=on_line,
        should_stop=should_stop,
        on_poll=None if gpu is None else lambda watcher: gpu.sample(watcher.pids()),
    )
    gpu_metrics, gpu_info = gpu.finish() if gpu is not None else ({}, {})
    wall_s = outcome.wall_s
    stderr_tail = outcome.tail()
    code = outcome.returncode

    result_event = next((e for e in reversed(events) if e.get("event") == "result"), None)
    error_event = next((e for e in reversed(events) if e.get("event") == "error"), None)
    failure = outcome.failure
    if failure is not None:
        failure = Failure(failure.kind, failure.message, code, signal_name(code), stderr_tail)
    elif error_event is not None:
        kind: FailureKind = "oom" if error_event.get("type") == "MemoryError" else "error"
        failure = Failure(kind, str(error_event.get("message")), code, None, stderr_tail)
    elif code != 0 or result_event is None:
        failure = exit_failure(code, stderr_tail)
    if failure is not None:
        failure = classify_gpu_oom(failure)  # ORT's / CUDA's / TensorRT's out-of-memory messages
        partial = {**_partial(outcome), **gpu_metrics}
        windows = [float(e["qps"]) for e in events if e.get("event") == "window" and "qps" in e]
        if windows:
            partial["window_qps"] = windows
        return TrialResult(params=params, failure=failure, wall_s=wall_s, metrics=partial)

    assert result_event is not None
    metrics = dict(result_event.get("metrics", {}))
    own_peak = float(metrics.pop("child_maxrss_mb", 0.0))
    metrics["peak_rss_mb"] = max(outcome.peak_rss_mb, own_peak)
    if "measure_start" in cpu_marks and "measure_end" in cpu_marks:
        (t0, c0), (t1, c1) = cpu_marks["measure_start"], cpu_marks["measure_end"]
        cores = psutil.cpu_count() or 1
        metrics["cpu_util"] = max(0.0, min(1.0, (c1 - c0) / max(t1 - t0, 1e-9) / cores))
    else:
        metrics["cpu_util"] = float("nan")
    metrics.update(gpu_metrics)
    applied = dict(result_event.get("applied", {}))
    if gpu_info:
        applied["gpu_telemetry"] = gpu_info
    return TrialResult(
        params=params,
        metrics=metrics,
        applied=applied,
        versions=result_event.get("versions", {}),
        wall_s=wall_s,
    )


def _partial(outcome: ProcessOutcome) -> dict[str, Any]:
    return {"peak_rss_mb": outcome.peak_rss_mb} if outcome.peak_rss_mb else {}
