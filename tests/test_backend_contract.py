"""The backend contract, one suite for every backend (see ``tuner/backends/base.py``).

It runs on every built-in backend that can run here (``onnxruntime`` and ``openvino`` on the zoo
``tiny`` model, ``sim``) and on any other backend a plugin author names::

    TUNER_BACKEND_CONTRACT=rknn:/path/to/model.rknn \\
    TUNER_BACKEND_CONTRACT_OPTIONS='{"core_mask": "auto"}' \\
        python -m pytest /path/to/tuner/tests/test_backend_contract.py -q

``TUNER_BACKEND_CONTRACT`` is ``name`` or ``name:model`` (a file path or ``zoo:<name>``); several are
separated by commas. The backend must be installed (its entry point in group ``tuner.backends``). The
file is self-contained (no fixtures from elsewhere), so it can also be copied into a plugin's own tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tuner.backends.base import Backend, Instance, RuntimeConfig
from tuner.backends.registry import available_backends, get_backend
from tuner.errors import BackendError
from tuner.models.zoo import resolve_model

SIM_FAST = {"load_ms": 0, "service_ms": 0.5, "host_overhead_ms": 0.5, "memory_mb_per_runtime": 1, "noise": 0.0}
MEASURE = {"warmup_s": 0.2, "window_s": 0.2, "stable_windows": 2, "stability": 0.9, "max_s": 3.0}


@dataclass(frozen=True)
class Case:
    backend: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None

    @property
    def id(self) -> str:
        return self.backend


def _cases() -> list[Case]:
    named = os.environ.get("TUNER_BACKEND_CONTRACT", "").strip()
    if named:
        options = json.loads(os.environ.get("TUNER_BACKEND_CONTRACT_OPTIONS") or "{}")
        out = []
        for item in named.split(","):
            name, _, model = item.strip().partition(":")
            if model == "zoo" or model.startswith("zoo:"):  # 'name:zoo:tiny'
                model = item.strip().split(":", 1)[1]
            out.append(Case(name, model or None, options))
        return out
    ov_missing = importlib.util.find_spec("openvino") is None
    return [
        Case("onnxruntime", "zoo:tiny"),
        Case(
            "openvino",
            "zoo:tiny",
            skip="openvino is not installed (pip install 'tuner[openvino]')" if ov_missing else None,
        ),
        Case("sim", None, SIM_FAST),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract-zoo")


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest, zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    c: Case = request.param
    if c.skip:
        pytest.skip(c.skip)
    if c.backend not in available_backends():
        message = f"backend {c.backend!r} is not installed (entry point group tuner.backends)"
        if os.environ.get("TUNER_BACKEND_CONTRACT"):
            pytest.fail(message + f"; installed: {', '.join(available_backends())}")  # asked for by name
        pytest.skip(message)
    if c.model and c.model.startswith("zoo:"):
        monkeypatch.setenv("TUNER_CACHE_DIR", str(zoo_dir))
    return c


def _model(c: Case) -> Path | None:
    return resolve_model(c.model, Path.cwd()) if c.model else None


def _backend(c: Case) -> Backend:
    cls = get_backend(c.backend)
    return cls(_model(c), c.options)


@pytest.fixture
def opened(case: Case) -> Iterator[tuple[Backend, Instance]]:
    backend = _backend(case)
    inst = backend.open(RuntimeConfig(threads=1, batch_size=2, requests_per_sync=3, pool_size=1, index=0))
    try:
        yield backend, inst
    finally:
        inst.close()


def test_registered_class_is_a_backend(case: Case) -> None:
    cls = get_backend(case.backend)
    assert isinstance(cls, type) and issubclass(cls, Backend)
    assert cls.name == case.backend
    assert isinstance(cls.cpu_bound, bool) and isinstance(cls.needs_model, bool)
    assert cls.options_model.model_config.get("extra") == "forbid", "options_model must forbid unknown options"
    assert all(isinstance(n, str) for n in cls.option_names())


def test_host_threads_is_a_count_or_none_with_its_origin(case: Case) -> None:
    cls = get_backend(case.backend)
    shape = {"pool_size": 3, "threads": 2, "requests_per_sync": 2, "options": case.options, "usable_cores": 4}
    demand = cls.host_threads(**shape)
    count, origin = demand if demand is not None else (None, "device-bound")
    assert count is None or (isinstance(count, int) and not isinstance(count, bool) and count >= 0), count
    if cls.host_threads.__func__ is Backend.host_threads.__func__:  # type: ignore[attr-defined]
        assert count == (3 * 2 if cls.cpu_bound else None)  # the default: pool_size x threads, or device-bound
    assert isinstance(origin, str) and origin


def test_unknown_option_is_a_backend_error_naming_it(case: Case) -> None:
    cls = get_backend(case.backend)
    with pytest.raises(BackendError, match="no_such_option_xyz"):
        cls(_model(case), {**case.options, "no_such_option_xyz": 1})


def test_needs_model_is_enforced(case: Case) -> None:
    cls = get_backend(case.backend)
    if not cls.needs_model:
        pytest.skip(f"{case.backend} needs no model")
    with pytest.raises(BackendError, match="model"):
        cls(None, case.options)


def _reference_logits(model: Path, x: Any) -> Any:
    """The model run on ``x`` by a plain ONNX Runtime session: a second opinion on a backend's answer."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_infer_runs_one_request(case: Case, opened: tuple[Backend, Instance]) -> None:
    import numpy as np

    _, inst = opened
    inputs = inst.prepare_inputs()
    first = inst.infer(inputs)
    second = inst.infer(inputs)
    if case.backend in ("onnxruntime", "openvino") and case.model == "zoo:tiny":
        # the answer is the model's: the same logits a plain ONNX Runtime session computes (batch 2, 10 classes)
        (x,) = inputs.values()
        expected = _reference_logits(_model(case), np.asarray(x))  # type: ignore[arg-type]
        for out in (first, second):
            logits = np.asarray(out[0])
            assert logits.shape == (2, 10)
            np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    elif case.backend == "sim":
        # the request went through the device model and had finished when infer returned (it blocks)
        assert inst.max_in_flight == 1 and inst.in_flight == 0  # type: ignore[attr-defined]
        assert first == second == 2  # samples served: the batch
    # any other backend (a plugin under test): the two requests ran to completion without an error


def test_infer_is_safe_from_several_threads(opened: tuple[Backend, Instance]) -> None:
    _, inst = opened
    inputs = [inst.prepare_inputs() for _ in range(3)]
    errors: list[BaseException] = []

    def call(x: Any) -> None:
        try:
            for _ in range(3):
                inst.infer(x)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=call, args=(x,)) for x in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_submit_calls_done_exactly_once_per_request(opened: tuple[Backend, Instance]) -> None:
    _, inst = opened
    inputs = [inst.prepare_inputs() for _ in range(3)]
    calls: list[BaseException | None] = []
    lock = threading.Lock()
    all_done = threading.Event()
    rounds = 4

    def done(err: BaseException | None) -> None:
        with lock:
            calls.append(err)
            if len(calls) == rounds * len(inputs):
                all_done.set()

    for _ in range(rounds):
        before = len(calls)
        for x in inputs:
            inst.submit(x, done)  # returns at once; requests_per_sync = 3 are in flight
        deadline = time.monotonic() + 60
        while len(calls) < before + len(inputs) and time.monotonic() < deadline:
            time.sleep(0.001)
    assert all_done.wait(60), f"only {len(calls)} of {rounds * len(inputs)} completions"
    time.sleep(0.05)  # a second call of done would land here
    assert len(calls) == rounds * len(inputs)
    assert all(c is None for c in calls), calls


def test_applied_options_and_versions_are_json(opened: tuple[Backend, Instance]) -> None:
    backend, inst = opened
    inst.infer(inst.prepare_inputs())
    applied = inst.applied_options()
    assert isinstance(applied, dict) and applied, "report what the runtime applied or resolved"
    json.dumps(applied)
    versions = backend.versions()
    assert isinstance(versions, dict) and versions, "report the runtime's version for the platform fingerprint"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in versions.items())


def test_a_pool_of_instances_runs_at_once(case: Case) -> None:
    from tuner.workloads.pool import PoolWorkload

    backend = _backend(case)
    pool = PoolWorkload(backend, pool_size=2, threads=1, requests_per_sync=2, batch_size=1)
    try:
        assert pool.load() >= 0
        assert pool.first_request() > 0
        pool.start()
        deadline = time.monotonic() + 30
        while len(pool.completions) < 8 and time.monotonic() < deadline and pool.failed() is None:
            time.sleep(0.01)
        pool.stop()
    finally:
        pool.close()
    assert pool.failed() is None, pool.failed()
    assert len(pool.completions) >= 8
    assert all(latency >= 0 for _, latency in pool.completions)


def test_measured_in_a_child_process(case: Case) -> None:
    """The real path: a fresh ``python -m tuner.execution.worker`` finds the backend by name and measures it."""
    from tuner.execution.child import run_job

    model = _model(case)
    job = {
        "kind": "pool",
        "backend": case.backend,
        "model": str(model) if model else None,
        "options": case.options,
        "params": {"pool_size": 1, "threads": 1, "requests_per_sync": 2, "batch_size": 1},
        "measure": {**MEASURE, "min_window_requests": 2},
    }
    result = run_job(job, timeout_s=120)
    assert result.ok, result.failure and result.failure.describe()
    assert result.metrics["qps"] > 0
    assert result.metrics["peak_rss_mb"] > 0
    assert result.applied
    assert result.versions
