"""Threads or processes for the pipeline's stages? Does the GIL stop decode/preprocess from scaling?

Runs the pipeline's real stage work -- ``decode`` (simplejpeg) and ``preprocess`` (numpy resize/crop/
normalise to 224) of 1536x1024 JPEGs -- closed-loop on 1 and 2 threads of one process and on 1 and 2
processes, in interleaved rounds, and prints the median throughput and the 2-vs-1 scaling of each. If
the GIL serialised the work, 2 threads would stay near 1x while 2 processes reach ~2x. It also times
what processes would add: moving one decoded image to another process through a multiprocessing queue.

    python bench/stage_parallelism.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import threading
import time
from typing import Any

import numpy as np

from tuner.workloads.pipeline.images import synthetic_jpeg
from tuner.workloads.pipeline.stage_work import decode_jpeg, preprocess_image

DATA = synthetic_jpeg(1536, 1024, 90, seed=1)
IMAGE = decode_jpeg(DATA)


def _decode() -> None:
    decode_jpeg(DATA)


def _preprocess() -> None:
    preprocess_image(IMAGE, resize=256, size=224)


def _both() -> None:
    preprocess_image(decode_jpeg(DATA), resize=256, size=224)


WORK = {"decode": _decode, "preprocess": _preprocess, "decode+preprocess": _both}


def _loop(name: str, seconds: float, out: Any) -> None:
    fn, n = WORK[name], 0
    fn()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    out.put(n / (time.perf_counter() - t0))


def _threads(name: str, k: int, seconds: float) -> float:
    import queue

    q: queue.Queue[float] = queue.Queue()
    ts = [threading.Thread(target=_loop, args=(name, seconds, q)) for _ in range(k)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(q.get() for _ in ts)


def _processes(name: str, k: int, seconds: float) -> float:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_loop, args=(name, seconds, q)) for _ in range(k)]
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return total


def _ipc_ms(rounds: int = 20) -> float:
    """Milliseconds to hand one decoded image to another process and get an ack back (pickle + pipe)."""
    ctx = mp.get_context("fork")
    inbox, acks = ctx.Queue(maxsize=2), ctx.Queue()

    def consumer() -> None:
        while True:
            x = inbox.get()
            if x is None:
                return
            acks.put(x.shape[0])

    p = ctx.Process(target=consumer)
    p.start()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        inbox.put(IMAGE)
        acks.get()
        times.append((time.perf_counter() - t0) * 1000)
    inbox.put(None)
    p.join()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    modes = (
        ("1 thread", _threads, 1),
        ("2 threads", _threads, 2),
        ("1 process", _processes, 1),
        ("2 processes", _processes, 2),
    )
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name in WORK:
            for label, fn, k in modes:
                results.setdefault((name, label), []).append(fn(name, k, args.seconds))
    print(f"images/s, median of {args.rounds} rounds of {args.seconds:g} s (1536x1024 JPEG -> 224x224 float32)")
    heads = ("1 thread", "2 threads", "1 process", "2 procs", "threads x", "procs x")
    print(f"{'work':18s} " + " ".join(f"{h:>10s}" for h in heads))
    for name in WORK:
        m = {label: statistics.median(results[(name, label)]) for label, _, _ in modes}
        print(
            f"{name:18s} {m['1 thread']:10.1f} {m['2 threads']:10.1f} {m['1 process']:10.1f} {m['2 processes']:10.1f} "
            f"{m['2 threads'] / m['1 thread']:10.2f} {m['2 processes'] / m['1 process']:10.2f}"
        )
    print(f"moving one decoded image ({IMAGE.nbytes / 2**20:.1f} MiB) to another process: {_ipc_ms():.2f} ms")
    print(f"(decode alone: {1000 / statistics.median(results[('decode', '1 thread')]):.2f} ms per image, wall)")
    _ = np  # numpy is the work's own dependency


if __name__ == "__main__":
    main()
