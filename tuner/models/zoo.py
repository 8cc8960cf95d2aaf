"""Model zoo: reference inference graphs built offline with the onnx helper API, cached on disk.

The graphs carry random (seeded) float32 weights: throughput and latency do not depend on the
values, only on the operators and shapes. Batch normalisation is folded away (every Conv has a
bias). Every graph has one input ``input`` with a dynamic first dimension named ``batch`` and one
output ``logits``.

A workload refers to a zoo graph as ``zoo:<name>``; :func:`resolve_model` turns such a reference
(or a plain file path) into a file on disk, building and caching the graph on first use.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from tuner.errors import ModelError

__all__ = [
    "IR_VERSION",
    "OPSET",
    "ZOO_NAMES",
    "ZOO_PREFIX",
    "ZOO_VERSION",
    "build_model",
    "check_model_file",
    "count_macs",
    "default_cache_dir",
    "resolve_model",
    "zoo_file_name",
    "zoo_path",
]

ZOO_VERSION = "1"
"""Bump when any graph changes: cached files are keyed by it, so old files are never reused."""

ZOO_NAMES: tuple[str, ...] = ("resnet50", "mobilenet_v2", "tiny")
ZOO_PREFIX = "zoo:"
OPSET = 17
IR_VERSION = 8  # the IR version of ONNX 1.12, which introduced opset 17; onnxruntime >= 1.12 loads it
SEED = 0

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


# --------------------------------------------------------------------------------------------------
# graph building


class _GraphBuilder:
    """Accumulates nodes and initializers of an NCHW float32 conv net, tracking channel counts."""

    def __init__(self, name: str, seed: int = SEED) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._rng = np.random.default_rng(seed)
        self._counter = 0

    def _unique(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def _weight(self, name: str, shape: Sequence[int], std: float) -> str:
        data = self._rng.standard_normal(tuple(shape), dtype=np.float32)
        data *= np.float32(std)
        self.initializers.append(numpy_helper.from_array(data, name=name))
        return name

    def _const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name=name))
        return name

    def conv(
        self,
        x: str,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        group: int = 1,
        gain: float = 1.0,
    ) -> str:
        """Conv with bias, 'same'-style symmetric padding ``kernel // 2``."""
        name = self._unique("conv")
        fan_in = (in_ch // group) * kernel * kernel
        w = self._weight(f"{name}.weight", (out_ch, in_ch // group, kernel, kernel), gain * (2.0 / fan_in) ** 0.5)
        b = self._weight(f"{name}.bias", (out_ch,), 0.01)
        pad = kernel // 2
        out = f"{name}_out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, b],
                [out],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=group,
            )
        )
        return out

    def relu(self, x: str) -> str:
        name = self._unique("relu")
        self.nodes.append(helper.make_node("Relu", [x], [f"{name}_out"], name=name))
        return f"{name}_out"

    def relu6(self, x: str) -> str:
        if not any(t.name == "relu6.min" for t in self.initializers):
            self._const("relu6.min", np.array(0.0, dtype=np.float32))
            self._const("relu6.max", np.array(6.0, dtype=np.float32))
        name = self._unique("relu6")
        self.nodes.append(helper.make_node("Clip", [x, "relu6.min", "relu6.max"], [f"{name}_out"], name=name))
        return f"{name}_out"

    def add(self, a: str, b: str) -> str:
        name = self._unique("add")
        self.nodes.append(helper.make_node("Add", [a, b], [f"{name}_out"], name=name))
        return f"{name}_out"

    def max_pool(self, x: str, kernel: int, stride: int, pad: int) -> str:
        name = self._unique("maxpool")
        self.nodes.append(
            helper.make_node(
                "MaxPool",
                [x],
                [f"{name}_out"],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        return f"{name}_out"

    def head(self, x: str, in_features: int, classes: int) -> str:
        """Global average pool, flatten, fully connected layer to ``classes`` logits."""
        gap = self._unique("gap")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{gap}_out"], name=gap))
        flat = self._unique("flatten")
        self.nodes.append(helper.make_node("Flatten", [f"{gap}_out"], [f"{flat}_out"], name=flat, axis=1))
        w = self._weight("fc.weight", (classes, in_features), (1.0 / in_features) ** 0.5)
        b = self._weight("fc.bias", (classes,), 0.01)
        self.nodes.append(helper.make_node("Gemm", [f"{flat}_out", w, b], [OUTPUT_NAME], name="fc", transB=1))
        return OUTPUT_NAME

    def model(self, in_ch: int, size: int, classes: int, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, in_ch, size, size])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, classes])],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="tuner.models.zoo",
            producer_version=ZOO_VERSION,
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, {"tuner.zoo.name": self.name, "tuner.zoo.version": ZOO_VERSION})
        return model


def _build_resnet50() -> onnx.ModelProto:
    """ResNet-50 v1.5: bottleneck blocks [3, 4, 6, 3], stride 2 on the 3x3 conv of a stage's first block."""
    g = _GraphBuilder("resnet50")
    x = g.relu(g.conv(INPUT_NAME, 3, 64, 7, stride=2))
    x = g.max_pool(x, 3, 2, 1)
    in_ch = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        out_ch = width * 4
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            y = g.relu(g.conv(x, in_ch, width, 1))
            y = g.relu(g.conv(y, width, width, 3, stride=stride))
            # a small gain on the last conv of the residual branch keeps activations bounded
            # without batch norm (zero-init-residual in spirit), so no inf/NaN/denormal arithmetic
            y = g.conv(y, width, out_ch, 1, gain=0.2)
            shortcut = x if block > 0 else g.conv(x, in_ch, out_ch, 1, stride=stride)
            x = g.relu(g.add(y, shortcut))
            in_ch = out_ch
    g.head(x, in_ch, 1000)
    return g.model(3, 224, 1000, "ResNet-50 v1.5 (batch norm folded, random weights), 224x224, 1000 classes")


def _make_divisible(value: float, divisor: int = 8) -> int:
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _build_mobilenet_v2() -> onnx.ModelProto:
    """MobileNetV2 1.0 at 224x224: inverted residuals with depthwise 3x3 convs and ReLU6."""
    g = _GraphBuilder("mobilenet_v2")
    settings = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    in_ch = _make_divisible(32)
    x = g.relu6(g.conv(INPUT_NAME, 3, in_ch, 3, stride=2))
    for expand, channels, repeats, first_stride in settings:
        out_ch = _make_divisible(channels)
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            hidden = in_ch * expand
            y = x
            if expand != 1:
                y = g.relu6(g.conv(y, in_ch, hidden, 1))
            y = g.relu6(g.conv(y, hidden, hidden, 3, stride=stride, group=hidden))
            y = g.conv(y, hidden, out_ch, 1, gain=0.5)  # linear bottleneck
            x = g.add(x, y) if stride == 1 and in_ch == out_ch else y
            in_ch = out_ch
    last = _make_divisible(1280)
    x = g.relu6(g.conv(x, in_ch, last, 1))
    g.head(x, last, 1000)
    return g.model(3, 224, 1000, "MobileNetV2 1.0 (batch norm folded, random weights), 224x224, 1000 classes")


def _build_tiny() -> onnx.ModelProto:
    """A tiny conv net for tests: 3x32x32 -> two strided 3x3 convs -> pool -> 10 classes."""
    g = _GraphBuilder("tiny")
    x = g.relu(g.conv(INPUT_NAME, 3, 8, 3, stride=2))
    x = g.relu(g.conv(x, 8, 16, 3, stride=2))
    g.head(x, 16, 10)
    return g.model(3, 32, 10, "Tiny test conv net (random weights), 32x32, 10 classes")


_BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet50": _build_resnet50,
    "mobilenet_v2": _build_mobilenet_v2,
    "tiny": _build_tiny,
}
assert tuple(_BUILDERS) == ZOO_NAMES


def _unknown_name(name: str) -> ModelError:
    return ModelError(f"unknown zoo model {name!r}; valid names: {', '.join(ZOO_NAMES)}")


def build_model(name: str) -> onnx.ModelProto:
    """Build zoo graph ``name`` in memory and validate it with the ONNX checker."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise _unknown_name(name)
    model = builder()
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # a bug in a builder, never user input
        raise ModelError(f"zoo model {name!r} failed the ONNX checker: {exc}") from exc
    return model


# --------------------------------------------------------------------------------------------------
# cache


def default_cache_dir() -> Path:
    """``$TUNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tuner/zoo``, else ``~/.cache/tuner/zoo``."""
    env = os.environ.get("TUNER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tuner" / "zoo"


def zoo_file_name(name: str) -> str:
    """The cache file name of zoo graph ``name`` at the current :data:`ZOO_VERSION`."""
    if name not in _BUILDERS:
        raise _unknown_name(name)
    return f"{name}-v{ZOO_VERSION}.onnx"


def zoo_path(name: str, cache_dir: Path | None = None) -> Path:
    """The cached ``.onnx`` file of zoo graph ``name``, built and written on first use.

    The file is written atomically (temporary file in the same directory, fsync, rename), so a
    crash never leaves a partial file under the final name and concurrent builders are safe: each
    renames a complete file into place and the last rename wins.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / zoo_file_name(name)
    if target.is_file():
        return target
    model = build_model(name)
    data = model.SerializeToString()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create zoo cache directory {directory}: {exc}") from exc
    _atomic_write(target, data)
    return target


def _atomic_write(target: Path, data: bytes) -> None:
    tmp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            mode="wb", delete=False, dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # NamedTemporaryFile creates 0600; the cache is plain readable data
        os.replace(tmp_name, target)
        tmp_name = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise ModelError(f"cannot write zoo model {target}: {exc}") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows fsync on a directory (not on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# references and files


def resolve_model(ref: str, base_dir: Path) -> Path:
    """Turn a workload's model reference into a file on disk.

    ``zoo:<name>`` builds (or reuses) the cached zoo graph; anything else is a file path, relative
    paths being resolved against ``base_dir`` (the workload file's directory). The file's content is
    not loaded here; see :func:`check_model_file`.
    """
    if ref.startswith(ZOO_PREFIX):
        name = ref[len(ZOO_PREFIX) :].strip()
        if name not in _BUILDERS:
            raise ModelError(f"unknown zoo model in reference {ref!r}; valid names: {', '.join(ZOO_NAMES)}")
        return zoo_path(name)
    if not ref.strip():
        raise ModelError("empty model reference; expected zoo:<name> or a path to an .onnx file")
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise ModelError(f"model file not found: {ref!r} (looked for {path})")
    if not path.is_file():
        raise ModelError(f"model reference {ref!r} is not a file: {path}")
    return path


def check_model_file(path: Path) -> None:
    """Raise :class:`ModelError` unless ``path`` holds a loadable, valid ONNX model.

    The checker is given the path rather than a loaded proto, so models over 2 GB and models
    with external data are checked too.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        if path.stat().st_size == 0:
            raise ModelError(f"{path} is not a valid ONNX model: the file is empty")
        onnx.checker.check_model(str(path))
    except ModelError:
        raise
    except (onnx.checker.ValidationError, DecodeError, OSError, ValueError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not a valid ONNX model: {message}") from exc


# --------------------------------------------------------------------------------------------------
# MAC counting

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
