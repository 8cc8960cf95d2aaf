"""Steady-state measurement: warm-up, fixed windows, the stability rule, and the metrics.

Runs inside the trial's child process. A *source* is anything that keeps completing requests and
appends ``(t_done, latency_s)`` to a shared list (the pool workload's drivers do). The controller
never touches the requests: it only looks at that list at window boundaries.

Throughput is anchored on completions, not on clock edges: a window's qps is
``n x batch / (t_last - t_prev)`` where ``t_last`` is its last completion and ``t_prev`` the last one
before it. With 15 slow requests per window, counting whole requests per clock window would swing by
1/15 = 7 % from quantisation alone; the anchored estimate does not. The contract ``qps`` is
``completed requests x batch / measured seconds`` where the measured part runs from the last completion
before measurement starts to the last completion of the last window, so it is anchored the same way.
Each window only looks at the completions new since the last one (no re-sorting of the whole run).

The result carries the 95 % confidence interval of ``qps`` (``qps_ci_low``, ``qps_ci_high``) and the windows'
coefficient of variation (``qps_cv``): Student-t over batch means of the windows
(:func:`tuner.analysis.intervals.windows_interval`), its half-width centred on ``qps``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tuner.measurement.result import interval_metrics, run_interval

Event = dict[str, Any]
EventSink = Callable[[Event], None]


class Source(Protocol):
    """What the controller measures."""

    batch_size: int
    completions: list[tuple[float, float]]  # (t_done perf_counter, latency seconds), append-only

    def failed(self) -> BaseException | None:
        """The first error a driver hit, if any (the controller stops and re-raises it)."""


@dataclass(frozen=True)
class MeasureSettings:
    warmup_s: float = 2.0
    window_s: float = 1.0
    stable_windows: int = 3
    stability: float = 0.05
    max_s: float = 20.0
    min_window_requests: int = 4


def window_spread(values: Sequence[float]) -> float:
    """Relative spread of a run of windows: (max - min) / mean."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    return float((arr.max() - arr.min()) / mean) if mean > 0 else float("inf")


def is_stable(window_qps: Sequence[float], stable_windows: int, stability: float) -> bool:
    """The stability rule: the last ``stable_windows`` windows agree within ``stability`` (max-min over mean)."""
    if len(window_qps) < stable_windows:
        return False
    return window_spread(window_qps[-stable_windows:]) <= stability


def latency_metrics(latencies_s: Sequence[float]) -> dict[str, float]:
    """Contract latency metrics (ms) of a set of request latencies."""
    if len(latencies_s) == 0:
        return {k: float("nan") for k in _LATENCY_KEYS}
    ms = np.asarray(latencies_s, dtype=float) * 1000.0
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "latency_p50_ms": float(p50),
        "latency_p90_ms": float(p90),
        "latency_p95_ms": float(p95),
        "latency_p99_ms": float(p99),
        "latency_mean_ms": float(ms.mean()),
        "latency_max_ms": float(ms.max()),
    }


_LATENCY_KEYS = (
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "latency_max_ms",
)


class MeasurementError(RuntimeError):
    """The source stopped producing (a driver failed, or nothing completed within max_s)."""


def measure_steady_state(
    source: Source,
    settings: MeasureSettings,
    emit: EventSink | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 0.025,
) -> dict[str, Any]:
    """Warm up, then measure windows until stable or ``max_s``; return the contract metrics.

    ``max_s`` bounds warm-up plus windows. Warm-up lasts ``warmup_s`` and until at least one request
    completed. A window closes once ``window_s`` passed *and* it holds ``min_window_requests``
    completions (so slow requests still give meaningful windows).

    ``clock`` gives the time the completions are stamped with (the source's clock) and ``sleep`` does
    every wait between two looks at the source (``poll_s`` each); tests pass a fake pair.
    """
    emit = emit or (lambda _e: None)
    done = source.completions
    t0 = clock()
    deadline = t0 + settings.max_s

    def check() -> None:
        err = source.failed()
        if err is not None:
            raise err

    emit({"event": "warmup", "warmup_s": settings.warmup_s})
    while True:
        check()
        now = clock()
        if now - t0 >= settings.warmup_s and len(done) > 0:
            break
        if now >= deadline:
            raise MeasurementError(f"no request completed within max_s = {settings.max_s} s of warm-up")
        sleep(poll_s)

    t_start = clock()
    emit({"event": "measure_start"})
    seen = len(done)
    # the measured part is anchored on completions: from the last completion before it starts to the
    # last completion of its last window (so neither end cuts a request period in two)
    anchor0 = max(t for t, _ in done[:seen])
    anchor = anchor0
    window_start = t_start
    window_qps: list[float] = []
    stable = False
    t_last = anchor0
    while True:
        check()
        now = clock()
        count_now = len(done)
        out_of_time = now >= deadline
        if (now - window_start >= settings.window_s and count_now - seen >= settings.min_window_requests) or (
            out_of_time and count_now > seen
        ):
            new = [t for t, _ in done[seen:count_now]]
            inside = [t for t in new if t > anchor]
            seen = count_now
            window_start = now
            if inside:
                last = max(inside)
                span = last - anchor
                window_qps.append(len(inside) * source.batch_size / span if span > 0 else 0.0)
                anchor = t_last = last
                stable = is_stable(window_qps, settings.stable_windows, settings.stability)
                emit(
                    {
                        "event": "window",
                        "index": len(window_qps),
                        "qps": window_qps[-1],
                        "stable": stable,
                        "elapsed_s": now - t0,
                    }
                )
                if stable:
                    break
        if out_of_time:
            break
        sleep(poll_s)

    emit({"event": "measure_end"})
    measured = [(t, lat) for t, lat in done[:seen] if anchor0 < t <= t_last]
    measured_s = t_last - anchor0
    if not measured or measured_s <= 0:
        raise MeasurementError(f"no request completed in the measured part (max_s = {settings.max_s} s)")
    requests = len(measured)
    qps = requests * source.batch_size / measured_s
    metrics: dict[str, Any] = {
        "qps": qps,
        "rps": requests / measured_s,
        **latency_metrics([lat for _, lat in measured]),
        "measured_s": measured_s,
        "requests": requests,
        "stable": stable,
        "window_qps": window_qps,
        # the 95 % interval of qps from the windows' batch means, centred on qps (NaN with under 2 windows)
        **interval_metrics(run_interval(qps, window_qps)),
    }
    return metrics
