"""Search efficiency: how many trials each sampler needs to find the plateau and to name the knee.

THE "MEASUREMENTS" HERE ARE THE SIM MODEL EVALUATED ANALYTICALLY, NOT MEASURED. Running 270 configs
through real child processes takes far too long for a benchmark, so each config's result comes from
:func:`tuner.backends.sim.bound_qps` (the device twin's bottleneck bound, default ``SimOptions``: 3 units,
8 host CPUs, RK3588-like times) times lognormal noise: ``--windows`` windows per config, each
``bound_qps x LN`` with mean 1 and relative std-dev ``--noise`` (default: the sim's own default
``noise``), ``qps`` = the windows' mean, ``window_qps`` = the windows. So :func:`find_knee`'s noise
handling (plateau = max(qps - stderr)) is exercised. Per seed the whole table of 270 results is drawn
once; every sampler of that seed reads the same table (a tabular benchmark), so "the grid" is the
ground truth for that seed: its best qps and ``find_knee`` over all of it.

Space (270 configs): pool_size 1..15 x requests_per_sync [1, 2, 4] x batch_size [1, 2, 4] x
threads [1, 2]. For each sampler (tpe, random, nsga2, knee, grid; gp only if torch is installed) and
seed, the real samplers are driven: a Spec from ``tuner.config.parse_spec`` (backend sim, that space,
``study.sampler`` and ``study.seed`` set per run), ``tuner.search.samplers.make_sampler(spec, seed=seed)``, an
in-memory Optuna study (maximize qps), ask/tell by hand with the user attributes ``config`` (full params,
fixed axes included), ``qps``, ``window_qps`` and ``feasible`` that tuner sets, so the knee sampler sees
the trials as ``tuner optimize`` would record them. Duplicates are handled as ``tuner.study.run`` does: a
config already measured is told again with its earlier result (``duplicate_of``) and does not count as
a trial; 200 duplicates in a row end the run. Budget per run: the grid size.

Reported, as a fraction of the grid's trial count (270): trials until (a) the best qps so far is within
3 % of the grid's best qps, (b) ``find_knee`` over the trials so far names the same config as
``find_knee`` over the full grid (first time it does), (m) it names the model's noise-free knee
(``find_knee`` over the ``bound_qps`` values without noise; with noisy windows the full grid itself does not
always name it). Target: knee sampler <= 15 % for (b). ``--to-budget`` also reports from which trial the
grid's knee stayed named to the end of the run.
Run: ``python bench/search_efficiency.py`` (2-3 minutes on 2 busy cores; most of it is the samplers themselves).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time
import warnings
from typing import Any

import numpy as np
import optuna

from tuner.analysis.knee import TrialRecord, find_knee
from tuner.backends.sim import SimOptions, bound_qps
from tuner.config.spec import Spec, parse_spec
from tuner.platform import fingerprint
from tuner.search.samplers import make_sampler
from tuner.search.space import config_key, distributions, grid_size, iter_grid, suggest

MAX_CONSECUTIVE_DUPLICATES = 200  # as tuner.study.run
PLATEAU_GAP = 0.03
KNEE_TARGET = 0.15
SAMPLERS = ("tpe", "random", "nsga2", "knee", "grid", "gp")


def spec_yaml(sampler: str, seed: int, noise: float, tolerance: float) -> str:
    return f"""\
name: bench-search
workload:
  kind: pool
  backend: sim
  options: {{noise: {noise}}}
search:
  pool_size: {{low: 1, high: 15}}
  requests_per_sync: [1, 2, 4]
  batch_size: [1, 2, 4]
  threads: [1, 2]
objectives:
  - qps: maximize
knee:
  tolerance: {tolerance}
study:
  sampler: {sampler}
  seed: {seed}
"""


def build_table(spec: Spec, seed: int, windows: int) -> dict[Any, tuple[dict[str, Any], float, list[float], float]]:
    """config key -> (config, qps, window_qps, noise-free qps): the sim bound x lognormal window noise,
    one draw per seed."""
    opts = SimOptions.model_validate(spec.workload.options)
    sigma = math.sqrt(math.log1p(opts.noise**2))
    rng = np.random.default_rng(seed)
    table = {}
    for cfg in iter_grid(spec):
        true = bound_qps(
            opts,
            pool_size=cfg["pool_size"],
            threads=cfg["threads"],
            batch_size=cfg["batch_size"],
            requests_per_sync=cfg["requests_per_sync"],
        )
        w = (true * rng.lognormal(-0.5 * sigma * sigma, sigma, size=windows)).tolist() if sigma else [true] * windows
        table[config_key(cfg)] = (cfg, float(np.mean(w)), w, true)
    return table


def run_one(
    spec: Spec,
    seed: int,
    table: dict[Any, Any],
    grid_best: float,
    grid_knee: Any,
    model_knee: Any,
    *,
    to_budget: bool = False,
) -> dict[str, Any]:
    """Drive the sampler until both targets are hit (unless ``to_budget``), the budget is spent or it only
    repeats itself. ``held_from``: the trial from which the knee stayed the grid's knee to the end."""
    sampler = make_sampler(spec, seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists = distributions(spec)
    fixed = {n: a.default for n, a in spec.axes.items() if a.kind == "fixed"}
    budget = len(table)
    known: dict[Any, int] = {}
    records: list[TrialRecord] = []
    best = -math.inf
    to_plateau: int | None = None
    to_knee: int | None = None
    to_model_knee: int | None = None
    held_from: int | None = None
    duplicates = consecutive = 0
    stop = "budget"
    t0 = time.perf_counter()
    while len(records) < budget:
        if consecutive >= MAX_CONSECUTIVE_DUPLICATES:
            stop = "converged (only duplicates)"
            break
        trial = study.ask()
        params = {n: fixed[n] if n in fixed else suggest(trial, n, dists[n]) for n in spec.axes}
        trial.set_user_attr("config", params)
        key = config_key(params)
        cfg, qps, windows, _ = table[key]
        trial.set_user_attr("qps", qps)
        trial.set_user_attr("window_qps", windows)
        trial.set_user_attr("feasible", True)
        if key in known:
            trial.set_user_attr("duplicate_of", known[key])
            duplicates += 1
            consecutive += 1
        else:
            consecutive = 0
            known[key] = trial.number
            records.append(TrialRecord(number=trial.number, params=params, metrics={"qps": qps, "window_qps": windows}))
        try:
            study.tell(trial, qps)
        except RuntimeError as err:  # GridSampler calls study.stop() when the grid is used up
            if "Study.stop" not in str(err):
                raise
        if consecutive:
            continue
        n = len(records)
        best = max(best, qps)
        if to_plateau is None and best >= (1 - PLATEAU_GAP) * grid_best:
            to_plateau = n
        if to_knee is None or to_model_knee is None or to_budget:
            knee = find_knee(records, spec.knee.tolerance, bootstrap=0).knee
            named = config_key(knee.params) if knee is not None else None
            if named == grid_knee:
                to_knee = to_knee or n
                held_from = held_from or n
            else:
                held_from = None
            if named == model_knee:
                to_model_knee = to_model_knee or n
        if None not in (to_plateau, to_knee, to_model_knee) and not to_budget:
            stop = "all targets hit"
            break
    return {
        "to_plateau": to_plateau,
        "to_knee": to_knee,
        "to_model_knee": to_model_knee,
        "held_from": held_from if to_budget else None,
        "measured": len(records),
        "duplicates": duplicates,
        "stop": stop,
        "wall_s": time.perf_counter() - t0,
    }


def _frac(n: float | None, total: int) -> str:
    return "  n/r" if n is None or math.isinf(n) else f"{n / total:5.1%}"


def _median(values: list[int | None]) -> float:
    return statistics.median(math.inf if v is None else v for v in values)


def _describe(cfg: Any) -> str:
    d = dict(cfg)
    return "pool {pool_size} rps {requests_per_sync} batch {batch_size} threads {threads}".format(**d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    ap.add_argument("--noise", type=float, default=SimOptions().noise, help="relative std-dev per window")
    ap.add_argument("--windows", type=int, default=5, help="noisy windows per config (default 5)")
    ap.add_argument("--tolerance", type=float, default=0.10, help="knee.tolerance (default 0.10)")
    ap.add_argument(
        "--to-budget",
        action="store_true",
        help="run every sampler to the budget (or 200 duplicates in a row) and also report from which trial the "
        "knee stayed the grid's knee to the end (slower: about 1 minute per seed)",
    )
    args = ap.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    samplers = list(args.samplers)
    if "gp" in samplers and importlib.util.find_spec("torch") is None:
        samplers.remove("gp")
        print("gp: skipped (torch is not installed)")

    fp = fingerprint()
    print("search efficiency: sim model evaluated analytically, not measured (bound_qps x lognormal window noise)")
    versions = ", ".join(f"{k} {v}" for k, v in fp.get("runtimes", {}).items())
    print(
        f"platform: {fp.get('cpu_model')} | {fp.get('cpu_logical')} logical cores | usable {fp.get('usable_cores')}"
        f" | versions: {versions}, tuner {fp.get('tuner')}"
    )
    base = parse_spec(spec_yaml("grid", 0, args.noise, args.tolerance))
    total = grid_size(base)
    print(
        f"space: pool_size 1..15 x requests_per_sync [1,2,4] x batch_size [1,2,4] x threads [1,2] = {total} configs;"
        f" sim options {dict(base.workload.options)} (rest default); {args.windows} windows/config,"
        f" noise {args.noise:g}; knee tolerance {args.tolerance:g}; seeds 0..{args.seeds - 1}"
    )
    print(
        f"targets: (a) best qps within {PLATEAU_GAP:.0%} of the grid's best; (b) find_knee on the trials so far names"
        " the same config as find_knee on the full noisy grid (first time); (m) ... names the model's noise-free"
        " knee (find_knee on the bound_qps values without noise)"
    )

    t_all = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in samplers}
    grid_is_model = 0
    for seed in range(args.seeds):
        table = build_table(base, seed, args.windows)
        grid_records = [
            TrialRecord(number=i, params=cfg, metrics={"qps": q, "window_qps": w})
            for i, (cfg, q, w, _) in enumerate(table.values())
        ]
        grid_result = find_knee(grid_records, args.tolerance, bootstrap=0)
        model_records = [
            TrialRecord(number=i, params=cfg, metrics={"qps": true})
            for i, (cfg, _, _, true) in enumerate(table.values())
        ]
        model_result = find_knee(model_records, args.tolerance, bootstrap=0)
        assert grid_result.knee is not None and grid_result.best is not None and model_result.knee is not None
        grid_knee = config_key(grid_result.knee.params)
        model_knee = config_key(model_result.knee.params)
        grid_is_model += grid_knee == model_knee
        grid_best = max(q for _, q, _, _ in table.values())
        print(
            f"seed {seed}: grid best {grid_best:.1f} qps ({_describe(grid_result.best.params)}); plateau estimate "
            f"{grid_result.plateau_qps:.1f} (model {model_result.plateau_qps:.1f}); grid knee "
            f"{_describe(grid_result.knee.params)} ({table[grid_knee][1]:.1f} qps, model {table[grid_knee][3]:.1f}); "
            + (
                "= model knee"
                if grid_knee == model_knee
                else f"model knee {_describe(model_result.knee.params)} (model {table[model_knee][3]:.1f} qps)"
            )
        )
        for name in samplers:
            spec = parse_spec(spec_yaml(name, seed, args.noise, args.tolerance))
            res = run_one(spec, seed, table, grid_best, grid_knee, model_knee, to_budget=args.to_budget)
            results[name].append(res)
    print(
        f"the full noisy grid names the model's knee in {grid_is_model}/{args.seeds} seeds (find_knee's plateau"
        " estimate max(qps - stderr) over ~70 plateau configs still sits above the noise-free plateau)"
    )

    def cell(r: dict[str, Any]) -> str:
        parts = [r["to_plateau"], r["to_knee"], r["to_model_knee"]] + ([r["held_from"]] if args.to_budget else [])
        return "/".join(str(v or "n/r") for v in parts)

    held = "/(h) grid knee held from" if args.to_budget else ""
    print(f"\nper seed: trials to (a) 3 % of best/(b) the grid's knee/(m) the model's knee{held}, of {total}")
    cells = {name: [cell(r) for r in results[name]] for name in samplers}
    width = max(len(c) for cs in cells.values() for c in cs) + 2
    print("sampler " + "".join(f"{'seed ' + str(s):>{width}}" for s in range(args.seeds)) + "  stop reasons")
    for name in samplers:
        stops = sorted({r["stop"] for r in results[name]})
        print(f"{name:<8}" + "".join(f"{c:>{width}}" for c in cells[name]) + f"  {'; '.join(stops)}")

    print(f"\nmedian over {args.seeds} seeds, as a fraction of the grid ({total} trials; n/r = not reached):")
    extra = f"  {'held':>7}" if args.to_budget else ""
    print(
        f"{'sampler':<8}  {'to 3 %':>7}  {'to knee':>7}  {'to model knee':>13}{extra}  {'trials':>6}  {'dups':>5}"
        f"  {'wall s':>6}"
    )
    medians: dict[str, tuple[float, float, float]] = {}
    for name in samplers:
        rs = results[name]
        mp = _median([r["to_plateau"] for r in rs])
        mk = _median([r["to_knee"] for r in rs])
        mm = _median([r["to_model_knee"] for r in rs])
        medians[name] = (mp, mk, mm)
        held_col = f"  {_frac(_median([r['held_from'] for r in rs]), total):>7}" if args.to_budget else ""
        print(
            f"{name:<8}  {_frac(mp, total):>7}  {_frac(mk, total):>7}  {_frac(mm, total):>13}{held_col}  "
            f"{statistics.median(r['measured'] for r in rs):>6.0f}  "
            f"{statistics.median(r['duplicates'] for r in rs):>5.0f}"
            f"  {sum(r['wall_s'] for r in rs):>6.1f}"
        )
    print(f"total wall time {time.perf_counter() - t_all:.0f} s (cpu count {os.cpu_count()})")
    print(f"target: knee sampler median trials to the grid's knee <= {KNEE_TARGET:.0%} of the grid (tpe ideally too)")
    parts = []
    for name in ("knee", "tpe"):
        if name in medians:
            _, mk, mm = medians[name]
            ok = mk / total <= KNEE_TARGET
            parts.append(
                f"{name} {_frac(mk, total).strip()} ({'ok' if ok else 'miss'}; model knee {_frac(mm, total).strip()})"
            )
    print(
        "HEADLINE search efficiency (sim model evaluated analytically, not measured), median trials to name the "
        f"grid's knee, fraction of {total}: " + "; ".join(parts) + f" (target <= {KNEE_TARGET:.0%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
