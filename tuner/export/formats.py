"""Exporters: a :class:`~tuner.export.select.Selection` -> the text of a deployable file.

=============  ===========================================================================================
``tuner``      a workload YAML with every axis fixed; ``tuner run FILE`` re-measures it as is and
               ``tuner run FILE --verify`` checks it against the study's figures (alias: ``yaml``)
``json``       provenance, params, metrics and the workload section (backend, model, options)
``env``        shell variables (``export TUNER_POOL_SIZE=2``, ``OMP_NUM_THREADS=...``) to ``source``
``onnxruntime`` session options JSON (``intra_op_num_threads``, ``inter_op_num_threads``,
               ``execution_mode``, ``graph_optimization_level``, session config entries, providers)
               plus the pool shape and the ``inputs`` fed (shape, dtype, data); :func:`ort_session_options`
               turns it into ``SessionOptions``
``openvino``   ``compile_model`` properties (``NUM_STREAMS``, ``INFERENCE_NUM_THREADS``,
               ``PERFORMANCE_HINT``, ``PERFORMANCE_HINT_NUM_REQUESTS``, ``INFERENCE_PRECISION_HINT``),
               the ``reshape`` shapes and a ``benchmark_app`` line with ``-shape``
``triton``     a Triton ``config.pbtxt``: ``instance_group`` (count = pool size, ``KIND_CPU``),
               ``max_batch_size``, ``input`` / ``output`` (``data_type``, ``dims``), ``dynamic_batching``,
               ONNX Runtime thread parameters
=============  ===========================================================================================

Axis mapping: ``pool_size`` = independent runtime instances (ORT sessions, OpenVINO streams, Triton
instances); ``threads`` = compute threads per instance; ``requests_per_sync`` = requests in flight per
instance (OpenVINO infer requests per stream; for Triton, client concurrency); ``batch_size`` = samples
per request. Every file carries the provenance record (:mod:`tuner.export.provenance`). Shapes: the
workload's declared ``inputs:`` at the trial's values (``batch``, dimension axes such as ``image_size``),
else the model's signature (:mod:`tuner.export.model_io`); Triton's ``dims`` leave the batch out when
``max_batch_size`` > 0, and a model whose batch is not dimension 0 of every input and output gets
``max_batch_size: 0`` with full shapes.

The renderers live in :mod:`tuner.export.generic_formats` (``tuner``, ``json``, ``env``) and
:mod:`tuner.export.runtime_formats` (``onnxruntime``, ``openvino``, ``triton``), their shared helpers in
:mod:`tuner.export.common`; this module names the formats and dispatches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tuner.errors import SpecError
from tuner.export.common import _safe_name
from tuner.export.generic_formats import _env, _json_format, _tuner
from tuner.export.runtime_formats import _onnxruntime, _openvino, _triton
from tuner.export.select import Selection

__all__ = ["ALIASES", "FORMATS", "default_filename", "render"]

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


_RENDERERS: dict[str, Callable[[Selection, Path | None], str]] = {
    "tuner": _tuner,
    "json": _json_format,
    "env": _env,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "triton": _triton,
}
