"""The knee and the Pareto front: field notes a person judged by hand, noise, and edge cases."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest

from tuner.analysis.knee import (
    DEFAULT_TOLERANCE,
    KneeResult,
    TrialRecord,
    cost_key,
    find_knee,
    in_flight,
    merge_repeats,
)
from tuner.analysis.pareto import pareto_front

# ------------------------------------------------------------------------------------------- helpers


def table(axis: str, values: Sequence[int], qps: Sequence[float]) -> list[TrialRecord]:
    """One exact measurement (no windows) per value of one axis, as in the field notes."""
    return [TrialRecord(i, {axis: v}, {"qps": float(q)}) for i, (v, q) in enumerate(zip(values, qps, strict=True))]


def windowed(
    axis: str, values: Sequence[int], qps: Sequence[float], noise: float, seed: int, windows: int = 5
) -> list[TrialRecord]:
    """Trials whose windows carry multiplicative noise; a trial's qps is the mean of its windows."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (v, q) in enumerate(zip(values, qps, strict=True)):
        w = q * (1.0 + noise * rng.standard_normal(windows))
        out.append(TrialRecord(i, {axis: v}, {"qps": float(w.mean()), "window_qps": w.tolist()}))
    return out


def knee_value(result: KneeResult, axis: str) -> int:
    assert result.knee is not None
    return int(result.knee.params[axis])


def definition_knee(qps: Sequence[float], tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Index of the cheapest point within ``tolerance`` of the maximum (points in cost order, exact)."""
    q = np.asarray(qps, dtype=float)
    return int(np.argmax(q >= (1.0 - tolerance) * q.max()))


RK3588_POOL = [1, 2, 3, 6, 9, 12, 15]
RK3588_MS_PER_IMG = [7.73, 3.49, 2.31, 1.52, 1.19, 1.13, 1.09]
RK3588_QPS = [1000.0 / ms for ms in RK3588_MS_PER_IMG]


# -------------------------------------------------------------------------------------- field notes


def test_rk3588_npu_pool_knee_is_9_and_confirmed() -> None:
    result = find_knee(table("pool_size", RK3588_POOL, RK3588_QPS))
    assert knee_value(result, "pool_size") == 9
    assert result.confirmed
    assert result.best is not None and result.best.params["pool_size"] == 15
    assert result.plateau_qps == pytest.approx(1000 / 1.09)
    assert result.reason.startswith("saturation reached")
    # exact numbers: nothing to resample, so no claim of confidence
    assert result.confidence is None


def test_ascend_jpeg_decode_threads_knee_is_3() -> None:
    result = find_knee(table("threads", [1, 3, 4], [360, 729, 768]))
    assert knee_value(result, "threads") == 3
    assert result.confirmed


def test_ascend_full_pipeline_knee_is_6_and_falls_past_it() -> None:
    result = find_knee(table("threads", [1, 2, 4, 6, 8], [166, 307, 332, 370, 332]))
    assert knee_value(result, "threads") == 6
    assert result.best is not None and result.best.params["threads"] == 6
    assert result.confirmed  # 8 threads was measured and fell


def test_ascend_16_batch_pipeline_knee_is_4_threads() -> None:
    result = find_knee(table("threads", [1, 2, 4, 8], [212, 322, 608, 627]))
    assert knee_value(result, "threads") == 4
    assert result.confirmed


def test_ascend_batch_table_best_is_16_not_the_largest() -> None:
    result = find_knee(table("batch_size", [8, 14, 16, 18, 32, 64], [63, 523, 735, 530, 623, 505]))
    assert result.best is not None and result.best.params["batch_size"] == 16
    assert knee_value(result, "batch_size") == 16
    assert result.confirmed


@pytest.mark.parametrize(
    ("axis", "values", "qps"),
    [
        ("pool_size", RK3588_POOL, RK3588_QPS),
        ("threads", [1, 3, 4], [360, 729, 768]),
        ("threads", [1, 2, 4, 6, 8], [166, 307, 332, 370, 332]),
        ("threads", [1, 2, 4, 8], [212, 322, 608, 627]),
        ("batch_size", [8, 14, 16, 18, 32, 64], [63, 523, 735, 530, 623, 505]),
    ],
)
def test_field_notes_match_the_definition_and_costlier_ones_stay_within_tolerance(
    axis: str, values: list[int], qps: list[float]
) -> None:
    result = find_knee(table(axis, values, qps))
    assert knee_value(result, axis) == values[definition_knee(qps)]
    assert result.knee is not None
    knee_qps = result.knee.metrics["qps"]
    costlier = [q for v, q in zip(values, qps, strict=True) if v > result.knee.params[axis]]
    assert costlier and all(knee_qps >= (1 - DEFAULT_TOLERANCE) * q for q in costlier)


def test_only_the_cheapest_configs_on_a_rising_curve_are_not_confirmed() -> None:
    result = find_knee(table("pool_size", [1, 2, 3], [129.4, 286.5, 432.9]))
    assert knee_value(result, "pool_size") == 3
    assert not result.confirmed
    assert result.reason.startswith("saturation not reached yet: no costlier configuration was measured")


def test_more_threads_on_a_smaller_pool_does_not_confirm_a_knee() -> None:
    trials = [
        TrialRecord(0, {"pool_size": 1, "threads": 1}, {"qps": 100.0}),
        TrialRecord(1, {"pool_size": 2, "threads": 1}, {"qps": 200.0}),
        TrialRecord(2, {"pool_size": 3, "threads": 1}, {"qps": 290.0}),
        TrialRecord(3, {"pool_size": 1, "threads": 4}, {"qps": 150.0}),
    ]
    result = find_knee(trials)
    assert result.knee is not None and result.knee.number == 2
    assert not result.confirmed


# ------------------------------------------------------------------------------------------- noise

N = np.arange(1, 17)


def saturating_exp(k: float, plateau: float = 1000.0) -> Callable[[], np.ndarray]:
    return lambda: plateau * (1.0 - np.exp(-N / k))


def smooth_min(rate: float, sharpness: float, plateau: float = 1000.0) -> Callable[[], np.ndarray]:
    """A smooth ``min(n * rate, plateau)``: sharper corners for larger ``sharpness``."""

    def curve() -> np.ndarray:
        x = N * rate / plateau
        return plateau * x / (1.0 + x**sharpness) ** (1.0 / sharpness)

    return curve


CURVES = {
    "exp k=1.5": saturating_exp(1.5),
    "exp k=2": saturating_exp(2.0),
    "exp k=4": saturating_exp(4.0),
    "smooth min 150/n, soft": smooth_min(150.0, 4.0),
    "smooth min 150/n, sharp": smooth_min(150.0, 8.0),
}
SEEDS = range(100)
WINDOWS = 5


def noisy_knees(curve: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Knee index per seed: from find_knee, and from the raw maximum of the noisy means (reference)."""
    ours, raw = [], []
    for seed in SEEDS:
        trials = windowed("pool_size", N.tolist(), curve.tolist(), noise, seed, WINDOWS)
        ours.append(knee_value(find_knee(trials, bootstrap=0), "pool_size") - 1)
        raw.append(definition_knee([t.metrics["qps"] for t in trials]))
    return np.array(ours), np.array(raw)


@pytest.mark.parametrize("name", list(CURVES))
def test_noise_free_curves_give_the_definition_knee(name: str) -> None:
    curve = CURVES[name]()
    result = find_knee(table("pool_size", N.tolist(), curve.tolist()))
    assert knee_value(result, "pool_size") - 1 == definition_knee(curve)
    assert result.confirmed


@pytest.mark.parametrize("noise", [0.02, 0.03, 0.05])
@pytest.mark.parametrize("name", list(CURVES))
def test_knee_does_not_flap_under_window_noise(name: str, noise: float) -> None:
    curve = CURVES[name]()
    truth = definition_knee(curve)
    ours, _ = noisy_knees(curve, noise)
    assert np.mean(np.abs(ours - truth) <= 1) >= 0.90, np.bincount(ours + 1)


def test_knee_is_exact_at_2_percent_noise_where_the_curve_resolves_it() -> None:
    """Exactness is a fair demand only where the curve separates the knee from the threshold on both
    sides (the knee above it, its cheaper neighbour below it) by 3 standard errors of a trial's qps."""
    noise = 0.02
    stderr = noise / math.sqrt(WINDOWS)
    checked = 0
    for curve_of in CURVES.values():
        curve = curve_of()
        truth = definition_knee(curve)
        threshold = (1 - DEFAULT_TOLERANCE) * curve.max()
        above = (curve[truth] - threshold) / curve[truth]
        below = (threshold - curve[truth - 1]) / curve[truth - 1] if truth else math.inf
        if min(above, below) < 3 * stderr:
            continue
        checked += 1
        ours, _ = noisy_knees(curve, noise)
        assert np.mean(ours == truth) >= 0.95, np.bincount(ours + 1)
    assert checked >= 2


def test_noise_aware_plateau_flaps_less_than_the_raw_maximum() -> None:
    near_ours, near_raw, exact_ours, exact_raw = [], [], [], []
    for curve_of in CURVES.values():
        curve = curve_of()
        truth = definition_knee(curve)
        ours, raw = noisy_knees(curve, 0.05)
        near_ours.append(np.mean(np.abs(ours - truth) <= 1))
        near_raw.append(np.mean(np.abs(raw - truth) <= 1))
        exact_ours.append(np.mean(ours == truth))
        exact_raw.append(np.mean(raw == truth))
    assert np.mean(near_ours) > np.mean(near_raw)
    assert np.mean(exact_ours) > np.mean(exact_raw)


# -------------------------------------------------------------------------------------- confidence


def test_confidence_is_high_for_the_clean_rk3588_table_with_tight_windows() -> None:
    result = find_knee(windowed("pool_size", RK3588_POOL, RK3588_QPS, noise=0.01, seed=1))
    assert knee_value(result, "pool_size") == 9
    assert result.confirmed
    assert result.confidence is not None and 0.8 < result.confidence <= 1.0


def test_confidence_is_lower_for_a_noisy_ambiguous_case() -> None:
    clean = find_knee(windowed("pool_size", RK3588_POOL, RK3588_QPS, noise=0.01, seed=1))
    # a flat curve whose cheap configurations sit right at the threshold, measured with 10 % noise
    ambiguous = find_knee(windowed("pool_size", [1, 2, 3, 4, 5], [700, 780, 820, 840, 850], 0.10, seed=3))
    assert ambiguous.confidence is not None and clean.confidence is not None
    assert 0.0 <= ambiguous.confidence < 0.8
    assert ambiguous.confidence < clean.confidence


def test_confidence_is_deterministic_for_a_seed_and_independent_of_input_order() -> None:
    trials = windowed("pool_size", [1, 2, 3, 4, 5], [700, 780, 820, 840, 850], 0.10, seed=3)
    first = find_knee(trials, seed=7)
    assert find_knee(trials, seed=7) == first
    assert find_knee(list(reversed(trials)), seed=7) == first
    assert find_knee(trials, bootstrap=0).confidence is None


# ---------------------------------------------------------------------------- feasibility and input


def test_infeasible_trials_never_become_best_or_knee() -> None:
    trials = table("pool_size", RK3588_POOL, RK3588_QPS) + [
        TrialRecord(10, {"pool_size": 1, "threads": 8}, {"qps": 5000.0}, feasible=False),
        TrialRecord(11, {"pool_size": 20}, {"qps": 9000.0}, feasible=False),
    ]
    result = find_knee(trials)
    assert result.best is not None and result.knee is not None
    assert result.best.feasible and result.knee.feasible
    assert result.best.number == 6 and knee_value(result, "pool_size") == 9


def test_trials_without_qps_are_ignored() -> None:
    trials = table("threads", [1, 3, 4], [360, 729, 768]) + [
        TrialRecord(5, {"threads": 8}, {"latency_p99_ms": 3.0}),
        TrialRecord(6, {"threads": 16}, {"qps": float("nan")}),
        TrialRecord(7, {"threads": 12}, {"qps": None}),
    ]
    result = find_knee(trials)
    assert knee_value(result, "threads") == 3
    assert result.best is not None and result.best.params["threads"] == 4


def test_empty_input_gives_none_fields_and_a_reason() -> None:
    result = find_knee([])
    assert result == KneeResult(DEFAULT_TOLERANCE, None, None, None, False, None, "no trials to analyse")


def test_all_infeasible_gives_none_fields_and_a_reason() -> None:
    result = find_knee([TrialRecord(0, {"pool_size": 1}, {"qps": 10.0}, feasible=False)])
    assert result.best is None and result.knee is None and result.plateau_qps is None
    assert not result.confirmed and result.confidence is None
    assert "feasible" in result.reason


def test_tolerance_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        find_knee([], tolerance=1.5)


def test_zero_tolerance_makes_the_knee_the_best() -> None:
    result = find_knee(table("pool_size", RK3588_POOL, RK3588_QPS), tolerance=0.0)
    assert result.knee == result.best
    assert not result.confirmed


def test_repeated_configurations_are_merged() -> None:
    trials = [
        TrialRecord(0, {"pool_size": 1}, {"qps": 100.0, "window_qps": [99.0, 101.0]}),
        TrialRecord(1, {"pool_size": 2}, {"qps": 300.0, "window_qps": [290.0, 310.0]}),
        TrialRecord(2, {"pool_size": 2}, {"qps": 200.0, "window_qps": [190.0, 210.0]}),
        TrialRecord(3, {"pool_size": 4}, {"qps": 255.0, "window_qps": [250.0, 260.0]}),
    ]
    merged = merge_repeats(trials)
    assert [r.number for r in merged] == [0, 1, 3]
    assert merged[1].metrics["qps"] == pytest.approx(250.0)
    assert merged[1].metrics["window_qps"] == [290.0, 310.0, 190.0, 210.0]
    assert merged[0] is trials[0]
    result = find_knee(trials)
    # pool 2 counts as 250 qps, not its lucky 300: pool 4 sets the plateau
    assert result.best is not None and result.best.params["pool_size"] == 4
    assert knee_value(result, "pool_size") == 2 and result.confirmed


# --------------------------------------------------------------------------------------------- cost


def test_in_flight_and_cost_key() -> None:
    assert in_flight({}) == 1
    assert in_flight({"pool_size": 3, "requests_per_sync": 4, "batch_size": 2, "threads": 8}) == 24
    assert in_flight({"pool_size": 2.0}) == 2
    record = TrialRecord(0, {"pool_size": 2, "threads": 2}, {"qps": 1.0, "peak_rss_mb": 512.0})
    assert cost_key(record) == (2, 2, 512.0)
    assert cost_key(TrialRecord(0, {}, {})) == (1, 1, math.inf)
    pipeline = TrialRecord(0, {"stages.decode.workers": 3, "stages.resize.workers": 2}, {})
    assert cost_key(pipeline)[:2] == (1, 6)


def test_memory_breaks_ties_between_equally_costly_configurations() -> None:
    trials = [
        TrialRecord(0, {"pool_size": 2, "options.arena": "on"}, {"qps": 100.0, "peak_rss_mb": 900.0}),
        TrialRecord(1, {"pool_size": 2, "options.arena": "off"}, {"qps": 98.0, "peak_rss_mb": 400.0}),
        TrialRecord(2, {"pool_size": 1}, {"qps": 50.0, "peak_rss_mb": 200.0}),
    ]
    assert find_knee(trials).knee == trials[1]


# ------------------------------------------------------------------------------------------- pareto

QPS_LATENCY = [("qps", "maximize"), ("latency_p99_ms", "minimize")]


def point(number: int, qps: float, p99: float, feasible: bool = True) -> TrialRecord:
    return TrialRecord(number, {"pool_size": number + 1}, {"qps": qps, "latency_p99_ms": p99}, feasible)


def test_pareto_front_dominance() -> None:
    a, b, c, d, e = point(0, 100, 10), point(1, 200, 20), point(2, 150, 30), point(3, 200, 25), point(4, 50, 5)
    infeasible = point(5, 500, 1, feasible=False)
    missing = TrialRecord(6, {"pool_size": 9}, {"qps": 1000.0})
    front = pareto_front([a, b, c, d, e, infeasible, missing], QPS_LATENCY)
    assert front == [b, a, e]  # c and d are dominated by b, sorted by qps best first


def test_pareto_front_keeps_equal_points_and_needs_valid_directions() -> None:
    a, b = point(0, 100, 10), point(1, 100, 10)
    assert pareto_front([b, a], QPS_LATENCY) == [a, b]
    assert pareto_front([], QPS_LATENCY) == []
    with pytest.raises(ValueError, match="direction"):
        pareto_front([a], [("qps", "up")])
    with pytest.raises(ValueError, match="objective"):
        pareto_front([a], [])


@pytest.mark.parametrize(("direction", "expected"), [("maximize", 1), ("minimize", 2)])
def test_pareto_front_of_one_objective_is_the_best(direction: str, expected: int) -> None:
    trials = [point(0, 100, 10), point(1, 300, 30), point(2, 50, 5), point(3, 900, 1, feasible=False)]
    metric = "qps" if direction == "maximize" else "latency_p99_ms"
    assert [r.number for r in pareto_front(trials, [(metric, direction)])] == [expected]


# ------------------------------------------------------------------------------------- the edge rule

RISING_EDGE = "still rising at the edge of the range: extend "


def test_a_curve_still_rising_10_percent_on_its_last_pool_step_is_not_confirmed() -> None:
    # pool 6 gains 990 / 900 = +10 % over pool 5, more than half the 10 % tolerance; the knee is pool 5
    # (900 >= 0.9 * 990 = 891), and one more +10 % step would lift the threshold to 980 > 900
    result = find_knee(table("pool_size", [1, 2, 3, 4, 5, 6], [200, 400, 600, 800, 900, 990]))
    assert knee_value(result, "pool_size") == 5
    assert result.best is not None and result.best.params["pool_size"] == 6
    assert not result.confirmed  # although a costlier configuration (pool 6) was measured
    assert result.edge == (("pool_size", 6),)
    assert result.reason == "still rising at the edge of the range: extend pool_size beyond 6"


def test_a_last_step_within_the_noise_is_not_called_rising() -> None:
    # the same means as above (+10 % on the last step), but each trial's 95 % interval is +-6 %: the step
    # proves only 990 * 0.94 / (900 * 1.06) - 1 = -2.5 %, no evidence that the range is unfinished
    trials = [
        TrialRecord(i, {"pool_size": v}, {"qps": q, "qps_ci_low": q * 0.94, "qps_ci_high": q * 1.06})
        for i, (v, q) in enumerate(zip([1, 2, 3, 4, 5, 6], [200.0, 400.0, 600.0, 800.0, 900.0, 990.0], strict=True))
    ]
    result = find_knee(trials)
    assert knee_value(result, "pool_size") == 5
    assert result.edge == () and result.confirmed
    # tight intervals (+-1 %) keep the step's +7.9 % proven gain: still rising
    tight = [
        TrialRecord(
            r.number,
            dict(r.params),
            {**r.metrics, "qps_ci_low": r.metrics["qps"] * 0.99, "qps_ci_high": r.metrics["qps"] * 1.01},
        )
        for r in trials
    ]
    assert find_knee(tight).edge == (("pool_size", 6),)


def test_a_saturated_curve_is_confirmed() -> None:
    # the last step gains 910 / 900 = +1.1 %: saturated
    result = find_knee(table("pool_size", [1, 2, 3, 4, 5, 6], [200, 400, 600, 800, 900, 910]))
    assert knee_value(result, "pool_size") == 5
    assert result.confirmed
    assert result.edge == ()
    assert result.reason.startswith("saturation reached")


def test_a_gain_that_one_more_step_would_not_turn_into_a_new_knee_keeps_the_knee_confirmed() -> None:
    # pool 3 gains 1000 / 950 = +5.3 % (> 5 %), but another +5.3 % lifts the threshold only to
    # 0.9 * 1000 * 1.0526 = 947.4 < 950: the knee (pool 2) stands
    kept = find_knee(table("pool_size", [1, 2, 3], [500, 950, 1000]))
    assert knee_value(kept, "pool_size") == 2
    assert kept.confirmed and kept.edge == ()
    # with pool 2 at 940 the gain is +6.4 % and the lifted threshold 0.9 * 1000 * 1.0638 = 957.4 > 940
    moved = find_knee(table("pool_size", [1, 2, 3], [500, 940, 1000]))
    assert knee_value(moved, "pool_size") == 2
    assert not moved.confirmed and moved.edge == (("pool_size", 3),)


def test_a_knee_that_is_the_best_at_the_edge_is_not_confirmed_by_a_costlier_config_on_another_axis() -> None:
    trials = [
        TrialRecord(0, {"pool_size": 1, "threads": 1}, {"qps": 250.0}),
        TrialRecord(1, {"pool_size": 2, "threads": 1}, {"qps": 500.0}),
        TrialRecord(2, {"pool_size": 3, "threads": 1}, {"qps": 750.0}),
        TrialRecord(3, {"pool_size": 4, "threads": 1}, {"qps": 900.0}),  # +20 % over pool 3: best and knee
        TrialRecord(4, {"pool_size": 4, "threads": 2}, {"qps": 850.0}),  # costlier, slower
    ]
    result = find_knee(trials)
    assert result.knee is not None and result.knee.number == 3 and result.best == result.knee
    assert not result.confirmed
    assert result.edge == (("pool_size", 4),)  # threads 1 is not the largest threads measured
    assert result.reason == RISING_EDGE + "pool_size beyond 4"


def test_the_edge_needs_a_lower_neighbour_with_the_other_axes_equal() -> None:
    trials = [
        TrialRecord(0, {"pool_size": 1, "threads": 1}, {"qps": 250.0}),
        TrialRecord(1, {"pool_size": 2, "threads": 1}, {"qps": 500.0}),
        TrialRecord(2, {"pool_size": 3, "threads": 1}, {"qps": 750.0}),
        TrialRecord(3, {"pool_size": 4, "threads": 2}, {"qps": 990.0}),  # best; no pool < 4 at threads 2
        TrialRecord(4, {"pool_size": 4, "threads": 3}, {"qps": 950.0}),
    ]
    result = find_knee(trials)
    assert result.knee is not None and result.knee.number == 3
    assert result.confirmed and result.edge == ()


def test_a_larger_value_that_was_infeasible_is_a_hard_edge() -> None:
    trials = table("pool_size", [1, 2, 3, 4, 5, 6], [200, 400, 600, 800, 900, 990]) + [
        TrialRecord(6, {"pool_size": 7}, {"qps": 1100.0}, feasible=False),  # e.g. out of device memory
    ]
    result = find_knee(trials)
    assert knee_value(result, "pool_size") == 5
    assert result.confirmed and result.edge == ()


def test_the_edge_rule_reads_pipeline_stage_workers() -> None:
    result = find_knee(table("stages.decode.workers", [1, 2, 3, 4], [300, 600, 800, 900]))
    # 4 workers: +12.5 % over 3 and the best; the knee is 4 (800 < 0.9 * 900 = 810), nothing costlier
    assert knee_value(result, "stages.decode.workers") == 4
    assert not result.confirmed
    assert result.edge == (("stages.decode.workers", 4),)
    assert result.reason.startswith("saturation not reached yet: no costlier configuration was measured")
    assert result.reason.endswith("; " + RISING_EDGE + "stages.decode.workers beyond 4")


# ----------------------------------------------------------------------------- confidence from repeats


def repeats(runs_by_pool: dict[int, list[float]]) -> list[TrialRecord]:
    """One trial per pool size with ``repeats: N``: qps is the median run, ``qps_runs`` all runs."""
    return [
        TrialRecord(i, {"pool_size": pool}, {"qps": float(sorted(runs)[(len(runs) - 1) // 2]), "qps_runs": runs})
        for i, (pool, runs) in enumerate(runs_by_pool.items())
    ]


def test_repeats_without_windows_give_a_confidence() -> None:
    trials = repeats({1: [49.0, 50.0, 51.0], 2: [99.0, 100.0, 101.0], 3: [100.0, 101.0, 99.0]})
    result = find_knee(trials)
    assert knee_value(result, "pool_size") == 2
    # pool 2 resampled stays within [99, 101], far above 90 % of any plateau <= 101: always the knee
    assert result.confidence == 1.0
    bare = [TrialRecord(t.number, t.params, {"qps": t.metrics["qps"]}) for t in trials]
    assert find_knee(bare).confidence is None


def test_repeats_at_the_threshold_give_a_middling_confidence() -> None:
    # pool 1's runs 88, 90, 92 (qps 90) against a plateau of exactly 100 (runs without spread): pool 1 is the
    # knee in a replicate when the mean of 3 draws from its runs is >= 90, which 17 of the 27 equally likely
    # draws give (0.63); 200 replicates put that within about +-0.1
    trials = repeats({1: [88.0, 90.0, 92.0], 2: [100.0, 100.0, 100.0], 3: [100.0, 100.0, 100.0]})
    result = find_knee(trials)
    assert knee_value(result, "pool_size") == 1
    assert result.confidence is not None and 0.53 < result.confidence < 0.73


def test_one_window_and_repeats_resample_the_repeats() -> None:
    trials = repeats({1: [88.0, 90.0, 92.0], 2: [100.0, 100.0, 100.0], 3: [100.0, 100.0, 100.0]})
    with_window = [TrialRecord(t.number, t.params, {**t.metrics, "window_qps": [t.metrics["qps"]]}) for t in trials]
    ours, runs_only = find_knee(with_window), find_knee(trials)
    assert ours.confidence == runs_only.confidence and ours.plateau_qps == runs_only.plateau_qps
    assert ours.confidence is not None and 0.53 < ours.confidence < 0.73


def test_a_single_window_per_trial_is_nothing_to_resample() -> None:
    trials = [
        TrialRecord(i, {"pool_size": p}, {"qps": q, "window_qps": [q]})
        for i, (p, q) in enumerate([(1, 500.0), (2, 950.0), (3, 1000.0)])
    ]
    assert find_knee(trials).confidence is None


def test_a_next_step_the_hosts_rules_skip_is_a_hard_edge() -> None:
    trials = table("threads", [1, 2], [100, 190])  # +90 % on the last step: still rising at threads 2
    asked: list[dict[str, object]] = []

    def blocked(params: Mapping[str, object]) -> str | None:
        asked.append(dict(params))
        return "oversubscribed: 3 host threads > 2 usable cores" if params["threads"] == 3 else None

    result = find_knee(trials, blocked=blocked)
    assert asked == [{"threads": 3}]  # one more step of the last step's size, the other axes as the best's
    assert result.edge == () and result.confirmed is False  # nothing costlier was measured: not confirmed yet
    assert result.limited == (("threads", 2, "oversubscribed: 3 host threads > 2 usable cores"),)
    assert "extend" not in result.reason
    assert result.reason.endswith(
        "still rising at threads 2, but this host's rules skip one more step "
        "(oversubscribed: 3 host threads > 2 usable cores)"
    )
    # with a costlier config measured the knee is confirmed: the edge is the host's, not the range's
    costlier = [*table("pool_size", [1, 2, 3, 4, 5, 6], [200, 400, 600, 800, 900, 990])]
    stopped = find_knee(costlier, blocked=lambda p: "no" if p["pool_size"] == 7 else None)
    assert stopped.confirmed and stopped.edge == () and stopped.limited == (("pool_size", 6, "no"),)
    # a step the rules allow is still one to extend
    free = find_knee(costlier, blocked=lambda p: None)
    assert free.edge == (("pool_size", 6),) and not free.confirmed and free.limited == ()
