"""SLO vs closed loop: does tuning under a latency bound pick a config that serves more at the bound?

Closed-loop tuning asks how fast the box goes flat out; a server asks for the highest arrival rate it
sustains while its p99 latency stays under a bound (MLPerf's Server scenario). This script finds the
configuration each kind of tuning picks and confirms both with MLPerf LoadGen Server runs, alternated:

1. **Search** (skipped with ``--skip-search``; one side's ``--closed-config`` / ``--slo-config`` JSON skips
   that side's): ``tuner optimize CLOSED --json`` into a fresh SQLite study, then
   ``tuner optimize SERVER --json`` likewise; each study's pick (``--pick``: the knee by default, or the
   best) is that side's configuration. resnet50: CLOSED is ``workloads/resnet50.yaml`` (the closed-loop
   study of the same four axes), SERVER ``workloads/resnet50-server.yaml``. ``--sim``: SERVER is
   ``workloads/sim-server.yaml`` and CLOSED the same file with ``load:`` removed and ``qps`` as objective.
2. **Confirmation**: ``--rounds`` rounds (default 3), each ``tuner run SERVER --set ... --json`` for A (the
   closed-loop pick) then B (the SLO pick): A B A B ..., every run a fresh child process with the same
   ``load:`` (bound, percentile, LoadGen seed, peak search), so both are judged at the same bound by the
   same bisection of the Poisson arrival rate.
3. **Figures**: per round each one's ``server_qps`` (the highest scheduled rate whose p99 met the bound),
   its p99 there and its closed-loop qps; per side the median over rounds; the ratio B / A as the ratio of
   medians and as the geometric mean of the paired (same-round) ratios with a 95 % Student-t interval over
   their logs, over the rounds where both met the bound at some rate. A config that met the bound at no
   rate tried has server_qps 0 in that round (LoadGen's reason is printed; counted apart, and when it is
   most rounds the medians decide). When both searches pick the same configuration the script says so and
   measures it alone.

Run: ``python bench/slo_vs_closed.py --sim`` (about 4 minutes on 2 cores: the closed-loop study of the twin
~1 min, the SLO one ~2.5 min, then 3 rounds of 2 runs of ~8 s); ``python bench/slo_vs_closed.py`` for
resnet50 (about 30 minutes: the closed-loop study ~10 min, the SLO study ~12 min, then 3 rounds of 2 runs
of ~40 s); ``--rounds N``; ``--pick best`` compares the studies' best instead of their knees;
``--skip-search --closed-config '{"pool_size": 2, ...}' --slo-config '{...}'`` confirms given configs only.
``--json`` prints one JSON document. Timings taken on a shared or busy machine are indicative only: the
alternation and the medians soften drift, they do not remove it.
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

from tuner.text import json_safe

ROOT = Path(__file__).resolve().parent.parent


def closed_variant(server: Path, folder: Path) -> Path:
    """The server workload as a closed-loop one: ``load:`` removed, ``qps`` the objective."""
    doc = yaml.safe_load(server.read_text())
    doc.pop("load", None)
    doc["name"] = f"{doc.get('name') or server.stem}-closed"
    doc["objectives"] = [{"qps": "maximize"}]
    out = folder / f"{doc['name']}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def search(workload: Path, folder: Path, pick: str) -> dict[str, Any]:
    """``tuner optimize WORKLOAD --json`` into a fresh study; the picked params and what the study said."""
    db = folder / f"{workload.stem}.db"
    t0 = time.monotonic()
    proc = tuner(["optimize", str(workload), "--storage", str(db), "--json"], folder, 7200)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise SystemExit(f"tuner optimize {workload.name} failed (exit {proc.returncode}): {tail}")
    report = json.loads(proc.stdout)
    chosen = report.get(pick) or report.get("best")
    if not chosen:
        raise SystemExit(f"tuner optimize {workload.name}: no feasible configuration to pick")
    return {
        "workload": workload.name,
        "pick": pick if report.get(pick) else "best",
        "params": dict(chosen["params"]),
        "metrics": {k: chosen.get("metrics", {}).get(k) for k in ("qps", "server_qps", "latency_p99_ms")},
        "rate_metric": report.get("rate_metric", "qps"),
        "trials": report.get("trials"),
        "wall_s": round(wall, 1),
    }


def serve_once(server: Path, params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One ``tuner run SERVER --set ... --json`` (a fresh child): server_qps at the bound and the runs."""
    proc, doc, wall = run_config(server, params, folder, 3600)
    if proc.returncode != 0 or "metrics" not in doc:
        reason = (doc.get("failure") or {}).get("reason") or " ".join(proc.stderr.strip().splitlines()[-2:])
        return {"ok": False, "server_qps": 0.0, "reason": reason, "wall_s": wall}
    metrics = doc["metrics"]
    loadgen = doc.get("applied", {}).get("loadgen", {})
    return {
        "ok": True,
        "server_qps": float(metrics.get("server_qps") or 0.0),
        "server_latency_ms": metrics.get("server_latency_ms"),
        "loadgen_valid": metrics.get("loadgen_valid"),
        "qps": metrics.get("qps"),
        "reason": loadgen.get("reason"),
        "runs": [
            {
                "target_qps": round(r["target_qps"], 2),
                "p99_ms": r.get("latency_ms", {}).get("p99"),
                "met": r.get("bound_met"),
            }
            for r in loadgen.get("runs", [])
        ],
        "wall_s": wall,
    }


def ratio_interval(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """B / A: the geometric mean of the paired ratios with a 95 % Student-t interval over their logs, over the
    rounds where both met the bound at some rate; the others are counted in ``note`` (a side with server_qps 0
    in every round makes the ratio infinite or 0)."""
    both = [(a, b) for a, b in pairs if a > 0 and b > 0]
    a_none = sum(1 for a, _ in pairs if a <= 0)
    b_none = sum(1 for _, b in pairs if b <= 0)
    notes = [
        f"{side} met the bound at no rate in {n} of {len(pairs)} rounds"
        for side, n in (("A", a_none), ("B", b_none))
        if n
    ]
    if not both:
        a_any, b_any = a_none < len(pairs), b_none < len(pairs)
        value = math.inf if b_any and not a_any else 0.0 if a_any and not b_any else math.nan
        return {"geomean": value, "low": None, "high": None, "rounds": 0, "note": "; ".join(notes) or None}
    logs = [math.log(b / a) for a, b in both]
    mean = statistics.fmean(logs)
    low = high = None
    if len(logs) >= 2:
        half = float(stats.t.ppf(0.975, len(logs) - 1)) * statistics.stdev(logs) / math.sqrt(len(logs))
        low, high = math.exp(mean - half), math.exp(mean + half)
    else:
        notes.append("one round with both: no interval")
    return {"geomean": math.exp(mean), "low": low, "high": high, "rounds": len(both), "note": "; ".join(notes) or None}


def confirm(server: Path, a: dict[str, Any], b: dict[str, Any], rounds: int, folder: Path) -> dict[str, Any]:
    same = a == b
    sides = {"A": a} if same else {"A": a, "B": b}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for index in range(rounds):
        for name, params in sides.items():
            result = serve_once(server, params, folder)
            runs[name].append(result)
            print(f"round {index + 1} {name}: {_line(result)}", file=sys.stderr, flush=True)
    medians = {name: statistics.median(r["server_qps"] for r in rs) for name, rs in runs.items()}
    out: dict[str, Any] = {"same_config": same, "runs": runs, "median_server_qps": medians}
    if not same:
        pairs = [(ra["server_qps"], rb["server_qps"]) for ra, rb in zip(runs["A"], runs["B"], strict=True)]
        out["ratio_of_medians"] = medians["B"] / medians["A"] if medians["A"] > 0 else math.inf
        out["paired_ratio"] = ratio_interval(pairs)
    return out


def _line(r: dict[str, Any]) -> str:
    if not r["ok"]:
        return f"FAILED: {r['reason']} ({r['wall_s']} s)"
    tried = ", ".join(f"{t['target_qps']:g}{'+' if t['met'] else '-'}" for t in r["runs"])
    p99 = r.get("server_latency_ms")
    at = f" at p99 {p99:.1f} ms" if isinstance(p99, float) and math.isfinite(p99) else ""
    why = f"; {r['reason']}" if r.get("reason") else ""
    return (
        f"server_qps {r['server_qps']:.1f}{at} (closed-loop qps {r['qps']:.1f}; LoadGen rates {tried}; "
        f"valid {r['loadgen_valid']}){why} ({r['wall_s']} s)"
    )


def show(doc: dict[str, Any]) -> None:
    load = doc["load"]
    print(f"\n== {doc['workload']}: p{load['percentile'] * 100:g} <= {load['latency_ms']:g} ms")
    for side, name in (("closed", "A, closed-loop pick"), ("slo", "B, SLO pick")):
        info = doc["picks"][side]
        found = f" ({info['pick']} of {info['workload']}, {info['wall_s']} s)" if info.get("workload") else " (given)"
        print(f"{name}: {info['params']}{found}")
    c = doc["confirmation"]
    if c["same_config"]:
        runs = c["runs"]["A"]
        print(
            f"the two searches pick the same configuration; its server_qps over {len(runs)} rounds: "
            f"{[round(r['server_qps'], 1) for r in runs]} (median {c['median_server_qps']['A']:.1f})"
        )
        return
    for name in ("A", "B"):
        values = [round(r["server_qps"], 1) for r in c["runs"][name]]
        closed = [round(r["qps"], 1) for r in c["runs"][name] if r["ok"]]
        print(
            f"{name}: server_qps per round {values}, median {c['median_server_qps'][name]:.1f}; "
            f"closed-loop qps {closed}"
        )
    p = c["paired_ratio"]
    interval = f" (95 % [{p['low']:.3f}, {p['high']:.3f}])" if p.get("low") is not None else ""
    rounds = p.get("rounds") or 0
    over = f" over {rounds} round{'s' if rounds > 1 else ''} where both met the bound" if rounds else ""
    note = f"; {p['note']}" if p.get("note") else ""
    print(
        f"B / A at the bound: ratio of medians {c['ratio_of_medians']:.3f}; paired geometric mean "
        f"{p['geomean']:.3f}{interval}{over}{note}"
    )
    print(verdict(c))


def verdict(c: dict[str, Any]) -> str:
    """What the rounds say, in words: the medians decide when one side failed the bound in most rounds, the
    paired interval otherwise."""
    p, medians = c["paired_ratio"], c["median_server_qps"]
    if medians["A"] == 0.0 and medians["B"] > 0.0:
        return "SLO tuning serves more at the bound: the closed-loop winner meets it at no rate in most rounds"
    if medians["B"] == 0.0 and medians["A"] > 0.0:
        return "the closed-loop winner serves more at the bound: the SLO pick meets it at no rate in most rounds"
    if p.get("low") is not None and p["low"] > 1.0:
        return "SLO tuning serves more at the bound than the closed-loop winner"
    if p.get("high") is not None and p["high"] < 1.0:
        return "the closed-loop winner serves more at the bound"
    return "no significant difference at the bound (they coincide within the rounds' spread)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim", action="store_true", help="the sim twin (workloads/sim-server.yaml)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pick", choices=("knee", "best"), default="knee", help="what each study picks")
    parser.add_argument("--skip-search", action="store_true", help="confirm --closed-config / --slo-config only")
    parser.add_argument("--closed-config", type=json.loads, help="A's params as JSON (skips the closed search)")
    parser.add_argument("--slo-config", type=json.loads, help="B's params as JSON (skips the SLO search)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.skip_search and not (args.closed_config and args.slo_config):
        parser.error("--skip-search needs --closed-config and --slo-config")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    server = ROOT / "workloads" / ("sim-server.yaml" if args.sim else "resnet50-server.yaml")
    load = yaml.safe_load(server.read_text())["load"]
    with tempfile.TemporaryDirectory(prefix="tuner-slo-") as tmp:
        folder = Path(tmp)
        closed = closed_variant(server, folder) if args.sim else ROOT / "workloads" / "resnet50.yaml"
        picks: dict[str, dict[str, Any]] = {}
        for side, workload, given in (("closed", closed, args.closed_config), ("slo", server, args.slo_config)):
            if given:
                picks[side] = {"params": dict(given)}
            else:
                print(f"searching {workload.name} ...", file=sys.stderr, flush=True)
                picks[side] = search(workload, folder, args.pick)
                print(f"  {side} pick: {picks[side]['params']}", file=sys.stderr, flush=True)
        confirmation = confirm(server, picks["closed"]["params"], picks["slo"]["params"], args.rounds, folder)
    doc = {"workload": server.name, "load": load, "picks": picks, "confirmation": confirmation}
    if args.json:
        print(json.dumps(json_safe(doc), indent=2, default=str))  # inf / NaN -> null
    else:
        show(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
