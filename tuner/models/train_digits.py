"""``zoo:digits``: a small convolutional classifier trained at build time on scikit-learn's 8x8 digits.

The data is :func:`sklearn.datasets.load_digits` (1797 greyscale 8x8 images of the digits 0-9, shipped
inside the scikit-learn wheel: nothing is downloaded), pixels scaled from 0..16 to 0..1. A fixed
permutation (seed :data:`SEED`) holds out :data:`TEST_SHARE` of it; the rest trains, in plain numpy
(float64, im2col convolutions, hand-written backprop, Adam, :data:`EPOCHS` epochs of mini-batches of
:data:`BATCH`), in about two seconds on two cores::

    input [batch, 1, 8, 8] -> Conv 3x3 1->16 pad 1 + ReLU -> Conv 3x3 16->32 stride 2 pad 1 + ReLU
          [batch, 32, 4, 4] -> Flatten 512 -> Gemm 512->10 -> logits [batch, 10]

:func:`train` returns the float32 weights and the held-out split (``test_x`` float32 ``[n, 1, 8, 8]``, the
model's input as fed; ``test_y`` int64 ``[n]``); :mod:`tuner.models.graphs` turns the weights into the
ONNX graph. scikit-learn is an optional dependency (the ``precision`` extra); without it training raises
:class:`~tuner.errors.ModelError` with the one line naming the extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.errors import ModelError

SEED = 0
#: share of the data set held out for accuracy (never trained on)
TEST_SHARE = 0.25
EPOCHS = 20
BATCH = 32
LEARNING_RATE = 3e-3
#: the channels of the two convolutions
CHANNELS = (16, 32)
CLASSES = 10


@dataclass(frozen=True)
class DigitsModel:
    """Trained float32 weights (OIHW convolutions, ``fc_w`` ``[10, 512]``) and the held-out split."""

    conv1_w: np.ndarray
    conv1_b: np.ndarray
    conv2_w: np.ndarray
    conv2_b: np.ndarray
    fc_w: np.ndarray
    fc_b: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, test_x, test_y)``: scikit-learn's digits as ``[n, 1, 8, 8]`` in 0..1, split by a fixed
    permutation (:data:`TEST_SHARE` held out)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ModelError(
            "zoo:digits is trained on scikit-learn's digits data: pip install 'tuner[precision]' (scikit-learn)"
        ) from None
    digits = load_digits()
    x = (np.asarray(digits.images, dtype=np.float64) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(digits.target, dtype=np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    held = int(round(len(y) * TEST_SHARE))
    test, train_ = order[:held], order[held:]
    return x[train_], y[train_], x[test], y[test]


def _im2col(x: np.ndarray, stride: int) -> tuple[np.ndarray, int, int]:
    """3x3 patches of ``x`` [n, c, h, w] padded by 1: ``[n, ho * wo, c * 9]`` and the output size."""
    n, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, c, 3, 3, ho, wo), dtype=x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, :, i, j] = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n, ho * wo, c * 9), ho, wo


def _col2im(dcols: np.ndarray, shape: tuple[int, ...], stride: int, ho: int, wo: int) -> np.ndarray:
    """The gradient of :func:`_im2col`: patch gradients summed back onto ``x``'s shape."""
    n, c, h, w = shape
    d = dcols.reshape(n, ho, wo, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += d[:, :, i, j]
    return dxp[:, :, 1:-1, 1:-1]


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> tuple[np.ndarray, tuple[np.ndarray, int, int]]:
    cols, ho, wo = _im2col(x, stride)
    out = cols @ w.reshape(w.shape[0], -1).T + b  # [n, ho * wo, out]
    return out.transpose(0, 2, 1).reshape(x.shape[0], w.shape[0], ho, wo), (cols, ho, wo)


def _conv_back(
    dout: np.ndarray, x_shape: tuple[int, ...], w: np.ndarray, cache: tuple[np.ndarray, int, int], stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cols, ho, wo = cache
    d = dout.reshape(dout.shape[0], dout.shape[1], -1).transpose(0, 2, 1)  # [n, ho * wo, out]
    dw = np.einsum("npo,npk->ok", d, cols).reshape(w.shape)
    db = d.sum(axis=(0, 1))
    dx = _col2im(d @ w.reshape(w.shape[0], -1), x_shape, stride, ho, wo)
    return dx, dw, db


@dataclass(frozen=True)
class _Forward:
    """What one forward pass keeps for the backward pass."""

    logits: np.ndarray
    patches1: tuple[np.ndarray, int, int]
    z1: np.ndarray
    a1: np.ndarray
    patches2: tuple[np.ndarray, int, int]
    z2: np.ndarray
    flat: np.ndarray


def _forward(params: dict[str, np.ndarray], x: np.ndarray) -> _Forward:
    z1, patches1 = _conv(x, params["conv1_w"], params["conv1_b"], 1)
    a1 = np.maximum(z1, 0.0)
    z2, patches2 = _conv(a1, params["conv2_w"], params["conv2_b"], 2)
    flat = np.maximum(z2, 0.0).reshape(x.shape[0], -1)
    logits = flat @ params["fc_w"].T + params["fc_b"]
    return _Forward(logits, patches1, z1, a1, patches2, z2, flat)


def _gradients(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the mean softmax cross-entropy of the batch ``(x, y)``."""
    f = _forward(params, x)
    p = np.exp(f.logits - f.logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    dlogits = p / len(y)
    grads = {"fc_w": dlogits.T @ f.flat, "fc_b": dlogits.sum(axis=0)}
    dz2 = (dlogits @ params["fc_w"]).reshape(f.z2.shape) * (f.z2 > 0)
    da1, grads["conv2_w"], grads["conv2_b"] = _conv_back(dz2, f.a1.shape, params["conv2_w"], f.patches2, 2)
    _, grads["conv1_w"], grads["conv1_b"] = _conv_back(da1 * (f.z1 > 0), x.shape, params["conv1_w"], f.patches1, 1)
    return grads


def predict(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The logits of ``x`` [n, 1, 8, 8] (numpy; the ONNX graph computes the same)."""
    return _forward(params, np.asarray(x, dtype=np.float64)).logits


def train() -> DigitsModel:
    """Train on the fixed split (deterministic for a given numpy/BLAS build) and return the float32 model."""
    train_x, train_y, test_x, test_y = load_split()
    rng = np.random.default_rng(SEED)
    c1, c2 = CHANNELS
    params = {
        "conv1_w": rng.standard_normal((c1, 1, 3, 3)) * np.sqrt(2.0 / 9),
        "conv1_b": np.zeros(c1),
        "conv2_w": rng.standard_normal((c2, c1, 3, 3)) * np.sqrt(2.0 / (9 * c1)),
        "conv2_b": np.zeros(c2),
        "fc_w": rng.standard_normal((CLASSES, c2 * 16)) * np.sqrt(1.0 / (c2 * 16)),
        "fc_b": np.zeros(CLASSES),
    }
    moment = {k: np.zeros_like(v) for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, step = 0.9, 0.999, 0
    for _epoch in range(EPOCHS):
        order = rng.permutation(len(train_y))
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            grads = _gradients(params, train_x[index], train_y[index])
            step += 1
            for k, g in grads.items():  # Adam
                moment[k] = beta1 * moment[k] + (1 - beta1) * g
                velocity[k] = beta2 * velocity[k] + (1 - beta2) * g * g
                corrected = moment[k] / (1 - beta1**step)
                params[k] -= LEARNING_RATE * corrected / (np.sqrt(velocity[k] / (1 - beta2**step)) + 1e-8)
    f32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}
    return DigitsModel(**f32, test_x=np.ascontiguousarray(test_x, dtype=np.float32), test_y=test_y)
