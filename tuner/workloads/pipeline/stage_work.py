"""The work of the pipeline's stages: JPEG decode, preprocess (resize, crop, normalise), delay, top-k.

The stage types, their options and validation are in :mod:`tuner.workloads.pipeline.stages`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------- decode


def decode_jpeg(data: bytes, *, library: str = "simplejpeg", min_side: int = 0, fast: bool = False) -> np.ndarray:
    """JPEG bytes -> HxWx3 uint8 RGB. ``min_side`` > 0 lets the decoder downscale in the DCT domain
    (1/2, 1/4, 1/8) while both sides stay >= ``min_side``. All three libraries release the GIL."""
    if library == "simplejpeg":
        import simplejpeg

        if min_side:
            return simplejpeg.decode_jpeg(
                data, colorspace="RGB", fastdct=fast, fastupsample=fast, min_height=min_side, min_width=min_side
            )
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=fast, fastupsample=fast)
    if library == "opencv":
        import cv2

        flag = cv2.IMREAD_COLOR
        if min_side:
            h, w = _jpeg_size(data)
            for f, scale in (
                (cv2.IMREAD_REDUCED_COLOR_8, 8),
                (cv2.IMREAD_REDUCED_COLOR_4, 4),
                (cv2.IMREAD_REDUCED_COLOR_2, 2),
            ):
                if min(h, w) // scale >= min_side:
                    flag = f
                    break
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if bgr is None:
            raise ValueError("OpenCV could not decode the image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if library == "pillow":
        import io

        from PIL import Image

        im = Image.open(io.BytesIO(data))
        if min_side:
            w, h = im.size
            scale = max(1, min(8, min(w, h) // min_side))
            im.draft("RGB", (max(min_side, w // scale), max(min_side, h // scale)))
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im)
    raise ValueError(f"unknown decode library {library!r}")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the SOF marker of a JPEG."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        i += 2 + length
    raise ValueError("not a JPEG (no SOF marker)")


# ------------------------------------------------------------------------------------- preprocess


@dataclass(frozen=True)
class _Plan:
    k: int  # integer box-filter factor applied first
    oy: int
    ny: int
    y0: np.ndarray
    y1: np.ndarray
    wy: np.ndarray
    ox: int
    nx: int
    x0: np.ndarray
    x1: np.ndarray
    wx: np.ndarray


@lru_cache(maxsize=64)
def _plan(h: int, w: int, resize: int, out_h: int, out_w: int) -> _Plan:
    scale = resize / min(h, w)
    k = max(1, int(math.floor(1.0 / scale)))
    top, left = (h * scale - out_h) / 2.0, (w * scale - out_w) / 2.0
    if top < -1e-9 or left < -1e-9:
        crop = out_h if out_h == out_w else f"{out_h}x{out_w}"
        raise ValueError(f"resize {resize} is smaller than the crop {crop}")

    def axis(offset: float, n: int, size: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
        # centres of the output pixels in source coordinates (pixel centres at i + 0.5)
        s = (offset + np.arange(size) + 0.5) / scale - 0.5
        lo = max(0, int(math.floor(s[0])) - k)
        hi = min(n, int(math.ceil(s[-1])) + k + 1)
        count = max(1, (hi - lo) // k)
        r = np.clip((s - lo - (k - 1) / 2.0) / k, 0, count - 1)
        i0 = np.floor(r).astype(np.intp)
        i1 = np.minimum(i0 + 1, count - 1)
        return lo, count, i0, i1, (r - i0).astype(np.float32)

    oy, ny, y0, y1, wy = axis(top, h, out_h)
    ox, nx, x0, x1, wx = axis(left, w, out_w)
    return _Plan(k, oy, ny, y0, y1, wy, ox, nx, x0, x1, wx)


def crop_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` (one side, or height and width) as (height, width)."""
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def preprocess_image(
    img: np.ndarray,
    *,
    resize: int,
    size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    layout: str = "nchw",
) -> np.ndarray:
    """HxWx3 uint8 -> ``size`` x ``size`` float32 (``size`` = (height, width): a non-square crop), normalised
    ((x/255 - mean) / std), CHW or HWC.

    Equivalent to resizing the short side to ``resize`` (antialiased bilinear) and cropping the centre,
    computed only over the crop: an integer box filter (the largest factor k <= the downscale) over the
    source region, then bilinear sampling of the output. Within ~1 % of Pillow's
    ``resize(BILINEAR)`` + crop (mean absolute difference ~0.01 in normalised units). Pure numpy, about
    a dozen array operations per image, each running along whole rows with the GIL released; ~2.4 ms
    of CPU for a 1536x1024 picture to 224x224 here.
    """
    h, w = img.shape[:2]
    p = _plan(h, w, resize, *crop_size(size))
    k = p.k
    region = img[p.oy : p.oy + p.ny * k, p.ox : p.ox + p.nx * k]
    if k > 1:
        # rows first, on whole contiguous rows; then planar (C, H, W), so every later loop runs along a row
        acc_dtype = np.uint16 if k <= 16 else np.uint32
        rows = region[0::k].astype(acc_dtype)
        for d in range(1, k):
            rows += region[d::k]
        planar = np.ascontiguousarray(rows.transpose(2, 0, 1))
        src = planar[:, :, 0::k].copy()
        for d in range(1, k):
            src += planar[:, :, d::k]
    else:
        src = np.ascontiguousarray(region.transpose(2, 0, 1))
    top = src[:, p.y0].astype(np.float32)
    bottom = src[:, p.y1].astype(np.float32)
    top += (bottom - top) * p.wy[None, :, None]
    out = np.take(top, p.x0, axis=2)  # C-contiguous (3, height, width)
    right = np.take(top, p.x1, axis=2)
    out += (right - out) * p.wx[None, None, :]
    std_arr = np.asarray(std, dtype=np.float32)
    out *= (1.0 / (k * k * 255.0 * std_arr))[:, None, None]
    out -= (np.asarray(mean, dtype=np.float32) / std_arr)[:, None, None]
    if layout == "nhwc":
        return np.ascontiguousarray(out.transpose(1, 2, 0))
    return out


# ------------------------------------------------------------------------------------------- delay


class Delay:
    """The ``delay`` stage's work: sleep ``ms`` + uniform(0, ``jitter_ms``); optionally fail after N items.

    One instance serves every worker of the stage (its counter and random stream are shared, under a lock).
    ``sleep`` does the waiting (tests pass one that blocks on their own signal instead of the clock).
    """

    def __init__(
        self,
        ms: float,
        jitter_ms: float = 0.0,
        fail_after: int | None = None,
        seed: int = 0,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ms = ms
        self.jitter_ms = jitter_ms
        self.fail_after = fail_after
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._count = 0
        self._sleep = sleep

    def __call__(self, payload: Any) -> Any:
        with self._lock:
            self._count += 1
            count = self._count
            jitter = self._rng.uniform(0.0, self.jitter_ms) if self.jitter_ms else 0.0
        if self.fail_after is not None and count > self.fail_after:
            raise RuntimeError(f"deliberate failure after {self.fail_after} items (delay.fail_after)")
        seconds = (self.ms + jitter) / 1000.0
        if seconds > 0:
            self._sleep(seconds)
        return payload


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` largest values of each row (sorted, largest first)."""
    flat = logits.reshape(logits.shape[0], -1)
    k = min(k, flat.shape[1])
    idx = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    scores = np.take_along_axis(flat, idx, axis=1)
    order = np.argsort(-scores, axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(scores, order, axis=1)
