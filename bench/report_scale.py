"""How long does ``tuner report STORAGE --json`` take on a study of more than 10,000 trials? (target < 2 s)

Builds one study in an SQLite file the way ``tuner optimize`` records it -- study user attributes
(workload text and hash, platform fingerprint, objectives, knee tolerance) and, per trial, the
``config`` and every metric as user attributes, the objectives as values, the searched axes as
params -- with fake but plausible numbers from the ``sim`` device twin's throughput model
(:func:`tuner.backends.sim.bound_qps`) plus noise, a few failed and skipped trials, and some
configurations measured twice. Then times the command end to end in a subprocess, best of ``--runs``.

The study and its attributes are created through Optuna; the trial rows are bulk-inserted into
Optuna's own tables (``trials``, ``trial_user_attributes``, ``trial_values``, ``trial_params``) in one
transaction, because adding 10,000 trials one by one through ``Study.add_trials`` takes many minutes
on SQLite. ``tuner report`` then reads the storage like any other.

    python bench/report_scale.py                 # 10,500 trials, 3 runs
    python bench/report_scale.py --trials 20000 --keep /tmp/big.db
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOAD = """\
name: scale
workload:
  kind: pool
  backend: sim
  options: {units: 4, host_cpus: 16, service_ms: 2.0, host_overhead_ms: 3.0, noise: 0.02}
search:
  pool_size: {low: 1, high: 256}
  threads: [1, 2, 3, 4, 6, 8]
  requests_per_sync: [1, 2, 4, 8]
  batch_size: [1, 2, 4, 8, 16, 32, 64]
objectives:
  - qps: maximize
  - latency_p99_ms: minimize
constraints:
  latency_p99_ms: {max: 1000}
measure: {warmup_s: 0.3, window_s: 0.3, stable_windows: 3, stability: 0.05, max_s: 6}
study: {sampler: tpe, trials: 10500, seed: 0}
"""

OPTIONS = {"units": 4, "host_cpus": 16, "service_ms": 2.0, "host_overhead_ms": 3.0, "noise": 0.02}
POOL = 256
THREADS = [1, 2, 3, 4, 6, 8]
RPS = [1, 2, 4, 8]
BATCH = [1, 2, 4, 8, 16, 32, 64]


def _fake_trial(rng: random.Random, params: dict[str, int]) -> dict[str, object]:
    from tuner.backends.sim import bound_qps

    bound = bound_qps(OPTIONS, **params)
    qps = bound * rng.uniform(0.93, 0.99)
    windows = [qps * rng.gauss(1.0, 0.01) for _ in range(3)]
    in_flight = params["pool_size"] * params["requests_per_sync"] * params["batch_size"]
    p50 = 1000.0 * in_flight / max(qps, 1e-9) * rng.uniform(0.95, 1.05)
    measured_s = 0.9
    requests = int(qps * measured_s / params["batch_size"])
    rss = 60.0 + 8.0 * params["pool_size"] + 0.5 * in_flight
    p99 = p50 * rng.uniform(1.15, 1.6)
    return {
        "qps": qps,
        "rps": qps / params["batch_size"],
        "latency_p50_ms": p50,
        "latency_p90_ms": p50 * 1.1,
        "latency_p95_ms": p50 * 1.15,
        "latency_p99_ms": p99,
        "latency_mean_ms": p50 * 1.02,
        "latency_max_ms": p99 * 1.3,
        "peak_rss_mb": rss,
        "cpu_util": min(1.0, qps / 20000.0),
        "load_s": 0.02 * params["pool_size"],
        "first_request_ms": p50,
        "measured_s": measured_s,
        "requests": requests,
        "stable": True,
        "window_qps": windows,
        "applied": {"model": "sim-1", "units": 4, "threads": params["threads"]},
        "wall_s": 1.6,
        "constraints": [p99 - 1000.0 if p99 > 1000.0 else -1.0],
        "feasible": p99 <= 1000.0,
    }


def build(path: Path, n_trials: int, seed: int = 0) -> str:
    """Create the study in ``path`` (SQLite); returns its name."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution, distribution_to_json
    from sqlalchemy import create_engine, insert, text
    from sqlalchemy import table as sql_table

    from tuner.config.spec import parse_spec
    from tuner.platform import fingerprint, platform_tag

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{path}"
    spec = parse_spec(WORKLOAD)
    fp = fingerprint()
    name = f"scale@{platform_tag(fp)}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    for key, value in {
        "workload_name": spec.name,
        "workload_text": spec.text,
        "workload_path": None,
        "spec_hash": spec.spec_hash,
        "platform": fp,
        "platform_tag": platform_tag(fp),
        "tuner_version": fp["tuner"],
        "objectives": [list(o) for o in spec.objectives],
        "knee_tolerance": 0.1,
        "axes": {},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }.items():
        study.set_user_attr(key, value)
    study_id = study._study_id
    storage.engine.dispose()

    dists = {
        "pool_size": IntDistribution(1, POOL),
        "threads": CategoricalDistribution(THREADS),
        "requests_per_sync": CategoricalDistribution(RPS),
        "batch_size": CategoricalDistribution(BATCH),
    }
    djson = {k: distribution_to_json(d) for k, d in dists.items()}
    rng = random.Random(seed)
    trials, attrs, values, params_rows = [], [], [], []
    start = dt.datetime(2026, 1, 1)
    seen: list[dict[str, int]] = []
    measured: dict[tuple[int, ...], tuple[int, dict[str, object]]] = {}
    for number in range(n_trials):
        trial_id = number + 1
        remeasure = bool(seen) and rng.random() < 0.03  # a configuration measured again (--remeasure)
        if remeasure:
            params = dict(rng.choice(seen))
        else:
            params = {
                "pool_size": rng.randint(1, POOL),
                "threads": rng.choice(THREADS),
                "requests_per_sync": rng.choice(RPS),
                "batch_size": rng.choice(BATCH),
            }
            seen.append(params)
        key = tuple(params.values())
        roll = rng.random()
        t0 = start + dt.timedelta(seconds=2 * number)
        user: dict[str, object] = {"config": params}
        if key in measured and not remeasure:
            # the sampler proposed a measured config: the runner reuses that result (duplicate_of)
            earlier, metrics = measured[key]
            user.update(metrics)
            user["duplicate_of"] = earlier
            state = "COMPLETE"
            values.append({"trial_id": trial_id, "objective": 0, "value": user["qps"], "value_type": "FINITE"})
            values.append(
                {"trial_id": trial_id, "objective": 1, "value": user["latency_p99_ms"], "value_type": "FINITE"}
            )
        elif roll < 0.02:
            state = "FAIL"
            user["failure"] = {"kind": "timeout", "message": "trial child hung past trial_timeout_s (60 s)"}
            user["feasible"] = False
        elif roll < 0.03:
            state = "PRUNED"
            user["skip_reason"] = "pool_size x threads oversubscribes the 16 usable cores"
        else:
            state = "COMPLETE"
            metrics = _fake_trial(rng, params)
            measured[key] = (number, metrics)
            user.update(metrics)
            values.append({"trial_id": trial_id, "objective": 0, "value": user["qps"], "value_type": "FINITE"})
            values.append(
                {"trial_id": trial_id, "objective": 1, "value": user["latency_p99_ms"], "value_type": "FINITE"}
            )
        trials.append(
            {
                "trial_id": trial_id,
                "number": number,
                "study_id": study_id,
                "state": state,
                "datetime_start": t0,
                "datetime_complete": t0 + dt.timedelta(seconds=1.6),
            }
        )
        for key, value in user.items():
            attrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
        for key, value in params.items():
            params_rows.append(
                {
                    "trial_id": trial_id,
                    "param_name": key,
                    "param_value": float(dists[key].to_internal_repr(value)),
                    "distribution_json": djson[key],
                }
            )

    def t(name: str, *cols: str):  # lightweight table clauses over Optuna's schema
        from sqlalchemy import column

        return sql_table(name, *(column(c) for c in cols))

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("PRAGMA synchronous = OFF"))
        conn.execute(
            insert(t("trials", "trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete")),
            trials,
        )
        conn.execute(insert(t("trial_user_attributes", "trial_id", "key", "value_json")), attrs)
        conn.execute(insert(t("trial_values", "trial_id", "objective", "value", "value_type")), values)
        conn.execute(
            insert(t("trial_params", "trial_id", "param_name", "param_value", "distribution_json")), params_rows
        )
    engine.dispose()
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the study here and keep it")
    parser.add_argument("--target", type=float, default=2.0, help="seconds; exit 1 when the best run is slower")
    args = parser.parse_args()

    tmp = None
    if args.keep:
        path = args.keep.resolve()
        if path.exists():
            path.unlink()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="tuner-report-scale-")
        path = Path(tmp.name) / "scale.db"
    t0 = time.perf_counter()
    name = build(path, args.trials)
    built = time.perf_counter() - t0
    size = path.stat().st_size / 2**20
    print(f"built study {name!r}: {args.trials} trials in {path} ({size:.1f} MiB) in {built:.1f} s")

    cmd = [sys.executable, "-m", "tuner", "report", str(path), "--json"]
    times, cpu = [], []
    document = None
    for _ in range(max(1, args.runs)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 2
        document = json.loads(proc.stdout)
    assert document is not None
    best = min(times)
    counts = document["trials"]
    knee = document.get("knee") or {}
    print(
        f"report --json: complete {counts['complete']}, failed {counts['failed']}, skipped {counts['pruned']}; "
        f"knee #{knee.get('number')} {knee.get('params')}, pareto {len(document.get('pareto', []))} configs"
    )
    shown = ", ".join(f"{x:.2f}" for x in times)
    verdict = "OK" if best < args.target else "TOO SLOW"
    print(
        f"tuner report STORAGE --json on {args.trials} trials: best {best:.2f} s wall (runs: {shown}); "
        f"target < {args.target:g} s: {verdict}"
    )
    # on a busy machine the wall time includes waiting for a core; the CPU time is what the command costs
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cores = os.cpu_count()
    print(f"CPU time (user + sys) of the command: best {min(cpu):.2f} s; load average {load:.1f} on {cores} cores")
    if tmp:
        tmp.cleanup()
    return 0 if best < args.target and math.isfinite(best) else 1


if __name__ == "__main__":
    sys.exit(main())
