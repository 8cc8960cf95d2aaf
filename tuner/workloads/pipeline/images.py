"""Pipeline inputs: a folder of JPEG files, or a synthetic set generated once and cached.

The synthetic set stands in for camera pictures: smooth colour fields with a few edges and sensor-like
noise, encoded as baseline JPEG (4:2:0) at ``quality``. Its default size, 1536 x 1024 (width x height),
is the Ascend field note's test picture. The files are written atomically into a cache folder keyed by
every parameter (and :data:`SYNTH_VERSION`), so a set is generated once per machine and a trial never
pays for it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from tuner.errors import TunerError

__all__ = ["IMAGE_SUFFIXES", "SYNTH_VERSION", "list_images", "synthetic_images", "synthetic_jpeg"]

SYNTH_VERSION = "1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")


class ImagesError(TunerError):
    """The image folder is missing or empty, or the synthetic set cannot be written."""

    exit_code = 2


def list_images(folder: Path) -> list[Path]:
    """The JPEG files of ``folder`` (not recursive), sorted by name."""
    if not folder.is_dir():
        raise ImagesError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImagesError(f"image folder {folder} holds no JPEG files (*.jpg, *.jpeg)")
    return files


def synthetic_jpeg(width: int, height: int, quality: int, seed: int) -> bytes:
    """One synthetic picture as JPEG bytes (deterministic for its arguments)."""
    import simplejpeg

    rng = np.random.default_rng(seed)
    # a smooth field: a few random low-frequency waves per channel, evaluated on a coarse grid
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        field = np.full((height, width), 128.0, dtype=np.float32)
        for _ in range(3):
            fy, fx = rng.uniform(0.5, 6.0, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            field += rng.uniform(20, 45) * np.sin(2 * np.pi * (fy * y + fx * x) + phase)
        img[..., c] = field
    # a few hard-edged rectangles (objects) and sensor noise
    for _ in range(6):
        h0, w0 = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
        h1, w1 = h0 + int(rng.integers(8, max(9, height // 3))), w0 + int(rng.integers(8, max(9, width // 3)))
        img[h0:h1, w0:w1] = img[h0:h1, w0:w1] * 0.5 + rng.uniform(0, 255, size=3).astype(np.float32) * 0.5
    img += rng.normal(0.0, 6.0, size=img.shape).astype(np.float32)
    pixels = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")


def default_cache_dir() -> Path:
    """``$TUNER_CACHE_DIR/images``, else ``$XDG_CACHE_HOME/tuner/images``, else ``~/.cache/tuner/images``."""
    env = os.environ.get("TUNER_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "images"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tuner" / "images"


def synthetic_images(
    *, count: int, width: int, height: int, quality: int, seed: int, cache_dir: Path | None = None
) -> Path:
    """The folder of a synthetic set, generated (atomically, file by file) the first time it is asked for."""
    key = f"v{SYNTH_VERSION}-{width}x{height}-q{quality}-n{count}-s{seed}"
    folder = (cache_dir or default_cache_dir()) / f"synthetic-{key}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            target = folder / f"{i:05d}.jpg"
            if target.is_file():
                continue
            data = synthetic_jpeg(
                width, height, quality, int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:8], 16)
            )
            _atomic_write(target, data)
        _atomic_write(done, key.encode())
    except OSError as err:
        raise ImagesError(f"cannot write the synthetic image set to {folder}: {err}") from None
    return folder


def _atomic_write(target: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile("wb", delete=False, dir=target.parent, prefix=f".{target.name}.") as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
