"""GPU runtimes (issue 16): provider options, IOBinding, CUDA graphs, TensorRT engine caches, NVML telemetry, GPU OOM.

Two halves. The first runs everywhere (CI has no GPU): option validation and its messages, the providers lists,
the engine-cache key, IOBinding through ONNX Runtime's real API on the CPU provider (device ``cpu``), the CUDA
graph rules, the telemetry aggregation on given samples, what a machine without NVML does (no GPU metrics, a
clear error for a workload that constrains one), the OOM classification of ONNX Runtime's real message texts,
and the host-thread rule. The second needs an NVIDIA GPU and skips, saying why, without one: no CUDA provider
(onnxruntime-gpu not installed) or no NVML driver. ``bench/gpu_check.sh`` runs it on a GPU machine.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tuner.backends.base import RuntimeConfig
from tuner.backends.onnxruntime import OnnxRuntimeBackend, OrtInstance
from tuner.backends.ort_providers import (
    GPU_INSTALL,
    BoundFeed,
    IoBinder,
    ProviderOptions,
    ProviderPlan,
    engine_cache_dir,
    session_providers,
)
from tuner.config.spec import Spec, load_spec
from tuner.errors import BackendError, SpecError
from tuner.execution.child import run_job
from tuner.execution.runner import check_gpu_metrics
from tuner.measurement.gpu import (
    NVML_EXTRA,
    DeviceReading,
    GpuSample,
    GpuWatch,
    classify_gpu_oom,
    gpu_metrics,
    nvml_unavailable,
    open_nvml,
)
from tuner.measurement.process import Failure
from tuner.metrics import CLOSED_LOOP_METRICS, GPU_METRICS, METRICS, NUMERIC_METRICS
from tuner.models.precision import file_sha256
from tuner.search.rules import skip_reason
from tuner.study.run import _rule_context

REPO = Path(__file__).resolve().parent.parent
MEASURE = {"warmup_s": 0.2, "window_s": 0.2, "stable_windows": 2, "stability": 0.9, "max_s": 3.0}

NO_CUDA = (
    None
    if "CUDAExecutionProvider" in ort.get_available_providers()
    else f"no CUDA provider in this onnxruntime (available: {', '.join(ort.get_available_providers())}); {GPU_INSTALL}"
)
NO_NVML = nvml_unavailable()
needs_cuda = pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
needs_nvml = pytest.mark.skipif(NO_NVML is not None, reason=f"no NVML driver: {NO_NVML}")
without_nvml = pytest.mark.skipif(NO_NVML is None, reason="NVML works here: this is the no-GPU behaviour")


def options_error(options: dict[str, Any]) -> str:
    with pytest.raises(BackendError) as info:
        OnnxRuntimeBackend.validate_options(options)
    return str(info.value)


def spec_of(tmp_path: Path, text: str) -> Spec:
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent(text))
    return load_spec(path)


def tiny_job(model: Path, **options: Any) -> dict[str, Any]:
    return {
        "kind": "pool",
        "backend": "onnxruntime",
        "model": str(model),
        "options": options,
        "params": {"pool_size": 1, "threads": 1, "requests_per_sync": 2, "batch_size": 2},
        "measure": {**MEASURE, "min_window_requests": 2},
    }


# ===================================================================================== runs everywhere
# ------------------------------------------------------------------------------------ provider options


def test_provider_short_names_and_ort_names_are_one_provider() -> None:
    for name in ("CUDA", "cuda", "CUDAExecutionProvider"):
        assert OnnxRuntimeBackend.validate_options({"provider": name}).provider == "CUDAExecutionProvider"
    assert OnnxRuntimeBackend.validate_options({"provider": "TensorRT"}).provider == "TensorrtExecutionProvider"
    assert OnnxRuntimeBackend.validate_options({}).provider == "CPUExecutionProvider"
    assert (
        OnnxRuntimeBackend.validate_options({"provider": "DnnlExecutionProvider"}).provider == "DnnlExecutionProvider"
    )
    message = options_error({"provider": "Cudnn"})
    assert "unknown provider 'Cudnn'" in message and "CPU, CUDA, TensorRT" in message


def test_an_unknown_provider_option_names_the_provider_and_its_valid_keys() -> None:
    message = options_error({"provider": "CUDA", "provider_options": {"CUDA": {"cudnn_algo": "HEURISTIC"}}})
    assert "unknown option 'cudnn_algo' of provider CUDA" in message
    for key in ("cudnn_conv_algo_search", "arena_extend_strategy", "gpu_mem_limit", "enable_cuda_graph", "device_id"):
        assert key in message
    message = options_error({"provider_options": {"TensorRT": {"fp16": True}}})
    assert "of provider TensorRT" in message and "trt_fp16_enable" in message and "trt_engine_cache_path" in message
    assert "unknown provider 'Cuda2' (valid: CPU, CUDA, TensorRT)" in options_error({"provider_options": {"Cuda2": {}}})
    assert "of provider CPU (valid: none)" in options_error({"provider_options": {"CPU": {"device_id": 0}}})


def test_a_bad_provider_option_value_names_the_key_and_the_value() -> None:
    message = options_error({"provider_options": {"CUDA": {"cudnn_conv_algo_search": "FAST"}}})
    assert "CUDA.cudnn_conv_algo_search = 'FAST'" in message and "EXHAUSTIVE" in message
    assert "CUDA.gpu_mem_limit = -1" in options_error({"provider_options": {"CUDA": {"gpu_mem_limit": -1}}})
    assert "trt_builder_optimization_level = 9" in options_error(
        {"provider_options": {"TensorRT": {"trt_builder_optimization_level": 9}}}
    )


def test_a_searched_provider_option_folds_into_its_provider_and_twice_is_an_error() -> None:
    opts = OnnxRuntimeBackend.validate_options(
        {
            "provider": "CUDA",
            "provider_options": {"CUDA": {"device_id": 1}},
            "provider_options.CUDA.cudnn_conv_algo_search": "HEURISTIC",
        }
    )
    cuda = opts.provider_options.CUDA  # type: ignore[attr-defined]
    assert (cuda.device_id, cuda.cudnn_conv_algo_search) == (1, "HEURISTIC")
    message = options_error(
        {"provider_options": {"CUDA": {"device_id": 1}}, "provider_options.CUDA.device_id": 0},
    )
    assert "'provider_options.CUDA.device_id' is set twice" in message


def test_the_workload_file_searches_provider_options_and_names_an_unknown_one(tmp_path: Path) -> None:
    head = (
        "workload: {kind: pool, backend: onnxruntime, model: zoo:tiny, options: {provider: CUDA}}\n"
        "objectives: [{qps: maximize}]\nsearch:\n"
    )
    spec = spec_of(tmp_path, head + "  options.provider_options.CUDA.cudnn_conv_algo_search: [EXHAUSTIVE, HEURISTIC]\n")
    assert "options.provider_options.CUDA.cudnn_conv_algo_search" in spec.searched_axes()
    with pytest.raises(SpecError) as info:
        spec_of(tmp_path, head + "  options.provider_options.CUDA.cudnn_algo: [HEURISTIC]\n")
    message = str(info.value)
    assert "w.yaml:4: search.options.provider_options.CUDA.cudnn_algo" in message
    assert "did you mean 'provider_options.CUDA.cudnn_conv_algo_search'" in message


def test_the_providers_lists_carry_each_providers_options_as_ort_strings() -> None:
    opts = ProviderOptions.model_validate(
        {
            "CUDA": {"cudnn_conv_algo_search": "HEURISTIC", "enable_cuda_graph": True, "gpu_mem_limit": 2**30},
            "TensorRT": {"device_id": 1, "trt_fp16_enable": True},
        }
    )
    assert session_providers("CPUExecutionProvider", opts) == ["CPUExecutionProvider"]
    assert session_providers("CUDAExecutionProvider", opts) == [
        (
            "CUDAExecutionProvider",
            {"cudnn_conv_algo_search": "HEURISTIC", "enable_cuda_graph": "True", "gpu_mem_limit": str(2**30)},
        ),
        "CPUExecutionProvider",
    ]
    trt, cuda, cpu = session_providers("TensorrtExecutionProvider", opts, trt_cache_dir=Path("/engines/x"))
    assert trt == (
        "TensorrtExecutionProvider",
        {
            "device_id": "1",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": "/engines/x",
            "trt_fp16_enable": "True",
        },
    )
    assert cuda[0] == "CUDAExecutionProvider" and cuda[1]["device_id"] == "1"  # the fallback runs on TensorRT's GPU
    assert cpu == "CPUExecutionProvider"


def test_options_of_a_provider_the_session_does_not_use_are_ignored_and_said(tiny_model: Path) -> None:
    backend = OnnxRuntimeBackend(tiny_model, {"provider": "CPU", "provider_options": {"CUDA": {"device_id": 0}}})
    inst = backend.open(RuntimeConfig(batch_size=2))
    try:
        applied = inst.applied_options()
        assert applied["providers"] == ["CPUExecutionProvider"]
        assert applied["provider_options_ignored"] == ["CUDA"]
        assert applied["provider_options"] == {"CPUExecutionProvider": {}}
        json.dumps(applied)
    finally:
        inst.close()


def test_a_gpu_provider_missing_here_names_the_gpu_extra(tiny_model: Path) -> None:
    if NO_CUDA is None:
        pytest.skip("the CUDA provider is installed here")
    with pytest.raises(BackendError) as info:
        OnnxRuntimeBackend(tiny_model, {"provider": "CUDA"}).open(RuntimeConfig())
    assert "'CUDAExecutionProvider' is not available here" in str(info.value)
    assert "pip install 'tuner[gpu]'" in str(info.value)


# ------------------------------------------------------------------------------------ TensorRT engine cache


def test_the_engine_folder_is_keyed_by_model_runtimes_shapes_and_build_options(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "model_sha256": "ab" * 32,
        "ort_version": "1.20.1",
        "trt_version": "10.3.0",
        "shapes": {"input": (8, 3, 224, 224)},
        "build": {"trt_fp16_enable": False, "trt_builder_optimization_level": 3},
    }
    first = engine_cache_dir(tmp_path, **base)
    assert first == engine_cache_dir(tmp_path, **{**base, "shapes": {"input": [8, 3, 224, 224]}})
    assert first.parent == tmp_path and first.name.startswith("abababababab-ort1.20.1-trt10.3.0-")
    changed = [
        {"model_sha256": "cd" * 32},
        {"ort_version": "1.21.0"},
        {"trt_version": "10.4.0"},
        {"shapes": {"input": (16, 3, 224, 224)}},
        {"shapes": {"input": (8, 3, 224, 224), "mask": (8, 1)}},
        {"build": {"trt_fp16_enable": True, "trt_builder_optimization_level": 3}},
        {"build": {"trt_fp16_enable": False, "trt_builder_optimization_level": 5}},
    ]
    folders = {engine_cache_dir(tmp_path, **{**base, **change}) for change in changed}
    assert first not in folders and len(folders) == len(changed)


def test_a_tensorrt_plan_keys_its_engine_folder_by_the_model_files_sha256(tiny_model: Path, tmp_path: Path) -> None:
    opts = ProviderOptions.model_validate(
        {"TensorRT": {"trt_engine_cache_path": str(tmp_path), "trt_fp16_enable": True}}
    )

    def plan(batch: int) -> ProviderPlan:
        return ProviderPlan.build(
            "TensorrtExecutionProvider",
            opts,
            io_binding=False,
            requests_per_sync=1,
            model=tiny_model,
            shapes={"input": (batch, 3, 32, 32)},
            ort_version=ort.__version__,
        )

    folder = plan(4).trt_cache_dir
    assert folder is not None and folder.is_dir() and folder.parent == tmp_path
    assert folder.name.startswith(file_sha256(tiny_model)[:12] + f"-ort{ort.__version__}-trt")
    assert plan(4).trt_cache_dir == folder and plan(8).trt_cache_dir != folder
    entry = plan(4).providers[0]
    assert isinstance(entry, tuple) and entry[1]["trt_engine_cache_path"] == str(folder)
    off = ProviderOptions.model_validate({"TensorRT": {"trt_engine_cache_enable": False}})
    no_cache = ProviderPlan.build(
        "TensorrtExecutionProvider", off, io_binding=False, requests_per_sync=1, model=tiny_model
    )
    assert no_cache.trt_cache_dir is None and no_cache.providers[0][1]["trt_engine_cache_enable"] == "False"  # type: ignore[index]


# ------------------------------------------------------------------------------------ IOBinding, CUDA graphs


def test_io_binding_on_the_cpu_provider_runs_through_ort_iobinding(tiny_model: Path) -> None:
    bound = OnnxRuntimeBackend(tiny_model, {"provider": "CPU", "io_binding": True}).open(RuntimeConfig(batch_size=2))
    plain = OnnxRuntimeBackend(tiny_model, {}).open(RuntimeConfig(batch_size=2))
    try:
        x = bound.prepare_inputs()
        assert isinstance(x, BoundFeed) and isinstance(x.binding, ort.IOBinding)
        (array,) = x.values()  # still one request's host arrays by name, as every backend's inputs
        assert isinstance(array, np.ndarray) and array.shape == (2, 3, 32, 32)
        assert x.device_values[0].device_name() == "cpu"  # the input copied to the binding's device once
        outputs = bound.infer(x)
        assert isinstance(outputs[0], ort.OrtValue) and outputs[0].device_name() == "cpu"
        expected = plain.infer(dict(x))[0]
        np.testing.assert_allclose(outputs[0].numpy(), expected, rtol=1e-5, atol=1e-6)
        host = bound.infer(dict(x))  # host arrays at request time: copied in, outputs copied back
        assert isinstance(host[0], np.ndarray)
        np.testing.assert_allclose(host[0], expected, rtol=1e-5, atol=1e-6)
        assert bound.applied_options()["io_binding"] == "cpu:0"
        assert plain.applied_options()["io_binding"] is None
    finally:
        bound.close()
        plain.close()


def test_a_cuda_graph_needs_io_binding_and_opens_one_session_per_driver_thread() -> None:
    graph = ProviderOptions.model_validate({"CUDA": {"enable_cuda_graph": True}})
    with pytest.raises(BackendError, match="enable_cuda_graph .* set options.io_binding: true"):
        ProviderPlan.build("CUDAExecutionProvider", graph, io_binding=False, requests_per_sync=2, model=None)
    plan = ProviderPlan.build("CUDAExecutionProvider", graph, io_binding=True, requests_per_sync=3, model=None)
    assert (plan.cuda_graph, plan.sessions, plan.binding) == (True, 3, ("cuda", 0))
    plain = ProviderPlan.build(
        "CUDAExecutionProvider", ProviderOptions(), io_binding=True, requests_per_sync=3, model=None
    )
    assert (plain.cuda_graph, plain.sessions) == (False, 1)
    # on the CPU provider the CUDA option is ignored: one session, no graph
    cpu = ProviderPlan.build("CPUExecutionProvider", graph, io_binding=True, requests_per_sync=3, model=None)
    assert (cpu.cuda_graph, cpu.sessions, cpu.ignored) == (False, 1, ("CUDA",))


def test_the_cuda_graph_binder_fixes_outputs_per_slot_and_refuses_host_arrays(tiny_model: Path) -> None:
    """The binder's graph path on real CPU sessions: each slot on its own session, outputs preallocated once."""
    sessions = [ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"]) for _ in range(2)]
    binder = IoBinder(sessions, ("cpu", 0), cuda_graph=True)
    rng = np.random.default_rng(0)
    slots = [binder.prepare({"input": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}) for _ in range(2)]
    assert [s.session for s in slots] == sessions
    for slot in slots:
        expected = slot.session.run(None, dict(slot))[0]
        first, second = binder.run(slot)[0], binder.run(slot)[0]
        assert first.data_ptr() == second.data_ptr() == slot.device_values[-1].data_ptr()  # the same output buffer
        np.testing.assert_allclose(second.numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(BackendError, match="enable_cuda_graph replays fixed device buffers"):
        binder.run(dict(slots[0]))


def test_a_cuda_graph_output_shape_must_follow_from_the_inputs(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "open-output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 4])],  # a name no input has
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "open.onnx"
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    binder = IoBinder([session], ("cpu", 0), cuda_graph=True)
    with pytest.raises(BackendError, match="output 'y' \\['rows', 4\\] has dimension 'rows', which no input fixes"):
        binder.prepare({"x": np.ones((3, 4), np.float32)})


def test_a_trial_without_nvml_has_no_gpu_metrics_and_io_binding_measures(tiny_model: Path) -> None:
    """A real child trial (io_binding on the CPU provider): the contract metrics, none of the GPU ones."""
    if NO_NVML is None:
        pytest.skip("NVML works here: the GPU half checks the metrics")
    result = run_job(tiny_job(tiny_model, provider="CPU", io_binding=True), timeout_s=60)
    assert result.ok, result.failure and result.failure.describe()
    assert not set(CLOSED_LOOP_METRICS) - set(result.metrics)
    assert result.metrics["qps"] > 0
    assert not set(GPU_METRICS) & set(result.metrics)
    assert "gpu_telemetry" not in result.applied
    assert result.applied["io_binding"] == "cpu:0"


# ------------------------------------------------------------------------------------ telemetry aggregation


def sample(t: float, pids: set[int], *devices: tuple[float, float | None, dict[int, float | None]]) -> GpuSample:
    return GpuSample(
        t, frozenset(pids), tuple(DeviceReading(i, used, util, procs) for i, (used, util, procs) in enumerate(devices))
    )


def test_memory_is_the_peak_of_the_trials_processes_over_the_samples() -> None:
    tree = {100, 101}
    samples = [
        sample(0.0, {100}, (900.0, 0.0, {7: 800.0})),  # before the child made its CUDA context
        sample(1.0, tree, (1500.0, 0.5, {7: 800.0, 100: 300.0, 101: 100.0})),
        sample(2.0, tree, (2000.0, 0.9, {7: 800.0, 100: 900.0, 101: 100.0})),  # peak: 1000 of the tree's
        sample(3.0, tree, (1300.0, 0.2, {7: 800.0, 100: 500.0})),
    ]
    metrics, info = gpu_metrics(samples, baseline_mb={0: 900.0}, window=None)
    assert metrics == {"gpu_mem_peak_mb": 1000.0}  # pid 7 is another program; no window: no gpu_util
    assert info["memory_source"] == "process" and info["devices"] == [0]


def test_without_per_process_figures_memory_is_the_device_wide_rise() -> None:
    # NVML lists no process of the tree (a container's PIDs) or gives no figure (None)
    samples = [
        sample(0.0, {100}, (1000.0, 0.1, {}), (50.0, 0.0, {})),
        sample(1.0, {100}, (1600.0, 0.8, {4242: 600.0}), (50.0, 0.0, {100: None})),
        sample(2.0, {100}, (1400.0, 0.7, {4242: 400.0}), (80.0, 0.0, {})),
    ]
    metrics, info = gpu_metrics(samples, baseline_mb={0: 1000.0, 1: 50.0}, window=(0.5, 2.5))
    assert metrics["gpu_mem_peak_mb"] == 600.0  # max(600 + 0, 400 + 30)
    assert info["memory_source"] == "device" and info["devices"] == [0, 1]
    assert metrics["gpu_util"] == pytest.approx(((0.8 + 0.0) / 2 + (0.7 + 0.0) / 2) / 2)  # every GPU: none seen


def test_util_is_the_mean_over_the_measured_part_of_the_trials_gpus() -> None:
    tree = {100}
    samples = [
        sample(0.0, tree, (1.0, 1.0, {100: 10.0}), (1.0, 0.0, {})),  # warm-up: not counted
        sample(1.0, tree, (1.0, 0.6, {100: 10.0}), (1.0, 0.0, {})),
        sample(2.0, tree, (1.0, 0.8, {100: 10.0}), (1.0, 0.0, {})),
        sample(3.0, tree, (1.0, None, {100: 10.0}), (1.0, 0.0, {})),  # NVML said nothing: skipped
        sample(4.0, tree, (1.0, 0.0, {100: 10.0}), (1.0, 0.0, {})),  # after the measured part
    ]
    metrics, info = gpu_metrics(samples, baseline_mb={}, window=(1.0, 3.0))
    assert metrics["gpu_util"] == pytest.approx(0.7)  # GPU 0 only: the trial never ran on GPU 1
    assert info["util_samples"] == 2 and info["devices"] == [0]
    empty, _ = gpu_metrics(samples, baseline_mb={}, window=(10.0, 11.0))
    assert math.isnan(empty["gpu_util"])
    assert gpu_metrics([], baseline_mb={}, window=(0.0, 1.0)) == ({}, {"samples": 0})


def test_the_watch_windows_its_samples_at_the_measured_parts_marks() -> None:
    """GpuWatch's own plumbing (samples, marks, shutdown) on an injected reader and clock: NVML has no GPU here."""

    class Nvml:
        class NVMLError(Exception):
            pass

        shut = False

        def nvmlShutdown(self) -> None:  # noqa: N802 - NVML's name
            self.shut = True

    class Reader:
        nvml = Nvml()
        busy = iter([0.9, 0.3, 0.5, 0.7, 0.9])

        def baseline(self) -> dict[int, float]:
            return {0: 100.0}

        def read(self, pids: frozenset[int], now: float) -> GpuSample:
            return sample(now, set(pids), (100.0 + 10 * now, next(self.busy), {p: 10 * now for p in pids}))

    ticks = iter(range(100))
    watch = GpuWatch(Reader(), clock=lambda: float(next(ticks)))  # type: ignore[arg-type]
    watch.sample({1})  # t 0 (warm-up)
    watch.mark("measure_start", {1})  # sample t 1, mark t 2
    watch.sample({1})  # t 3
    watch.mark("measure_end", {1})  # sample t 4, mark t 5
    watch.sample({1})  # t 6
    metrics, info = watch.finish()
    assert metrics["gpu_mem_peak_mb"] == 60.0 and info["memory_source"] == "process"
    assert metrics["gpu_util"] == pytest.approx((0.5 + 0.7) / 2)  # the samples at t 3 and t 4
    assert Reader.nvml.shut


def test_repeats_keep_the_peak_gpu_memory_of_every_run() -> None:
    from tuner.measurement.result import TrialResult, aggregate_repeats

    runs = [
        TrialResult(params={}, metrics={"qps": qps, "peak_rss_mb": 100.0, "gpu_mem_peak_mb": gpu, "gpu_util": util})
        for qps, gpu, util in ((10.0, 900.0, 0.5), (12.0, 700.0, 0.6), (11.0, 800.0, 0.7))
    ]
    folded = aggregate_repeats(runs).metrics
    assert folded["gpu_mem_peak_mb"] == 900.0  # the largest run's, not the median run's 800
    assert folded["gpu_util"] == 0.7  # the median run's, as every other rate
    cpu_only = aggregate_repeats([TrialResult(params={}, metrics={"qps": 1.0})] * 2).metrics
    assert "gpu_mem_peak_mb" not in cpu_only


# ------------------------------------------------------------------------------------ no NVML here


def test_without_nvidia_ml_py_there_is_no_watch_and_the_reason_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError, as when not installed
    assert open_nvml() == (None, NVML_EXTRA)
    assert GpuWatch.start() is None
    assert nvml_unavailable() == NVML_EXTRA
    assert "pip install 'tuner[gpu]'" in NVML_EXTRA


@without_nvml
def test_a_failing_nvml_init_gives_no_watch_and_says_why() -> None:
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (the test extra has it)")
    nvml, reason = open_nvml()
    assert nvml is None and reason is not None and reason.startswith("NVML did not start (")
    assert GpuWatch.start() is None
    from tuner.platform import nvidia_gpus

    assert nvidia_gpus() is None


@without_nvml
def test_a_constraint_or_objective_on_a_gpu_metric_without_nvml_is_a_clear_error(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path,
        """\
        workload: {kind: pool, backend: onnxruntime, model: zoo:tiny}
        objectives: [{qps: maximize}, {gpu_util: maximize}]
        constraints: {gpu_mem_peak_mb: {max: 8000}}
        """,
    )
    with pytest.raises(SpecError) as info:
        check_gpu_metrics(spec)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'w.yaml'}: objectives[1]: gpu_util is measured only on an NVIDIA GPU")
    assert NO_NVML is not None and NO_NVML in message
    gpu_file = load_spec(REPO / "workloads" / "resnet50-gpu.yaml")
    with pytest.raises(SpecError, match="constraints.gpu_mem_peak_mb: gpu_mem_peak_mb is measured only"):
        check_gpu_metrics(gpu_file)
    check_gpu_metrics(spec_of(tmp_path, "workload: {kind: pool, backend: sim}\nobjectives: [{qps: maximize}]\n"))


def test_gpu_metrics_are_contract_names_not_demanded_of_every_trial() -> None:
    for name in GPU_METRICS:
        assert METRICS[name].startswith("NVIDIA GPU (NVML) only")
        assert name in NUMERIC_METRICS and name not in CLOSED_LOOP_METRICS


# ------------------------------------------------------------------------------------ out of GPU memory

#: ONNX Runtime's messages of a failed GPU allocation, as users reported them (onnxruntime issues 9939,
#: 16307, 22702, Deep-Live-Cam 584 and 645, ragflow 10295; TensorRT's from onnxruntime 10770 and 21001)
ORT_OOM_MESSAGES = [
    "[ONNXRuntimeError] : 1 : FAIL : D:\\a\\_work\\1\\s\\onnxruntime\\core\\providers\\cuda\\cuda_call.cc:121 "
    "onnxruntime::CudaCall CUDA failure 2: out of memory ; GPU=0 ; hostname=DESKTOP-QUBEI ; "
    "file=D:\\a\\_work\\1\\s\\onnxruntime\\core\\providers\\cuda\\cuda_stream_handle.cc ; line=175 ; "
    "expr=cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);",
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running FusedMatMul node. "
    "Name:'MatMul_92_FusedMatMulAndScale' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:331 "
    "void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool) Failed to allocate memory for requested buffer "
    "of size 8388608000",
    "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, "
    "onnxruntime::WaitNotificationFn) Available memory of 0 is smaller than requested bytes of 135383040",
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Gemm node. Name:'fc1' "
    "Status Message: cuda_call.cc:114 onnxruntime::CudaCall CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED ; GPU=0 ; "
    "expr=cublasCreate(&cublas_handle_);",
    "[E:onnxruntime:Default, tensorrt_execution_provider.h:50 log] [2022-03-04 13:39:28 ERROR] "
    "../rtSafe/safeRuntime.cpp (25) - Cuda Error in allocate: 2 (out of memory)",
    "[defaultAllocator.cpp::allocate::31] Error Code 1: Cuda Runtime (out of memory)",
    "[W] [TRT] Requested amount of GPU memory (15485030400 bytes) could not be allocated. There may not be enough "
    "free memory for allocation to succeed.",
]
NOT_OOM = [
    "CUDNN failure 1: CUDNN_STATUS_NOT_INITIALIZED ; GPU=0 ; hostname=divyansh-moon ; "
    "expr=cudnnCreate(&cudnn_handle_);",
    "[ONNXRuntimeError] : 1 : FAIL : CUDA error executing cudaMemcpy(dst_data, src_data, bytes, "
    "cudaMemcpyDeviceToHost)",
    "ONNX Runtime could not load /m.onnx: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from /m.onnx failed",
]


@pytest.mark.parametrize("message", ORT_OOM_MESSAGES)
def test_ort_out_of_gpu_memory_messages_are_oom_failures(message: str) -> None:
    failed = classify_gpu_oom(Failure("error", f"the first request failed: {message}", None, None, "tail"))
    assert failed.kind == "oom"
    assert failed.message.startswith("out of GPU memory (") and message in failed.message
    # from the stderr tail of a child that died of it (ORT aborting in C++)
    crashed = classify_gpu_oom(Failure("signal", "the trial process died from SIGABRT", -6, "SIGABRT", message))
    assert crashed.kind == "oom" and crashed.signal == "SIGABRT"


@pytest.mark.parametrize("message", NOT_OOM)
def test_other_gpu_errors_stay_what_they_are(message: str) -> None:
    failure = Failure("error", message)
    assert classify_gpu_oom(failure) is failure
    stopped = Failure("stopped", "cannot win", stderr_tail=ORT_OOM_MESSAGES[0])
    assert classify_gpu_oom(stopped) is stopped


def test_a_trial_child_reporting_ort_oom_is_an_oom_trial(tmp_path: Path) -> None:
    """run_job's real path with a stand-in child that fails as a trial does on a full GPU (its error event)."""
    child = tmp_path / "child.py"
    event = {"event": "error", "type": "BackendError", "message": f"the first request failed: {ORT_OOM_MESSAGES[1]}"}
    child.write_text(
        f"import sys, json\nsys.stdin.read()\nprint(json.dumps({event!r}), flush=True)\nsys.exit(3)\n", encoding="utf-8"
    )
    launcher = tmp_path / "python"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {child}\n")
    launcher.chmod(0o755)
    result = run_job({"params": {"batch_size": 32}}, timeout_s=30, python=str(launcher))
    assert result.failure is not None and result.failure.kind == "oom", result.failure
    assert "Failed to allocate memory for requested buffer of size 8388608000" in result.failure.message
    assert result.failure.describe().startswith("oom: out of GPU memory (ONNX Runtime's GPU arena could not allocate")


# ------------------------------------------------------------------------------------ host threads


def count(pool: int, threads: int, **options: Any) -> int | None:
    demand = OnnxRuntimeBackend.host_threads(
        pool_size=pool, threads=threads, requests_per_sync=2, options=options, usable_cores=2
    )
    return None if demand is None else demand[0]


def test_gpu_providers_count_no_host_threads_also_when_searched(tmp_path: Path) -> None:
    assert count(4, 4, provider="CPU") == 16
    for provider in ("CUDA", "TensorRT", "CUDAExecutionProvider", "TensorrtExecutionProvider"):
        assert count(4, 4, provider=provider) is None
    assert count(4, 4, provider="CUDA", **{"provider_options.CUDA.cudnn_conv_algo_search": "HEURISTIC"}) is None
    spec = spec_of(
        tmp_path,
        """\
        workload: {kind: pool, backend: onnxruntime, model: zoo:tiny}
        objectives: [{qps: maximize}]
        search: {pool_size: [1, 4], threads: [1, 2], options.provider: [CPU, CUDA]}
        """,
    )
    rules = _rule_context(spec, 2)
    cpu = skip_reason({**spec.default_params(), "pool_size": 4, "threads": 2}, rules)
    assert cpu is not None and cpu.startswith("oversubscribed: 8 host threads (pool_size 4 x threads 2 on onnxruntime)")
    assert (
        skip_reason({**spec.default_params(), "pool_size": 4, "threads": 2, "options.provider": "CUDA"}, rules) is None
    )
    gpu_file = load_spec(REPO / "workloads" / "resnet50-gpu.yaml")
    assert (
        skip_reason({**gpu_file.default_params(), "pool_size": 4, "requests_per_sync": 4}, _rule_context(gpu_file, 2))
        is None
    )


# ===================================================================================== needs an NVIDIA GPU


@needs_cuda
def test_cuda_io_binding_keeps_inputs_and_outputs_on_the_gpu(tiny_model: Path) -> None:
    bound = OnnxRuntimeBackend(tiny_model, {"provider": "CUDA", "io_binding": True}).open(RuntimeConfig(batch_size=4))
    try:
        x = bound.prepare_inputs()
        out = bound.infer(x)[0]
        assert x.device_values[0].device_name() == "cuda" and out.device_name() == "cuda"  # type: ignore[attr-defined]
        reference = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(out.numpy(), reference.run(None, dict(x))[0], rtol=1e-3, atol=1e-4)
        assert bound.applied_options()["providers"][0] == "CUDAExecutionProvider"
    finally:
        bound.close()


@needs_cuda
def test_a_cuda_graph_replays_one_session_per_driver_thread(tiny_model: Path) -> None:
    options = {"provider": "CUDA", "io_binding": True, "provider_options": {"CUDA": {"enable_cuda_graph": True}}}
    inst: OrtInstance = OnnxRuntimeBackend(tiny_model, options).open(RuntimeConfig(batch_size=2, requests_per_sync=2))
    try:
        assert inst.applied_options()["sessions_per_instance"] == 2
        slots = [inst.prepare_inputs() for _ in range(2)]
        reference = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"])
        for slot in slots:
            expected = reference.run(None, dict(slot))[0]
            for _ in range(3):  # capture, then replays
                out = inst.infer(slot)[0]
            np.testing.assert_allclose(out.numpy(), expected, rtol=1e-3, atol=1e-4)
        assert slots[0].session is not slots[1].session  # type: ignore[attr-defined]
    finally:
        inst.close()


@needs_cuda
@needs_nvml
def test_a_cuda_trial_measures_gpu_memory_and_util(tiny_model: Path) -> None:
    result = run_job(tiny_job(tiny_model, provider="CUDA", io_binding=True), timeout_s=120)
    assert result.ok, result.failure and result.failure.describe()
    assert result.metrics["gpu_mem_peak_mb"] > 0
    assert 0.0 <= result.metrics["gpu_util"] <= 1.0
    telemetry = result.applied["gpu_telemetry"]
    assert telemetry["memory_source"] in ("process", "device") and telemetry["util_samples"] >= 1


@needs_cuda
def test_a_config_past_its_gpu_memory_fails_as_an_oom_trial(tiny_model: Path) -> None:
    job = tiny_job(tiny_model, provider="CUDA", provider_options={"CUDA": {"gpu_mem_limit": 4096}})
    job["params"]["batch_size"] = 256
    result = run_job(job, timeout_s=120)
    assert result.failure is not None and result.failure.kind == "oom", result.failure and result.failure.describe()
    assert result.failure.message.startswith("out of GPU memory (")


@needs_nvml
def test_the_fingerprint_names_the_gpus_driver_and_cuda() -> None:
    from tuner.platform import nvidia_gpus

    info = nvidia_gpus()
    assert info is not None and info["gpus"] and all(g["name"] and g["memory_mb"] > 0 for g in info["gpus"])
    assert info["driver"] and info["cuda"].count(".") == 1


@needs_cuda
def test_tensorrt_builds_its_engine_at_load_into_the_keyed_folder(tiny_model: Path, tmp_path: Path) -> None:
    from tuner.backends.ort_providers import tensorrt_version

    if "TensorrtExecutionProvider" not in ort.get_available_providers() or tensorrt_version() == "unknown":
        pytest.skip("no TensorRT here (the TensorRT provider or libnvinfer is missing)")
    options = {"provider": "TensorRT", "provider_options": {"TensorRT": {"trt_engine_cache_path": str(tmp_path)}}}
    inst = OnnxRuntimeBackend(tiny_model, options).open(RuntimeConfig(batch_size=2))
    try:
        folder = Path(inst.applied_options()["trt_engine_cache"])
        assert folder.parent == tmp_path and any(folder.iterdir())  # built while opening: load_s
        inst.infer(inst.prepare_inputs())
    finally:
        inst.close()


def test_the_gpu_model_is_part_of_the_platform_a_study_belongs_to() -> None:
    from tuner.platform import hardware_identity, platform_tag

    cpu = {"machine": "x86_64", "cpu_model": "EPYC", "cpu_logical": 16, "board": None, "accelerators": []}
    h200 = {**cpu, "gpu": {"gpus": [{"name": "NVIDIA H200", "memory_mb": 143771}], "driver": "570", "cuda": "12.8"}}
    a100 = {**cpu, "gpu": {"gpus": [{"name": "NVIDIA A100", "memory_mb": 81920}], "driver": "570", "cuda": "12.8"}}
    # no GPU (no NVML, or a fingerprint stored before GPUs were recorded): one platform, the tag it always had
    assert platform_tag(cpu) == platform_tag({**cpu, "gpu": None})
    assert hardware_identity(cpu) == hardware_identity({**cpu, "gpu": None})
    # the same host CPU with different GPUs: two platforms (a CUDA study measured the GPU)
    assert len({platform_tag(cpu), platform_tag(h200), platform_tag(a100)}) == 3
    assert hardware_identity(h200) != hardware_identity(a100)
    assert hardware_identity(h200)["gpu_models"] == ["NVIDIA H200"]
    # the driver is software: a driver update keeps the platform
    assert platform_tag(h200) == platform_tag({**h200, "gpu": {**h200["gpu"], "driver": "580"}})
