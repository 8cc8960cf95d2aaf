"""What one measurement of a configuration produced, and how repeats of one config fold into one result."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


def aggregate_repeats(results: Sequence[TrialResult]) -> TrialResult:
    """The repeat with the median qps, plus ``qps_runs`` and ``qps_spread`` ((max-min)/median)."""
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
    return TrialResult(
        params=median.params,
        metrics=metrics,
        applied=median.applied,
        versions=median.versions,
        wall_s=sum(r.wall_s for r in results),
    )
