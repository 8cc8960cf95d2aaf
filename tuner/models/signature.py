"""A model's input signature -- names, dtypes and dimensions (fixed, named-open, unknown) -- read from its file.

ONNX files are read with ``onnx`` without loading external data (a model of several GB with ``.data``
files next to it is read in milliseconds); OpenVINO IR (``.xml``) with OpenVINO when it is installed.
:mod:`tuner.models.feeds` checks a workload's declared inputs against this, and ``tuner init`` drafts a
workload file from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import ModelError
from tuner.text import first_line

#: ONNX TensorProto element type -> numpy dtype name
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
}

Dim = int | str | None
"""A dimension: a fixed size, the name of an open one (ONNX ``dim_param``), or None (open, unnamed)."""


@dataclass(frozen=True)
class ModelInput:
    """One model input. ``dims`` None: the rank itself is unknown."""

    name: str
    dtype: str
    dims: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)

    def open_dims(self) -> tuple[int, ...]:
        """Indices of the dimensions the model leaves open."""
        return tuple(i for i, d in enumerate(self.dims or ()) if not isinstance(d, int))

    def first_mismatch(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """Where ``shape`` disagrees with the model: ``(-1, rank)`` for a wrong rank, ``(i, fixed size)`` for
        the first dimension the model fixes otherwise; None when it fits (or the rank is unknown)."""
        if self.dims is None:
            return None
        if len(shape) != len(self.dims):
            return -1, len(self.dims)
        for i, (got, want) in enumerate(zip(shape, self.dims, strict=True)):
            if isinstance(want, int) and got != want:
                return i, want
        return None

    def shown(self) -> str:
        """``[batch, 3, ?, ?]``: the dims as messages show them."""
        if self.dims is None:
            return "[dynamic rank]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def read_signature(path: Path) -> tuple[ModelInput, ...]:
    """The graph inputs of the model at ``path`` (initializers excluded), in the model's order."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return _openvino_signature(path)
    return _onnx_signature(path)


def _onnx_signature(path: Path) -> tuple[ModelInput, ...]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises DecodeError, OSError, ValueError ...
        raise ModelError(f"{path} is not a readable ONNX model: {first_line(err)}") from None
    initializers = {i.name for i in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor.elem_type, f"onnx type {tensor.elem_type}")
        dims: tuple[Dim, ...] | None
        if not tensor.HasField("shape"):
            dims = None
        else:
            dims = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                for d in tensor.shape.dim
            )
        out.append(ModelInput(value.name, dtype, dims))
    return tuple(out)


def _openvino_signature(path: Path) -> tuple[ModelInput, ...]:
    try:
        import openvino as ov
    except ImportError:
        raise ModelError(f"{path}: reading an OpenVINO IR needs openvino: pip install 'tuner[openvino]'") from None
    try:
        model = ov.Core().read_model(str(path))
    except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
        raise ModelError(f"OpenVINO could not read {path}: {first_line(err)}") from None
    return openvino_signature(model)


def openvino_signature(model: Any) -> tuple[ModelInput, ...]:
    """The inputs of an OpenVINO model already read (``ov.Model`` or a compiled model): port names, dims, dtypes."""
    out = []
    for port in model.inputs:
        pshape = port.get_partial_shape()
        dims: tuple[Dim, ...] | None = None
        if not pshape.rank.is_dynamic:
            dims = tuple(None if d.is_dynamic else d.get_length() for d in pshape)
        dtype = str(port.get_element_type().to_dtype())
        out.append(ModelInput(port.get_any_name(), dtype, dims))
    return tuple(out)
