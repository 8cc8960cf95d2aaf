"""Harness overhead: the qps ``tuner run`` reports vs a minimal hand-written ONNX Runtime loop.

For one fixed configuration per zoo model (default: ``resnet50`` at pool_size 1, threads 2, batch 1,
requests_per_sync 1; ``tiny`` at pool_size 1, threads 1, batch 1; ONNX Runtime options at tuner's
defaults, so ``allow_spinning`` on) this script measures, alternately, A B A B ...:

* **A, tuner**: ``tuner.config.parse_spec`` on a workload YAML built here, then
  ``tuner.execution.runner.measure_config`` -- the library call behind ``tuner run``. It spawns the real trial
  child (``python -m tuner.execution.worker``) and watches it with psutil, as ``tuner run`` does.
* **B, hand loop**: a fresh ``python -c CODE`` child with a bare loop over ``InferenceSession.run``: the
  same model file, the same session options (``intra_op_num_threads``, sequential execution, all graph
  optimisations, ``session.intra_op.allow_spinning``), the same input (shape, dtype, seeded values),
  one first request, the same ``warmup_s``, then exactly as many measured seconds as A's
  ``measured_s`` in the same pair. qps = requests x batch / measured seconds.

Both sides pay the same process isolation (a fresh interpreter, model load outside the timing). Each
pair is printed with two contention-robust diagnostics besides the qps: the CPU time per request of
each side's measuring process (the tuner child's from its ``cpu_util``, the hand loop's from
``time.process_time``), and the CPU the tuner *parent* (this process: ``run_job``'s poll loop with its
psutil tree watcher, and the event reader) used, as a share of one core. Per model the ratio of
paired ratios (tuner / hand loop, drift-robust: each pair ran back to back) is printed last, next to its
target (>= 0.98 for resnet50, >= 0.90 for tiny), with the ratio of medians beside it. The last line is the headline.

Run: ``python bench/harness_overhead.py`` (about 4-6 minutes on 2 cores with the defaults);
``--rounds``, ``--models``, ``--max-s`` etc. shrink or grow it. Timings taken on a shared or busy
machine are indicative only: the pairing and the medians soften drift, they do not remove it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from tuner.config.spec import parse_spec
from tuner.execution.runner import measure_config, resolve_model_path
from tuner.platform import fingerprint

CORES = psutil.cpu_count() or 1

#: model -> (axes, target ratio tuner / hand loop)
CONFIGS: dict[str, tuple[dict[str, int], float]] = {
    "resnet50": ({"pool_size": 1, "threads": 2, "requests_per_sync": 1, "batch_size": 1}, 0.98),
    "tiny": ({"pool_size": 1, "threads": 1, "requests_per_sync": 1, "batch_size": 1}, 0.90),
}

#: the hand-written loop, run as ``python -c HAND_LOOP`` with its job as JSON on stdin
HAND_LOOP = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import onnxruntime as ort

    job = json.loads(sys.stdin.read())
    so = ort.SessionOptions()
    so.intra_op_num_threads = job["threads"]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if job["allow_spinning"] else "0")
    so.log_severity_level = 3
    sess = ort.InferenceSession(job["model"], sess_options=so, providers=["CPUExecutionProvider"])
    meta = sess.get_inputs()[0]
    shape = [job["batch"]] + [int(d) for d in meta.shape[1:]]
    feed = {meta.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    outputs = [o.name for o in sess.get_outputs()]
    run = sess.run
    clock = time.perf_counter
    run(outputs, feed)  # first request, as tuner's first_request()
    t0 = clock()
    while clock() - t0 < job["warmup_s"]:
        run(outputs, feed)
    n = 0
    cpu0 = time.process_time()
    start = clock()
    end = start + job["measure_s"]
    now = start
    while now < end:
        run(outputs, feed)
        n += 1
        now = clock()
    measured = now - start
    cpu = time.process_time() - cpu0
    print(json.dumps({"qps": n * job["batch"] / measured, "requests": n, "measured_s": measured,
                      "cpu_us_per_req": cpu / n * 1e6, "onnxruntime": ort.__version__}))
    """
)


def workload_yaml(model: str, axes: dict[str, int], args: argparse.Namespace) -> str:
    """The workload file ``tuner run`` would read (ORT options left at tuner's defaults unless --no-spinning)."""
    lines = [
        f"name: bench-{model}",
        "workload:",
        "  kind: pool",
        "  backend: onnxruntime",
        f"  model: zoo:{model}",
    ]
    if not args.allow_spinning:
        lines.append("  options: {allow_spinning: false}")
    lines.append("search:")
    lines += [f"  {k}: {v}" for k, v in axes.items()]
    lines += [
        "measure:",
        f"  warmup_s: {args.warmup_s}",
        f"  window_s: {args.window_s}",
        f"  stable_windows: {args.stable_windows}",
        f"  stability: {args.stability}",
        f"  max_s: {args.max_s}",
        "study:",
        "  trial_timeout_s: 300",
    ]
    return "\n".join(lines) + "\n"


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_tuner(spec: Any, model_path: Path) -> dict[str, Any]:
    t0, c0 = time.monotonic(), _self_cpu_s()
    result = measure_config(spec, spec.default_params(), model_path=model_path)
    wall, parent_cpu = time.monotonic() - t0, _self_cpu_s() - c0
    if not result.ok:
        assert result.failure is not None
        raise SystemExit(f"tuner trial failed: {result.failure.describe()}")
    m = result.metrics
    cpu_util = float(m.get("cpu_util", float("nan")))
    return {
        "qps": float(m["qps"]),
        "measured_s": float(m["measured_s"]),
        "requests": int(m["requests"]),
        "windows": len(m.get("window_qps", [])),
        "stable": bool(m.get("stable")),
        "cpu_util": cpu_util,
        # CPU of the trial's process tree per request in the measured part (psutil, sampled by the parent)
        "cpu_us_per_req": cpu_util * CORES * float(m["measured_s"]) / int(m["requests"]) * 1e6,
        # this process (the parent: the poll loop with the psutil tree watcher, the event reader), % of one core
        "parent_core": parent_cpu / wall,
        "wall_s": wall,
    }


def run_hand(model_path: Path, axes: dict[str, int], measure_s: float, args: argparse.Namespace) -> dict[str, Any]:
    job = {
        "model": str(model_path),
        "threads": axes["threads"],
        "batch": axes["batch_size"],
        "allow_spinning": args.allow_spinning,
        "warmup_s": args.warmup_s,
        "measure_s": measure_s,
    }
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", HAND_LOOP],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"hand loop failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def _us(value: float) -> str:
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def print_platform() -> None:
    fp = fingerprint()
    rt = fp.get("runtimes", {})
    print(
        f"platform: {fp.get('cpu_model')} | {fp.get('cpu_logical')} logical / {fp.get('cpu_physical')} physical cores"
        f" | usable {fp.get('usable_cores')} | {fp.get('memory_mb')} MiB | {fp.get('os')}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in rt.items()) + f", tuner {fp.get('tuner')}")
    try:
        load = os.getloadavg()
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a busy box makes timings indicative)")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--rounds", type=int, default=5, help="A/B pairs per model (default 5)")
    ap.add_argument("--warmup-s", type=float, default=2.0, help="measure.warmup_s, both sides (default 2)")
    ap.add_argument("--window-s", type=float, default=1.0, help="measure.window_s (default 1)")
    ap.add_argument("--stable-windows", type=int, default=3, help="measure.stable_windows (default 3)")
    ap.add_argument("--stability", type=float, default=0.05, help="measure.stability (default 0.05)")
    ap.add_argument("--max-s", type=float, default=10.0, help="measure.max_s (default 10, keeps the run short)")
    ap.add_argument(
        "--no-spinning", dest="allow_spinning", action="store_false", help="ORT allow_spinning off (default on)"
    )
    args = ap.parse_args(argv)

    print("harness overhead: `tuner run` (execution.runner.measure_config, child process) vs a hand-written ORT loop")
    print_platform()
    print(
        f"measure: warmup_s {args.warmup_s}, window_s {args.window_s}, stable_windows {args.stable_windows}, "
        f"stability {args.stability}, max_s {args.max_s}; allow_spinning {args.allow_spinning}; "
        f"{args.rounds} rounds A (tuner) B (hand loop, same measured seconds as its A)"
    )
    t_all = time.monotonic()
    summary: list[tuple[str, float, float, float, float]] = []
    for model in args.models:
        axes, target = CONFIGS[model]
        spec = parse_spec(workload_yaml(model, axes, args))
        model_path = resolve_model_path(spec)
        assert model_path is not None
        print(f"\n== {model}: {', '.join(f'{k}={v}' for k, v in axes.items())}  (model file {model_path})")
        print(
            f"{'round':>5}  {'tuner qps':>11}  {'hand qps':>11}  {'ratio':>6}  {'measured_s':>10}  {'windows':>7}  "
            f"{'stable':>6}  {'CPU us/req A/B':>17}  {'parent %core':>12}  {'wall A/B s':>11}"
        )
        tuner_qps: list[float] = []
        hand_qps: list[float] = []
        cpu_ratio: list[float] = []
        parent: list[float] = []
        for r in range(1, args.rounds + 1):
            a = run_tuner(spec, model_path)
            b = run_hand(model_path, axes, a["measured_s"], args)
            tuner_qps.append(a["qps"])
            hand_qps.append(b["qps"])
            cpu_ratio.append(b["cpu_us_per_req"] / a["cpu_us_per_req"])
            parent.append(a["parent_core"])
            cpu_ab = f"{_us(a['cpu_us_per_req'])}/{_us(b['cpu_us_per_req'])}"
            print(
                f"{r:>5}  {a['qps']:>11.2f}  {b['qps']:>11.2f}  {a['qps'] / b['qps']:>6.3f}  {a['measured_s']:>10.2f}  "
                f"{a['windows']:>7}  {a['stable']!s:>6}  {cpu_ab:>17}  {a['parent_core']:>12.1%}  "
                f"{a['wall_s']:>5.1f}/{b['wall_s']:<5.1f}",
                flush=True,
            )
        med_t, med_h = statistics.median(tuner_qps), statistics.median(hand_qps)
        pair_ratios = sorted(t / h for t, h in zip(tuner_qps, hand_qps, strict=True))
        print(
            f"   median tuner {med_t:.2f} qps, median hand loop {med_h:.2f} qps; pair ratios "
            f"min {pair_ratios[0]:.3f} / median {statistics.median(pair_ratios):.3f} / max {pair_ratios[-1]:.3f}"
        )
        print(
            f"   CPU per request, hand/tuner child (contention-robust; spinning ORT threads count too): median "
            f"{statistics.median(cpu_ratio):.3f}; tuner parent process (psutil watcher, poll_s 0.05): median "
            f"{statistics.median(parent):.1%} of one core"
        )
        summary.append((model, med_t, med_h, statistics.median(pair_ratios), target, med_t / med_h))

    print(f"\ntotal wall time {time.monotonic() - t_all:.0f} s")
    for model, _, _, ratio, target, of_medians in summary:
        verdict = "meets" if ratio >= target else "MISSES"
        print(
            f"{model}: median of the paired ratios tuner/hand = {ratio:.3f} (target >= {target:.2f}: {verdict}); "
            f"ratio of medians {of_medians:.3f}"
        )
    # the headline is the median of the per-pair ratios: each pair ran back to back, so slow drift cancels
    print(
        "HEADLINE harness overhead, median of paired ratios tuner/hand loop: "
        + "; ".join(
            f"{m} {ratio:.3f} (target >= {target:.2f}, {'ok' if ratio >= target else 'miss'})"
            for m, _, _, ratio, target, _ in summary
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
