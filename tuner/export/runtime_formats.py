"""Exporters of runtime configurations: ``onnxruntime`` (session options JSON, and
:func:`ort_session_options` to load it), ``openvino`` (``compile_model`` properties) and ``triton``
(``config.pbtxt``). See :mod:`tuner.export.formats`.

Each carries the shapes the study fed (:mod:`tuner.export.model_io`: the workload's declared ``inputs:``
at the trial's values, else the model's signature): an ``inputs`` block for ONNX Runtime, a ``reshape``
mapping and ``benchmark_app -shape`` for OpenVINO, ``input`` / ``output`` entries for Triton. A study whose
options name a ``precision`` also carries the model file that ran (:func:`tuner.export.model_io.precision_record`:
the variant's path, sha256, source and quantization settings) as ``model`` (ONNX Runtime, OpenVINO) or a note
(Triton: deploy that file).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.export.common import _axis, _backend, _json, _options, _ort_options, _safe_name
from tuner.export.model_io import OPEN, ModelIO, Tensor, model_io, named_shapes, precision_record, shape_text
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
#: numpy dtype name -> Triton's DataType enum name (model_config.proto)
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "object": "TYPE_STRING",
    "str": "TYPE_STRING",
}


def _io_notes(io: ModelIO) -> list[str]:
    notes = list(io.notes)
    if io.known:
        what = "the workload's declared inputs" if io.source == "declared" else "the model's inputs"
        notes.append(f"input shapes ({what}): {named_shapes(io.inputs)}")
    return notes


def _onnxruntime(selection: Selection, base_dir: Path | None) -> str:
    opts, notes = _ort_options(selection)
    io = model_io(selection, base_dir)
    notes += _io_notes(io)
    variant, variant_notes = precision_record(selection, base_dir)
    notes += variant_notes
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
        "pool.sessions, each with requests_in_flight_per_session concurrent run() calls of batch_size samples"
        + ("; each run() feeds inputs (name -> shape and dtype, the data the study fed)" if io.known else ""),
    }
    if io.known:
        doc["inputs"] = {t.name: t.to_dict() for t in io.inputs}
    if variant is not None:
        doc["model"] = variant  # the file each InferenceSession opens: the precision variant that ran
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
    io = model_io(selection, base_dir)
    notes += _io_notes(io)
    variant, variant_notes = precision_record(selection, base_dir) if _backend(selection) == "openvino" else (None, [])
    notes += variant_notes
    model_arg = shlex.quote(str(variant["path"])) if variant and variant.get("path") else "MODEL"
    pool, threads = _axis(selection, "pool_size"), _axis(selection, "threads")
    rps, batch = _axis(selection, "requests_per_sync"), _axis(selection, "batch_size")
    precision = properties.get("INFERENCE_PRECISION_HINT")
    # the declared (or model) shapes replace -b: benchmark_app -shape sets every input, batch included
    sizing = f"-shape {shlex.quote(named_shapes(io.inputs))}" if io.known else f"-b {batch}"
    reshape = "model.reshape(reshape) first" if io.known else "reshape the model's batch dimension to batch_size first"
    doc: dict[str, Any] = {
        "provenance": selection.provenance(notes),
        "device": device,
        "compile_properties": properties,
        "compiled_models": compiled_models,
        "infer_requests": pool * rps,
        "batch_size": batch,
        "usage": "core.compile_model(model, device, compile_properties) (compiled_models times, each with these "
        "properties); keep infer_requests AsyncInferQueue jobs in flight in all, each of batch_size samples "
        f"({reshape})",
        "benchmark_app": f"benchmark_app -m {model_arg} -d {device} -hint none -nstreams {pool} "
        f"-nthreads {pool * threads} -nireq {pool * rps} {sizing}"
        + (f" -infer_precision {precision}" if precision else ""),
    }
    if io.known:
        doc["reshape"] = {t.name: list(t.shape) for t in io.inputs}
    if variant is not None:
        doc["model"] = variant  # the file compiled: the int8 IR, or the model with its precision hint
    return _json(doc)


def _triton(selection: Selection, base_dir: Path | None) -> str:
    opts, notes = _ort_options(selection)
    io = model_io(selection, base_dir)
    notes += _io_notes(io)
    variant, variant_notes = precision_record(selection, base_dir)
    notes += variant_notes
    if variant is not None and variant.get("path"):
        notes.append(
            f"precision {variant['precision']}: deploy {variant['path']} (sha256 {variant['sha256']}) as model.onnx"
        )
    pool, threads = _axis(selection, "pool_size"), _axis(selection, "threads")
    rps, batch = _axis(selection, "requests_per_sync"), _axis(selection, "batch_size")
    mode = 1 if opts.execution_mode == "parallel" else 0
    kind = "KIND_GPU" if any(p in opts.provider for p in ("CUDA", "Tensorrt", "ROCM")) else "KIND_CPU"
    notes.append(
        f"clients should keep {pool * rps} requests in flight (pool_size x requests_per_sync), e.g. "
        f"perf_analyzer --concurrency-range {pool * rps}"
    )
    tensors: list[str] = []
    why_unbatched: str | None = None
    if io.dtypes_known:
        why_unbatched = _no_implicit_batching(io)
        tensors = _triton_tensors(io, batched=why_unbatched is None, notes=notes)
    elif io.known:
        notes.append("the declared inputs name no dtype and the model was not read: input/output entries left out")
    max_batch = batch if why_unbatched is None else 0
    lines = [
        comment_header(selection.provenance(notes), fmt="triton").rstrip("\n"),
        f'name: "{_safe_name(selection.workload_name)}"',
        'backend: "onnxruntime"',
    ]
    if why_unbatched is not None:
        lines += [
            f"# max_batch_size 0: {why_unbatched}; Triton's implicit batching needs an open batch as dimension 0",
            f"# of every input and output, so dims are full shapes (the study sent batches of {batch}; an open",
            "# batch dimension is -1) and there is no dynamic batching: the client sends whole batches",
        ]
    lines.append(f"max_batch_size: {max_batch}")
    lines += tensors
    lines += [
        "instance_group [",
        "  {",
        f"    count: {pool}",
        f"    kind: {kind}",
        "  }",
        "]",
    ]
    if max_batch > 0:
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {batch} ]",
            "  max_queue_delay_microseconds: 100",
            "}",
        ]
    lines += [
        f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}',
        f'parameters {{ key: "inter_op_thread_count" value: {{ string_value: "{opts.inter_op_threads}" }} }}',
        f'parameters {{ key: "execution_mode" value: {{ string_value: "{mode}" }} }}',
    ]
    level = _TRITON_GRAPH_LEVEL.get(opts.graph_optimization_level)
    if level is not None:
        lines += ["optimization {", "  graph {", f"    level: {level}", "  }", "}"]
    return "\n".join(lines) + "\n"


def _no_implicit_batching(io: ModelIO) -> str | None:
    """Why Triton cannot batch this model implicitly (``max_batch_size`` > 0), or None when it can."""
    why = []
    for t in io.inputs:
        if t.batch_axis is None:
            why.append(f"input {t.name!r} {shape_text(t.shape)} has no batch dimension")
        elif t.batch_axis != 0:
            why.append(f"input {t.name!r} {shape_text(t.shape)} has its batch on dimension {t.batch_axis}")
        elif not t.batch_open:
            why.append(f"input {t.name!r} {shape_text(t.shape)} has a fixed batch dimension in the model")
    for o in io.outputs:
        if not why and (not o.shape or o.shape[0] != OPEN):
            why.append(f"output {o.name!r} {shape_text(o.shape)} has no open batch dimension 0")
    return ", ".join(why) or None


def _triton_tensors(io: ModelIO, *, batched: bool, notes: list[str]) -> list[str]:
    """The ``input [...]`` and ``output [...]`` entries (Triton's ``dims``: without the batch when batched)."""

    def dims_of(t: Tensor, is_input: bool) -> list[int]:
        shape = list(t.shape)
        if batched:
            return shape[1:]
        if is_input and t.batch_axis is not None and t.batch_open:
            shape[t.batch_axis] = OPEN  # the model takes any batch: so does the config
        return shape

    def entry(t: Tensor, dims: Sequence[int]) -> list[str]:
        body = [f"    name: {json.dumps(t.name)}", f"    data_type: {TRITON_TYPES[str(t.dtype)]}"]
        if dims:
            body.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
        else:  # a scalar (per sample): Triton's way is one element reshaped to rank 0
            body += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        return ["  {", *body, "  }"]

    def block(key: str, items: list[tuple[Tensor, list[int]]]) -> list[str]:
        if not items:
            return []
        out = [f"{key} ["]
        for i, (t, dims) in enumerate(items):
            lines = entry(t, dims)
            if i + 1 < len(items):
                lines[-1] += ","
            out += lines
        return [*out, "]"]

    unknown = [t.name for t in (*io.inputs, *io.outputs) if str(t.dtype) not in TRITON_TYPES]
    if any(str(t.dtype) not in TRITON_TYPES for t in io.inputs):
        notes.append(f"no Triton data type for {', '.join(unknown)}: input/output entries left out")
        return []
    outputs = [o for o in io.outputs if str(o.dtype) in TRITON_TYPES]
    if len(outputs) < len(io.outputs):
        notes.append(f"no Triton data type for output(s) {', '.join(unknown)}: left out (Triton reads them)")
    return [
        *block("input", [(t, dims_of(t, True)) for t in io.inputs]),
        *block("output", [(o, dims_of(o, False)) for o in outputs]),
    ]
