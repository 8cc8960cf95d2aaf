"""Exporters: a :class:`~tuner.export.select.Selection` -> the text of a deployable file.

=============  ===========================================================================================
``tuner``      a workload YAML with every axis fixed; ``tuner run FILE`` re-measures it as is and
               ``tuner run FILE --verify`` checks it against the study's figures (alias: ``yaml``)
``json``       provenance, params, metrics and the workload section (backend, model, options)
``env``        shell variables (``export TUNER_POOL_SIZE=2``, ``OMP_NUM_THREADS=...``) to ``source``
``onnxruntime`` session options JSON (``intra_op_num_threads``, ``inter_op_num_threads``,
               ``execution_mode``, ``graph_optimization_level``, session config entries, providers)
               plus the pool shape; :func:`ort_session_options` turns it into ``SessionOptions``
``openvino``   ``compile_model`` properties (``NUM_STREAMS``, ``INFERENCE_NUM_THREADS``,
               ``PERFORMANCE_HINT``, ``PERFORMANCE_HINT_NUM_REQUESTS``, ``INFERENCE_PRECISION_HINT``)
``triton``     a Triton ``config.pbtxt``: ``instance_group`` (count = pool size, ``KIND_CPU``),
               ``max_batch_size``, ``dynamic_batching``, ONNX Runtime thread parameters
=============  ===========================================================================================

Axis mapping: ``pool_size`` = independent runtime instances (ORT sessions, OpenVINO streams, Triton
instances); ``threads`` = compute threads per instance; ``requests_per_sync`` = requests in flight per
instance (OpenVINO infer requests per stream; for Triton, client concurrency); ``batch_size`` = samples
per request. Every file carries the provenance record (:mod:`tuner.export.provenance`).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tuner.errors import SpecError
from tuner.export.provenance import comment_header
from tuner.export.select import Selection

__all__ = ["ALIASES", "FORMATS", "default_filename", "ort_session_options", "render"]

FORMATS = ("tuner", "json", "env", "onnxruntime", "openvino", "triton")
ALIASES = {"yaml": "tuner", "workload": "tuner", "ort": "onnxruntime", "ov": "openvino", "pbtxt": "triton"}
_SUFFIX = {
    "tuner": ".yaml",
    "json": ".json",
    "env": ".env",
    "onnxruntime": ".ort.json",
    "openvino": ".openvino.json",
    "triton": ".pbtxt",
}

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


def canonical(fmt: str) -> str:
    name = str(fmt).strip().lower()
    name = ALIASES.get(name, name)
    if name not in FORMATS:
        raise SpecError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)} (or {', '.join(ALIASES)})")
    return name


def default_filename(selection: Selection, fmt: str) -> str:
    fmt = canonical(fmt)
    if fmt == "triton":
        return "config.pbtxt"
    return _safe_name(selection.workload_name) + _SUFFIX[fmt]


def render(selection: Selection, fmt: str, *, base_dir: Path | None = None) -> str:
    """The exported file's text. ``base_dir``: where a relative model path of the workload resolves
    (default: the stored workload path's folder, else the current directory)."""
    fmt = canonical(fmt)
    return _RENDERERS[fmt](selection, base_dir)


# ------------------------------------------------------------------------------------------- helpers


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _workload(selection: Selection) -> dict[str, Any]:
    import yaml

    if not selection.workload_text:
        return {}
    try:
        data = yaml.safe_load(selection.workload_text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _options(selection: Selection) -> dict[str, Any]:
    """The backend options the trial ran with: the fixed ``workload.options`` plus searched ``options.*``."""
    section = _workload(selection).get("workload") or {}
    options = dict(section.get("options") or {})
    for key, value in selection.params.items():
        if key.startswith("options."):
            options[key[len("options.") :]] = value
    return options


def _backend(selection: Selection) -> str:
    return str((_workload(selection).get("workload") or {}).get("backend") or "onnxruntime")


def _axis(selection: Selection, name: str) -> int:
    value = selection.params.get(name, 1)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _ort_options(selection: Selection) -> tuple[Any, list[str]]:
    from tuner.backends.onnxruntime import OrtOptions

    notes: list[str] = []
    options = _options(selection)
    backend = _backend(selection)
    if backend == "onnxruntime":
        known = {k: v for k, v in options.items() if k in OrtOptions.model_fields}
        return OrtOptions.model_validate(known), notes
    notes.append(
        f"the study ran on the {backend!r} backend: ONNX Runtime's own options are at their defaults here; "
        "the pool shape and thread counts come from the study"
    )
    return OrtOptions(), notes


def _json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str) + "\n"


# ------------------------------------------------------------------------------------------- formats


def _tuner(selection: Selection, base_dir: Path | None) -> str:
    import yaml

    data = _workload(selection)
    if not data:
        raise SpecError(
            f"study {selection.study!r} stores no workload text, so it cannot be exported as a workload file; "
            "use --format json"
        )
    notes: list[str] = []
    workload = dict(data.get("workload") or {})
    options = dict(workload.get("options") or {})
    search: dict[str, Any] = {}
    for key, value in selection.params.items():
        if key.startswith("options."):
            options[key[len("options.") :]] = value
        else:
            search[key] = value
    if options:
        workload["options"] = options
    # relative paths were relative to the original workload file: make them absolute where they resolve
    anchors = [base_dir] if base_dir else []
    if selection.workload_path:
        anchors.append(Path(selection.workload_path).expanduser().parent)
    anchors.append(Path.cwd())
    for key in ("model", "images", "cwd"):
        value = workload.get(key)
        if not isinstance(value, str) or not value or value.startswith("zoo:") or Path(value).is_absolute():
            continue
        found = next((a / value for a in anchors if (a / value).exists()), None)
        if found is not None:
            workload[key] = str(found.resolve())
        else:
            notes.append(f"workload.{key} {value!r} is relative to the original workload file's folder")
    # every section as the study had it (whatever the schema holds), the search fixed, the study minimal
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "workload":
            out[key] = workload
        elif key == "search":
            out[key] = search
        elif key != "study":
            out[key] = value
    out.setdefault("search", search)
    study = dict(data.get("study") or {})
    out["study"] = {"sampler": "grid", "trials": 1} | {
        k: study[k] for k in ("trial_timeout_s", "memory_limit_mb") if k in study
    }
    header = comment_header(selection.provenance(notes), fmt="tuner", verify_hint=True)
    body = yaml.safe_dump(out, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return header + body


def _json_format(selection: Selection, base_dir: Path | None) -> str:
    section = _workload(selection).get("workload") or {}
    doc = {
        "provenance": selection.provenance(),
        "params": dict(selection.params),
        "metrics": dict(selection.metrics),
        "workload": {
            "kind": section.get("kind", "pool"),
            "backend": section.get("backend"),
            "model": section.get("model"),
            "options": _options(selection),
        },
    }
    return _json(doc)


def _env_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "''"
    return shlex.quote(str(value))


def _env(selection: Selection, base_dir: Path | None) -> str:
    threads = _axis(selection, "threads")
    lines = [
        comment_header(selection.provenance(), fmt="env").rstrip("\n"),
        "# source this file (. ./FILE): the tuned settings as environment variables",
        f"export TUNER_STUDY={_env_value(selection.study)}",
        f"export TUNER_TRIAL={selection.number}",
        f"export TUNER_PLATFORM_TAG={_env_value(selection.platform_tag)}",
    ]
    for key, value in selection.params.items():
        if key.startswith("options."):
            continue
        lines.append(f"export TUNER_{_env_name(key)}={_env_value(value)}")
    for key, value in _options(selection).items():
        if isinstance(value, dict | list):
            value = json.dumps(value)
        lines.append(f"export TUNER_OPTION_{_env_name(key)}={_env_value(value)}")
    lines += [
        "# compute threads per instance, for runtimes that read the usual variables",
        f"export OMP_NUM_THREADS={threads}",
        f"export MKL_NUM_THREADS={threads}",
        f"export OPENBLAS_NUM_THREADS={threads}",
        "# what the study measured (for checks and dashboards)",
    ]
    for key, name in (("qps", "QPS"), ("latency_p50_ms", "P50_MS"), ("latency_p99_ms", "P99_MS")):
        value = selection.metrics.get(key)
        if isinstance(value, int | float):
            lines.append(f"export TUNER_EXPECTED_{name}={float(value):.6g}")
    return "\n".join(lines) + "\n"


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


_RENDERERS: dict[str, Callable[[Selection, Path | None], str]] = {
    "tuner": _tuner,
    "json": _json_format,
    "env": _env,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "triton": _triton,
}
