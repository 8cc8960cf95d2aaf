"""Which JPEG decoder should the pipeline's ``decode`` stage use? Pillow vs simplejpeg vs OpenCV.

Decodes two synthetic 1536x1024 JPEGs (the Ascend field note's picture size, quality 90, 4:2:0): the
pipeline's default synthetic picture (smooth, ~360 KiB) and a textured one (strong sensor-like noise,
~600 KiB, closer to a busy photo), to an HxWx3 uint8 RGB array with each library, single-threaded, in
interleaved rounds, and prints the per-image CPU time (thread CPU time: robust when other programs share
the machine) and the wall-clock throughput, median over the rounds. Libraries that are not installed are skipped.

    python bench/decode_libs.py [--rounds 7] [--width 1536 --height 1024]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import numpy as np

from tuner.workloads.pipeline.images import synthetic_jpeg
from tuner.workloads.pipeline.stage_work import decode_jpeg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--width", type=int, default=1536)
    ap.add_argument("--height", type=int, default=1024)
    args = ap.parse_args()
    smooth = synthetic_jpeg(args.width, args.height, 90, seed=1)
    libs = []
    for lib, module in (("pillow", "PIL"), ("simplejpeg", "simplejpeg"), ("opencv", "cv2")):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            print(f"{lib}: not installed, skipped")
            continue
        if lib == "opencv":
            mod.setNumThreads(1)
        libs.append((lib, getattr(mod, "__version__", "?")))
    import simplejpeg

    rng = np.random.default_rng(0)
    pixels = decode_jpeg(smooth).astype(np.float32) + rng.normal(0, 12, size=(args.height, args.width, 3))
    textured = simplejpeg.encode_jpeg(np.clip(pixels, 0, 255).astype(np.uint8), quality=90, colorsubsampling="420")
    for label, data in (("smooth", smooth), ("textured", textured)):
        print(f"\n{label} image: {args.width}x{args.height} JPEG, {len(data) / 1024:.0f} KiB")
        _compare(libs, data, args)


def _compare(libs: list[tuple[str, str]], data: bytes, args: argparse.Namespace) -> None:
    cpu: dict[str, list[float]] = {lib: [] for lib, _ in libs}
    wall: dict[str, list[float]] = {lib: [] for lib, _ in libs}
    for lib, _ in libs:
        out = decode_jpeg(data, library=lib)
        assert out.shape == (args.height, args.width, 3), (lib, out.shape)
    for _ in range(args.rounds):
        for lib, _ in libs:
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(args.per_round):
                decode_jpeg(data, library=lib)
            cpu[lib].append((time.thread_time() - c0) / args.per_round * 1000)
            wall[lib].append(args.per_round / (time.perf_counter() - w0))
    print(f"{'library':12s} {'version':10s} {'cpu ms/img':>11s} {'img/s (wall)':>13s}")
    for lib, version in libs:
        print(f"{lib:12s} {version:10s} {statistics.median(cpu[lib]):11.2f} {statistics.median(wall[lib]):13.1f}")


if __name__ == "__main__":
    main()
