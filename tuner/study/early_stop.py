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

**Under a latency bound** (``load.scenario: server``; ``offline`` alike) the knee is decided on the study's
rate metric (``server_qps``: the highest arrival rate whose latency percentile meets the bound), and the
same rule applies to it. The windows watched are still closed-loop qps -- the LoadGen part of a trial runs
after them -- and closed-loop qps is an upper bound of what the config can serve: a Poisson arrival stream
never gets more out of it than submitting flat out. So the trial's closed-loop upper bound is compared with
``(1 - tolerance) x`` the knee candidate's *rate* (from :func:`tuner.study.ledger.rate_view`; a rate has
no interval, so its value stands for the lower bound): a config that cannot reach that flat out cannot
reach it under the bound either. The rule is as safe as for ``qps``, only looser: a config may sustain far
less under the bound than flat out, and such a config is measured to the end.
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

    def __init__(self, bar_qps: float | None, candidate: Mapping[str, Any] | None, rate: str = "qps") -> None:
        self.bar_qps = bar_qps  #: ``(1 - tolerance) x`` the knee candidate's lower bound; None: never stop
        self.candidate = dict(candidate or {})
        self.rate = rate  #: the study's rate metric the bar is a fraction of
        self.windows: list[float] = []
        self._lock = threading.Lock()

    @classmethod
    def for_trial(
        cls, records: Sequence[TrialRecord], params: Mapping[str, Any], tolerance: float, *, rate: str = "qps"
    ) -> EarlyStop:
        """The rule for a trial of ``params`` given the study's records so far.

        ``rate``: the study's rate metric; ``records`` are then the rate view
        (:func:`tuner.study.ledger.trial_records` with the same ``rate``), whose ``qps`` is the rate.
        """
        knee = find_knee(records, tolerance, bootstrap=0).knee
        if knee is None or config_cost(params) < config_cost(knee.params) or dict(knee.params) == dict(params):
            return cls(None, None, rate)
        qps = float(knee.metrics["qps"])
        low = finite_or_none(knee.metrics.get("qps_ci_low"))  # a rate view has none: the rate itself
        return cls((1.0 - tolerance) * (qps if low is None else low), knee.params, rate)

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
        if self.rate != "qps":
            return (
                f"stopped early: even flat out its qps cannot reach the knee's {self.rate} band (closed-loop 95 % "
                f"upper bound {high:.4g} after {len(windows)} windows < {self.bar_qps:.4g} = (1 - tolerance) x "
                f"the knee candidate's {self.rate}), so it cannot under the latency bound either, and it is not "
                "cheaper than the knee candidate"
            )
        return (
            f"stopped early: its qps cannot reach the knee's band (95 % upper bound {high:.4g} after "
            f"{len(windows)} windows < {self.bar_qps:.4g} = (1 - tolerance) x the knee candidate's lower bound) "
            "and it is not cheaper than the knee candidate"
        )
