"""The ``knee`` sampler: the pure :class:`KneePlanner` on known curves, and its Optuna wrapper."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
import pytest

from tuner.analysis.knee import TrialRecord, config_cost, find_knee
from tuner.backends.sim import bound_qps
from tuner.config.spec import parse_spec
from tuner.search.knee_sampler import KneePlanner, KneeSampler, Observation
from tuner.search.samplers import make_sampler
from tuner.search.space import config_key, distributions

Curve = Callable[[Mapping[str, Any]], float | None]
TOLERANCE = 0.10

#: DESIGN.md field notes, RK3588 NPU runtime pool: ms per image by pool size
RK3588_MS = {1: 7.73, 2: 3.49, 3: 2.31, 6: 1.52, 9: 1.19, 12: 1.13, 15: 1.09}
#: DESIGN.md field notes, Ascend 310 batch sizes -> FPS: not monotone, batch 16 best (not the largest)
ASCEND_BATCH_FPS = {8: 63, 14: 523, 16: 735, 18: 530, 32: 623, 64: 505}
FIXED_2D = {"threads": 1, "requests_per_sync": 1}
GRID_2D = {"pool_size": list(range(1, 16)), "batch_size": [1, 2, 4]}


def rk3588(params: Mapping[str, Any]) -> float:
    return 1000.0 / RK3588_MS[params["pool_size"]]


def ascend_batch(params: Mapping[str, Any]) -> float:
    return float(ASCEND_BATCH_FPS[params["batch_size"]])


def sim_bound(params: Mapping[str, Any]) -> float:
    """The sim backend's throughput bound with its RK3588 defaults: a known 2-D saturation surface."""
    return bound_qps(None, pool_size=params["pool_size"], batch_size=params["batch_size"])


def full_table(grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = list(grid)
    return [{**fixed, **dict(zip(names, combo, strict=True))} for combo in itertools.product(*grid.values())]


def true_knee(grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any], curve: Curve) -> dict[str, Any]:
    """The knee of the whole table (every config measured), by the analysis' definition."""
    result = full_knee(grid, fixed, curve)
    assert result.knee is not None
    return dict(result.knee.params)


def full_knee(grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any], curve: Curve) -> Any:
    """find_knee over the whole table."""
    records = [TrialRecord(i, cfg, {"qps": curve(cfg)}) for i, cfg in enumerate(full_table(grid, fixed))]
    return find_knee(records, TOLERANCE, bootstrap=0)


def drive(planner: KneePlanner, curve: Curve, limit: int = 500) -> list[Observation]:
    """Ask, 'measure' with ``curve`` (None = the config failed), append; until the planner hands over."""
    observations: list[Observation] = []
    for _ in range(limit):
        cfg = planner.next(observations)
        if cfg is None:
            return observations
        observations.append(Observation(params=cfg, qps=curve(cfg)))
    raise AssertionError(f"the planner did not hand over within {limit} configs")


def knee_of(observations: Sequence[Observation]) -> Any:
    records = [TrialRecord(i, dict(o.params), {"qps": o.qps}) for i, o in enumerate(observations) if o.qps is not None]
    return find_knee(records, TOLERANCE, bootstrap=0)


CASES = {
    "rk3588-pool": ({"pool_size": list(RK3588_MS)}, {}, rk3588),
    "ascend-batch": ({"batch_size": list(ASCEND_BATCH_FPS)}, {}, ascend_batch),
    "sim-pool-x-batch": (GRID_2D, FIXED_2D, sim_bound),
}


@pytest.mark.parametrize("case", list(CASES))
def test_planner_measures_and_confirms_the_true_knee(case: str) -> None:
    grid, fixed, curve = CASES[case]
    observations = drive(KneePlanner(grid, fixed, TOLERANCE), curve)
    measured = [config_key({**fixed, **o.params}) for o in observations]
    assert len(set(measured)) == len(measured), "a config was proposed twice"
    knee = true_knee(grid, fixed, curve)
    assert config_key(knee) in measured, f"the true knee {knee} was never measured"
    found = knee_of(observations)
    assert found.knee is not None
    assert dict(found.knee.params) == knee
    # confirmed exactly when the whole table confirms it: a curve still rising at the edge of the grid is not
    full = full_knee(grid, fixed, curve)
    assert (found.confirmed, found.edge) == (full.confirmed, full.edge), found.reason
    assert len(observations) < len(full_table(grid, fixed))


def test_known_knees_of_the_field_note_tables() -> None:
    assert true_knee({"pool_size": list(RK3588_MS)}, {}, rk3588) == {"pool_size": 9}
    assert true_knee({"batch_size": list(ASCEND_BATCH_FPS)}, {}, ascend_batch) == {"batch_size": 16}
    # pool 6 x batch 4 reaches 3 busy units at batch 4 (1326 qps); pool 5 is 1.2 % short of 90 % of it
    assert true_knee(GRID_2D, FIXED_2D, sim_bound) == {**FIXED_2D, "pool_size": 6, "batch_size": 4}
    # ...but batch 4 is the grid's edge and its last step still gained 19 %: not confirmed, extend batch_size
    full = full_knee(GRID_2D, FIXED_2D, sim_bound)
    assert not full.confirmed and full.edge == (("batch_size", 4),)
    assert full_knee({"pool_size": list(RK3588_MS)}, {}, rk3588).confirmed


def test_planner_uses_far_fewer_configs_than_the_2d_grid() -> None:
    observations = drive(KneePlanner(GRID_2D, FIXED_2D, TOLERANCE), sim_bound)
    grid_size = len(full_table(GRID_2D, FIXED_2D))
    assert grid_size == 45
    assert len(observations) <= grid_size // 3, [dict(o.params) for o in observations]


def test_planner_starts_at_the_cheapest_config_and_ramps_by_doubling() -> None:
    observations = drive(KneePlanner({"pool_size": list(RK3588_MS)}, {}, TOLERANCE), rk3588)
    order = [o.params["pool_size"] for o in observations]
    assert order[:3] == [1, 2, 6]  # 1, then the smallest value >= twice the previous
    assert order[0] == min(RK3588_MS)
    # the knee is found by bisection between the last value below the threshold (6) and the first above
    assert 9 in order


def test_planner_is_deterministic_and_pure() -> None:
    first = drive(KneePlanner(GRID_2D, FIXED_2D, TOLERANCE), sim_bound)
    second = drive(KneePlanner(GRID_2D, FIXED_2D, TOLERANCE), sim_bound)
    assert [dict(o.params) for o in first] == [dict(o.params) for o in second]
    # a fresh planner resumes any prefix of the plan with the same next config
    planner = KneePlanner(GRID_2D, FIXED_2D, TOLERANCE)
    for k in range(len(first)):
        prefix = first[:k]
        assert planner.next(prefix) == dict(first[k].params)
        assert planner.next(prefix) == dict(first[k].params)  # asking twice changes nothing
    assert planner.next(first) is None


def test_pending_and_failed_configs_are_never_proposed_again() -> None:
    """A config in flight (qps None) or failed is 'visited': the plan moves on and always terminates."""
    planner = KneePlanner(GRID_2D, FIXED_2D, TOLERANCE)
    first = planner.next([])
    assert first is not None
    pending = [Observation(params=first, qps=None)]
    second = planner.next(pending)
    assert second is not None and config_key(second) != config_key(first)

    def fails_when_big(params: Mapping[str, Any]) -> float | None:
        return None if params["pool_size"] * params["batch_size"] > 20 else sim_bound(params)

    observations = drive(KneePlanner(GRID_2D, FIXED_2D, TOLERANCE), fails_when_big)
    keys = [config_key(o.params) for o in observations]
    assert len(set(keys)) == len(keys)
    assert any(o.qps is None for o in observations)  # it did run into the failing region
    found = knee_of(observations)
    assert found.knee is not None
    assert found.knee.params["pool_size"] * found.knee.params["batch_size"] <= 20


def test_infeasible_observations_do_not_count_as_throughput() -> None:
    planner = KneePlanner({"pool_size": [1, 2, 4]}, {}, TOLERANCE)
    obs = [Observation({"pool_size": 1}, 100.0), Observation({"pool_size": 2}, 500.0, feasible=False)]
    # pool 2 is visited but has no usable qps: the ramp goes on to 4 instead of stopping at 2
    assert planner.next(obs) == {"pool_size": 4}


def test_config_cost_orders_by_samples_in_flight_then_threads() -> None:
    assert config_cost({"pool_size": 2, "requests_per_sync": 2, "batch_size": 4, "threads": 3}) == (16, 3)
    assert config_cost({"pool_size": 1, "stages.decode.workers": 3}) == (1, 4)
    assert config_cost({}) == (1, 1)


# ------------------------------------------------------------------------------- the Optuna sampler


SAMPLER_SPEC = """\
name: knee-order
workload: {kind: pool, backend: sim}
search:
  pool_size: {low: 1, high: 15}
  batch_size: [1, 2, 4]
knee: {tolerance: 0.10}
study: {sampler: knee, seed: 7}
"""


def sampler_order(seed: int | None = None, n_trials: int = 18) -> list[tuple[int, int]]:
    """Run an in-memory study with the ``knee`` sampler on the sim bound surface; the configs asked for."""
    spec = parse_spec(SAMPLER_SPEC)
    sampler = make_sampler(spec, seed=seed)
    assert isinstance(sampler, KneeSampler)
    dists = distributions(spec)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        pool = trial.suggest_int("pool_size", dists["pool_size"].low, dists["pool_size"].high)
        batch = trial.suggest_categorical("batch_size", dists["batch_size"].choices)
        config = {**FIXED_2D, "pool_size": pool, "batch_size": batch}
        qps = sim_bound(config)
        trial.set_user_attr("config", config)
        trial.set_user_attr("qps", qps)
        return qps

    study.optimize(objective, n_trials=n_trials)
    return [(t.params["pool_size"], t.params["batch_size"]) for t in study.trials]


def test_optuna_knee_sampler_is_reproducible_for_a_seed() -> None:
    first = sampler_order()
    assert first == sampler_order()
    assert sampler_order(seed=3) == sampler_order(seed=3)
    # its first proposals are the planner's plan, then it hands over to the seeded fallback
    plan = [
        (o.params["pool_size"], o.params["batch_size"]) for o in drive(KneePlanner(GRID_2D, FIXED_2D, 0.1), sim_bound)
    ]
    assert first[: len(plan)] == plan
    assert len(first) > len(plan)


#: ResNet-50 on this project's 2-core VM (images/s, rounded means of three studies): one thread per
#: instance and two in flight (pool 2, or pool 1 with 2 requests per sync) is the plateau; pool 1 x 2
#: threads sits at ~0.92 of it, at the edge of a 10 % band; 2 x 2 threads oversubscribe the 2 cores and are
#: pruned (None: no throughput)
VM_RESNET50: dict[tuple[int, int, int], dict[int, float | None]] = {
    (1, 1, 1): {1: 27.0, 2: 27.5, 4: 27.0},
    (1, 1, 2): {1: 50.0, 2: 50.6, 4: 49.0},
    (1, 2, 1): {1: 48.9, 2: 49.8, 4: 49.0},
    (1, 2, 2): {1: 43.0, 2: 45.7, 4: 44.5},
    (2, 1, 1): {1: 53.0, 2: 52.9, 4: 51.4},
    (2, 1, 2): {1: 51.0, 2: 50.5, 4: 48.4},
    (2, 2, 1): {1: None, 2: None, 4: None},
    (2, 2, 2): {1: None, 2: None, 4: None},
}
VM_GRID = {"pool_size": [1, 2], "threads": [1, 2], "requests_per_sync": [1, 2], "batch_size": [1, 2, 4]}


def vm_resnet50(params: Mapping[str, Any]) -> float | None:
    return VM_RESNET50[(params["pool_size"], params["threads"], params["requests_per_sync"])][params["batch_size"]]


def test_every_config_between_the_noisy_knee_and_the_clearly_good_one_is_measured() -> None:
    # read from single measurements the knee is pool 1 x 2 threads (48.9 >= 0.9 x 53), but 8 % below the
    # plateau it may as well be out of the band on the next run; the cheapest config clearly in it (within
    # 5 % of 53) is pool 2 x 1 thread (2 in flight, 1 thread). Every config costing from (1, 2) to (2, 1) --
    # the three ways to keep 2 samples in flight on 1 thread -- is measured before the planner hands over,
    # so the decision after the search can choose between them on every run
    observations = drive(KneePlanner(VM_GRID, {}, TOLERANCE), vm_resnet50)
    measured = {config_key(o.params) for o in observations}
    for cfg in (
        {"pool_size": 1, "threads": 2, "requests_per_sync": 1, "batch_size": 1},
        {"pool_size": 1, "threads": 1, "requests_per_sync": 2, "batch_size": 1},
        {"pool_size": 1, "threads": 1, "requests_per_sync": 1, "batch_size": 2},
        {"pool_size": 2, "threads": 1, "requests_per_sync": 1, "batch_size": 1},
    ):
        assert config_key(cfg) in measured, cfg
    assert len(observations) < 12  # the study's budget in workloads/resnet50.yaml
