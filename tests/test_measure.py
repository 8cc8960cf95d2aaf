"""Steady-state measurement: the stability rule, percentiles, and the controller on a fake clock.

Every controller test drives ``measure_steady_state`` with a fake clock whose ``sleep`` advances fake time,
and a scripted source whose completions appear as fake time passes; no test reads or waits on the real
clock. The expected values are worked out by hand from each schedule; where the times are multiples of
1/32 s the arithmetic is exact in floating point and compared with ``==``.
"""

from __future__ import annotations

import statistics
import types
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from tuner.measurement import steady_state
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


def percentile_oracle(values_ms: Sequence[float], q: int) -> float:
    """The q-th percentile by the standard library's own interpolation (not numpy's)."""
    return statistics.quantiles(values_ms, n=100, method="inclusive")[q - 1]


def test_latency_metrics_against_the_standard_library() -> None:
    rng = np.random.default_rng(3)
    lat_s = [float(x) for x in rng.lognormal(mean=-5.0, sigma=0.7, size=10_000)]
    m = latency_metrics(lat_s)
    ms = [x * 1000.0 for x in lat_s]
    for q in (50, 90, 95, 99):
        assert m[f"latency_p{q}_ms"] == pytest.approx(percentile_oracle(ms, q), rel=1e-9)
    assert m["latency_mean_ms"] == pytest.approx(statistics.fmean(ms), rel=1e-9)
    assert m["latency_max_ms"] == max(ms)
    assert m["latency_p50_ms"] == pytest.approx(statistics.median(ms), rel=1e-9)
    assert m["latency_p50_ms"] <= m["latency_p90_ms"] <= m["latency_p95_ms"] <= m["latency_p99_ms"]
    assert m["latency_p99_ms"] <= m["latency_max_ms"]
    assert set(m) == {f"latency_{k}_ms" for k in ("p50", "p90", "p95", "p99", "mean", "max")}


def test_latency_metrics_hand_computed() -> None:
    # 1..101 ms: the q-th percentile (linear between closest ranks) is exactly q + 1 ms
    m = latency_metrics([k / 1000.0 for k in range(1, 102)])
    assert [m[f"latency_p{q}_ms"] for q in (50, 90, 95, 99)] == pytest.approx([51.0, 91.0, 96.0, 100.0])
    assert m["latency_mean_ms"] == pytest.approx(51.0)
    assert m["latency_max_ms"] == pytest.approx(101.0)
    # 1, 2, 3, 4 ms: rank (n - 1) * q = 3q between the closest values
    m = latency_metrics([0.004, 0.001, 0.003, 0.002])  # order does not matter
    assert m["latency_p50_ms"] == pytest.approx(2.5)
    assert m["latency_p90_ms"] == pytest.approx(3.7)
    assert m["latency_p95_ms"] == pytest.approx(3.85)
    assert m["latency_p99_ms"] == pytest.approx(3.97)
    assert m["latency_mean_ms"] == pytest.approx(2.5)
    assert m["latency_max_ms"] == pytest.approx(4.0)


def test_latency_metrics_small_and_empty() -> None:
    m = latency_metrics([0.002])
    assert all(v == pytest.approx(2.0) for v in m.values())
    empty = latency_metrics([])
    assert len(empty) == 6 and all(np.isnan(v) for v in empty.values())


# ------------------------------------------------------------------------------ the fake clock


class ScriptedSource:
    """Completes requests at scheduled fake times: ``(t_done, latency_s)``, appended once fake time reaches them.

    ``fail_at``: from that fake time on, :meth:`failed` reports a driver error.
    """

    def __init__(
        self, schedule: Sequence[tuple[float, float]], *, batch_size: int = 1, fail_at: float | None = None
    ) -> None:
        self.batch_size = batch_size
        self.completions: list[tuple[float, float]] = []
        self._pending: Iterator[tuple[float, float]] = iter(sorted(schedule))
        self._next: tuple[float, float] | None = next(self._pending, None)
        self._fail_at = fail_at
        self._now = 0.0

    def advance(self, now: float) -> None:
        self._now = now
        while self._next is not None and self._next[0] <= now:
            self.completions.append(self._next)
            self._next = next(self._pending, None)

    def failed(self) -> BaseException | None:
        if self._fail_at is not None and self._now >= self._fail_at:
            return RuntimeError("driver exploded")
        return None


class FakeTime:
    """A clock that only moves when the controller sleeps on it; each sleep advances the source too."""

    def __init__(self, source: ScriptedSource, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.source = source
        source.advance(start)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.source.advance(self.now)


POLL_S = 0.25


def every(period: float, until: float, *, start: float = 0.0, latency_s: float = 0.004) -> list[tuple[float, float]]:
    """A completion every ``period`` s in (start, until]."""
    n = round((until - start) / period)
    return [(start + k * period, latency_s) for k in range(1, n + 1)]


@pytest.fixture(autouse=True)
def no_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's module sees a ``time`` whose every clock and sleep fails the test: all its time is injected."""

    def forbidden(*_args: object) -> float:
        raise AssertionError("the real clock was used during a fake-clock test")

    fake_module = types.SimpleNamespace(sleep=forbidden, perf_counter=forbidden, monotonic=forbidden, time=forbidden)
    monkeypatch.setattr(steady_state, "time", fake_module)


def measure(
    source: ScriptedSource, settings: MeasureSettings, start: float = 0.0
) -> tuple[dict[str, Any], FakeTime, list[tuple[float, dict[str, Any]]]]:
    fake = FakeTime(source, start)
    events: list[tuple[float, dict[str, Any]]] = []
    m = measure_steady_state(
        source, settings, lambda e: events.append((fake.now, e)), clock=fake.clock, sleep=fake.sleep, poll_s=POLL_S
    )
    return m, fake, events


# ------------------------------------------------------------------------------ the controller


def test_steady_source_measures_its_rate_and_stops_once_stable() -> None:
    # 8 requests/s of batch 2 -> 16 samples/s; warm-up to t = 1, then windows close at 2, 3 and 4
    settings = MeasureSettings(warmup_s=1.0, window_s=1.0, stable_windows=3, stability=0.05, max_s=20.0)
    source = ScriptedSource(every(1 / 8, 30.0), batch_size=2)
    m, fake, events = measure(source, settings)
    assert m["stable"] is True
    assert m["window_qps"] == [16.0, 16.0, 16.0]
    assert m["requests"] == 24  # the completions in (1, 4]: the warm-up's 8 are not counted
    assert m["measured_s"] == 3.0
    assert m["qps"] == 16.0 and m["rps"] == 8.0
    assert m["latency_p50_ms"] == pytest.approx(4.0) and m["latency_max_ms"] == pytest.approx(4.0)
    # stopped at the third window, not at max_s; every wait was one poll on the injected sleep
    assert fake.now == 4.0
    assert fake.sleeps == [POLL_S] * 16
    names = [e["event"] for _, e in events]
    assert names == ["warmup", "measure_start", "window", "window", "window", "measure_end"]
    assert [t for t, e in events if e["event"] == "measure_start"] == [1.0]
    windows = [e for _, e in events if e["event"] == "window"]
    assert [w["index"] for w in windows] == [1, 2, 3]
    assert [w["elapsed_s"] for w in windows] == [2.0, 3.0, 4.0]
    assert [w["stable"] for w in windows] == [False, False, True]
    assert [w["qps"] for w in windows] == m["window_qps"]


def test_warmup_lasts_until_the_first_completion() -> None:
    # warm-up is 1 s, but nothing completes before 2.3: the measurement starts at the first poll after it
    settings = MeasureSettings(warmup_s=1.0, window_s=1.0, stable_windows=2, stability=0.05, max_s=20.0)
    source = ScriptedSource([(2.3, 0.5)] + every(0.25, 9.0, start=2.5, latency_s=0.01))
    m, fake, events = measure(source, settings)
    assert [t for t, e in events if e["event"] == "measure_start"] == [2.5]
    # anchored on the warm-up's last completion (2.3): window 1 is (2.3, 3.5] with 4 requests in 1.2 s;
    # it disagrees with window 2 (4 in (3.5, 4.5]) by 18 %, so a third window (4.5, 5.5] is needed
    assert m["window_qps"] == pytest.approx([4 / 1.2, 4.0, 4.0], rel=1e-12)
    assert fake.now == 5.5
    assert m["measured_s"] == pytest.approx(5.5 - 2.3, rel=1e-12)
    assert m["requests"] == 12
    assert m["stable"] is True
    assert m["latency_max_ms"] == pytest.approx(10.0)  # the warm-up request (500 ms) is not measured


def test_window_qps_is_anchored_on_completions_not_clock_edges() -> None:
    # a request every 3/8 s: the clock windows (1, 2], (2, 3], (3, 4] hold 3, 3 and 2 completions, which
    # counted per clock second would read 9, 9, 6 qps at batch 3; anchored on completions every window is 8
    settings = MeasureSettings(
        warmup_s=1.0, window_s=1.0, stable_windows=3, stability=0.01, max_s=20.0, min_window_requests=2
    )
    source = ScriptedSource(every(3 / 8, 30.0), batch_size=3)
    m, fake, _ = measure(source, settings)
    # window 1: 1.125, 1.5, 1.875 after the anchor 0.75 -> 3 x 3 / 1.125; window 2: 2.25 .. 3.0 -> 9 / 1.125;
    # window 3: 3.375, 3.75 -> 2 x 3 / 0.75
    assert m["window_qps"] == pytest.approx([8.0, 8.0, 8.0], rel=1e-12)
    assert m["stable"] is True and fake.now == 4.0
    # the measured part runs from 0.75 to 3.75: 8 requests of 3 samples in 3 s
    assert m["requests"] == 8
    assert m["measured_s"] == 3.0
    assert m["qps"] == 8.0
    assert m["rps"] == pytest.approx(8 / 3, rel=1e-12)
    assert m["qps"] == m["requests"] * source.batch_size / m["measured_s"]


def test_changing_source_is_not_stable_and_ends_by_max_s() -> None:
    # the rate doubles every second: 2, 4, 8, 16, 32 completions in the windows (1, 2] .. (5, 6]
    schedule = [(1.0, 0.004)]
    for second in range(1, 9):
        n = 2**second
        schedule += [(second + j / n, 0.004) for j in range(1, n + 1)]
    settings = MeasureSettings(
        warmup_s=1.0, window_s=1.0, stable_windows=3, stability=0.10, max_s=6.0, min_window_requests=2
    )
    m, fake, events = measure(ScriptedSource(schedule), settings)
    assert m["stable"] is False
    assert m["window_qps"] == [2.0, 4.0, 8.0, 16.0, 32.0]
    # max_s bounds warm-up plus windows: the clock ran to exactly 6 s, one poll at a time
    assert fake.now == 6.0
    assert fake.sleeps == [POLL_S] * 24
    assert m["requests"] == 2 + 4 + 8 + 16 + 32
    assert m["measured_s"] == 5.0
    assert m["qps"] == 62 / 5
    assert [e["event"] for _, e in events][-1] == "measure_end"


def test_a_partial_window_at_max_s_still_counts() -> None:
    # 4 requests/s; max_s = 2.5 stops half-way through window 2, which holds 2 < min_window_requests
    settings = MeasureSettings(
        warmup_s=1.0, window_s=1.0, stable_windows=3, stability=0.05, max_s=2.5, min_window_requests=4
    )
    m, fake, _ = measure(ScriptedSource(every(0.25, 10.0)), settings)
    assert fake.now == 2.5
    assert m["window_qps"] == [4.0, 4.0]  # (1, 2]: 4 in 1 s; (2, 2.5]: 2 in 0.5 s
    assert m["requests"] == 6 and m["measured_s"] == 1.5
    assert m["stable"] is False  # two windows are fewer than stable_windows


def test_slow_source_windows_wait_for_min_requests() -> None:
    # 2 requests/s and 0.5 s windows: a window closes only once it holds 4 completions, i.e. every 2 s
    settings = MeasureSettings(
        warmup_s=0.5, window_s=0.5, stable_windows=2, stability=0.05, max_s=20.0, min_window_requests=4
    )
    m, fake, events = measure(ScriptedSource(every(0.5, 30.0)), settings)
    windows = [e for _, e in events if e["event"] == "window"]
    assert [w["elapsed_s"] for w in windows] == [2.5, 4.5]
    assert m["window_qps"] == [2.0, 2.0]
    assert m["requests"] == 4 * len(m["window_qps"])
    assert m["measured_s"] == 4.0 and m["stable"] is True


def test_latency_percentiles_cover_the_measured_requests_only() -> None:
    # warm-up requests take 1 s; measured ones cycle through 1, 2, 3, 4 ms
    warm = [(k / 8, 1.0) for k in range(1, 9)]
    measured = [(1.0 + k / 8, (1 + (k - 1) % 4) / 1000.0) for k in range(1, 200)]
    settings = MeasureSettings(warmup_s=1.0, window_s=1.0, stable_windows=2, stability=0.05, max_s=20.0)
    m, _, _ = measure(ScriptedSource(warm + measured), settings)
    assert m["requests"] == 16  # two windows of 8
    lat_ms = [1.0, 2.0, 3.0, 4.0] * 4
    for q in (50, 90, 95, 99):
        assert m[f"latency_p{q}_ms"] == pytest.approx(percentile_oracle(lat_ms, q), rel=1e-9)
    assert m["latency_p50_ms"] == pytest.approx(2.5)  # hand-computed: between the 8th and 9th of 16
    assert m["latency_p90_ms"] == pytest.approx(4.0)
    assert m["latency_mean_ms"] == pytest.approx(2.5)
    assert m["latency_max_ms"] == pytest.approx(4.0)


def test_driver_error_during_measurement_propagates_at_the_next_poll() -> None:
    settings = MeasureSettings(warmup_s=1.0, window_s=1.0, stable_windows=50, stability=0.01, max_s=20.0)
    source = ScriptedSource(every(0.125, 30.0), fail_at=2.6)
    fake = FakeTime(source)
    events: list[str] = []
    with pytest.raises(RuntimeError, match="driver exploded"):
        measure_steady_state(
            source, settings, lambda e: events.append(e["event"]), clock=fake.clock, sleep=fake.sleep, poll_s=POLL_S
        )
    assert fake.now == 2.75  # the first poll after the failure; not a poll more
    assert events == ["warmup", "measure_start", "window"]


def test_driver_error_during_warmup_propagates() -> None:
    settings = MeasureSettings(warmup_s=2.0, window_s=0.2, max_s=10.0)
    source = ScriptedSource(every(0.125, 30.0), fail_at=0.0)
    fake = FakeTime(source)
    with pytest.raises(RuntimeError, match="driver exploded"):
        measure_steady_state(source, settings, clock=fake.clock, sleep=fake.sleep, poll_s=POLL_S)
    assert fake.sleeps == []  # seen at the very first look


def test_source_that_never_completes_is_a_measurement_error() -> None:
    settings = MeasureSettings(warmup_s=0.25, window_s=0.25, max_s=1.5)
    source = ScriptedSource([])
    fake = FakeTime(source, start=100.0)
    with pytest.raises(MeasurementError, match="no request completed within max_s = 1.5 s"):
        measure_steady_state(source, settings, clock=fake.clock, sleep=fake.sleep, poll_s=POLL_S)
    assert fake.now == 101.5  # gave up exactly at max_s
    assert fake.sleeps == [POLL_S] * 6


# ------------------------------------------------------------------------------ the interval of qps


def test_result_carries_the_windows_interval_centred_on_qps() -> None:
    # the doubling source of test_changing_source_...: windows 2, 4, 8, 16, 32 and qps 62 / 5 = 12.4
    schedule = [(1.0, 0.004)]
    for second in range(1, 9):
        n = 2**second
        schedule += [(second + j / n, 0.004) for j in range(1, n + 1)]
    settings = MeasureSettings(
        warmup_s=1.0, window_s=1.0, stable_windows=3, stability=0.10, max_s=6.0, min_window_requests=2
    )
    m, _, _ = measure(ScriptedSource(schedule), settings)
    assert m["window_qps"] == [2.0, 4.0, 8.0, 16.0, 32.0] and m["qps"] == 12.4
    # five windows are five batch means: squared deviations from 12.4 sum to 595.2, sd = sqrt(595.2 / 4)
    # = 12.1984; t(0.975, 4) = 2.7764 -> half-width 2.7764 x 12.1984 / sqrt(5) = 15.1463 around qps
    assert m["qps_ci_low"] == pytest.approx(12.4 - 15.1463, abs=1e-4)
    assert m["qps_ci_high"] == pytest.approx(12.4 + 15.1463, abs=1e-4)
    assert m["qps_cv"] == pytest.approx(12.1984 / 12.4, abs=1e-4)  # the windows' own CV


def test_equal_windows_give_a_zero_width_interval() -> None:
    settings = MeasureSettings(warmup_s=1.0, window_s=1.0, stable_windows=3, stability=0.05, max_s=20.0)
    m, _, _ = measure(ScriptedSource(every(1 / 8, 30.0), batch_size=2), settings)
    assert m["window_qps"] == [16.0, 16.0, 16.0]
    assert (m["qps_ci_low"], m["qps_ci_high"], m["qps_cv"]) == (16.0, 16.0, 0.0)


def test_one_window_leaves_the_interval_unknown() -> None:
    # max_s = 2 leaves room for one window after the 1 s warm-up: one batch mean bounds nothing
    settings = MeasureSettings(warmup_s=1.0, window_s=1.0, stable_windows=3, stability=0.05, max_s=2.0)
    m, _, _ = measure(ScriptedSource(every(0.25, 10.0)), settings)
    assert m["window_qps"] == [4.0] and m["qps"] == 4.0
    assert all(np.isnan(m[k]) for k in ("qps_ci_low", "qps_ci_high", "qps_cv"))
