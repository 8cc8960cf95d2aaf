"""Precision gain: how much does putting precision in the search space buy, at an accuracy the guard accepts?

1. **Two short searches** (``--skip-search`` with ``--a`` / ``--b`` skips them): ``tuner optimize`` of the
   workload (default ``workloads/resnet50-precision.yaml``) with ``options.precision`` fixed to ``fp32`` (A:
   today's search), then of the workload as it is, precision searched (B), each into a fresh SQLite study in
   a temporary folder, ``--trials`` measured trials each (default 8), ``qps`` the only objective, the
   workload's constraints (the accuracy guard among them) kept, no confirmation round. Each study's feasible
   best is its side's configuration. The parent builds the variants before B's first trial: that time is in
   B's search wall time, never in a trial.
2. **Paired re-measurement**: ``--pairs`` pairs (default 6: the fewest whose sign-test interval of the median
   covers >= 95 %) of fresh ``tuner run WORKLOAD --set ... --json``
   children, alternated A B A B ..., each with the workload's ``measure:`` settings; a pair shares the
   machine's state, so the per-pair ratio B / A cancels slow drift.
3. **Figures**: qps of every run; per side the median; the paired ratios B / A, their median and the
   geometric mean with a 95 % Student-t interval over the log ratios
   (:func:`tuner.analysis.intervals.t_interval`), plus a distribution-free interval of the median (the
   order statistics the sign test allows, with the coverage it has at this many pairs); and the accuracy
   guard's figures of B's runs (``accuracy_*``). The target of issue 15 is B / A >= 1.5.

Run: ``python bench/precision_gain.py`` (about 8-10 minutes on 2 cores for resnet50: the two searches of 8
trials ~2.5 min each, variant builds ~25 s, 10 runs of ~12 s); ``--trials N``, ``--pairs N``, ``--workload
FILE``; ``--skip-search --a '{"pool_size": 1, ...}' --b '{...}'`` re-measures given configs only; ``--json``
prints one JSON document. Timings on a shared or busy machine are indicative only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _cli import run_config, tuner
from scipy import stats

from tuner.analysis.intervals import t_interval
from tuner.metrics import ACCURACY_METRICS
from tuner.text import json_safe

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKLOAD = ROOT / "workloads" / "resnet50-precision.yaml"


def variant_file(workload: Path, folder: Path, *, fp32_only: bool, trials: int) -> Path:
    """The workload for one side: qps the only objective, no confirmation; A with precision fixed to fp32."""
    doc = yaml.safe_load(workload.read_text())
    doc["objectives"] = [{"qps": "maximize"}]
    study = dict(doc.get("study") or {})
    study.update({"trials": trials, "confirm": {"rounds": 0}})
    study.pop("storage", None)
    doc["study"] = study
    model = str((doc.get("workload") or {}).get("model") or "")
    if model and not model.startswith("zoo:") and not Path(model).is_absolute():
        doc["workload"]["model"] = str((workload.parent / model).resolve())
    if fp32_only:
        doc["search"].pop("options.precision", None)
        doc["workload"].setdefault("options", {})["precision"] = "fp32"
        doc["name"] = f"{doc.get('name') or workload.stem}-fp32"
    out = folder / f"{doc.get('name') or workload.stem}{'' if fp32_only else '-searched'}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def search(workload: Path, folder: Path) -> dict[str, Any]:
    """``tuner optimize`` into a fresh study: the feasible best's params and metrics, the wall time."""
    db = folder / f"{workload.stem}.db"
    t0 = time.monotonic()
    proc = tuner(["optimize", str(workload), "--storage", str(db), "--no-confirm", "--json"], folder, 3600)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"tuner optimize {workload.name} failed (exit {proc.returncode}): {proc.stderr[-600:]}")
    report = json.loads(proc.stdout)
    best = report.get("best") or {}
    if not best:
        raise SystemExit(f"tuner optimize {workload.name}: no feasible best ({report.get('knee_reason')})")
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: built")]
    return {
        "params": dict(best["params"]),
        "metrics": best.get("metrics", {}),
        "trials": report.get("trials"),
        "wall_s": round(wall, 1),
        "variants_built": notes,
    }


def run_once(workload: Path, params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One ``tuner run WORKLOAD --set ... --json``: a fresh child measuring ``params``."""
    proc, doc, wall = run_config(workload, params, folder, 900)
    if proc.returncode != 0 or "metrics" not in doc:
        raise SystemExit(f"tuner run {params} failed (exit {proc.returncode}): {proc.stderr[-600:]}")
    metrics = doc["metrics"]
    out = {"qps": float(metrics["qps"]), "latency_p99_ms": metrics.get("latency_p99_ms"), "wall_s": wall}
    out.update({k: metrics[k] for k in ACCURACY_METRICS if k in metrics})
    out["precision"] = (doc.get("applied") or {}).get("precision")
    return out


def median_interval(ratios: list[float]) -> dict[str, Any]:
    """The sample median and the narrowest order-statistic interval ``[x_(k+1), x_(n-k)]`` (the sign test's)
    whose coverage ``1 - 2 P(Bin(n, 1/2) <= k)`` is still >= 95 %; with too few pairs for that (n <= 5) the
    full range and the coverage it has."""
    xs = sorted(ratios)
    n = len(xs)
    k = 0
    while k + 1 < n - 1 - k and 1 - 2 * stats.binom.cdf(k + 1, n, 0.5) >= 0.95:
        k += 1
    coverage = float(1 - 2 * stats.binom.cdf(k, n, 0.5))
    return {"median": statistics.median(xs), "low": xs[k], "high": xs[n - 1 - k], "coverage": coverage}


def paired(workload: Path, a: dict[str, Any], b: dict[str, Any], pairs: int, folder: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for index in range(pairs):
        for name, params in (("A", a), ("B", b)):
            result = run_once(workload, params, folder)
            runs[name].append(result)
            print(f"pair {index + 1} {name}: {result['qps']:.2f} qps ({result['precision']})", file=sys.stderr)
    ratios = [rb["qps"] / ra["qps"] for ra, rb in zip(runs["A"], runs["B"], strict=True)]
    logs = t_interval([math.log(r) for r in ratios])
    return {
        "runs": runs,
        "median_qps": {k: statistics.median(r["qps"] for r in v) for k, v in runs.items()},
        "ratios": ratios,
        "ratio_median": median_interval(ratios),
        "ratio_geomean": {"value": math.exp(logs.mean), "low": math.exp(logs.low), "high": math.exp(logs.high)},
        "guard_b": {k: statistics.median(r[k] for r in runs["B"]) for k in ACCURACY_METRICS if k in runs["B"][0]},
    }


def show(doc: dict[str, Any]) -> None:
    for side in ("A", "B"):
        s = doc["search"].get(side)
        if s:
            qps = s["metrics"].get("qps", math.nan)
            print(f"search {side}: best {s['params']} at {qps:.2f} qps ({s['wall_s']} s, trials {s['trials']})")
            for note in s.get("variants_built", []):
                print(f"  {note}")
    p = doc["paired"]
    for side in ("A", "B"):
        shown = ", ".join(f"{r['qps']:.2f}" for r in p["runs"][side])
        print(f"{side}: qps {shown}; median {p['median_qps'][side]:.2f}")
    m, g = p["ratio_median"], p["ratio_geomean"]
    print(f"B / A per pair: {', '.join(f'{r:.3f}' for r in p['ratios'])}")
    print(
        f"B / A median {m['median']:.3f} [{m['low']:.3f}, {m['high']:.3f}] (order statistics, coverage "
        f"{m['coverage']:.1%}); geometric mean {g['value']:.3f} [{g['low']:.3f}, {g['high']:.3f}] (95 % t)"
    )
    if p["guard_b"]:
        print("guard of B: " + ", ".join(f"{k} {v:.4g}" for k, v in p["guard_b"].items()))
    print(f"target B / A >= 1.5: {'met' if m['median'] >= 1.5 else 'NOT met'} (median {m['median']:.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--a", type=json.loads, help="A's params (JSON) with --skip-search")
    ap.add_argument("--b", type=json.loads, help="B's params (JSON) with --skip-search")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.pairs < 2:
        raise SystemExit("--pairs: at least 2 (an interval needs two ratios)")
    workload = args.workload.resolve()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="precision-gain-") as tmp:
        folder = Path(tmp)
        searched = variant_file(workload, folder, fp32_only=False, trials=args.trials)
        doc: dict[str, Any] = {"workload": str(workload), "search": {}}
        if args.skip_search:
            if not (args.a and args.b):
                raise SystemExit("--skip-search needs --a and --b")
            a, b = dict(args.a), dict(args.b)
        else:
            fp32 = variant_file(workload, folder, fp32_only=True, trials=args.trials)
            doc["search"]["A"] = search(fp32, folder)
            doc["search"]["B"] = search(searched, folder)
            a, b = doc["search"]["A"]["params"], doc["search"]["B"]["params"]
        a.setdefault("options.precision", "fp32")
        doc["a"], doc["b"] = a, b
        doc["paired"] = paired(searched, a, b, args.pairs, folder)
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(json_safe(doc), indent=2))
    else:
        show(doc)
        print(f"wall {doc['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
