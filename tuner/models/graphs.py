"""Zoo graph builders: the reference architectures, built in memory with the onnx helper API.

The graphs carry random (seeded) float32 weights: throughput and latency do not depend on the
values, only on the operators and shapes. Batch normalisation is folded away (every Conv has a
bias).

The three reference graphs (``resnet50``, ``mobilenet_v2``, ``tiny``) have one input ``input``
(float32, NCHW, a dynamic first dimension named ``batch``) and one output ``logits``. The four
small graphs ``detector_hw``, ``text_seq``, ``speech_state`` and ``two_inputs`` differ: they exist
so tests can exercise user models with declared inputs and open dimensions (more than one input,
int64 and rank-0 inputs, open dimensions other than the first, batch not first):

* ``detector_hw``: ``images`` float32 ``[batch, 3, height, width]`` (any height/width >= 32)
  -> ``scores`` float32 ``[batch, 10]``.
* ``text_seq``: ``input_ids`` and ``attention_mask``, both int64 ``[batch, seq_len]`` ->
  ``logits`` float32 ``[batch, 2]``. An id outside ``[0, TEXT_SEQ_VOCAB)`` fails at run time in
  ONNX Runtime (an out-of-bounds Gather): a model that rejects a value.
* ``speech_state`` (shaped like Silero VAD): ``audio`` float32 ``[batch, samples]``, ``sr`` int64
  rank 0, ``state`` float32 ``[2, batch, 64]`` -> ``prob`` float32 ``[batch, 1]`` and
  ``new_state`` float32 ``[2, batch, 64]``.
* ``two_inputs``: ``image`` float32 ``[batch, 3, 32, 32]`` and ``features`` float32
  ``[batch, 10]`` -> ``logits`` float32 ``[batch, 5]``.

One graph is *trained*, not random: ``digits`` (``input`` float32 ``[batch, 1, 8, 8]``, pixels in 0..1 ->
``logits`` ``[batch, 10]``), a small conv net trained at build time on scikit-learn's 8x8 digits
(:mod:`tuner.models.train_digits`; needs the ``precision`` extra), whose held-out split ships beside it as
labelled accuracy data: :data:`ZOO_ARRAYS` names the arrays, :func:`build_artifacts` builds the graph with
them.

Caching and model references are in :mod:`tuner.models.zoo`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tuner.errors import ModelError

ZOO_VERSION = "1"
"""Bump when any graph changes: cached files are keyed by it, so old files are never reused."""

ZOO_NAMES: tuple[str, ...] = (
    "resnet50",
    "mobilenet_v2",
    "tiny",
    "detector_hw",
    "text_seq",
    "speech_state",
    "two_inputs",
    "digits",
)
#: zoo graphs that ship arrays beside the model (a workload names one as ``zoo:<name>/<array>``): ``digits``' held-out
#: split, ``test_x`` (float32 ``[n, 1, 8, 8]``, the model's input as fed) and ``test_y`` (int64 labels ``[n]``)
ZOO_ARRAYS: dict[str, tuple[str, ...]] = {"digits": ("test_x", "test_y")}
ZOO_PREFIX = "zoo:"
OPSET = 17
IR_VERSION = 8  # the IR version of ONNX 1.12, which introduced opset 17; onnxruntime >= 1.12 loads it
SEED = 0

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"

TEXT_SEQ_VOCAB = 1000
"""Rows of ``text_seq``'s embedding table: valid ``input_ids`` are ``0 .. TEXT_SEQ_VOCAB - 1``."""


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

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: object) -> str:
        """Any single-output node; its output is named ``output`` or after the node."""
        name = self._unique(op_type.lower())
        out = output if output is not None else f"{name}_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def pool_flatten(self, x: str) -> str:
        """Global average pool and flatten: ``[N, C, ...]`` -> ``[N, C]``."""
        gap = self._unique("gap")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{gap}_out"], name=gap))
        flat = self._unique("flatten")
        self.nodes.append(helper.make_node("Flatten", [f"{gap}_out"], [f"{flat}_out"], name=flat, axis=1))
        return f"{flat}_out"

    def fc(self, x: str, in_features: int, out_features: int, output: str, name: str = "fc") -> str:
        """Fully connected layer (Gemm with bias) from ``[N, in_features]`` to ``output``."""
        w = self._weight(f"{name}.weight", (out_features, in_features), (1.0 / in_features) ** 0.5)
        b = self._weight(f"{name}.bias", (out_features,), 0.01)
        self.nodes.append(helper.make_node("Gemm", [x, w, b], [output], name=name, transB=1))
        return output

    def head(self, x: str, in_features: int, classes: int, output: str = OUTPUT_NAME) -> str:
        """Global average pool, flatten, fully connected layer to ``classes`` logits."""
        return self.fc(self.pool_flatten(x), in_features, classes, output)

    def model(self, in_ch: int, size: int, classes: int, doc: str) -> onnx.ModelProto:
        """The standard conv-net signature: ``input`` ``[batch, in_ch, size, size]`` -> ``logits``."""
        return self.finish(
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, in_ch, size, size])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, classes])],
            doc,
        )

    def finish(
        self, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto], doc: str
    ) -> onnx.ModelProto:
        """The model of the accumulated nodes with the given graph inputs and outputs."""
        graph = helper.make_graph(self.nodes, self.name, list(inputs), list(outputs), initializer=self.initializers)
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


# --------------------------------------------------------------------------------------------------
# small graphs with declared inputs and open dimensions (tests of user-model signatures)


def _tensor(name: str, elem_type: int, dims: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(dims))


def _build_detector_hw() -> onnx.ModelProto:
    """Open height and width: ``images`` [batch, 3, height, width] -> three strided 3x3 convs -> pool -> 10 scores."""
    g = _GraphBuilder("detector_hw")
    x = g.relu(g.conv("images", 3, 8, 3, stride=2))
    x = g.relu(g.conv(x, 8, 16, 3, stride=2))
    x = g.relu(g.conv(x, 16, 32, 3, stride=2))
    g.head(x, 32, 10, output="scores")
    return g.finish(
        [_tensor("images", TensorProto.FLOAT, [BATCH_DIM, 3, "height", "width"])],
        [_tensor("scores", TensorProto.FLOAT, [BATCH_DIM, 10])],
        "Small conv net with open height and width (random weights), any size >= 32, 10 scores",
    )


def _build_text_seq() -> onnx.ModelProto:
    """Token classifier: embedding lookup, masked by ``attention_mask``, mean over the sequence, 2 logits.

    Negative ids are mapped to ``TEXT_SEQ_VOCAB`` before the Gather (ONNX Gather would otherwise
    wrap ``-1 .. -TEXT_SEQ_VOCAB`` around), so every id outside ``[0, TEXT_SEQ_VOCAB)`` makes
    ONNX Runtime fail at run time with an out-of-bounds error.
    """
    width = 64
    g = _GraphBuilder("text_seq")
    table = g._weight("embedding.weight", (TEXT_SEQ_VOCAB, width), 1.0)
    zero = g._const("ids.zero", np.array(0, dtype=np.int64))
    oob = g._const("ids.out_of_bounds", np.array(TEXT_SEQ_VOCAB, dtype=np.int64))
    ids = g.op("Where", [g.op("Less", ["input_ids", zero]), oob, "input_ids"])
    emb = g.op("Gather", [table, ids], axis=0)  # [batch, seq_len, 64]
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    axes = g._const("mask.axes", np.array([2], dtype=np.int64))
    mask = g.op("Unsqueeze", [mask, axes])  # [batch, seq_len, 1]
    pooled = g.op("ReduceMean", [g.op("Mul", [emb, mask])], axes=[1], keepdims=0)  # [batch, 64]
    g.fc(pooled, width, 2, OUTPUT_NAME)
    ids_type = [BATCH_DIM, "seq_len"]
    return g.finish(
        [_tensor("input_ids", TensorProto.INT64, ids_type), _tensor("attention_mask", TensorProto.INT64, ids_type)],
        [_tensor(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 2])],
        f"Token classifier (random weights): vocabulary {TEXT_SEQ_VOCAB}, open sequence length, 2 classes",
    )


def _build_speech_state() -> onnx.ModelProto:
    """Stateful speech model shaped like Silero VAD: audio, a rank-0 sample rate, a state with batch second.

    energy = mean(audio ** 2) * (16000 / sr)  [batch, 1]
    new_state = tanh(state @ W + energy + b)  [2, batch, 64]
    prob = sigmoid(new_state[1] @ w_out + b_out)  [batch, 1]
    """
    width = 64
    g = _GraphBuilder("speech_state")
    power = g.op("Mul", ["audio", "audio"])
    energy = g.op("ReduceMean", [power], axes=[1], keepdims=1)  # [batch, 1]
    rate = g.op("Cast", ["sr"], to=TensorProto.FLOAT)
    scale = g.op("Div", [g._const("sr.reference", np.array(16000.0, dtype=np.float32)), rate])
    energy = g.op("Mul", [energy, scale])
    w = g._weight("state.weight", (width, width), 0.5 * (1.0 / width) ** 0.5)
    b = g._weight("state.bias", (width,), 0.01)
    mixed = g.op("MatMul", ["state", w])  # [2, batch, 64]
    pre = g.op("Add", [g.op("Add", [mixed, energy]), b])  # energy [batch, 1] broadcasts over [2, batch, 64]
    g.op("Tanh", [pre], output="new_state")
    last = g.op("Gather", ["new_state", g._const("state.last", np.array(1, dtype=np.int64))], axis=0)  # [batch, 64]
    g.op("Sigmoid", [g.fc(last, width, 1, "prob_logit", name="out")], output="prob")
    return g.finish(
        [
            _tensor("audio", TensorProto.FLOAT, [BATCH_DIM, "samples"]),
            _tensor("sr", TensorProto.INT64, []),
            _tensor("state", TensorProto.FLOAT, [2, BATCH_DIM, width]),
        ],
        [
            _tensor("prob", TensorProto.FLOAT, [BATCH_DIM, 1]),
            _tensor("new_state", TensorProto.FLOAT, [2, BATCH_DIM, width]),
        ],
        "Stateful speech model like Silero VAD (random weights): audio [batch, samples], sr, state [2, batch, 64]",
    )


def _build_two_inputs() -> onnx.ModelProto:
    """Two inputs of different rank: an image through a small conv net, concatenated with a feature vector."""
    g = _GraphBuilder("two_inputs")
    x = g.relu(g.conv("image", 3, 8, 3, stride=2))
    x = g.relu(g.conv(x, 8, 16, 3, stride=2))
    joined = g.op("Concat", [g.pool_flatten(x), "features"], axis=1)  # [batch, 16 + 10]
    g.fc(joined, 16 + 10, 5, OUTPUT_NAME)
    return g.finish(
        [
            _tensor("image", TensorProto.FLOAT, [BATCH_DIM, 3, 32, 32]),
            _tensor("features", TensorProto.FLOAT, [BATCH_DIM, 10]),
        ],
        [_tensor(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 5])],
        "Image [batch, 3, 32, 32] and features [batch, 10] (random weights), 5 classes",
    )


def _build_digits_with_data() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``digits``: trained on scikit-learn's 8x8 digits (:func:`tuner.models.train_digits.train`), and its
    held-out split."""
    from tuner.models.train_digits import CLASSES, train

    trained = train()
    g = _GraphBuilder("digits")
    c1, c2 = trained.conv1_w.shape[0], trained.conv2_w.shape[0]
    weights = [
        g._const(f"conv{i}.{part}", getattr(trained, f"conv{i}_{part[0]}"))
        for i in (1, 2)
        for part in ("weight", "bias")
    ]
    x = g.relu(g.op("Conv", [INPUT_NAME, *weights[:2]], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    x = g.relu(g.op("Conv", [x, *weights[2:]], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]))
    flat = g.op("Flatten", [x], axis=1)  # [batch, c2 * 4 * 4]
    g.op("Gemm", [flat, g._const("fc.weight", trained.fc_w), g._const("fc.bias", trained.fc_b)], OUTPUT_NAME, transB=1)
    model = g.model(1, 8, CLASSES, f"Digits classifier trained on scikit-learn's 8x8 digits: conv {c1}, conv {c2}, fc")
    return model, {"test_x": trained.test_x, "test_y": trained.test_y}


def _build_digits() -> onnx.ModelProto:
    return _build_digits_with_data()[0]


#: builders of the graphs that ship arrays (:data:`ZOO_ARRAYS`): the graph and its arrays from one build
_DATA_BUILDERS: dict[str, Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]] = {
    "digits": _build_digits_with_data
}

_BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet50": _build_resnet50,
    "mobilenet_v2": _build_mobilenet_v2,
    "tiny": _build_tiny,
    "detector_hw": _build_detector_hw,
    "text_seq": _build_text_seq,
    "speech_state": _build_speech_state,
    "two_inputs": _build_two_inputs,
    "digits": _build_digits,
}
assert tuple(_BUILDERS) == ZOO_NAMES
assert set(_DATA_BUILDERS) == set(ZOO_ARRAYS)


def _unknown_name(name: str) -> ModelError:
    return ModelError(f"unknown zoo model {name!r}; valid names: {', '.join(ZOO_NAMES)}")


def build_model(name: str) -> onnx.ModelProto:
    """Build zoo graph ``name`` in memory and validate it with the ONNX checker."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise _unknown_name(name)
    return _checked(name, builder())


def build_artifacts(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Zoo graph ``name`` and the arrays it ships (:data:`ZOO_ARRAYS`; empty for a random-weight graph), built once."""
    data_builder = _DATA_BUILDERS.get(name)
    if data_builder is None:
        return build_model(name), {}
    model, arrays = data_builder()
    return _checked(name, model), arrays


def _checked(name: str, model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # a bug in a builder, never user input
        raise ModelError(f"zoo model {name!r} failed the ONNX checker: {exc}") from exc
    return model
