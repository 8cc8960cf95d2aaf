"""Accuracy of a precision variant against the fp32 reference: the comparisons behind the ``accuracy_*`` metrics.

Every function takes numpy arrays -- the reference outputs ``ref`` (the fp32 model on the reference set) and
the variant's outputs ``var`` on the same samples, both ``[samples, ...]`` -- and sums in float64, so a float16
output compares as exactly as a float32 one:

* :func:`sqnr_db`: signal-to-quantisation-noise ratio, ``10 * log10(sum(ref ** 2) / sum((ref - var) ** 2))``
  (dB, higher is closer). Identical outputs have no noise: :data:`SQNR_CAP_DB` (200 dB, a finite cap, since
  JSON has no infinity; float32 rounding noise alone is ~140 dB). The result is clamped to
  ``[-SQNR_CAP_DB, SQNR_CAP_DB]`` (an all-zero reference with noise gives ``-SQNR_CAP_DB``).
* :func:`nmse`: normalised mean squared error, ``sum((ref - var) ** 2) / sum(ref ** 2)`` (0 is identical; it
  is ``10 ** (-sqnr_db / 10)`` away from the caps). An all-zero reference gives 0 when ``var`` is all zero
  too, else ``inf``.
* :func:`top1_agreement`: the share of samples whose arg-max over the class axis (the last axis, the rest of
  a sample flattened into it) is the same in ``var`` as in ``ref`` (0..1).
* :func:`top1`: the share of samples whose arg-max equals their integer label (0..1).
* :func:`top1_drop`: ``top1(ref, labels) - top1(var, labels)``, in fraction points (0.01 = one point of
  accuracy lost; negative when the variant happens to classify better).

:func:`accuracy_metrics` gives the ``accuracy_*`` metrics of one comparison (:mod:`tuner.metrics`).
Pure functions, no I/O.
"""

from __future__ import annotations

import math

import numpy as np

#: what :func:`sqnr_db` reports for identical outputs (and the bound of its range), in dB
SQNR_CAP_DB = 200.0


def _pair(ref: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(ref, dtype=np.float64), np.asarray(var, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"reference outputs {list(a.shape)} and variant outputs {list(b.shape)} differ in shape")
    return a, b


def _energies(ref: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """``(sum ref ** 2, sum (ref - var) ** 2)`` in float64."""
    a, b = _pair(ref, var)
    return float(np.sum(a * a)), float(np.sum((a - b) ** 2))


def sqnr_db(ref: np.ndarray, var: np.ndarray) -> float:
    """``10 log10(sum ref^2 / sum (ref - var)^2)`` in dB, clamped to +-:data:`SQNR_CAP_DB` (the cap when identical)."""
    signal, noise = _energies(ref, var)
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(min(SQNR_CAP_DB, max(-SQNR_CAP_DB, 10.0 * math.log10(signal / noise))))


def nmse(ref: np.ndarray, var: np.ndarray) -> float:
    """``sum (ref - var)^2 / sum ref^2`` (0 when identical; an all-zero reference: 0 or ``inf``)."""
    signal, noise = _energies(ref, var)
    if signal == 0.0:
        return 0.0 if noise == 0.0 else math.inf
    return noise / signal


def _classes(outputs: np.ndarray) -> np.ndarray:
    """Each sample's arg-max over its scores: ``[samples, ...]`` flattened to ``[samples, scores]``."""
    a = np.asarray(outputs)
    if a.ndim < 1 or a.shape[0] == 0:
        raise ValueError(f"outputs of shape {list(a.shape)}: expected [samples, classes] with at least one sample")
    flat = a.reshape(a.shape[0], -1)
    if flat.shape[1] < 2:
        raise ValueError(f"outputs of shape {list(a.shape)}: a class arg-max needs at least 2 scores per sample")
    return np.argmax(flat, axis=1)


def top1_agreement(ref: np.ndarray, var: np.ndarray) -> float:
    """The share of samples whose arg-max class is the same in ``var`` as in ``ref`` (0..1)."""
    a, b = np.asarray(ref), np.asarray(var)
    if a.shape != b.shape:
        raise ValueError(f"reference outputs {list(a.shape)} and variant outputs {list(b.shape)} differ in shape")
    return float(np.mean(_classes(a) == _classes(b)))


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """The share of samples whose arg-max class equals its integer label (0..1)."""
    predicted = _classes(outputs)
    truth = np.asarray(labels).reshape(-1)
    if truth.shape[0] != predicted.shape[0]:
        raise ValueError(f"{truth.shape[0]} labels for {predicted.shape[0]} samples")
    return float(np.mean(predicted == truth))


def top1_drop(ref: np.ndarray, var: np.ndarray, labels: np.ndarray) -> float:
    """``top1(ref, labels) - top1(var, labels)``: the accuracy the variant loses, in fraction points."""
    return top1(ref, labels) - top1(var, labels)


def accuracy_metrics(
    ref: np.ndarray, var: np.ndarray, *, classifier: bool, labels: np.ndarray | None = None
) -> dict[str, float]:
    """The ``accuracy_*`` metrics of ``var`` against ``ref``: ``accuracy_sqnr_db`` and ``accuracy_nmse`` always;
    ``accuracy_top1_agreement`` for a ``classifier`` output; ``accuracy_top1`` (the variant's) and
    ``accuracy_top1_drop`` with ``labels`` too."""
    out = {"accuracy_sqnr_db": sqnr_db(ref, var), "accuracy_nmse": nmse(ref, var)}
    if classifier:
        out["accuracy_top1_agreement"] = top1_agreement(ref, var)
        if labels is not None:
            out["accuracy_top1"] = top1(var, labels)
            out["accuracy_top1_drop"] = top1_drop(ref, var, labels)
    return out
