"""Steady-state measurement: the stability rule, percentiles, and the controller on real timed sources."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from tuner.measurement.steady_state import (
    MeasurementError,
    MeasureSettings,
    is_stable,
    latency_metrics,
    measure_steady_state,
    window_spread,
)

# ------------------------------------------------------------------------------ pure functions


def test_window_spread() -> None:
    assert window_spread([100.0, 100.0, 100.0]) == 0.0
    assert window_spread([90.0, 100.0, 110.0]) == pytest.approx(0.2)
    assert window_spread([50.0]) == 0.0
    assert window_spread([0.0, 0.0]) == float("inf")


def test_is_stable() -> None:
    assert not is_stable([], 3, 0.05)
    assert not is_stable([100.0, 100.0], 3, 0.05)  # too few windows
    assert is_stable([100.0, 101.0, 102.0], 3, 0.05)
    assert not is_stable([100.0, 110.0, 100.0], 3, 0.05)
    # only the last stable_windows count: an unstable start is forgiven
    assert is_stable([10.0, 500.0, 100.0, 101.0, 99.0], 3, 0.05)
    assert not is_stable([100.0, 101.0, 99.0, 150.0], 3, 0.05)
    # the boundary is inclusive: spread == stability holds
    assert is_stable([95.0, 105.0], 2, 0.1)
    assert is_stable([7.0], 1, 0.01)


def test_latency_metrics_against_numpy() -> None:
    rng = np.random.default_rng(3)
    lat_s = rng.lognormal(mean=-5.0, sigma=0.7, size=10_001)
    m = latency_metrics(list(lat_s))
    ms = lat_s * 1000
    for q in (50, 90, 95, 99):
        assert m[f"latency_p{q}_ms"] == pytest.approx(np.percentile(ms, q), rel=1e-12)
    assert m["latency_mean_ms"] == pytest.approx(ms.mean(), rel=1e-12)
    assert m["latency_max_ms"] == pytest.approx(ms.max(), rel=1e-12)
    assert m["latency_p50_ms"] <= m["latency_p90_ms"] <= m["latency_p95_ms"] <= m["latency_p99_ms"]
    assert m["latency_p99_ms"] <= m["latency_max_ms"]
    assert set(m) == {f"latency_{k}_ms" for k in ("p50", "p90", "p95", "p99", "mean", "max")}


def test_latency_metrics_small_and_empty() -> None:
    m = latency_metrics([0.002])
    assert all(v == pytest.approx(2.0) for v in m.values())
    m = latency_metrics([0.001, 0.002, 0.003, 0.004])
    assert m["latency_p50_ms"] == pytest.approx(2.5)
    assert m["latency_max_ms"] == pytest.approx(4.0)
    empty = latency_metrics([])
    assert len(empty) == 6 and all(np.isnan(v) for v in empty.values())


# ------------------------------------------------------------------------------ real timed sources


class TimedSource:
    """A thread that completes requests on a schedule: ``rate_at(elapsed_s)`` requests per second.

    Completions are scheduled on absolute deadlines, so an oversleep is caught up and the long-run rate
    is exactly the scheduled one. Each request's latency is ``latency_s``.
    """

    def __init__(
        self,
        rate_at: Callable[[float], float],
        *,
        batch_size: int = 1,
        latency_s: float = 0.004,
        fail_after_s: float | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.completions: list[tuple[float, float]] = []
        self._rate_at = rate_at
        self._latency_s = latency_s
        self._fail_after_s = fail_after_s
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TimedSource:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def failed(self) -> BaseException | None:
        return self._error

    def _run(self) -> None:
        try:
            t0 = time.perf_counter()
            due = t0
            while not self._stop.is_set():
                now = time.perf_counter()
                if self._fail_after_s is not None and now - t0 >= self._fail_after_s:
                    raise RuntimeError("driver exploded")
                rate = self._rate_at(now - t0)
                if rate <= 0:
                    time.sleep(0.005)
                    due = time.perf_counter()
                    continue
                due += 1.0 / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                self.completions.append((time.perf_counter(), self._latency_s))
        except BaseException as err:  # noqa: BLE001 - reported through failed(), like the pool's drivers
            self._error = err


def test_steady_source_measures_its_rate_and_is_stable() -> None:
    rate, batch = 200.0, 2
    settings = MeasureSettings(warmup_s=0.3, window_s=0.4, stable_windows=3, stability=0.15, max_s=10.0)
    events: list[dict] = []
    with TimedSource(lambda _t: rate, batch_size=batch) as source:
        t0 = time.monotonic()
        m = measure_steady_state(source, settings, events.append)
        took = time.monotonic() - t0
    assert m["stable"] is True
    assert m["qps"] == pytest.approx(rate * batch, rel=0.10)
    assert m["rps"] == pytest.approx(rate, rel=0.10)
    assert m["qps"] == pytest.approx(m["requests"] * batch / m["measured_s"], rel=1e-12)
    assert len(m["window_qps"]) >= 3
    for w in m["window_qps"][-3:]:
        assert w == pytest.approx(rate * batch, rel=0.15)
    assert m["latency_p50_ms"] == pytest.approx(4.0) and m["latency_max_ms"] == pytest.approx(4.0)
    # stopped as soon as it was stable, not at max_s; warm-up is not in measured_s
    assert took < settings.max_s
    assert m["measured_s"] >= 3 * settings.window_s * 0.95
    assert m["measured_s"] <= took - settings.warmup_s + 0.05
    names = [e["event"] for e in events]
    assert names[:2] == ["warmup", "measure_start"]
    assert names[-1] == "measure_end"
    windows = [e for e in events if e["event"] == "window"]
    assert len(windows) == len(m["window_qps"]) and windows[-1]["stable"] is True


def test_changing_source_is_not_stable_and_ends_by_max_s() -> None:
    # the rate climbs steadily: no three windows ever agree within 10 %
    settings = MeasureSettings(warmup_s=0.2, window_s=0.25, stable_windows=3, stability=0.10, max_s=2.0)
    with TimedSource(lambda t: 100.0 + 400.0 * t) as source:
        t0 = time.monotonic()
        m = measure_steady_state(source, settings)
        took = time.monotonic() - t0
    assert m["stable"] is False
    assert settings.max_s <= took < settings.max_s + 1.0
    assert len(m["window_qps"]) >= 3
    assert m["window_qps"][-1] > 1.5 * m["window_qps"][0]
    assert m["qps"] == pytest.approx(m["requests"] / m["measured_s"], rel=1e-12)


def test_slow_source_windows_wait_for_min_requests() -> None:
    # 10 requests/s and 0.1 s windows: a window closes only once it holds 4 completions
    settings = MeasureSettings(
        warmup_s=0.1, window_s=0.1, stable_windows=2, stability=0.5, max_s=5.0, min_window_requests=4
    )
    with TimedSource(lambda _t: 10.0) as source:
        m = measure_steady_state(source, settings)
    assert m["requests"] >= 4 * len(m["window_qps"])
    for w in m["window_qps"]:
        assert w == pytest.approx(10.0, rel=0.3)


def test_driver_error_during_measurement_propagates() -> None:
    settings = MeasureSettings(warmup_s=0.1, window_s=0.2, stable_windows=50, stability=0.01, max_s=10.0)
    with TimedSource(lambda _t: 100.0, fail_after_s=0.5) as source:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="driver exploded"):
            measure_steady_state(source, settings)
    assert time.monotonic() - t0 < 3.0


def test_driver_error_during_warmup_propagates() -> None:
    settings = MeasureSettings(warmup_s=2.0, window_s=0.2, max_s=10.0)
    with TimedSource(lambda _t: 100.0, fail_after_s=0.0) as source:
        with pytest.raises(RuntimeError, match="driver exploded"):
            measure_steady_state(source, settings)


def test_source_that_never_completes_is_a_measurement_error() -> None:
    settings = MeasureSettings(warmup_s=0.1, window_s=0.1, max_s=0.5)
    with TimedSource(lambda _t: 0.0) as source:
        with pytest.raises(MeasurementError, match="no request completed"):
            measure_steady_state(source, settings)
