"""Pipeline efficiency: the whole pipeline at its knee vs each stage alone at its best worker count.

A pipeline can go no faster than its slowest stage running alone (its *ceiling*). This script measures,
back to back on this machine:

* every stage **alone**, closed-loop on inputs prepared beforehand, at 1 .. N workers (N: the largest
  value of its ``stages.<name>.workers`` axis, and at least the machine's cores), keeping the best:
  ``read`` (file bytes), ``decode`` (JPEG bytes in memory), ``preprocess`` (decoded images in memory),
  ``batch``, ``postprocess`` (random logits) and ``delay`` on threads in this process, as the pipeline
  runs them; ``infer`` as the ``pool`` workload in a trial child (``tuner.execution.runner.measure_config``) at the
  knee's ``threads``, ``batch_size`` and ``requests_per_sync``, over the searched ``pool_size`` values
  (the infer stage's workers);
* the **whole pipeline** at the knee of the workload's study (or at ``--set`` axes), in a trial child
  like any trial, right before or after inference alone (alternating by round).

It prints each ceiling (median over ``--repeats`` rounds), the pipeline's qps, and the pipeline's qps as a
fraction of the slowest stage's ceiling -- the median over rounds of each round's pipeline qps over that
round's slowest ceiling, so that load drifting between rounds cancels -- against the target >= 0.85 (the
Ascend field note's hand-tuned pipeline reached about 86 % of its ceiling).
On a CPU-only machine every stage shares the same cores, so the fraction also shows what decode and
preprocess cost the inference stage.

    tuner optimize workloads/pipeline-resnet50.yaml        # first: a study with a knee
    python bench/pipeline_ceiling.py workloads/pipeline-resnet50.yaml [--repeats 2] [--set threads=2 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tuner.config.spec import Spec, load_spec, parse_spec
from tuner.execution.runner import build_job, measure_config, resolve_model_path
from tuner.workloads.pipeline.images import list_images
from tuner.workloads.pipeline.stage_work import Delay, decode_jpeg, preprocess_image, top_k
from tuner.workloads.pipeline.stages import StageConfig, validate_stages

TARGET = 0.85


def knee_params(spec: Spec) -> dict[str, Any]:
    """The knee's params, from ``tuner report --json`` on the workload's study."""
    storage = spec.storage_url()
    out = subprocess.run(
        [sys.executable, "-m", "tuner", "report", storage, "--json"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(
            f"no study to read a knee from ({storage}): run `tuner optimize {spec.path}` first\n{out.stderr}"
        )
    doc = json.loads(out.stdout)
    reports = doc if isinstance(doc, list) else [doc]
    mine = [r for r in reports if r.get("workload") == spec.name and r.get("knee")]
    if not mine:
        raise SystemExit(f"the study in {storage} has no knee yet: run `tuner optimize {spec.path}`")
    return dict(mine[-1]["knee"]["params"])


def closed_loop(work: Callable[[int], Any], workers: int, seconds: float, warmup_s: float = 0.5) -> float:
    """Items per second of ``workers`` threads each calling ``work(i)`` back to back."""
    counts = [0] * workers
    stop = threading.Event()
    counting = threading.Event()

    def run(w: int) -> None:
        i = w
        while not stop.is_set():
            work(i)
            i += workers
            if counting.is_set():
                counts[w] += 1

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    time.sleep(warmup_s)
    counting.set()
    t0 = time.perf_counter()
    time.sleep(seconds)
    done = sum(counts)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    return done / elapsed


def stage_ceilings(spec: Spec, params: dict[str, Any], seconds: float, cores: int) -> list[dict[str, Any]]:
    job = build_job(spec, params, resolve_model_path(spec))
    stages = [StageConfig.from_dict(d) for d in job["pipeline"]["stages"]]
    files = list_images(Path(job["pipeline"]["images"]))
    blobs = [f.read_bytes() for f in files]
    batch = int(params.get("batch_size", 1))
    size, resize = 224, 256
    pre = next((s for s in stages if s.type == "preprocess"), None)
    if pre is not None:
        size = int(pre.options.get("size") or _model_size(spec) or 224)
        resize = int(pre.options.get("resize") or round(size * 256 / 224))
    images = [decode_jpeg(b) for b in blobs]
    samples = [preprocess_image(im, resize=resize, size=size) for im in images]
    rows: list[dict[str, Any]] = []
    for s in stages:
        if s.type == "infer":
            continue  # measured by main(), next to the whole pipeline
        axis = spec.axes.get(f"stages.{s.name}.workers")
        top = max([s.workers, cores, *(axis.grid() if axis is not None else ())])
        work, per_call = _stage_work(s, files, blobs, images, samples, batch, size, resize)
        best = (0.0, 1)
        for w in range(1, top + 1):
            qps = closed_loop(work, w, seconds) * per_call
            print(f"  {s.name:12s} alone, {w} worker(s): {qps:9.1f} images/s", flush=True)
            best = max(best, (qps, w))
        rows.append({"stage": s.name, "type": s.type, "workers": best[1], "ceiling": best[0]})
    return rows


def _stage_work(
    s: StageConfig,
    files: list[Path],
    blobs: list[bytes],
    images: list[np.ndarray],
    samples: list[np.ndarray],
    batch: int,
    size: int,
    resize: int,
) -> tuple[Callable[[int], Any], int]:
    """One call of the stage's work on prepared input ``i``, and how many images a call handles."""
    if s.type == "read":
        return (lambda i: files[i % len(files)].read_bytes()), 1
    if s.type == "decode":
        lib, fast = s.options.get("library", "simplejpeg"), bool(s.options.get("fast"))
        min_side = resize if s.options.get("reduce") else 0
        return (lambda i: decode_jpeg(blobs[i % len(blobs)], library=lib, min_side=min_side, fast=fast)), 1
    if s.type == "preprocess":
        return (lambda i: preprocess_image(images[i % len(images)], resize=resize, size=size)), 1
    if s.type == "batch":
        return (lambda i: np.stack([samples[(i + j) % len(samples)] for j in range(batch)])), batch
    if s.type == "postprocess":
        logits = np.random.default_rng(0).standard_normal((batch, 1000)).astype(np.float32)
        k = int(s.options.get("top_k", 5))
        return (lambda i: top_k(logits, k)), batch
    if s.type == "delay":
        return Delay(float(s.options.get("ms", 0)), float(s.options.get("jitter_ms", 0))), 1
    raise SystemExit(f"stage type {s.type!r}: no stage-alone measurement")


def _model_size(spec: Spec) -> int | None:
    path = resolve_model_path(spec)
    if path is None:
        return None
    import onnxruntime as ort

    shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    return int(shape[2]) if len(shape) == 4 and shape[1] == 3 else int(shape[1]) if len(shape) == 4 else None


def infer_ceiling(spec: Spec, params: dict[str, Any]) -> dict[str, Any]:
    """The infer stage alone: the pool workload at the knee's infer axes, over the searched pool sizes."""
    raw = yaml.safe_load(spec.text)
    workload = {k: v for k, v in raw["workload"].items() if k not in ("kind", "stages", "images", "synthetic")}
    pools = spec.axes["pool_size"].grid() if spec.axes["pool_size"].kind != "fixed" else (params.get("pool_size", 1),)
    best: tuple[float, int] = (0.0, 1)
    for pool in pools:
        axes = {k: params.get(k, 1) for k in ("threads", "batch_size", "requests_per_sync")}
        axes["pool_size"] = pool
        doc = {
            "name": f"{spec.name}-infer-alone",
            "workload": {**workload, "kind": "pool"},
            "search": axes,
            "measure": raw.get("measure", {}),
            "study": {"trial_timeout_s": spec.study.trial_timeout_s},
        }
        pool_spec = parse_spec(yaml.safe_dump(doc), path=spec.path)
        result = measure_config(pool_spec, pool_spec.default_params())
        if not result.ok:
            raise SystemExit(f"infer alone failed: {result.failure.describe() if result.failure else '?'}")
        qps = float(result.metrics["qps"])
        print(f"  infer        alone, pool_size={pool}, {axes}: {qps:9.1f} images/s", flush=True)
        best = max(best, (qps, pool))
    return {"stage": "infer", "type": "infer", "workers": best[1], "ceiling": best[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="axis=value: measure here, not the knee")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per stage-alone point")
    ap.add_argument("--repeats", type=int, default=1, help="repeat ceilings + pipeline; report medians")
    args = ap.parse_args()
    spec = load_spec(args.workload)
    if args.sets:
        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
        params = spec.resolve_params(overrides)
        print(f"pipeline config (--set): {params}")
    else:
        params = spec.resolve_params(knee_params(spec))
        print(f"pipeline config (the study's knee): {params}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    order = [s.name for s in validate_stages(spec.workload.stages)]
    infer_name = next((s.name for s in validate_stages(spec.workload.stages) if s.type == "infer"), None)
    pipe_runs: list[float] = []
    ceilings: dict[str, list[dict[str, Any]]] = {}
    last: dict[str, Any] = {}
    for r in range(args.repeats):
        print(f"round {r + 1}/{args.repeats}: stages alone", flush=True)
        for row in stage_ceilings(spec, params, args.seconds, cores):
            ceilings.setdefault(row["stage"], []).append(row)
        # inference alone and the whole pipeline back to back, alternating which goes first
        for step in ("infer", "pipeline") if r % 2 == 0 else ("pipeline", "infer"):
            if step == "infer":
                if infer_name is not None:
                    ceilings.setdefault(infer_name, []).append({**infer_ceiling(spec, params), "stage": infer_name})
                continue
            print(f"round {r + 1}/{args.repeats}: the whole pipeline", flush=True)
            result = measure_config(spec, params)
            if not result.ok:
                raise SystemExit(f"the pipeline failed: {result.failure.describe() if result.failure else '?'}")
            last = dict(result.metrics)
            pipe_runs.append(float(last["qps"]))
            print(f"  pipeline: {pipe_runs[-1]:.2f} images/s (bottleneck: {last.get('bottleneck')})", flush=True)
    print()
    print(f"{'stage':14s} {'type':12s} {'best workers':>12s} {'ceiling img/s':>14s} {'in pipeline':>12s} {'busy':>6s}")
    summary = []
    for name in order:
        rows = ceilings[name]
        ceiling = statistics.median(r["ceiling"] for r in rows)
        workers = rows[-1]["workers"]
        summary.append((ceiling, name))
        inside = last.get(f"stage.{name}.qps")
        busy = last.get(f"stage.{name}.busy")
        print(
            f"{name:14s} {rows[0]['type']:12s} {workers:12d} {ceiling:14.1f} "
            f"{inside if inside is None else f'{inside:.1f}':>12} {busy if busy is None else f'{busy:.2f}':>6}"
        )
    slowest, name = min(summary)
    qps = statistics.median(pipe_runs)
    # each round's pipeline against that round's slowest ceiling: pairs taken minutes apart drift together
    paired = [pipe / min(rows[r]["ceiling"] for rows in ceilings.values()) for r, pipe in enumerate(pipe_runs)]
    fraction = statistics.median(paired)
    print()
    runs = ", ".join(f"{q:.2f}" for q in pipe_runs)
    print(f"pipeline at {'--set' if args.sets else 'the knee'}: {qps:.2f} images/s (runs: {runs})")
    print(f"slowest stage alone: {name} at {slowest:.2f} images/s")
    verdict = "meets" if fraction >= TARGET else "misses"
    print(f"per round, pipeline / that round's slowest ceiling: {', '.join(f'{f:.3f}' for f in paired)}")
    print(f"pipeline / slowest stage's ceiling = {fraction:.3f}  ({verdict} the target >= {TARGET})")


if __name__ == "__main__":
    main()
