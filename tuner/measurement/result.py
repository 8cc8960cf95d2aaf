"""What one measurement of a configuration produced, and how repeats of one config fold into one result.

Every measured qps carries a 95 % confidence interval (``qps_ci_low``, ``qps_ci_high``) and a coefficient of
variation (``qps_cv``): from one run's windows (:func:`run_interval`), or from the repeats' qps
(:func:`repeats_interval`). Where neither exists (a program's single figure) they are NaN: unknown, never
invented.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.analysis.intervals import CONFIDENCE, Interval, t_interval, windows_interval
from tuner.measurement.process import Failure

EventSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrialResult:
    """What one child run produced: metrics on success, a failure otherwise."""

    params: Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    applied: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    failure: Failure | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


#: the metrics that carry the interval of ``qps``
INTERVAL_METRICS = ("qps_ci_low", "qps_ci_high", "qps_cv")

_UNKNOWN = Interval(math.nan, math.nan, math.nan, math.nan, 0, CONFIDENCE)


def run_interval(qps: float, window_qps: Sequence[float] | None) -> Interval:
    """One run's interval: the half-width of :func:`windows_interval` centred on the contract ``qps``.

    Unknown (NaN) without at least two windows (one batch mean bounds nothing).
    """
    windows = windows_interval(window_qps or [])
    half = windows.half_width
    if not math.isfinite(half) or not math.isfinite(qps):
        return Interval(float(qps), math.nan, math.nan, windows.cv, windows.n, windows.confidence)
    return Interval(float(qps), qps - half, qps + half, windows.cv, windows.n, windows.confidence)


def repeats_interval(qps_runs: Sequence[float]) -> Interval:
    """Several runs' interval: Student-t over their qps, centred on their mean (unknown for fewer than 2)."""
    interval = t_interval(qps_runs)
    return interval if interval.n >= 2 else _UNKNOWN


def interval_metrics(interval: Interval) -> dict[str, float]:
    """``qps_ci_low``, ``qps_ci_high`` and ``qps_cv`` of ``interval``; NaN where it is unknown or unbounded."""

    def finite(x: float) -> float:
        return float(x) if math.isfinite(x) else math.nan

    return {"qps_ci_low": finite(interval.low), "qps_ci_high": finite(interval.high), "qps_cv": finite(interval.cv)}


def with_run_interval(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` of one run with its :func:`run_interval` metrics (from its ``qps`` and ``window_qps``)."""
    window_qps = metrics.get("window_qps")
    windows = [float(v) for v in window_qps] if isinstance(window_qps, list) else []
    return {**metrics, **interval_metrics(run_interval(float(metrics["qps"]), windows))}


def relative_half_width(interval: Interval) -> float:
    """Half-width over the centre; ``inf`` when the interval is unknown or unbounded (as wide as can be)."""
    value = interval.relative_half_width
    return value if math.isfinite(value) else math.inf


def current_interval(results: Sequence[TrialResult]) -> Interval:
    """The qps interval of the successful runs so far: one run's windows, or Student-t over 2+ runs' qps."""
    ok = [r for r in results if r.ok]
    if len(ok) == 1:
        metrics = ok[0].metrics
        window_qps = metrics.get("window_qps")
        return run_interval(float(metrics["qps"]), list(window_qps) if isinstance(window_qps, list) else [])
    return repeats_interval([float(r.metrics["qps"]) for r in ok])


def wants_another_run(results: Sequence[TrialResult], *, target_ci: float, max_runs: int) -> bool:
    """The rule of ``repeats: auto``: another run while fewer than ``max_runs`` were made and the current
    interval's relative half-width (:func:`current_interval`; unknown counts as infinitely wide) exceeds
    ``target_ci``."""
    if len(results) >= max_runs:
        return False
    return relative_half_width(current_interval(results)) > target_ci


def aggregate_repeats(results: Sequence[TrialResult]) -> TrialResult:
    """The repeat with the median qps, plus ``qps_runs`` and ``qps_spread`` ((max-min)/median).

    With two or more successful runs the interval metrics are the Student-t interval over the runs' qps
    (:func:`repeats_interval`, centred on their mean) and ``qps_cv`` their coefficient of variation; with
    one, they stay that run's own.
    """
    ok = [r for r in results if r.ok]
    if not ok:
        return results[-1]
    ordered = sorted(ok, key=lambda r: float(r.metrics["qps"]))
    median = ordered[(len(ordered) - 1) // 2]
    runs = [float(r.metrics["qps"]) for r in ok]
    metrics = dict(median.metrics)
    mid = float(median.metrics["qps"])
    metrics["qps_runs"] = runs
    metrics["qps_spread"] = (max(runs) - min(runs)) / mid if mid > 0 else float("nan")
    metrics["peak_rss_mb"] = max(float(r.metrics.get("peak_rss_mb", 0.0)) for r in ok)
    gpu_peaks = [float(r.metrics["gpu_mem_peak_mb"]) for r in ok if "gpu_mem_peak_mb" in r.metrics]
    if gpu_peaks:  # measured only on an NVIDIA GPU (tuner.measurement.gpu): the peak of every run, like RSS
        metrics["gpu_mem_peak_mb"] = max(gpu_peaks)
    if len(runs) >= 2:
        metrics.update(interval_metrics(repeats_interval(runs)))
    return TrialResult(
        params=median.params,
        metrics=metrics,
        applied=median.applied,
        versions=median.versions,
        wall_s=sum(r.wall_s for r in results),
    )
