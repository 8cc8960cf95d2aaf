"""The OpenVINO backend: how the axes map, and that what the device resolved is recorded (f32 above all)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'tuner[openvino]')")

from tuner.backends.base import RuntimeConfig
from tuner.backends.openvino import OpenVinoBackend
from tuner.backends.registry import get_backend
from tuner.config.spec import load_spec
from tuner.errors import BackendError
from tuner.execution.child import run_job

WORKLOADS = Path(__file__).resolve().parent.parent / "workloads"


def open_pool(
    model: Path, options: dict[str, Any], *, pool_size: int = 1, threads: int = 1, batch: int = 1, rps: int = 1
):
    backend = OpenVinoBackend(model, options)
    instances = [
        backend.open(
            RuntimeConfig(threads=threads, batch_size=batch, requests_per_sync=rps, pool_size=pool_size, index=i)
        )
        for i in range(pool_size)
    ]
    return backend, instances


def close(instances: list[Any]) -> None:
    for inst in instances:
        inst.close()


def test_registered_under_its_name(tiny_model: Path) -> None:
    assert get_backend("openvino") is OpenVinoBackend
    assert set(OpenVinoBackend(tiny_model).versions()) == {"openvino"}


def test_precision_is_f32_by_default_and_recorded_from_the_device(tiny_model: Path) -> None:
    job = {
        "kind": "pool",
        "backend": "openvino",
        "model": str(tiny_model),
        "options": {},
        "params": {"pool_size": 1, "threads": 1, "requests_per_sync": 2, "batch_size": 2},
        "measure": {"warmup_s": 0.2, "window_s": 0.2, "stable_windows": 2, "stability": 0.5, "max_s": 3.0},
    }
    result = run_job(job, timeout_s=120)
    assert result.ok, result.failure and result.failure.describe()
    applied = result.applied
    assert applied["inference_precision_asked"] == "f32"
    assert applied["INFERENCE_PRECISION_HINT"] == "f32"  # read back from the compiled model
    assert applied["executed_precisions"] and set(applied["executed_precisions"]) == {"f32"}
    assert applied["input_shapes"] == {"input": [2, 3, 32, 32]}
    assert result.versions["openvino"]


def test_auto_precision_records_what_the_device_chose(tiny_model: Path) -> None:
    _, (inst,) = open_pool(tiny_model, {"inference_precision": "auto"})
    try:
        applied = inst.applied_options()
    finally:
        inst.close()
    assert applied["inference_precision_asked"] == "auto"
    # what this CPU picks, asked of OpenVINO directly: the same model compiled with no precision hint
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(tiny_model)), "CPU")
    device_default = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    assert device_default in ("f32", "bf16", "f16")
    assert applied["INFERENCE_PRECISION_HINT"] == device_default


def test_streams_mode_shares_one_compiled_model(tiny_model: Path) -> None:
    backend, instances = open_pool(tiny_model, {}, pool_size=2, threads=1, rps=2)
    try:
        applied = instances[0].applied_options()
        assert instances[0]._compiled is instances[1]._compiled
        assert applied["pool_mode"] == "streams" and applied["compiled_models"] == 1
        assert applied["NUM_STREAMS"] == 2
        assert applied["INFERENCE_NUM_THREADS"] == 2  # threads per stream x streams
        assert applied["requests_in_flight_per_instance"] == 2
    finally:
        close(instances)
    assert backend._compiled == {}  # released with the last instance


def test_instances_mode_compiles_one_model_per_instance(tiny_model: Path) -> None:
    _, instances = open_pool(tiny_model, {"pool_mode": "instances"}, pool_size=2, threads=1)
    try:
        assert instances[0]._compiled is not instances[1]._compiled
        applied = instances[1].applied_options()
        assert applied["compiled_models"] == 2
        assert applied["NUM_STREAMS"] == 1 and applied["INFERENCE_NUM_THREADS"] == 1
    finally:
        close(instances)


def test_throughput_hint_lets_the_device_pick_and_records_it(tiny_model: Path) -> None:
    _, (inst,) = open_pool(tiny_model, {"performance_hint": "throughput"}, threads=2)
    try:
        applied = inst.applied_options()
    finally:
        inst.close()
    assert applied["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert applied["num_streams_asked"] is None
    assert applied["NUM_STREAMS"] >= 1 and applied["OPTIMAL_NUMBER_OF_INFER_REQUESTS"] >= 1


def test_explicit_num_streams_and_batch_reshape(tiny_model: Path) -> None:
    _, (inst,) = open_pool(tiny_model, {"num_streams": 2}, batch=4)
    try:
        applied = inst.applied_options()
        inputs = inst.prepare_inputs()
    finally:
        inst.close()
    assert applied["NUM_STREAMS"] == 2 and applied["num_streams_asked"] == 2
    assert applied["input_shapes"] == {"input": [4, 3, 32, 32]}
    assert inputs[0].shape == (4, 3, 32, 32)


def test_submit_uses_the_async_queue_natively(tiny_model: Path) -> None:
    _, (inst,) = open_pool(tiny_model, {}, rps=4)
    done = threading.Semaphore(0)
    errors: list[Any] = []

    def callback(err: BaseException | None) -> None:
        errors.append(err)
        done.release()

    try:
        inputs = [inst.prepare_inputs() for _ in range(4)]
        for x in inputs:
            inst.submit(x, callback)
        for _ in range(4):
            assert done.acquire(timeout=30)
        assert inst._executor is None  # no driver threads: AsyncInferQueue.start_async
    finally:
        inst.close()
    assert errors == [None] * 4


def test_bad_device_and_options_are_backend_errors(tiny_model: Path) -> None:
    with pytest.raises(BackendError, match="not available here"):
        open_pool(tiny_model, {"device": "NO_SUCH_DEVICE"})
    with pytest.raises(BackendError, match="performance_hint"):
        OpenVinoBackend(tiny_model, {"performance_hint": "fastest"})
    with pytest.raises(BackendError, match="inference_precison"):
        OpenVinoBackend(tiny_model, {"inference_precison": "f32"})


@pytest.mark.parametrize("name", ["openvino-resnet50.yaml", "benchmark-app.yaml", "rknn-pool.yaml"])
def test_ready_workloads_load(name: str) -> None:
    spec = load_spec(WORKLOADS / name)
    assert spec.searched_axes()
