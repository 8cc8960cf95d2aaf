"""Multiply-accumulate counting of an ONNX model (Conv, Gemm, MatMul) via ONNX shape inference."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from tuner.errors import ModelError

# Initializers up to this many elements keep their data for shape inference (Reshape targets,
# Slice bounds, ...); larger float weights only need their dims.
_KEEP_DATA_ELEMENTS = 1024
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def _shape_of(value: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def count_macs(model: onnx.ModelProto, batch: int = 1) -> int:
    """Multiply-accumulates of one inference of ``batch`` samples: Conv (grouped and depthwise
    included), Gemm and MatMul. Shapes come from ONNX shape inference with the first dimension of
    every graph input set to ``batch``. Raises :class:`ModelError` when a counted operator's shape
    cannot be inferred."""
    if batch < 1:
        raise ModelError(f"batch must be >= 1, got {batch}")
    light = onnx.ModelProto()
    light.CopyFrom(model)
    graph = light.graph
    initializer_names = set()
    for init in graph.initializer:
        initializer_names.add(init.name)
        elements = int(np.prod(init.dims)) if len(init.dims) else 1
        if init.data_type in _FLOAT_TYPES and elements > _KEEP_DATA_ELEMENTS:
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.ClearField("double_data")
            init.ClearField("int32_data")
            init.ClearField("external_data")
            init.ClearField("data_location")
    for value in graph.input:
        if value.name in initializer_names:
            continue
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape") and len(tensor_type.shape.dim) > 0:
            dim = tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_value = batch
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError) as exc:
        raise ModelError(f"shape inference failed: {exc}") from exc

    shapes: dict[str, list[int | None] | None] = {}
    ig = inferred.graph
    for value in [*ig.input, *ig.value_info, *ig.output]:
        shapes[value.name] = _shape_of(value)
    for init in ig.initializer:
        shapes[init.name] = list(init.dims)

    def known(tensor: str, node: onnx.NodeProto) -> list[int]:
        shape = shapes.get(tensor)
        if shape is None or any(d is None for d in shape):
            raise ModelError(
                f"cannot count MACs: shape of {tensor!r} (input/output of {node.op_type} node "
                f"{node.name!r}) is not known after shape inference"
            )
        return [int(d) for d in shape]  # type: ignore[arg-type]

    total = 0
    for node in ig.node:
        if node.op_type == "Conv":
            weight = known(node.input[1], node)  # [C_out, C_in / group, k...]
            out = known(node.output[0], node)  # [N, C_out, spatial...]
            total += int(np.prod(out, dtype=np.int64)) * int(np.prod(weight[1:], dtype=np.int64))
        elif node.op_type == "Gemm":
            a = known(node.input[0], node)
            out = known(node.output[0], node)
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            total += out[0] * out[1] * k
        elif node.op_type == "MatMul":
            a = known(node.input[0], node)
            out = known(node.output[0], node)
            k = a[-1]
            total += int(np.prod(out, dtype=np.int64)) * k
        elif node.op_type in ("If", "Loop", "Scan"):
            raise ModelError(f"cannot count MACs: control-flow node {node.name!r} ({node.op_type})")
    return int(total)
