"""Validity rules that know the device: host threads per backend and per workload kind, against the usable cores.

A config is pruned as oversubscribed when the host threads its workload kind counts (asking its backend)
exceed the usable cores. Counts here are hand values; the OpenVINO cap is read back from the real plugin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from tuner.backends.base import Backend, Instance, RuntimeConfig
from tuner.backends.onnxruntime import OnnxRuntimeBackend
from tuner.backends.openvino import OpenVinoBackend, OpenVinoOptions, compile_properties, computes_on_cpu
from tuner.backends.sim import SimBackend
from tuner.config.spec import Spec, load_spec, parse_spec
from tuner.errors import SpecError
from tuner.platform import usable_cores
from tuner.search.rules import HostThreads, skip_reason
from tuner.search.space import iter_grid
from tuner.study.run import _rule_context
from tuner.workloads.command.kind import CommandKind
from tuner.workloads.pipeline.kind import PipelineKind

REPO = Path(__file__).resolve().parent.parent


def count(backend: type[Backend], pool: int, threads: int, cores: int = 2, rps: int = 1, **options: Any) -> int | None:
    demand = backend.host_threads(
        pool_size=pool, threads=threads, requests_per_sync=rps, options=options, usable_cores=cores
    )
    return None if demand is None else demand[0]


def origin(backend: type[Backend], pool: int, threads: int, cores: int = 2, **options: Any) -> str | None:
    demand = backend.host_threads(
        pool_size=pool, threads=threads, requests_per_sync=1, options=options, usable_cores=cores
    )
    return None if demand is None else demand[1]


def spec_of(tmp_path: Path, text: str, name: str = "w.yaml") -> Spec:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_spec(path)


def reason(spec: Spec, cores: int, **params: Any) -> str | None:
    return skip_reason({**spec.default_params(), **params}, _rule_context(spec, cores))


# ------------------------------------------------------------------------------------------ backends


class _Plain(Backend):
    name = "plain"

    def open(self, config: RuntimeConfig) -> Instance:  # pragma: no cover - never opened here
        raise NotImplementedError


class _DeviceOnly(_Plain):
    """A plugin written before host_threads: it only says it does not compute on host cores."""

    name = "device-only"
    cpu_bound = False


def test_the_default_count_is_pool_size_x_threads_and_cpu_bound_false_is_device_bound() -> None:
    assert count(_Plain, 3, 2) == 6
    assert count(_Plain, 3, 2, rps=4) == 6  # requests in flight share the instance's threads
    assert origin(_Plain, 3, 2) == "pool_size 3 x threads 2 on plain"
    assert count(_DeviceOnly, 9, 4) is None


def test_onnx_runtime_counts_intra_op_threads_and_the_inter_op_pool_when_parallel() -> None:
    assert count(OnnxRuntimeBackend, 2, 2) == 4
    assert count(OnnxRuntimeBackend, 1, 3, rps=2) == 3
    assert origin(OnnxRuntimeBackend, 2, 2) == "pool_size 2 x threads 2 on onnxruntime"
    # sequential mode ignores the inter-op pool, as ORT does
    assert count(OnnxRuntimeBackend, 2, 2, inter_op_threads=4) == 4
    # parallel: threads - 1 intra-op workers + inter_op_threads node runners, per session
    assert count(OnnxRuntimeBackend, 2, 2, execution_mode="parallel", inter_op_threads=3) == 2 * (2 - 1 + 3)
    assert count(OnnxRuntimeBackend, 1, 1, execution_mode="parallel", inter_op_threads=1) == 1
    assert origin(OnnxRuntimeBackend, 2, 2, execution_mode="parallel", inter_op_threads=3) == (
        "pool_size 2 x (threads 2 - 1 + inter_op_threads 3, execution_mode parallel) on onnxruntime"
    )
    physical = psutil.cpu_count(logical=False) or 1
    assert count(OnnxRuntimeBackend, 1, 2, execution_mode="parallel") == 2 - 1 + physical  # ORT's default pool
    assert count(OnnxRuntimeBackend, 4, 4, provider="CUDAExecutionProvider") is None  # computes on the GPU


def test_openvino_streams_are_capped_at_the_cores_and_instances_add_up() -> None:
    # streams mode: one compiled model, INFERENCE_NUM_THREADS = threads x streams, capped by the plugin
    assert count(OpenVinoBackend, 2, 2, cores=2) == 2  # runs as -nstreams 2 -nthreads 2
    assert count(OpenVinoBackend, 8, 1, cores=2) == 2
    assert count(OpenVinoBackend, 1, 1, cores=2) == 1
    assert count(OpenVinoBackend, 2, 2, cores=16) == 4
    assert origin(OpenVinoBackend, 2, 2, cores=2) == (
        "one compiled model, INFERENCE_NUM_THREADS 4 = threads 2 x streams 2, capped by the CPU plugin at 2 "
        "usable cores, on openvino"
    )
    # instances mode: pool_size compiled models, each with its own threads on the same cores
    assert count(OpenVinoBackend, 3, 1, cores=2, pool_mode="instances") == 3
    assert count(OpenVinoBackend, 2, 4, cores=2, pool_mode="instances") == 2 * 2
    assert count(OpenVinoBackend, 2, 1, cores=8, pool_mode="instances", num_streams=3) == 2 * 3
    assert count(OpenVinoBackend, 1, 1, cores=2, config={"INFERENCE_NUM_THREADS": 0}) == 2  # 0: all cores
    assert count(OpenVinoBackend, 4, 4, device="GPU") is None
    assert count(OpenVinoBackend, 4, 4, device="HETERO:GPU,NPU") is None
    assert count(OpenVinoBackend, 3, 1, cores=2, device="AUTO:GPU,CPU", pool_mode="instances") == 3
    assert [computes_on_cpu(d) for d in ("CPU", "AUTO", "MULTI:CPU,GPU", "GPU.1", "NPU", "AUTO:GPU")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(("pool", "threads"), [(2, 2), (1, 4), (4, 1)])
def test_openvino_count_is_what_the_cpu_plugin_resolves(pool: int, threads: int) -> None:
    """Compile a tiny model with the properties the backend sets and read back the threads the plugin runs."""
    ov = pytest.importorskip("openvino")
    import numpy as np
    from openvino import opset8 as ops

    param = ops.parameter([1, 16], np.float32)
    model = ov.Model([ops.matmul(param, ops.constant(np.ones((16, 16), np.float32)), False, False)], [param])
    props, _streams = compile_properties(OpenVinoOptions(), threads=threads, pool_size=pool)
    compiled = ov.Core().compile_model(model, "CPU", props)
    resolved = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    cores = usable_cores()
    counted = count(OpenVinoBackend, pool, threads, cores=cores)
    assert counted == min(pool * threads, cores)
    assert 1 <= resolved <= counted  # the plugin never runs more than the count (it caps at the cores)
    if cores == 2:  # this box: pool 2 x threads 2 runs as -nstreams 2 -nthreads 2
        assert resolved == counted
    assert int(compiled.get_property("NUM_STREAMS")) <= resolved


def test_sim_is_a_device_twin_with_no_host_thread_count() -> None:
    assert count(SimBackend, 15, 8, cores=1) is None
    assert count(SimBackend, 15, 8, cores=1, host_cpus=1) is None  # its host_cpus model the twin's host


# ------------------------------------------------------------------------------------------ the rule


OV_POOL = """\
workload:
  kind: pool
  backend: openvino
  model: zoo:tiny
  options: {pool_mode: %s}
search:
  pool_size: [1, 2]
  threads: [1, 2]
"""


def test_openvino_two_streams_of_two_threads_on_two_cores_is_measured(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, OV_POOL % "streams")
    assert reason(spec, 2, pool_size=2, threads=2) is None
    assert not [p for p in iter_grid(spec) if reason(spec, 2, **p)]
    instances = spec_of(tmp_path, OV_POOL % "instances", "i.yaml")
    assert reason(instances, 2, pool_size=2, threads=2) == (
        "oversubscribed: 4 host threads (pool_size 2 compiled models x INFERENCE_NUM_THREADS 2 = threads 2 x "
        "streams 1, on openvino) > 2 usable cores; set study.allow_oversubscription: true to measure it anyway"
    )


def test_onnx_runtime_pool_is_pruned_with_the_rule_and_how_to_lift_it(tmp_path: Path) -> None:
    text = (
        "workload: {kind: pool, backend: onnxruntime, model: zoo:tiny}\nsearch: {pool_size: [1, 2], threads: [1, 2]}\n"
    )
    spec = spec_of(tmp_path, text)
    assert reason(spec, 2, pool_size=2, threads=2) == (
        "oversubscribed: 4 host threads (pool_size 2 x threads 2 on onnxruntime) > 2 usable cores; "
        "set study.allow_oversubscription: true to measure it anyway"
    )
    assert reason(spec, 2, pool_size=2, threads=1) is None
    allowed = spec_of(tmp_path, text + "study: {allow_oversubscription: true}\n", "a.yaml")
    assert reason(allowed, 2, pool_size=2, threads=2) is None


# ------------------------------------------------------------------------------------------ pipelines

PIPELINE = """\
workload:
  kind: pipeline
  backend: %s
  model: zoo:tiny
  synthetic: {count: 4, width: 64, height: 48}
  stages:
    - type: read
    - {type: decode, workers: 2}
    - {type: preprocess}
    - {type: delay, name: wait, workers: 8}
    - type: batch
    - type: infer
    - type: postprocess
search:
  threads: [1, 2, 3]
  stages.preprocess.workers: [1, 2, 3]
"""


def test_pipeline_counts_its_largest_concurrent_demand(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, PIPELINE % "onnxruntime")

    def demand(**params: Any) -> HostThreads | None:
        return PipelineKind().host_threads(spec, {**spec.default_params(), **params}, usable_cores=2)

    # the delay stage's 8 workers only sleep; decode's configured 2 workers tie with the infer stage's 2
    assert demand(threads=2) == HostThreads(2, "infer stage: pool_size 1 x threads 2 on onnxruntime")
    assert demand(threads=1) == HostThreads(2, "stage 'decode': 2 workers, the largest stage")
    assert demand(threads=1, **{"stages.preprocess.workers": 3}) == HostThreads(
        3, "stage 'preprocess': 3 workers, the largest stage"
    )
    assert demand(threads=3) == HostThreads(3, "infer stage: pool_size 1 x threads 3 on onnxruntime")
    assert reason(spec, 2, threads=2, **{"stages.preprocess.workers": 2}) is None
    assert reason(spec, 2, threads=1, **{"stages.preprocess.workers": 3}) == (
        "oversubscribed: 3 host threads (stage 'preprocess': 3 workers, the largest stage) > 2 usable cores; "
        "set study.allow_oversubscription: true to measure it anyway"
    )
    # a device-bound infer stage: only the CPU stages count
    sim = spec_of(tmp_path, PIPELINE.replace("  model: zoo:tiny\n", "") % "sim", "s.yaml")
    assert PipelineKind().host_threads(sim, {**sim.default_params(), "threads": 3}, usable_cores=2) == HostThreads(
        2, "stage 'decode': 2 workers, the largest stage"
    )


def test_the_resnet50_pipeline_keeps_its_whole_grid_and_its_knee_on_two_cores() -> None:
    spec = load_spec(REPO / "workloads" / "pipeline-resnet50.yaml")
    grid = list(iter_grid(spec))
    assert len(grid) == 24
    assert [p for p in grid if reason(spec, 2, **p)] == []
    knee = {"threads": 2, "batch_size": 1, "stages.decode.workers": 2, "stages.preprocess.workers": 2}
    assert reason(spec, 2, **knee) is None
    assert reason(spec, 1, **knee) is not None  # one core: the infer stage's 2 threads oversubscribe it


# -------------------------------------------------------------------------------------- command kind

COMMAND = """\
workload:
  kind: command
  command: ["{python}", prog.py, -s, "{pool_size}", -t, "{threads}"]
  parse: {qps: 'qps=([\\d.]+)'}
search:
  pool_size: {low: 1, high: 15}
  threads: [1, 2]
"""


def test_a_command_workload_has_no_host_rule_unless_it_declares_one(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, COMMAND)
    assert CommandKind().host_threads(spec, {"pool_size": 15, "threads": 2}, usable_cores=2) is None
    assert not [p for p in iter_grid(spec) if reason(spec, 2, **p)]


@pytest.mark.parametrize(
    ("declared", "params", "expected"),
    [
        ("3", {"pool_size": 15}, HostThreads(3, "workload.host_threads 3")),
        ("1.5", {"pool_size": 1}, HostThreads(2, "workload.host_threads 1.5")),  # rounded up to whole threads
        (
            "'{pool_size} * {threads}'",
            {"pool_size": 4, "threads": 2},
            HostThreads(8, "workload.host_threads '{pool_size} * {threads}' with pool_size 4, threads 2"),
        ),
        (
            "'{pool_size} / 3 + ({threads} - 1) ** 2'",
            {"pool_size": 7, "threads": 2},
            HostThreads(
                4, "workload.host_threads '{pool_size} / 3 + ({threads} - 1) ** 2' with pool_size 7, threads 2"
            ),
        ),
        (
            "'{options.cpus}'",
            {"pool_size": 1},
            HostThreads(6, "workload.host_threads '{options.cpus}' with options.cpus 6"),
        ),
    ],
)
def test_declared_host_threads_are_counted(
    tmp_path: Path, declared: str, params: Mapping[str, Any], expected: HostThreads
) -> None:
    text = COMMAND.replace("  parse:", f"  host_threads: {declared}\n  options: {{cpus: 6}}\n  parse:")
    spec = spec_of(tmp_path, text)
    assert CommandKind().host_threads(spec, {**spec.default_params(), **params}, usable_cores=2) == expected


def test_declared_host_threads_make_the_rule_apply(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, COMMAND.replace("  parse:", "  host_threads: '{pool_size} * {threads}'\n  parse:"))
    assert reason(spec, 2, pool_size=2, threads=1) is None
    assert reason(spec, 2, pool_size=3, threads=1) == (
        "oversubscribed: 3 host threads (workload.host_threads '{pool_size} * {threads}' with pool_size 3, "
        "threads 1) > 2 usable cores; set study.allow_oversubscription: true to measure it anyway"
    )
    assert len([p for p in iter_grid(spec) if reason(spec, 2, **p)]) == 30 - 3  # only 1x1, 2x1 and 1x2 fit


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("true", ["workload.host_threads: expected a number of host threads or an expression", "got bool"]),
        ("-1", ["workload.host_threads = -1", "expected a number of host threads >= 0"]),
        ("[1, 2]", ["workload.host_threads", "got list"]),
        ("'{pool_sise} * 2'", ["unknown placeholder {pool_sise}", "did you mean 'pool_size'"]),
        ("'{model}'", ["unknown placeholder {model}"]),
        ("'{pool_size} *'", ["not an arithmetic expression"]),
        ("'{pool_size} x {threads}'", ["not an arithmetic expression"]),
        ("'x * {pool_size}'", ["name 'x' is not allowed"]),
        ("'open({pool_size})'", ["Call is not allowed"]),
        ("'{pool_size'", ["unbalanced '{'"]),
        ("'1 / ({threads} - 1)'", ["division by zero with threads = 1"]),
        ("'{threads} - 2'", ["gives -1 with threads = 1", ">= 0"]),
        ("'{options.mode}'", ["{options.mode} takes 'fast', not a number"]),
    ],
)
def test_bad_host_threads_name_the_file_and_line(tmp_path: Path, value: str, needles: list[str]) -> None:
    text = COMMAND.replace("  parse:", f"  host_threads: {value}\n  options: {{mode: fast}}\n  parse:")
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: workload.host_threads"), message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_host_threads_is_for_kind_command_only(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("workload:\n  kind: pool\n  backend: sim\n  host_threads: 2\n", path=Path("w.yaml"))
    assert str(info.value) == "w.yaml:4: workload.host_threads: only for kind: command (this workload is kind: pool)"


def test_declaring_host_threads_resumes_the_same_study(tmp_path: Path) -> None:
    """Like study.allow_oversubscription, it decides what is pruned, not what a trial measures."""
    plain = spec_of(tmp_path, "name: w\n" + COMMAND)
    declared = spec_of(tmp_path, "name: w\n" + COMMAND.replace("  parse:", "  host_threads: 2\n  parse:"), "d.yaml")
    assert plain.spec_hash == declared.spec_hash
    other = spec_of(tmp_path, "name: w\n" + COMMAND.replace("-t,", "-T,"), "o.yaml")
    assert other.spec_hash != plain.spec_hash  # the hash still sees the workload itself


NPU_PROGRAM = """\
import sys
s = int(sys.argv[sys.argv.index("-s") + 1])
# an NPU pool in the RK3588's shape: 3 cores, each saturated by 3 runtimes; the runtimes only wait on it
print(f"Processed 400 images in 1s, average inference per image is {7.73 / min(s, 9) * (1 + 0.02 * s):.3f}ms")
"""

NPU_WORKLOAD = """\
name: npu-pool
workload:
  kind: command
  command: ["{python}", prog.py, -s, "{pool_size}"]
  parse:
    qps: {regex: 'average inference per image is ([\\d.]+)ms', value: '1000 / x'}
search:
  pool_size: {low: 1, high: 15}
objectives:
  - qps: maximize
study:
  sampler: knee
  trials: 15
  trial_timeout_s: 60
  storage: npu.db
  seed: 0
"""


def test_an_npu_command_pool_larger_than_the_cores_is_measured_not_pruned(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(NPU_PROGRAM)
    path = tmp_path / "npu.yaml"
    path.write_text(NPU_WORKLOAD)
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "optimize", str(path), "--trials", "5", "--no-confirm", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    storage = f"sqlite:///{tmp_path / 'npu.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    assert [t for t in trials if t.state == TrialState.PRUNED] == []
    assert not [t for t in trials if "oversubscribed" in str(t.user_attrs.get("skip_reason", ""))]
    measured = {t.params["pool_size"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(measured) == 5
    assert max(measured) > usable_cores() and max(measured) >= 8, measured
    report = json.loads(proc.stdout)
    assert report["skipped"] == []


THREADS_PROGRAM = """\
import json, sys
threads = int(sys.argv[1])
print(json.dumps({"qps": 100.0 * threads}))  # a program that scales with its threads
"""

THREADS_WORKLOAD = """\
name: scaling
workload:
  kind: command
  command: ["{{python}}", prog.py, "{{threads}}"]
  parse: json
  host_threads: "{{threads}} * {per_thread}"
search:
  threads: [1, 2]
objectives:
  - qps: maximize
study:
  sampler: grid
  trials: 2
  trial_timeout_s: 60
  storage: scaling.db
"""


def test_the_edge_rule_does_not_ask_for_threads_the_host_rules_would_skip(tmp_path: Path) -> None:
    # each thread keeps K host cores busy, K chosen so that 2 threads fit this host and 3 do not: the best
    # (threads 2, +100 % over 1) is still rising at the top of the range, but extending it is not possible here
    cores = usable_cores()
    per_thread = cores // 2
    if per_thread < 1 or 3 * per_thread <= cores:
        pytest.skip(f"no whole number of cores per thread fits 2 threads but not 3 in {cores} cores")
    (tmp_path / "prog.py").write_text(THREADS_PROGRAM)
    path = tmp_path / "scaling.yaml"
    path.write_text(THREADS_WORKLOAD.format(per_thread=per_thread))
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "optimize", str(path), "--no-confirm", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    knee = json.loads(proc.stdout)["knee"]
    assert knee["params"]["threads"] == 2
    assert knee["extend"] == []
    assert "extend threads" not in knee["reason"]
    assert "still rising at threads 2, but this host's rules skip one more step (oversubscribed: " in knee["reason"]
    storage = f"sqlite:///{tmp_path / 'scaling.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    limits = optuna.load_study(study_name=summary.study_name, storage=storage).user_attrs["edge_limits"]
    assert [item["params"]["threads"] for item in limits] == [3]
    assert limits[0]["reason"].startswith(f"oversubscribed: {3 * per_thread} host threads")
    # a later `tuner report` (no rules at hand: it reads the stored limits) says the same
    report = subprocess.run(
        [sys.executable, "-m", "tuner", "report", storage, "--json"], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert json.loads(report.stdout)["knee"]["reason"] == knee["reason"]
