"""Search space: axes -> Optuna distributions, the grid, config identity and the validity rules."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.config.spec import Spec, parse_spec
from tuner.errors import SpecError
from tuner.search.rules import RULES, HostThreads, Rule, RuleContext, skip_reason
from tuner.search.space import config_key, distribution, distributions, grid, grid_size, iter_grid


def sim_spec(search: str) -> Spec:
    """A sim workload whose ``search:`` section is ``search`` (indented YAML lines)."""
    text = f"name: space\nworkload:\n  kind: pool\n  backend: sim\nsearch:\n{search}"
    return parse_spec(text)


SPACE = """\
  pool_size: {low: 1, high: 7, step: 2}
  threads: {low: 1, high: 16, log: true}
  batch_size: [1, 2, 4]
  options.service_ms: {low: 1.0, high: 2.0, step: 0.5}
  options.noise: 0.05
"""


# ----------------------------------------------------------------------------------- distributions


def test_choices_map_to_categorical() -> None:
    spec = sim_spec("  batch_size: [1, 2, 4]\n  options.units: [1, 3]\n")
    dists = distributions(spec)
    assert dists["batch_size"] == CategoricalDistribution([1, 2, 4])
    assert dists["options.units"] == CategoricalDistribution([1, 3])


def test_int_range_maps_to_int_distribution_with_step_and_log() -> None:
    spec = sim_spec(SPACE)
    dists = distributions(spec)
    pool = dists["pool_size"]
    assert isinstance(pool, IntDistribution)
    assert (pool.low, pool.high, pool.step, pool.log) == (1, 7, 2, False)
    threads = dists["threads"]
    assert isinstance(threads, IntDistribution)
    assert (threads.low, threads.high, threads.step, threads.log) == (1, 16, 1, True)
    plain = distributions(sim_spec("  pool_size: {low: 2, high: 5}\n"))["pool_size"]
    assert plain == IntDistribution(2, 5, step=1)


def test_float_range_maps_to_float_distribution() -> None:
    spec = sim_spec(SPACE + "  options.host_overhead_ms: {low: 0.5, high: 8.0, log: true}\n")
    dists = distributions(spec)
    stepped = dists["options.service_ms"]
    assert isinstance(stepped, FloatDistribution)
    assert (stepped.low, stepped.high, stepped.step, stepped.log) == (1.0, 2.0, 0.5, False)
    logged = dists["options.host_overhead_ms"]
    assert isinstance(logged, FloatDistribution)
    assert (logged.low, logged.high, logged.step, logged.log) == (0.5, 8.0, None, True)


def test_only_searched_axes_get_a_distribution() -> None:
    spec = sim_spec(SPACE)
    assert set(distributions(spec)) == {"pool_size", "threads", "batch_size", "options.service_ms"}
    # requests_per_sync is fixed at 1 (not written), options.noise fixed at 0.05
    with pytest.raises(ValueError, match="fixed"):
        distribution(spec.axes["requests_per_sync"])
    with pytest.raises(ValueError, match="fixed"):
        distribution(spec.axes["options.noise"])


# ---------------------------------------------------------------------------------------------- grid


def test_grid_enumerates_every_axis_and_its_size() -> None:
    spec = sim_spec(SPACE)
    g = grid(spec)
    assert g == {
        "pool_size": (1, 3, 5, 7),
        "threads": (1, 2, 4, 8, 16),
        "batch_size": (1, 2, 4),
        "options.service_ms": (1.0, 1.5, 2.0),
    }
    assert grid_size(spec) == 4 * 5 * 3 * 3


def test_grid_of_a_space_without_searched_axes_is_one_config() -> None:
    spec = sim_spec("  pool_size: 2\n")
    assert grid(spec) == {}
    assert grid_size(spec) == 1
    assert list(iter_grid(spec)) == [{"pool_size": 2, "threads": 1, "requests_per_sync": 1, "batch_size": 1}]


def test_float_range_without_step_has_no_grid() -> None:
    spec = sim_spec("  options.service_ms: {low: 1.0, high: 2.0}\n")
    with pytest.raises(SpecError, match="needs a step"):
        grid(spec)


def test_iter_grid_yields_full_configs_with_fixed_axes() -> None:
    spec = sim_spec(SPACE)
    configs = list(iter_grid(spec))
    assert len(configs) == 4 * 5 * 3 * 3  # pool 1,3,5,7 x threads 1..16 by doubling x 3 batches x 3 service_ms
    assert len({config_key(c) for c in configs}) == len(configs)
    expected_keys = {"pool_size", "threads", "requests_per_sync", "batch_size", "options.service_ms", "options.noise"}
    for cfg in configs:
        assert set(cfg) == expected_keys
        assert cfg["requests_per_sync"] == 1
        assert cfg["options.noise"] == 0.05
    assert {c["threads"] for c in configs} == {1, 2, 4, 8, 16}
    assert {(c["pool_size"], c["batch_size"]) for c in configs} == {(p, b) for p in (1, 3, 5, 7) for b in (1, 2, 4)}


# ---------------------------------------------------------------------------------------- config_key


def test_config_key_is_order_independent_and_value_sensitive() -> None:
    a = {"pool_size": 2, "threads": 1, "options.mode": "fast"}
    b = {"options.mode": "fast", "threads": 1, "pool_size": 2}
    assert config_key(a) == config_key(b)
    assert hash(config_key(a)) == hash(config_key(b))
    assert config_key(a) != config_key({**a, "pool_size": 3})
    assert config_key(a) != config_key({**a, "options.mode": "slow"})
    assert config_key(a) != config_key({k: v for k, v in a.items() if k != "threads"})
    assert {config_key(a): 1}[config_key(b)] == 1


# -------------------------------------------------------------------------------------------- rules


def test_rules_are_data() -> None:
    assert [r.name for r in RULES] == ["oversubscription"]
    rule = RULES[0]
    assert isinstance(rule, Rule)
    assert "host threads" in rule.description
    assert callable(rule.check)


def _pool_threads(params: Any) -> HostThreads:
    """The plain CPU count, as the default backend gives it: pool_size x threads."""
    pool, threads = int(params.get("pool_size", 1)), int(params.get("threads", 1))
    return HostThreads(pool * threads, f"pool_size {pool} x threads {threads} on cpu")


def test_oversubscribed_config_is_skipped_with_a_reason() -> None:
    ctx = RuleContext(usable_cores=4, allow_oversubscription=False, host_threads=_pool_threads)
    reason = skip_reason({"pool_size": 3, "threads": 2, "batch_size": 1}, ctx)
    assert reason == (
        "oversubscribed: 6 host threads (pool_size 3 x threads 2 on cpu) > 4 usable cores; "
        "set study.allow_oversubscription: true to measure it anyway"
    )


@pytest.mark.parametrize(
    ("params", "cores"),
    [
        ({"pool_size": 2, "threads": 2}, 4),  # exactly the cores: allowed
        ({"pool_size": 1, "threads": 1}, 1),
        ({"pool_size": 4}, 4),  # a missing axis counts as 1
        ({"threads": 3, "batch_size": 64}, 3),  # batch size does not use cores
    ],
)
def test_configs_within_the_cores_are_allowed(params: dict, cores: int) -> None:
    assert skip_reason(params, RuleContext(cores, False, _pool_threads)) is None


def test_oversubscription_allowed_by_the_study_or_a_device_bound_workload() -> None:
    params = {"pool_size": 8, "threads": 4}
    assert skip_reason(params, RuleContext(2, False, _pool_threads)) is not None
    assert skip_reason(params, RuleContext(2, True, _pool_threads)) is None  # study.allow_oversubscription
    assert skip_reason(params, RuleContext(2, False, lambda p: None)) is None  # device-bound (sim, an NPU)
    assert skip_reason(params, RuleContext(2, False)) is None  # the default: no host-thread count


def test_skip_reason_returns_the_first_rule_that_breaks() -> None:
    def odd_batch(params: object, ctx: RuleContext) -> str | None:
        return "odd batch" if params["batch_size"] % 2 else None  # type: ignore[index]

    never = Rule("never", "never breaks", lambda p, c: None)
    rules = (never, Rule("even", "batch must be even", odd_batch), *RULES)
    ctx = RuleContext(1, False, _pool_threads)
    assert skip_reason({"pool_size": 4, "batch_size": 3}, ctx, rules) == "odd batch"
    assert (skip_reason({"pool_size": 4, "batch_size": 2}, ctx, rules) or "").startswith("oversubscribed: 4 host")
    assert skip_reason({"pool_size": 1, "batch_size": 2}, ctx, rules) is None
    assert skip_reason({"pool_size": 99}, ctx, ()) is None


def test_grid_size_is_the_product_of_axis_lengths() -> None:
    spec = sim_spec("  pool_size: {low: 1, high: 15}\n  batch_size: [1, 2, 4]\n")
    assert grid(spec) == {"pool_size": tuple(range(1, 16)), "batch_size": (1, 2, 4)}
    assert grid_size(spec) == 45  # 15 pool sizes x 3 batch sizes
    # counted a second way: the distinct configs the grid enumerates
    assert len({config_key(c) for c in iter_grid(spec)}) == 45
