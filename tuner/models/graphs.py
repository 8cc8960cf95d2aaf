"""Zoo graph builders: the reference architectures, built in memory with the onnx helper API.

The graphs carry random (seeded) float32 weights: throughput and latency do not depend on the
values, only on the operators and shapes. Batch normalisation is folded away (every Conv has a
bias). Every graph has one input ``input`` with a dynamic first dimension named ``batch`` and one
output ``logits``. Caching and model references are in :mod:`tuner.models.zoo`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tuner.errors import ModelError

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
