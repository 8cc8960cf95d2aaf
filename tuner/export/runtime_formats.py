"""Exporters of runtime configurations: ``onnxruntime`` (session options JSON, and
:func:`ort_session_options` to load it), ``openvino`` (``compile_model`` properties) and ``triton``
(``config.pbtxt``). See :mod:`tuner.export.formats`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.export.common import _axis, _backend, _json, _options, _ort_options, _safe_name
from tuner.export.provenance import comment_header
from tuner.export.select import Selection

_ORT_EXECUTION_MODE = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
_ORT_GRAPH_LEVEL = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
#: Triton's ONNX Runtime backend: optimization { graph { level } } (-1 basic, 1 extended, 2 disabled;
#: unset = all, its default)
_TRITON_GRAPH_LEVEL = {"basic": -1, "extended": 1, "disable": 2}


def _onnxruntime(selection: Selection, base_dir: Path | None) -> str:
    opts, notes = _ort_options(selection)
    pool, threads = _axis(selection, "pool_size"), _axis(selection, "threads")
    rps, batch = _axis(selection, "requests_per_sync"), _axis(selection, "batch_size")
    entries = {"session.intra_op.allow_spinning": "1" if opts.allow_spinning else "0"}
    if opts.thread_affinity:
        entries["session.intra_op_thread_affinities"] = opts.thread_affinity
    doc = {
        "provenance": selection.provenance(notes),
        "session_options": {
            "intra_op_num_threads": threads,
            "inter_op_num_threads": opts.inter_op_threads,
            "execution_mode": _ORT_EXECUTION_MODE[opts.execution_mode],
            "graph_optimization_level": _ORT_GRAPH_LEVEL[opts.graph_optimization_level],
        },
        "session_config_entries": entries,
        "providers": [opts.provider],
        "pool": {
            "sessions": pool,
            "requests_in_flight_per_session": rps,
            "batch_size": batch,
            "samples_in_flight": pool * rps * batch,
        },
        "usage": "so = tuner.export.ort_session_options(doc); one InferenceSession(model, so, providers) per "
        "pool.sessions, each with requests_in_flight_per_session concurrent run() calls of batch_size samples",
    }
    return _json(doc)


def ort_session_options(doc: Mapping[str, Any]) -> Any:
    """An ``onnxruntime.SessionOptions`` from an ``onnxruntime`` export (the parsed JSON document)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    opts = doc.get("session_options") or {}
    if "intra_op_num_threads" in opts:
        so.intra_op_num_threads = int(opts["intra_op_num_threads"])
    if "inter_op_num_threads" in opts:
        so.inter_op_num_threads = int(opts["inter_op_num_threads"])
    if "execution_mode" in opts:
        so.execution_mode = getattr(ort.ExecutionMode, str(opts["execution_mode"]))
    if "graph_optimization_level" in opts:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, str(opts["graph_optimization_level"]))
    for key, value in (doc.get("session_config_entries") or {}).items():
        so.add_session_config_entry(str(key), str(value))
    return so


def _openvino_properties(selection: Selection) -> tuple[str, dict[str, Any], int, list[str]]:
    """(device, compile properties, compiled models, notes). An ``openvino`` study gets exactly the
    properties its backend compiled with (:meth:`OpenVinoBackend.compile_config`); any other study gets
    the same mapping with OpenVINO's defaults for the rest (streams = pool size, threads per stream)."""
    from tuner.backends.base import RuntimeConfig
    from tuner.backends.openvino import OpenVinoBackend, OpenVinoOptions

    options = _options(selection)
    notes: list[str] = []
    pool, threads = _axis(selection, "pool_size"), _axis(selection, "threads")
    rps, batch = _axis(selection, "requests_per_sync"), _axis(selection, "batch_size")
    backend = _backend(selection)
    if backend == "openvino":
        try:
            OpenVinoOptions.model_validate(options)
        except Exception:  # an older study's options: map like any other backend
            backend, options = "openvino (unreadable options)", {}
    if backend != "openvino":
        notes.append(f"the study ran on the {backend!r} backend: its axes are mapped onto OpenVINO's properties")
        options = {}
    ov = OpenVinoBackend(Path("model"), options)  # compile_config never reads the model
    opts: Any = ov.options
    config = RuntimeConfig(threads=threads, batch_size=batch, requests_per_sync=rps, pool_size=pool)
    props, _streams = ov.compile_config(config)
    properties = {k: _ov_value(v) for k, v in props.items()}
    properties.setdefault("PERFORMANCE_HINT", "THROUGHPUT" if pool * rps > 1 else "LATENCY")
    properties.setdefault("PERFORMANCE_HINT_NUM_REQUESTS", str(pool * rps))
    compiled_models = 1 if opts.pool_mode == "streams" else pool
    if "NUM_STREAMS" in props:
        notes.append("explicit NUM_STREAMS and INFERENCE_NUM_THREADS take precedence over PERFORMANCE_HINT")
    return str(opts.device), properties, compiled_models, notes


def _ov_value(value: Any) -> str:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return str(value)


def _openvino(selection: Selection, base_dir: Path | None) -> str:
    device, properties, compiled_models, notes = _openvino_properties(selection)
    pool, threads = _axis(selection, "pool_size"), _axis(selection, "threads")
    rps, batch = _axis(selection, "requests_per_sync"), _axis(selection, "batch_size")
    precision = properties.get("INFERENCE_PRECISION_HINT")
    doc = {
        "provenance": selection.provenance(notes),
        "device": device,
        "compile_properties": properties,
        "compiled_models": compiled_models,
        "infer_requests": pool * rps,
        "batch_size": batch,
        "usage": "core.compile_model(model, device, compile_properties) (compiled_models times, each with these "
        "properties); keep infer_requests AsyncInferQueue jobs in flight in all, each of batch_size samples "
        "(reshape the model's batch dimension to batch_size first)",
        "benchmark_app": f"benchmark_app -m MODEL -d {device} -hint none -nstreams {pool} -nthreads {pool * threads} "
        f"-nireq {pool * rps} -b {batch}" + (f" -infer_precision {precision}" if precision else ""),
    }
    return _json(doc)


def _triton(selection: Selection, base_dir: Path | None) -> str:
    opts, notes = _ort_options(selection)
    pool, threads = _axis(selection, "pool_size"), _axis(selection, "threads")
    rps, batch = _axis(selection, "requests_per_sync"), _axis(selection, "batch_size")
    mode = 1 if opts.execution_mode == "parallel" else 0
    kind = "KIND_GPU" if any(p in opts.provider for p in ("CUDA", "Tensorrt", "ROCM")) else "KIND_CPU"
    notes.append(
        f"clients should keep {pool * rps} requests in flight (pool_size x requests_per_sync), e.g. "
        f"perf_analyzer --concurrency-range {pool * rps}"
    )
    lines = [
        comment_header(selection.provenance(notes), fmt="triton").rstrip("\n"),
        f'name: "{_safe_name(selection.workload_name)}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {batch}",
        "instance_group [",
        "  {",
        f"    count: {pool}",
        f"    kind: {kind}",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {batch} ]",
        "  max_queue_delay_microseconds: 100",
        "}",
        f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}',
        f'parameters {{ key: "inter_op_thread_count" value: {{ string_value: "{opts.inter_op_threads}" }} }}',
        f'parameters {{ key: "execution_mode" value: {{ string_value: "{mode}" }} }}',
    ]
    level = _TRITON_GRAPH_LEVEL.get(opts.graph_optimization_level)
    if level is not None:
        lines += ["optimization {", "  graph {", f"    level: {level}", "  }", "}"]
    return "\n".join(lines) + "\n"
