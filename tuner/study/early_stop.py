"""Cut what cannot win: stop a trial whose windows show it can be neither the knee nor the best.

While a trial measures, every window's qps reaches the parent as an event. Once the trial has
:data:`MIN_WINDOWS` windows, the upper bound of its 95 % interval (Student-t over the windows' batch
means, :func:`tuner.analysis.intervals.windows_interval`) is compared with the current knee candidate: if
the upper bound is below ``(1 - tolerance) x`` the candidate's lower bound, the trial cannot reach the
knee's tolerance band (so it cannot be the knee), and it cannot be the best either (the knee is never
above the plateau). A config *cheaper* than the candidate is never stopped: below the band it is simply
not the knee, but a cheaper config near the band is exactly what the knee search needs to see measured.

The stopped trial is PRUNED with the reason (``stopped_early``), its windows so far kept as intermediate
values, and it counts as measured (it spent its measurement).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tuner.analysis.intervals import windows_interval
from tuner.analysis.knee import TrialRecord, config_cost, find_knee
from tuner.text import finite_or_none

#: windows a trial needs before it can be stopped (two give an interval too wide to decide anything)
MIN_WINDOWS = 3


class EarlyStop:
    """Watches one trial's window events; :meth:`reason` says why to stop it (None: go on)."""

    def __init__(self, bar_qps: float | None, candidate: Mapping[str, Any] | None) -> None:
        self.bar_qps = bar_qps  #: ``(1 - tolerance) x`` the knee candidate's lower bound; None: never stop
        self.candidate = dict(candidate or {})
        self.windows: list[float] = []
        self._lock = threading.Lock()

    @classmethod
    def for_trial(cls, records: Sequence[TrialRecord], params: Mapping[str, Any], tolerance: float) -> EarlyStop:
        """The rule for a trial of ``params`` given the study's records so far."""
        knee = find_knee(records, tolerance, bootstrap=0).knee
        if knee is None or config_cost(params) < config_cost(knee.params) or dict(knee.params) == dict(params):
            return cls(None, None)
        qps = float(knee.metrics["qps"])
        low = finite_or_none(knee.metrics.get("qps_ci_low"))
        return cls((1.0 - tolerance) * (qps if low is None else low), knee.params)

    def wrap(self, sink: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """An event sink that records window qps, then passes every event on to ``sink``."""

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "window":
                value = finite_or_none(event.get("qps"))
                if value is not None:
                    with self._lock:
                        self.windows.append(value)
            sink(event)

        return on_event

    def reason(self) -> str | None:
        if self.bar_qps is None:
            return None
        with self._lock:
            windows = list(self.windows)
        if len(windows) < MIN_WINDOWS:
            return None
        high = windows_interval(windows).high
        if not math.isfinite(high) or high >= self.bar_qps:
            return None
        return (
            f"stopped early: its qps cannot reach the knee's band (95 % upper bound {high:.4g} after "
            f"{len(windows)} windows < {self.bar_qps:.4g} = (1 - tolerance) x the knee candidate's lower bound) "
            "and it is not cheaper than the knee candidate"
        )
