"""The pool workload on real ONNX Runtime sessions: each axis changes what really runs; a full measured run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _wait import wait_until
from onnx import TensorProto, helper

from tuner.backends.base import Instance, RuntimeConfig
from tuner.backends.onnxruntime import OnnxRuntimeBackend, OrtInstance
from tuner.errors import BackendError, InputError, ModelError
from tuner.measurement.steady_state import window_spread
from tuner.metrics import CLOSED_LOOP_METRICS
from tuner.workloads.pool import PoolWorkload


@pytest.fixture(scope="module")
def fixed_batch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose input batch dimension is fixed at 1: [1, 3, 8, 8] -> Relu."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("fixed") / "fixed.onnx"
    onnx.save(model, str(path))
    return path


def open_instance(model: Path, **config: Any) -> OrtInstance:
    return OnnxRuntimeBackend(model, {}).open(RuntimeConfig(**config))


# ----------------------------------------------------------------------------------- threads


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_sets_intra_op_threads(tiny_model: Path, threads: int) -> None:
    inst = open_instance(tiny_model, threads=threads)
    try:
        applied = inst.applied_options()
        assert applied["intra_op_num_threads"] == threads
        assert applied["providers"] == ["CPUExecutionProvider"]
        assert applied["session.intra_op.allow_spinning"] == "1"
    finally:
        inst.close()


def test_options_are_applied(tiny_model: Path) -> None:
    backend = OnnxRuntimeBackend(
        tiny_model, {"allow_spinning": False, "inter_op_threads": 2, "execution_mode": "parallel"}
    )
    inst = backend.open(RuntimeConfig(threads=2))
    try:
        applied = inst.applied_options()
        assert applied["session.intra_op.allow_spinning"] == "0"
        assert applied["inter_op_num_threads"] == 2
        assert applied["execution_mode"] == "parallel"
        inst.infer(inst.prepare_inputs())
    finally:
        inst.close()
    assert backend.versions()["onnxruntime"]


def test_thread_affinity_group_count_is_checked(tiny_model: Path) -> None:
    backend = OnnxRuntimeBackend(tiny_model, {"thread_affinity": "1;2"})
    with pytest.raises(BackendError, match="threads - 1 = 1"):
        backend.open(RuntimeConfig(threads=2))


def test_bad_option_value_is_backend_error(tiny_model: Path) -> None:
    with pytest.raises(BackendError, match="'execution_mode'"):
        OnnxRuntimeBackend(tiny_model, {"execution_mode": "sideways"})
    with pytest.raises(BackendError, match="'alow_spinning'"):
        OnnxRuntimeBackend(tiny_model, {"alow_spinning": True})


def test_unavailable_provider(tiny_model: Path) -> None:
    backend = OnnxRuntimeBackend(tiny_model, {"provider": "NoSuchExecutionProvider"})
    with pytest.raises(BackendError, match="not available here"):
        backend.open(RuntimeConfig())


def test_corrupt_model_is_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(ModelError, match="could not load"):
        OnnxRuntimeBackend(bad, {}).open(RuntimeConfig())


# ----------------------------------------------------------------------------------- batch_size


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_batch_size_shapes_inputs_and_outputs(tiny_model: Path, batch: int) -> None:
    inst = open_instance(tiny_model, batch_size=batch)
    try:
        feed = inst.prepare_inputs()
        assert feed["input"].shape == (batch, 3, 32, 32)
        assert feed["input"].dtype == np.float32
        (logits,) = inst.infer(feed)
        assert logits.shape == (batch, 10)
        assert np.isfinite(logits).all()
    finally:
        inst.close()


def test_fixed_batch_model_refuses_another_batch(fixed_batch_model: Path) -> None:
    with pytest.raises(InputError, match="fixed batch dimension of 1"):
        open_instance(fixed_batch_model, batch_size=2)
    inst = open_instance(fixed_batch_model, batch_size=1)
    try:
        (out,) = inst.infer(inst.prepare_inputs())
        assert out.shape == (1, 3, 8, 8)
    finally:
        inst.close()


def test_fixed_batch_model_fails_at_pool_load(fixed_batch_model: Path) -> None:
    pool = PoolWorkload(
        OnnxRuntimeBackend(fixed_batch_model, {}), pool_size=2, threads=1, requests_per_sync=1, batch_size=2
    )
    with pytest.raises(InputError, match="batch_size 2"):
        pool.load()
    pool.close()


# ------------------------------------------------------------------------ requests_per_sync, pool_size


class CountingInstance(Instance):
    """A real ORT instance whose ``infer`` counts how many calls are in flight at once.

    Each call a driver makes runs the real session, then waits at a rendezvous until every one of its
    round's ``requests_per_sync`` requests is inside ``infer`` too: requests that really are in flight together
    are seen together on any machine, however slow, and a round that never fills is counted in ``missed``
    (after a minute) instead of passing by luck. ``on_full`` runs once per filled round (a test moves its
    fake clock there). The main thread's calls (the first request) skip the rendezvous.
    """

    RENDEZVOUS_TIMEOUT_S = 60.0

    def __init__(self, inner: OrtInstance) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.missed = 0
        self.rendezvous = True
        self.on_full: Callable[[], None] | None = None
        self.threads_seen: set[str] = set()
        self._cond = threading.Condition()
        self._arrived = 0
        self._round = 0

    def prepare_inputs(self) -> Any:
        return self.inner.prepare_inputs()

    def infer(self, inputs: Any) -> Any:
        with self._cond:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
            self.threads_seen.add(threading.current_thread().name)
        try:
            out = self.inner.infer(inputs)
            if self.rendezvous and threading.current_thread() is not threading.main_thread():
                self._meet()
            return out
        finally:
            with self._cond:
                self.active -= 1

    def _meet(self) -> None:
        with self._cond:
            self._arrived += 1
            this_round = self._round
            if self._arrived == self.config.requests_per_sync:
                self._arrived = 0
                self._round += 1
                if self.on_full is not None:
                    self.on_full()
                self._cond.notify_all()
            elif not self._cond.wait_for(lambda: self._round != this_round, self.RENDEZVOUS_TIMEOUT_S):
                self.missed += 1

    def applied_options(self) -> dict[str, Any]:
        return self.inner.applied_options()

    def close(self) -> None:
        super().close()
        self.inner.close()


class CountingOrtBackend(OnnxRuntimeBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[CountingInstance] = []

    def open(self, config: RuntimeConfig) -> CountingInstance:
        inst = CountingInstance(super().open(config))
        self.opened.append(inst)
        return inst


def drive(pool: PoolWorkload, backend: CountingOrtBackend, calls: int, *, first_request: bool = True) -> None:
    """Load, start, and run until every instance has served ``calls`` calls (however long that takes here)."""
    pool.load()
    if first_request:
        pool.first_request()
    pool.start()
    try:
        wait_until(
            lambda: all(i.calls >= calls for i in backend.opened) or pool.failed() is not None, f"{calls} calls each"
        )
    finally:
        pool.stop()
    assert pool.failed() is None, pool.failed()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("pool_size", "rps"), [(1, 1), (2, 3), (3, 2)])
def test_requests_in_flight_and_pool_size(tiny_model: Path, pool_size: int, rps: int) -> None:
    backend = CountingOrtBackend(tiny_model, {})
    pool = PoolWorkload(backend, pool_size=pool_size, threads=1, requests_per_sync=rps, batch_size=2)
    try:
        drive(pool, backend, calls=10)
        # pool_size: that many instances (distinct sessions), each driven by its own driver
        assert len(pool.instances) == pool_size == len(backend.opened)
        assert len({id(i.inner.session) for i in backend.opened}) == pool_size
        assert [i.config.index for i in backend.opened] == list(range(pool_size))
        assert [t.name for t in pool._drivers] == [f"tuner-driver-{i}" for i in range(pool_size)]
        assert not any(t.is_alive() for t in pool._drivers)  # stop() joined them
        for inst in backend.opened:
            assert inst.calls >= 10, "every instance is driven"
            # requests_per_sync: exactly that many in flight per instance, never more
            assert inst.missed == 0, "a round's requests were never in flight together"
            assert inst.max_active == rps
            if rps == 1:
                assert inst.threads_seen <= {"MainThread", f"tuner-driver-{inst.config.index}"}
            else:
                request_threads = {n for n in inst.threads_seen if n.startswith(f"tuner-req-{inst.config.index}")}
                assert len(request_threads) == rps
        # every request a driver made completed once, with a positive latency; the first request is not among them
        total_calls = sum(i.calls for i in backend.opened)
        assert len(pool.completions) == total_calls - 1
        assert all(lat > 0 for _, lat in pool.completions)
    finally:
        pool.close()
    assert pool.instances == []


@pytest.mark.parametrize("rps", [1, 3])
def test_latency_runs_from_submission_to_completion(tiny_model: Path, rps: int) -> None:
    # the fake clock moves by 1 s only once all of a round's requests are in flight, i.e. after every one of them
    # was submitted and before any completes: every latency is exactly 1 s, every round ends 1 s after the last
    clock = FakeClock()
    backend = CountingOrtBackend(tiny_model, {})
    pool = PoolWorkload(backend, pool_size=1, threads=1, requests_per_sync=rps, batch_size=1, clock=clock)

    def tick() -> None:
        clock.now += 1.0

    try:
        pool.load()
        backend.opened[0].on_full = tick
        pool.start()
        wait_until(lambda: len(pool.completions) >= 10 * rps or pool.failed() is not None, "ten rounds")
        pool.stop()
        assert pool.failed() is None, pool.failed()
    finally:
        pool.close()
    assert backend.opened[0].missed == 0
    rounds = len(pool.completions) // rps
    assert len(pool.completions) == rounds * rps  # the driver stopped between rounds
    assert sorted(t for t, _ in pool.completions) == [float(r) for r in range(1, rounds + 1) for _ in range(rps)]
    assert [lat for _, lat in pool.completions] == [1.0] * len(pool.completions)


def test_driver_error_is_reported(tiny_model: Path) -> None:
    class Exploding(CountingOrtBackend):
        def open(self, config: RuntimeConfig) -> CountingInstance:
            inst = super().open(config)
            inst.rendezvous = False  # a request that raises never arrives
            calls = {"n": 0}
            lock = threading.Lock()
            real_infer = inst.infer

            def infer(inputs: Any) -> Any:
                with lock:
                    calls["n"] += 1
                    n = calls["n"]
                if n > 5:
                    raise RuntimeError("runtime fell over")
                return real_infer(inputs)

            inst.infer = infer  # type: ignore[method-assign]
            return inst

    for rps in (1, 2):
        pool = PoolWorkload(Exploding(tiny_model, {}), pool_size=1, threads=1, requests_per_sync=rps, batch_size=1)
        try:
            pool.load()
            pool.start()
            wait_until(lambda: pool.failed() is not None, "the driver's error")  # noqa: B023 - used at once
            pool.stop()
        finally:
            pool.close()
        assert isinstance(pool.failed(), RuntimeError)
        assert "runtime fell over" in str(pool.failed())
        assert not any(t.is_alive() for t in pool._drivers)  # the driver stopped on its error
        assert len(pool.completions) == 5  # the five calls that worked, nothing after


# ------------------------------------------------------------------------------ full run via the CLI

MEASURE = "measure: {warmup_s: 0.5, window_s: 0.5, stable_windows: 3, stability: 0.2, max_s: 8}\n"


def cli_run(tmp_path: Path, model: Path, *sets: str) -> dict[str, Any]:
    workload = tmp_path / "w.yaml"
    workload.write_text(f"workload:\n  backend: onnxruntime\n  model: {model}\n{MEASURE}")
    args = [sys.executable, "-m", "tuner", "run", str(workload), "--json"]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def pool2_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return cli_run(tmp_path_factory.mktemp("run"), tiny_model, "pool_size=2")


def test_full_run_reports_every_contract_metric(pool2_run: dict[str, Any]) -> None:
    doc = pool2_run
    assert doc["params"] == {"pool_size": 2, "threads": 1, "requests_per_sync": 1, "batch_size": 1}
    m = doc["metrics"]
    missing = set(CLOSED_LOOP_METRICS) - set(m)
    assert not missing, missing
    assert m["requests"] > 0 and isinstance(m["requests"], int)
    assert m["qps"] == pytest.approx(m["requests"] * 1 / m["measured_s"], rel=0.01)
    assert m["rps"] == pytest.approx(m["qps"], rel=1e-9)
    assert (
        m["latency_p50_ms"] <= m["latency_p90_ms"] <= m["latency_p95_ms"] <= m["latency_p99_ms"] <= m["latency_max_ms"]
    )
    assert 0 < m["latency_mean_ms"] <= m["latency_max_ms"]
    assert m["peak_rss_mb"] > 0
    assert 0.0 <= m["cpu_util"] <= 1.0
    assert isinstance(m["stable"], bool)
    assert isinstance(m["window_qps"], list) and m["window_qps"]
    assert all(w > 0 for w in m["window_qps"])
    assert m["load_s"] > 0
    assert m["first_request_ms"] > 0
    # how many windows it took is this machine's business; the verdict must follow the rule on the windows shown
    assert 1 <= len(m["window_qps"]) <= m["requests"]
    if m["stable"]:
        assert window_spread(m["window_qps"][-3:]) <= 0.2 + 1e-6
    assert m["measured_s"] > 0
    assert doc["applied"]["intra_op_num_threads"] == 1
    assert "onnxruntime" in doc["versions"]
    assert doc["platform"]


def test_full_run_batch_size_multiplies_qps(tiny_model: Path, tmp_path: Path) -> None:
    doc = cli_run(tmp_path, tiny_model, "batch_size=4", "threads=2")
    m = doc["metrics"]
    assert doc["params"]["batch_size"] == 4
    assert doc["applied"]["intra_op_num_threads"] == 2
    assert m["qps"] == pytest.approx(4 * m["rps"], rel=1e-9)
    assert m["qps"] == pytest.approx(m["requests"] * 4 / m["measured_s"], rel=0.01)
