"""Decision stability: do fresh studies of the same workload name the same knee and a shared best?

Runs ``tuner optimize WORKLOAD --json`` ``--runs`` times (default 3), each into a fresh SQLite study in a
temporary folder (nothing is resumed), one after the other (never two at once on this box), and prints
per run: the knee, the best and its tie set (from the paired confirmation round when it ran), the knee's
confidence, the wall time and the trial counts. Then: whether the knee is identical in every run, and
whether the tie sets of all runs share a member.

The same is then done for a ``command`` workload that replays the RK3588 MobileNet pool table of the field
notes (1/2/3/6/9/12/15 runtimes -> 7.73/3.49/2.31/1.52/1.19/1.13/1.09 ms per image) with 5 % lognormal noise
per run and ``measure.repeats: 3`` (a program's figures: no windows), so the decision is exercised on
exactly known data: its knee is 9 runtimes.

Run: ``python bench/decision_stability.py`` (about 3 x 4 min for resnet50 on 2 cores, then ~1 min for the
table); ``--workload FILE`` for another workload, ``--skip-table`` / ``--skip-workload`` for one part, ``--json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

TABLE_PROGRAM = """
import json, random, sys
MS = {1: 7.73, 2: 3.49, 3: 2.31, 6: 1.52, 9: 1.19, 12: 1.13, 15: 1.09}
pool = int(sys.argv[1])
noise = random.lognormvariate(0.0, 0.05)
print(json.dumps({"qps": 1000.0 / MS[pool] * noise, "latency_p50_ms": MS[pool] * pool}))
"""

TABLE_WORKLOAD = """\
name: rk3588-table
workload:
  kind: command
  command: ["{python}", "table.py", "{pool_size}"]
  parse: json
search:
  pool_size: [1, 2, 3, 6, 9, 12, 15]
objectives:
  - qps: maximize
knee:
  tolerance: 0.10
measure:
  repeats: 3
study:
  sampler: grid
  trials: 7
  trial_timeout_s: 60
  confirm: {rounds: 3, max_configs: 3}
"""


def run_once(workload: Path, folder: Path, index: int) -> dict[str, Any]:
    db = folder / f"run{index}.db"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "optimize", str(workload), "--storage", str(db), "--json"],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run {index} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    report = json.loads(proc.stdout)
    knee, best = report.get("knee") or {}, report.get("best") or {}
    tie = [dict(t["params"]) for t in report.get("tie_set") or ([best] if best else [])]
    return {
        "run": index,
        "knee": knee.get("params"),
        "knee_confirmed": knee.get("confirmed"),
        "knee_confidence": knee.get("confidence"),
        "knee_reason": knee.get("reason"),
        "decided_by": report.get("decided_by", "search"),
        "best": best.get("params"),
        "tie_set": tie,
        "wall_s": round(wall, 1),
        "trials": report.get("trials"),
        "drift": (report.get("drift") or {}).get("relative"),
        "rounds": (report.get("confirmation") or {}).get("rounds"),
        "interference": [f["message"] for f in (report.get("confirmation") or {}).get("interference") or []],
    }


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    knees = [json.dumps(r["knee"], sort_keys=True) for r in runs]
    ties = [{json.dumps(p, sort_keys=True) for p in r["tie_set"]} for r in runs]
    shared = set.intersection(*ties) if ties else set()
    return {
        "workload": name,
        "runs": runs,
        "same_knee": len(set(knees)) == 1,
        "shared_tie_members": [json.loads(s) for s in sorted(shared)],
        "median_wall_s": sorted(r["wall_s"] for r in runs)[len(runs) // 2],
    }


def show(summary: dict[str, Any]) -> None:
    print(f"\n== {summary['workload']}")
    for r in summary["runs"]:
        print(
            f"run {r['run']}: knee {r['knee']} (confirmed {r['knee_confirmed']}, confidence {r['knee_confidence']}, "
            f"by {r['decided_by']}); best {r['best']}; tie set {r['tie_set']}; {r['wall_s']} s; trials {r['trials']}"
            + (f"; drift {r['drift']:.1%}" if isinstance(r.get("drift"), float) else "")
            + (f"; {r['rounds']} paired rounds" if r.get("rounds") else "")
        )
        for line in r.get("interference") or []:
            print(f"  interference: {line}")
    print(f"same knee in all runs: {summary['same_knee']}")
    print(f"tie sets share a member: {bool(summary['shared_tie_members'])} {summary['shared_tie_members']}")
    print(f"median wall time: {summary['median_wall_s']} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", type=Path, default=ROOT / "workloads" / "resnet50.yaml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-workload", action="store_true")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--keep", type=Path, help="keep the runs' studies (runN.db) in this folder, for `tuner report` afterwards"
    )
    args = parser.parse_args()
    out = []
    with tempfile.TemporaryDirectory(prefix="tuner-decisions-") as tmp:
        folder = Path(tmp)
        if args.keep is not None:
            folder = args.keep.resolve()
            folder.mkdir(parents=True, exist_ok=True)
        if not args.skip_workload:
            runs = [run_once(args.workload.resolve(), folder, i + 1) for i in range(args.runs)]
            out.append(summarise(args.workload.name, runs))
        if not args.skip_table:
            table = folder / "table"
            table.mkdir(exist_ok=True)
            (table / "table.py").write_text(textwrap.dedent(TABLE_PROGRAM))
            (table / "rk3588-table.yaml").write_text(TABLE_WORKLOAD)
            runs = [run_once(table / "rk3588-table.yaml", table, i + 1) for i in range(args.runs)]
            out.append(summarise("rk3588-table (command, 5 % noise, repeats 3)", runs))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for summary in out:
            show(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
