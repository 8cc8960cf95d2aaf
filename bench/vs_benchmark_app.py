"""tuner's best OpenVINO config vs ``benchmark_app -hint throughput`` on the zoo ResNet-50, f32.

1. **search**: ``tuner optimize`` (the library call behind the CLI) on ``workloads/openvino-resnet50.yaml``
   with a small budget (``--trials``) into a throw-away SQLite study; its best feasible config (highest
   qps) is the candidate. ``--config pool_size=2,requests_per_sync=2,...`` skips the search.
2. **compare**, alternated A B B A ... for ``--rounds`` rounds:

   * **A, tuner**: ``tuner.runner.measure_config`` on that config (a fresh ``python -m tuner._worker``
     child: load, warm-up, steady-state windows), exactly what ``tuner run`` measures;
   * **B, the hint**: ``benchmark_app -m resnet50.onnx -d CPU -hint throughput -infer_precision f32
     -b 1 -t SECONDS`` (the device picks streams and requests; ``-b`` because the zoo model's batch is
     dynamic); its ``Throughput: X FPS``. It runs as a ``kind: command`` trial, so both sides are
     launched the same way (a fresh process in its own session, watched by the same parent): on a
     shared Linux box the scheduler's per-session groups would otherwise hand them different CPU shares.

   Both are images per second at f32 on the same model file. The ratio of medians (A / B) is printed
   last, next to the target (>= 1.05).

Run: ``python bench/vs_benchmark_app.py`` (about 8-10 minutes on 2 cores with the defaults; needs
``pip install -e '.[openvino]'``). ``--json`` prints one JSON document at the end. Timings on a shared
or busy machine are indicative only: alternation softens drift, it does not remove it.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tuner.platform import fingerprint
from tuner.runner import measure_config, resolve_model_path
from tuner.spec import load_spec, parse_spec
from tuner.workloads.command import resolve_program

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "workloads" / "openvino-resnet50.yaml"
TARGET = 1.05


def search(spec: Any, trials: int, log: Any) -> dict[str, Any]:
    from tuner.optimize import optimize

    with tempfile.TemporaryDirectory() as tmp:
        url = "sqlite:///" + str(Path(tmp) / "vs-benchmark-app.db")

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "trial_end":
                log(f"  trial {event['number']}: {event['outcome']}, qps {event.get('qps')}")

        result = optimize(spec, storage=url, trials=trials, on_event=on_event)
        if result.knee is None or result.knee.best is None:
            raise SystemExit(f"the search found no feasible config ({result.stop_reason})")
        best = result.knee.best
        log(
            f"  search: {result.measured} trials ({result.stop_reason}); best {dict(best.params)} "
            f"at {float(best.metrics['qps']):.2f} qps"
        )
        return dict(best.params)


HINT_WORKLOAD = """\
name: benchmark-app-hint
workload:
  kind: command
  command: [benchmark_app, -m, "{model}", -d, CPU, -hint, throughput, -infer_precision, f32,
            -b, "{batch_size}", -t, "%(seconds)d"]
  parse:
    qps: 'Throughput:\\s+([\\d.]+) FPS'
search:
  batch_size: [%(batch)d]
study: {trial_timeout_s: %(timeout)d}
"""
RESOLVED = re.compile(
    r"^\[ INFO \]\s+(NUM_STREAMS|OPTIMAL_NUMBER_OF_INFER_REQUESTS|INFERENCE_NUM_THREADS|"
    r"INFERENCE_PRECISION_HINT|PERFORMANCE_HINT):\s+(.+)$",
    re.MULTILINE,
)


def hint_spec(model: Path, seconds: int, batch: int) -> Any:
    """benchmark_app as a ``kind: command`` workload: launched and watched exactly as tuner's own trials."""
    if resolve_program("benchmark_app", Path.cwd(), None) is None:
        raise SystemExit("benchmark_app not found: pip install -e '.[openvino]'")
    text = HINT_WORKLOAD % {"seconds": seconds, "batch": batch, "timeout": seconds + 180}
    return parse_spec(text.replace("{model}", str(model)), path=ROOT / "bench" / "benchmark-app-hint.yaml")


def hint_resolved(model: Path, batch: int) -> dict[str, str]:
    """What the throughput hint resolves to here (a 1-second benchmark_app run, outside the timing)."""
    program = resolve_program("benchmark_app", Path.cwd(), None)
    argv = [
        str(program),
        "-m",
        str(model),
        "-d",
        "CPU",
        "-hint",
        "throughput",
        "-infer_precision",
        "f32",
        "-b",
        str(batch),
        "-t",
        "1",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=180).stdout
    resolved = dict(RESOLVED.findall(out))
    m = re.search(r"(\d+) inference requests using (\d+) streams", out)
    if m:
        resolved["requests"], resolved["streams"] = m.group(1), m.group(2)
    return resolved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10, help="search budget (measured trials)")
    ap.add_argument("--config", help="skip the search: axis=value,... (e.g. pool_size=2,requests_per_sync=2)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (alternated)")
    ap.add_argument("--seconds", type=int, default=15, help="benchmark_app -t")
    ap.add_argument("--hint-batch", type=int, default=1, help="benchmark_app -b (the zoo model's batch is dynamic)")
    ap.add_argument("--json", action="store_true", help="print one JSON document at the end")
    args = ap.parse_args()

    def log(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    spec = load_spec(WORKLOAD)
    model = resolve_model_path(spec)
    assert model is not None
    if args.config:
        overrides: dict[str, Any] = {}
        for item in args.config.split(","):
            key, _, value = item.partition("=")
            overrides[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
        params = spec.resolve_params(overrides)
    else:
        log(f"search: tuner optimize {WORKLOAD.name}, {args.trials} trials")
        params = search(spec, args.trials, log)
    log(f"config: {params}")

    tuner_qps: list[float] = []
    hint_qps: list[float] = []
    applied: dict[str, Any] = {}
    hint = hint_spec(model, args.seconds, args.hint_batch)
    resolved = hint_resolved(model, args.hint_batch)
    for r in range(args.rounds):
        order = ("tuner", "hint") if r % 2 == 0 else ("hint", "tuner")
        for side in order:
            t0 = time.monotonic()
            if side == "tuner":
                result = measure_config(spec, params, model_path=model)
                if not result.ok:
                    raise SystemExit(f"tuner's trial failed: {result.failure and result.failure.describe()}")
                tuner_qps.append(float(result.metrics["qps"]))
                applied = dict(result.applied)
                value = tuner_qps[-1]
            else:
                result = measure_config(hint, hint.default_params())
                if not result.ok:
                    raise SystemExit(f"benchmark_app failed: {result.failure and result.failure.describe()}")
                hint_qps.append(float(result.metrics["qps"]))
                value = hint_qps[-1]
            log(f"round {r + 1} {side:5s}: {value:8.2f} images/s  ({time.monotonic() - t0:.0f} s)")

    a, b = statistics.median(tuner_qps), statistics.median(hint_qps)
    ratio = a / b if b > 0 else float("nan")
    verdict = "meets" if ratio >= TARGET else "misses"
    log(f"tuner {params}: median {a:.2f} images/s  (runs {', '.join(f'{v:.2f}' for v in tuner_qps)})")
    log(
        f"  resolved: NUM_STREAMS {applied.get('NUM_STREAMS')}, INFERENCE_NUM_THREADS "
        f"{applied.get('INFERENCE_NUM_THREADS')}, precision {applied.get('INFERENCE_PRECISION_HINT')}"
    )
    log(f"benchmark_app -hint throughput: median {b:.2f} images/s  (runs {', '.join(f'{v:.2f}' for v in hint_qps)})")
    log(f"  resolved: {resolved}")
    log(f"ratio tuner / hint = {ratio:.3f}  (target >= {TARGET}: {verdict})")
    if args.json:
        print(
            json.dumps(
                {
                    "config": params,
                    "tuner_qps": tuner_qps,
                    "hint_qps": hint_qps,
                    "tuner_median": a,
                    "hint_median": b,
                    "ratio": ratio,
                    "target": TARGET,
                    "applied": applied,
                    "hint_resolved": resolved,
                    "platform": fingerprint(),
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
