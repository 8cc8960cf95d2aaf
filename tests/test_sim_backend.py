"""The ``sim`` device twin: real threads, real sleeps, real memory; no mocks."""

from __future__ import annotations

import statistics
import threading
import time

import psutil
import pytest

from tuner.backends.base import RuntimeConfig
from tuner.backends.registry import get_backend
from tuner.backends.sim import SimBackend, SimOptions, bound_qps
from tuner.errors import BackendError

QUIET = {"noise": 0.0, "load_ms": 0.0, "memory_mb_per_runtime": 0}


def closed_loop_qps(pool_size: int, seconds: float = 0.5, warmup_s: float = 0.1, **options: object) -> float:
    """``pool_size`` workers, each calling ``infer`` on its own instance in a loop; samples/s."""
    backend = SimBackend(None, {**QUIET, **options})
    instances = [backend.open(RuntimeConfig(pool_size=pool_size, index=i)) for i in range(pool_size)]
    stop = threading.Event()
    counts = [0] * pool_size

    def work(i: int) -> None:
        x = instances[i].prepare_inputs()
        while not stop.is_set():
            instances[i].infer(x)
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(pool_size)]
    try:
        for t in threads:
            t.start()
        time.sleep(warmup_s)
        c0, t0 = sum(counts), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = sum(counts), time.perf_counter()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for inst in instances:
            inst.close()
    return (c1 - c0) / (t1 - t0)


def timed_infer(backend: SimBackend, **config: int) -> tuple[float, dict]:
    inst = backend.open(RuntimeConfig(**config))
    try:
        x = inst.prepare_inputs()
        t0 = time.perf_counter()
        inst.infer(x)
        return (time.perf_counter() - t0) * 1000.0, inst.applied_options()
    finally:
        inst.close()


# ------------------------------------------------------------------------------------------ options
def test_registered_and_needs_no_model() -> None:
    assert get_backend("sim") is SimBackend
    backend = SimBackend(None)
    assert SimBackend.needs_model is False
    assert backend.versions() == {"sim": "1"}
    assert set(SimBackend.option_names()) == {
        "units", "host_cpus", "service_ms", "batch_efficiency", "host_overhead_ms", "thread_speedup",
        "memory_mb_per_runtime", "noise", "seed", "load_ms",
    }  # fmt: skip


def test_unknown_option_is_named() -> None:
    with pytest.raises(BackendError) as info:
        SimBackend(None, {"unitz": 3})
    assert "'unitz'" in str(info.value)
    assert "units" in str(info.value)  # the valid options are listed


@pytest.mark.parametrize(
    ("key", "value"),
    [("units", 0), ("batch_efficiency", 1.5), ("noise", -0.1), ("host_cpus", "many"), ("units", 2.5)],
)
def test_bad_option_value_is_named(key: str, value: object) -> None:
    with pytest.raises(BackendError, match=repr(key)):
        SimBackend(None, {key: value})


def test_options_are_frozen_and_searchable_scalars() -> None:
    opts = SimBackend(None, {"units": 2, "service_ms": 1}).options
    assert isinstance(opts, SimOptions)
    assert (opts.units, opts.service_ms) == (2, 1.0)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        opts.units = 4  # type: ignore[misc]
    for value in SimOptions().model_dump().values():
        assert isinstance(value, int | float)


# ------------------------------------------------------------------------------------------ model
def test_default_bound_has_its_knee_at_nine_on_the_field_grid() -> None:
    bound = {p: bound_qps(pool_size=p) for p in (1, 3, 6, 9, 12, 15)}
    plateau = max(bound.values())
    assert 1000.0 / bound[1] == pytest.approx(7.73, rel=0.01)  # one runtime: 7.73 ms/img
    assert plateau == pytest.approx(3 / 0.0032)  # three units busy
    assert bound[6] < 0.9 * plateau <= bound[9] == bound[15]


def test_noise_is_mean_one_with_the_asked_relative_sd() -> None:
    inst = SimBackend(None, {"noise": 0.1, "memory_mb_per_runtime": 0, "load_ms": 0}).open(RuntimeConfig())
    draws = [inst._factor() for _ in range(20000)]
    inst.close()
    assert statistics.fmean(draws) == pytest.approx(1.0, abs=0.005)
    assert statistics.stdev(draws) == pytest.approx(0.1, rel=0.05)
    same = SimBackend(None, {"noise": 0.1, "memory_mb_per_runtime": 0, "load_ms": 0}).open(RuntimeConfig())
    assert [same._factor() for _ in range(5)] == draws[:5]  # seeded per instance
    same.close()


# ------------------------------------------------------------------------------------------ instances
def test_memory_is_really_allocated_per_instance() -> None:
    proc = psutil.Process()
    backend = SimBackend(None, {**QUIET, "memory_mb_per_runtime": 64})
    before = proc.memory_info().rss
    instances = [backend.open(RuntimeConfig(index=i)) for i in range(2)]
    grown_mb = (proc.memory_info().rss - before) / 2**20
    assert 0.9 * 128 <= grown_mb <= 1.5 * 128
    for inst in instances:
        inst.close()
    freed_mb = (before + grown_mb * 2**20 - proc.memory_info().rss) / 2**20
    assert freed_mb >= 0.9 * 128


def test_infer_blocks_for_the_modelled_time() -> None:
    backend = SimBackend(None, {**QUIET, "host_overhead_ms": 30, "service_ms": 20, "batch_efficiency": 0.5})
    ms, applied = timed_infer(backend)
    assert applied["host_ms_per_request"] == pytest.approx(30)
    assert applied["device_ms_per_batch"] == pytest.approx(20)
    assert 50 <= ms < 50 + 25
    # batch 4 at efficiency 0.5 costs 4 ** 0.5 = 2 samples; 2 threads halve the parallel half of the host work
    ms, applied = timed_infer(backend, batch_size=4, threads=2)
    assert applied["device_ms_per_batch"] == pytest.approx(40)
    assert applied["host_ms_per_request"] == pytest.approx(22.5)
    assert applied["host_slots_per_request"] == 2
    assert 62.5 <= ms < 62.5 + 25


def test_load_takes_load_ms() -> None:
    backend = SimBackend(None, {**QUIET, "load_ms": 60})
    t0 = time.perf_counter()
    backend.open(RuntimeConfig()).close()
    assert time.perf_counter() - t0 >= 0.06


@pytest.mark.parametrize(
    ("options", "serial"),
    [
        ({"units": 1, "host_overhead_ms": 0}, True),  # two instances share the one unit
        ({"units": 2, "host_overhead_ms": 0}, False),  # one unit each
        ({"host_cpus": 1, "service_ms": 0}, True),  # one host core for both
        ({"host_cpus": 2, "service_ms": 0}, False),
    ],
)
def test_units_and_host_cpus_are_shared_by_the_process(options: dict, serial: bool) -> None:
    backend = SimBackend(None, {**QUIET, "host_overhead_ms": 60, "service_ms": 60, **options})
    instances = [backend.open(RuntimeConfig(pool_size=2, index=i)) for i in range(2)]
    threads = [threading.Thread(target=inst.infer, args=(1,)) for inst in instances]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = (time.perf_counter() - t0) * 1000.0
    for inst in instances:
        inst.close()
    if serial:
        assert ms >= 120
    else:
        assert 60 <= ms < 110


def test_submit_keeps_requests_per_sync_in_flight() -> None:
    backend = SimBackend(None, {**QUIET, "host_overhead_ms": 50, "service_ms": 50})
    inst = backend.open(RuntimeConfig(requests_per_sync=2))
    results: list[BaseException | None] = []
    lock = threading.Lock()
    all_done = threading.Event()

    def done(err: BaseException | None) -> None:
        with lock:
            results.append(err)
            if len(results) == 2:
                all_done.set()

    try:
        x = inst.prepare_inputs()
        t0 = time.perf_counter()
        inst.submit(x, done)
        inst.submit(x, done)
        assert all_done.wait(5)
        ms = (time.perf_counter() - t0) * 1000.0
        time.sleep(0.05)  # a second call of done would show up here
        assert results == [None, None]
        assert inst.max_in_flight == 2
        assert inst.applied_options()["max_in_flight"] == 2
        # host work is serial per runtime, but the second request's host work overlaps the first's
        # device work: 50 + 50 + 50 ms, not 2 x 100 ms
        assert 150 <= ms < 185
    finally:
        inst.close()


def test_pool_curve_saturates_with_its_knee_at_nine() -> None:
    qps = {p: closed_loop_qps(p) for p in (1, 3, 6, 9, 15)}
    curve = ", ".join(f"{p}: {q:.0f}" for p, q in qps.items())
    assert qps[1] < qps[3] < qps[6] < qps[9], curve
    assert qps[15] >= 0.95 * qps[9], curve
    assert qps[9] >= 0.9 * qps[15], curve
    assert qps[6] < 0.9 * qps[15], curve
    # the measurement agrees with the model's bound to within sleep overshoot
    for p, q in qps.items():
        assert 0.85 * bound_qps(pool_size=p) <= q <= 1.02 * bound_qps(pool_size=p), curve
