"""What the exported configuration feeds its model and what comes out: names, dtypes and shapes.

The study stores the workload text and the trial's params, so an export rebuilds the trial's input plan
(:func:`tuner.config.inputs.plan_inputs` of the file's ``inputs:`` -- ``workload.inputs`` or a pipeline
infer stage's -- with ``batch`` and the dimension axes set to the trial's values) and, where the model file
can be found, checks it against the model's signature with the feeding rules every backend uses
(:func:`tuner.models.feeds.resolve_feeds`). Outputs come from the model file (ONNX graph outputs).

:func:`model_io` gives one :class:`ModelIO` record; the runtime formats render it (Triton ``input`` /
``output`` entries, OpenVINO ``reshape`` and ``benchmark_app -shape``, an ``inputs`` block for ONNX Runtime).
:func:`shape_text` is the one way a shape is written (``[1,3,320,320]``; an open dimension ``-1``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.config.inputs import InputDecl, declared_inputs, dimension_axes, plan_inputs
from tuner.config.models import WorkloadSection
from tuner.errors import InputError, ModelError
from tuner.export.common import _anchors, _backend, _options, _workload
from tuner.export.select import Selection
from tuner.models.feeds import resolve_feeds
from tuner.models.signature import Dim, ModelInput, read_signature
from tuner.text import first_line

__all__ = ["ModelIO", "Tensor", "model_io", "named_shapes", "precision_record", "shape_text"]

#: an open dimension, as Triton, OpenVINO and ONNX Runtime write it
OPEN = -1


@dataclass(frozen=True)
class Tensor:
    """One model input or output as the configuration uses it.

    ``shape``: the concrete shape of one request (``batch_size`` samples on ``batch_axis``), ``-1`` where
    the dimension stays open (an output's, or an input the export could not size). ``batch_open``: the
    model leaves the batch dimension open (any batch size), which Triton's implicit batching needs.
    """

    name: str
    dtype: str | None
    shape: tuple[int, ...]
    batch_axis: int | None = 0
    batch_open: bool = True
    data: Mapping[str, Any] | None = None
    declared: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype, "batch_axis": self.batch_axis}
        if self.data is not None:
            out["data"] = dict(self.data)
        return out


@dataclass(frozen=True)
class ModelIO:
    """The inputs and outputs of the exported configuration.

    ``source``: ``declared`` (the workload's ``inputs:``, checked against the model when it was found),
    ``model`` (the model's signature, nothing declared) or ``none`` (neither: the formats leave the
    shapes out). ``model``: the model file read, if any.
    """

    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    source: str = "none"
    model: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def known(self) -> bool:
        """Whether the input shapes are known (declared, or read from the model)."""
        return bool(self.inputs)

    @property
    def dtypes_known(self) -> bool:
        return self.known and all(t.dtype for t in self.inputs)


def shape_text(shape: Iterable[int]) -> str:
    """``[1,3,320,320]`` (``[]`` for a scalar): how every export writes a shape."""
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def named_shapes(tensors: Sequence[Tensor]) -> str:
    """``images[1,3,320,320],sr[]``: benchmark_app's ``-shape`` value."""
    return ",".join(f"{t.name}{shape_text(t.shape)}" for t in tensors)


# ------------------------------------------------------------------------------------------ building


def model_io(selection: Selection, base_dir: Path | None) -> ModelIO:
    """The configuration's inputs and outputs (see the module docstring); never raises for a missing model."""
    notes: list[str] = []
    plan, batch = _plan(selection, base_dir, notes)
    path = _model_path(selection, base_dir, notes)
    signature: tuple[ModelInput, ...] | None = None
    outputs: tuple[Tensor, ...] = ()
    if path is not None:
        try:
            signature = read_signature(path)
            outputs = _outputs(path)
        except ModelError as err:
            notes.append(f"the model's inputs and outputs could not be read: {first_line(err)}")
            signature = None
    if signature is not None:
        inputs = _from_signature(signature, plan, batch, notes)
        source = "declared" if plan else "model"
        return ModelIO(inputs, outputs, source, path, tuple(notes))
    if plan:
        inputs = tuple(
            Tensor(name, e.get("dtype"), tuple(e["shape"]), e.get("batch_axis"), True, e.get("data"), True)
            for name, e in plan.items()
            if e.get("shape") is not None
        )
        return ModelIO(inputs, (), "declared" if inputs else "none", None, tuple(notes))
    return ModelIO((), (), "none", None, tuple(notes))


def _plan(selection: Selection, base_dir: Path | None, notes: list[str]) -> tuple[dict[str, Any], int]:
    """The trial's input plan (empty when the file declares nothing) and its batch size."""
    data = _workload(selection)
    params = dict(selection.params)
    try:
        batch = int(params.get("batch_size", 1))
    except (TypeError, ValueError):
        batch = 1
    raw = data.get("workload")
    if not isinstance(raw, Mapping):
        return {}, batch
    try:
        decls: dict[str, InputDecl] = declared_inputs(WorkloadSection.model_validate(raw))
    except ValueError as err:  # pydantic's ValidationError is one
        notes.append(f"the stored workload's inputs could not be read: {first_line(err)}")
        return {}, batch
    if not decls:
        return {}, batch
    search = data.get("search") if isinstance(data.get("search"), Mapping) else {}
    for dim in dimension_axes(decls):
        if dim in params:
            continue
        value = _fixed_value(search.get(dim))
        if value is None:
            notes.append(f"the trial has no value for the dimension axis {dim!r}: input shapes left out")
            return {}, batch
        params[dim] = value
    anchors = _anchors(selection, base_dir)
    return plan_inputs(decls, params, anchors[0]), batch


def _fixed_value(raw: Any) -> Any:
    """The value a ``search:`` axis takes when nothing sets it: a scalar, a list's first, a range's low."""
    if isinstance(raw, list):
        return raw[0] if raw else None
    if isinstance(raw, Mapping):
        return raw.get("low")
    return raw


def _model_path(selection: Selection, base_dir: Path | None, notes: list[str]) -> Path | None:
    from tuner.models.zoo import ZOO_PREFIX, resolve_model

    section = _workload(selection).get("workload") or {}
    ref = section.get("model") if isinstance(section, Mapping) else None
    if not isinstance(ref, str) or not ref.strip():
        return None
    if ref.startswith(ZOO_PREFIX):
        try:
            return resolve_model(ref, Path.cwd())
        except ModelError as err:
            notes.append(f"model {ref!r}: {first_line(err)}")
            return None
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() else [a / path for a in _anchors(selection, base_dir)]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        notes.append(f"model file {ref!r} not found here: its inputs and outputs are not in this file")
    return found


def _from_signature(
    signature: Sequence[ModelInput], plan: Mapping[str, Any], batch: int, notes: list[str]
) -> tuple[Tensor, ...]:
    """The inputs by the feeding rules; an input nobody sized stays open (-1) with a note."""
    by_name = {m.name: m for m in signature}
    try:
        feeds = resolve_feeds(signature, plan, batch)
    except InputError as err:
        notes.append(f"the inputs are not fully sized: {first_line(err)}")
        return tuple(
            Tensor(m.name, m.dtype, tuple(_dim(d) for d in m.dims or ()), 0 if m.dims else None, _open(m, 0))
            for m in signature
        )
    return tuple(
        Tensor(
            f.name,
            f.dtype,
            tuple(f.shape),
            f.batch_axis,
            _open(by_name[f.name], f.batch_axis),
            dict(f.data) if f.declared else None,
            f.declared,
        )
        for f in feeds
    )


def _dim(d: Dim) -> int:
    return d if isinstance(d, int) else OPEN


def _open(model_input: ModelInput, axis: int | None) -> bool:
    if axis is None or model_input.dims is None:
        return model_input.dims is None
    return axis < len(model_input.dims) and not isinstance(model_input.dims[axis], int)


def _outputs(path: Path) -> tuple[Tensor, ...]:
    """The graph outputs of an ONNX model (open dimensions -1); an OpenVINO IR's where openvino is installed."""
    if path.suffix.lower() == ".xml":
        return _openvino_outputs(path)
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises DecodeError, OSError, ValueError ...
        raise ModelError(f"{path} is not a readable ONNX model: {first_line(err)}") from None
    out = []
    for value in model.graph.output:
        tensor = value.type.tensor_type
        try:
            dtype: str | None = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        except (KeyError, ValueError, TypeError):
            dtype = None
        dims: tuple[Dim, ...] = ()
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        shape = tuple(_dim(d) for d in dims)
        out.append(Tensor(value.name, dtype, shape, 0 if shape else None, bool(shape) and shape[0] == OPEN))
    return tuple(out)


def _openvino_outputs(path: Path) -> tuple[Tensor, ...]:
    try:
        import openvino as ov
    except ImportError:
        return ()
    try:
        model = ov.Core().read_model(str(path))
    except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
        raise ModelError(f"OpenVINO could not read {path}: {first_line(err)}") from None
    out = []
    for port in model.outputs:
        pshape = port.get_partial_shape()
        shape: tuple[int, ...] = ()
        if not pshape.rank.is_dynamic:
            shape = tuple(OPEN if d.is_dynamic else d.get_length() for d in pshape)
        dtype = str(port.get_element_type().to_dtype())
        out.append(Tensor(port.get_any_name(), dtype, shape, 0 if shape else None, bool(shape) and shape[0] == OPEN))
    return tuple(out)


# ------------------------------------------------------------------------------------------ precision


def precision_record(selection: Selection, base_dir: Path | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The model file the trial's ``precision`` option ran, and notes; None when the options name no precision.

    ``{"precision", "path", "sha256", "source", "source_sha256", "key", "settings"}`` of the variant
    (:mod:`tuner.models.precision`; its key recomputed from the model, the precision, the quantization settings
    and the trial's inputs, and looked up in this machine's variant cache -- an export never builds one), or
    ``{"precision", "path", "sha256"}`` of the model itself for ONNX Runtime's fp32 and OpenVINO's f32 / bf16 /
    f16 (an inference-precision hint of the same file). A variant missing here is a note, without path.
    """
    options = _options(selection)
    backend = _backend(selection)
    precision = options.get("precision")
    if backend not in ("onnxruntime", "openvino") or precision is None:
        return None, []
    notes: list[str] = []
    try:
        if backend == "onnxruntime":
            from tuner.backends.onnxruntime import OrtOptions

            model = OrtOptions.model_validate({k: v for k, v in options.items() if k in OrtOptions.model_fields})
        else:
            from tuner.backends.openvino import OpenVinoOptions

            model = OpenVinoOptions.model_validate(options)
    except ValueError as err:  # pydantic's ValidationError is one
        return None, [f"the study's precision options could not be read: {first_line(err)}"]
    path = _model_path(selection, base_dir, notes)
    if path is None:
        return {"precision": precision}, notes + [f"precision {precision}: the model file was not found here"]
    if precision not in ("int8", "int8-dynamic", "fp16") or (backend == "openvino" and precision != "int8"):
        from tuner.models.precision import file_sha256

        return {"precision": precision, "path": str(path), "sha256": file_sha256(path)}, notes
    from tuner.models.precision import openvino_int8_variant, ort_variant

    plan, _batch = _plan(selection, base_dir, notes)
    try:
        if backend == "onnxruntime":
            variant = ort_variant(path, precision, model.quantization, plan, build=False)  # type: ignore[attr-defined]
        else:
            variant = openvino_int8_variant(path, model.quantization, plan, build=False)  # type: ignore[attr-defined]
    except (ModelError, InputError) as err:
        return {"precision": precision}, notes + [f"precision {precision}: {first_line(err)}"]
    if not variant.path.is_file():
        notes.append(
            f"precision {precision}: the variant (key {variant.key[:16]}) is not in this machine's cache "
            f"({variant.path}); tuner run of the exported workload builds it"
        )
        return {
            "precision": precision,
            "source": str(path),
            "key": variant.key,
            "settings": dict(variant.settings),
        }, notes
    return variant.record(), notes
