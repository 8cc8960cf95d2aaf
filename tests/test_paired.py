"""The paired decision over interleaved rounds: drift cancels, tie sets, the one-sided knee rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.analysis.paired import paired_decision

POOLS = {p: {"pool_size": p} for p in range(1, 7)}


def test_a_slow_drift_common_to_the_rounds_does_not_move_the_knee() -> None:
    # pool 4 is at 92.5 % of the plateau: 2.5 points above the 90 % threshold. With 2 % noise per
    # measurement a round's ratio moves about 2.8 %, so over 10 rounds the standard error is about 0.9 %
    # and pool 4 qualifies; pool 3 (88 %) does not. A 15 % drift over the rounds spreads every config's
    # qps by about 4.5 %: compared unpaired (mean against mean) pool 4's lower bound falls to about 0.898.
    true = {1: 400.0, 2: 700.0, 3: 880.0, 4: 925.0, 5: 990.0, 6: 1000.0}
    rounds = 10
    rng = np.random.default_rng(1)
    noise = {p: 1.0 + 0.02 * rng.standard_normal(rounds) for p in true}
    factor = np.linspace(1.0, 1.15, rounds)
    steady = {p: (q * noise[p]).tolist() for p, q in true.items()}
    drifting = {p: (q * noise[p] * factor).tolist() for p, q in true.items()}

    calm = paired_decision(steady, POOLS, tolerance=0.10)
    moved = paired_decision(drifting, POOLS, tolerance=0.10)
    assert calm.knee == 4
    assert moved.knee == calm.knee
    assert moved.reference == calm.reference
    assert moved.best == calm.best and moved.tie_set == calm.tie_set
    assert moved.knee_confidence == pytest.approx(calm.knee_confidence, abs=1e-9)
    for p in true:
        assert moved.ratios[p].mean == pytest.approx(calm.ratios[p].mean, rel=1e-9)
        assert moved.ratios[p].low == pytest.approx(calm.ratios[p].low, rel=1e-9)
    # the drift is real: the drifting means are about 7.5 % higher
    assert np.mean(drifting[6]) / np.mean(steady[6]) == pytest.approx(1.075, abs=0.01)


# A is the reference (pool 2); B (pool 1, 2 threads) measures within noise of it; C (pool 1, 1 thread) is
# about 20 % below. Cost order: C (1 in flight, 1 thread) < B (1, 2) < A (2, 1).
A = [100.0, 102.0, 98.0, 101.0]
B = [99.0, 103.0, 97.0, 100.0]
C = [80.0, 83.0, 78.0, 80.0]
ABC_PARAMS = {
    "A": {"pool_size": 2, "threads": 1},
    "B": {"pool_size": 1, "threads": 2},
    "C": {"pool_size": 1, "threads": 1},
}


def test_two_configs_within_noise_tie_and_the_cheaper_is_best() -> None:
    result = paired_decision({"A": A, "B": B, "C": C}, ABC_PARAMS, tolerance=0.10)
    assert result.reference == "A"
    # B's log ratios: ln(99/100), ln(103/102), ln(97/98), ln(100/101) = -0.010050, 0.009756, -0.010257,
    # -0.009950; mean -0.005125, sd 0.009922, se 0.004961; t(0.975, 3) = 3.1824 -> half-width 0.015788;
    # exponentiated: 0.99489 in [0.97930, 1.01072], which contains 1
    ratio = result.ratios["B"]
    assert ratio.n == 4
    assert ratio.mean == pytest.approx(0.99489, abs=1e-5)
    assert ratio.low == pytest.approx(0.97930, abs=1e-5)
    assert ratio.high == pytest.approx(1.01072, abs=1e-5)
    assert result.tie_set == ("B", "A")
    assert result.best == "B"
    # C: ratios 0.800, 0.814, 0.796, 0.792, interval about [0.786, 0.815]: below 1 and below 0.9
    assert result.ratios["C"].high < 0.9
    assert "C" not in result.tie_set
    assert result.probabilities["C"] < 1e-3
    # the cheapest within 10 % with 95 % confidence: B (t = (-0.005125 - ln 0.9) / 0.004961 = 20.2)
    assert result.knee == "B"
    assert result.knee_confidence > 0.999


def test_a_looser_tolerance_takes_the_config_20_percent_below_as_the_knee() -> None:
    result = paired_decision({"A": A, "B": B, "C": C}, ABC_PARAMS, tolerance=0.25)
    # C's mean ratio 0.8004 is 11 standard errors above 0.75; it is still worse than A, so best stays B
    assert result.knee == "C" and result.knee_confidence > 0.999
    assert result.best == "B" and "C" not in result.tie_set


def test_the_knee_confidence_is_the_one_sided_t_probability() -> None:
    # X's log ratios to the reference are ln 0.9 + (0, 0.02, 0.04): mean ln 0.9 + 0.02, sd 0.02, se 0.02/sqrt 3,
    # so t = sqrt 3 with 2 degrees of freedom, where F(t) = 1/2 + t / (2 sqrt(2 + t^2)) = 0.887298
    ref = [100.0, 100.0, 100.0]
    x = [100.0 * 0.9 * math.exp(d) for d in (0.0, 0.02, 0.04)]
    params = {"ref": {"pool_size": 2}, "x": {"pool_size": 1}}
    strict = paired_decision({"ref": ref, "x": x}, params, tolerance=0.10, confidence=0.95)
    assert strict.probabilities["x"] == pytest.approx(0.887298, abs=1e-6)
    assert strict.knee == "ref" and strict.knee_confidence == 1.0  # nothing cheaper qualifies
    lenient = paired_decision({"ref": ref, "x": x}, params, tolerance=0.10, confidence=0.85)
    assert lenient.knee == "x"
    assert lenient.knee_confidence == pytest.approx(0.887298, abs=1e-6)


def test_a_noisy_cheap_config_that_ties_is_the_knee_without_proof_of_the_band() -> None:
    # ratios 0.80, 1.05, 0.85, 0.98: the interval of their mean reaches above 1 (not significantly worse),
    # but its one-sided bound is far below 0.9: it is the best (cheapest tie), so the knee too, with the low
    # probability as its confidence
    ref = [100.0, 100.0, 100.0, 100.0]
    noisy = [80.0, 105.0, 85.0, 98.0]
    params = {"ref": {"pool_size": 2}, "noisy": {"pool_size": 1}}
    result = paired_decision({"ref": ref, "noisy": noisy}, params, tolerance=0.10)
    assert result.reference == "ref"
    assert result.ratios["noisy"].high > 1.0
    assert result.tie_set == ("noisy", "ref") and result.best == "noisy"
    assert result.knee == "noisy"
    assert 0.3 < result.probabilities["noisy"] < 0.8
    assert result.knee_confidence == result.probabilities["noisy"]


def test_missing_rounds_are_left_out_pairwise() -> None:
    nan = math.nan
    qps = {
        "ref": [100.0, nan, 100.0, 100.0],
        "b": [95.0, 10.0, 95.0, 95.0],  # round 1 has no reference to compare with: its 10 is ignored
        "once": [nan, nan, nan, 99.0],  # compared in one round only: no interval
    }
    params = {"ref": {"pool_size": 3}, "b": {"pool_size": 2}, "once": {"pool_size": 1}}
    result = paired_decision(qps, params, tolerance=0.10)
    assert result.reference == "ref"
    assert result.ratios["b"].n == 3 and result.ratios["b"].mean == pytest.approx(0.95)
    assert result.ratios["ref"].n == 3
    assert result.ratios["once"].n == 1
    assert math.isnan(result.probabilities["once"])
    assert result.knee == "b" and result.knee_confidence == 1.0  # the same 0.95 in every round
    assert result.tie_set == ("ref",) and result.best == "ref"


def test_peak_memory_breaks_cost_ties() -> None:
    # ratios 0.990, 1.010, 0.990: within noise of the reference and within 10 % of it
    qps = {"ref": [100.0, 101.0, 99.0], "lean": [99.0, 102.0, 98.0], "fat": [99.0, 102.0, 98.0]}
    params = {"ref": {"pool_size": 2}, "lean": {"pool_size": 1}, "fat": {"pool_size": 1}}
    result = paired_decision(qps, params, peak_rss_mb={"lean": 300.0, "fat": 900.0})
    assert result.knee == "lean" and result.best == "lean"
    assert result.tie_set == ("lean", "fat", "ref")
    # without memory both cost the same and the first listed wins
    assert paired_decision(qps, params).knee == "lean"
    assert paired_decision({"ref": qps["ref"], "fat": qps["fat"], "lean": qps["lean"]}, params).knee == "fat"


def test_the_reference_is_the_highest_mean_and_ties_go_to_the_cheaper() -> None:
    qps = {"big": [100.0, 100.0], "small": [100.0, 100.0], "slow": [50.0, 50.0]}
    params = {"big": {"pool_size": 4}, "small": {"pool_size": 2}, "slow": {"pool_size": 1}}
    result = paired_decision(qps, params)
    assert result.reference == "small"
    assert result.knee == "small" and result.best == "small"
    assert result.ratios["big"].mean == pytest.approx(1.0) and result.ratios["slow"].mean == pytest.approx(0.5)


def test_bad_input_is_refused() -> None:
    params = {"a": {"pool_size": 1}, "b": {"pool_size": 2}}
    with pytest.raises(ValueError, match="same number of rounds"):
        paired_decision({"a": [1.0, 2.0], "b": [1.0]}, params)
    with pytest.raises(ValueError, match="no params"):
        paired_decision({"a": [1.0], "c": [1.0]}, params)
    with pytest.raises(ValueError, match="tolerance"):
        paired_decision({"a": [1.0]}, params, tolerance=1.0)
    with pytest.raises(ValueError, match="confidence"):
        paired_decision({"a": [1.0]}, params, confidence=1.0)
    with pytest.raises(ValueError, match="no configurations"):
        paired_decision({}, params)
    with pytest.raises(ValueError, match="positive finite"):
        paired_decision({"a": [math.nan], "b": [0.0]}, params)


def test_the_knee_is_never_costlier_than_the_best() -> None:
    # 3 noisy rounds: pool 9 (~0.92 of the plateau) is tied with the plateau but not proven >= 0.9 at 95 %
    qps = {9: [840.0, 905.0, 800.0], 12: [880.0, 880.0, 870.0], 15: [900.0, 890.0, 915.0]}
    params = {k: {"pool_size": k} for k in qps}
    decision = paired_decision(qps, params, 0.10)
    assert decision.probabilities[9] < 0.95  # neither proven in the band...
    assert 9 in decision.tie_set  # ...nor told apart from the plateau
    assert decision.best == 9 and decision.knee == 9


def test_configs_of_equal_cost_are_chosen_in_the_params_order_not_by_their_noise() -> None:
    # two ways to keep 2 samples in flight on 1 thread, both at ~97 % of the plateau; whichever measured
    # higher, the knee is the one first in the params' order (batch_size 1, then 2)
    params = {
        "b2": {"batch_size": 2, "requests_per_sync": 1, "threads": 1},
        "r2": {"batch_size": 1, "requests_per_sync": 2, "threads": 1},
        "plateau": {"batch_size": 2, "requests_per_sync": 2, "threads": 1},
    }
    rng = np.random.default_rng(3)
    for lead in ("b2", "r2"):
        base = {"b2": 0.965, "r2": 0.965, "plateau": 1.0}
        base[lead] += 0.02
        rounds = {k: (100.0 * v * (1.0 + 0.005 * rng.standard_normal(6))).tolist() for k, v in base.items()}
        decision = paired_decision(rounds, params, tolerance=0.10)
        assert decision.ratios[lead].mean > decision.ratios["b2" if lead == "r2" else "r2"].mean
        assert decision.knee == "r2"


def test_a_lucky_tight_pair_cannot_prove_more_than_the_rounds_noise_allows() -> None:
    # log qps in 4 rounds: ref 0; x ln 0.915 every round (its own ratio never moves); y ln 0.97 +- 0.04
    # (+, -, +, -). The additive model's config means are 0, ln 0.915, ln 0.97 and its round effects +-0.04/3,
    # so the residuals are -+a/3 (ref), -+a/3 (x), +-2a/3 (y) with a = 0.04: SS = 4 (1 + 1 + 4) a^2 / 9 over
    # (3 - 1)(4 - 1) = 6 degrees of freedom, s = 2a/3 = 0.026667, and the pooled standard error of a mean of
    # 4 log ratios is sqrt(2 s^2 / 4) = 0.018856.
    # x: its own spread is 0 (alone it would be proven at P = 1); pooled, t = (ln 0.915 - ln 0.9) / 0.018856
    # = 0.8766, and F(0.8766; 6 dof) = 0.7928 (t table): not within 10 % at 95 %.
    # y: its own spread, 0.04 sqrt(4/3) = 0.046188 (se 0.023094), is the larger: t = (ln 0.97 - ln 0.9) /
    # 0.023094 = 3.2433 on 3 dof, F = 0.9761: y is the knee.
    a = 0.04
    signs = [1.0, -1.0, 1.0, -1.0]
    qps = {
        "ref": [100.0] * 4,
        "x": [100.0 * 0.915] * 4,
        "y": [100.0 * 0.97 * math.exp(a * s) for s in signs],
    }
    params = {"ref": {"pool_size": 3}, "x": {"pool_size": 1}, "y": {"pool_size": 2}}
    result = paired_decision(qps, params, tolerance=0.10)
    assert result.reference == "ref"
    assert result.probabilities["x"] == pytest.approx(0.7928, abs=1e-4)
    # its interval is the pooled one: ln 0.915 +- t(0.975, 6) 0.018856 = ln 0.915 +- 2.4469 x 0.018856
    assert math.log(result.ratios["x"].high / 0.915) == pytest.approx(2.4469 * 0.018856, rel=1e-3)
    assert result.probabilities["y"] == pytest.approx(0.9761, abs=1e-4)
    assert result.knee == "y"
    # alone with the reference, x's own (zero) spread and the pooled one agree: two configs leave the
    # pooled residual the same as the pair's own, and both are 0
    alone = paired_decision({"ref": qps["ref"], "x": qps["x"]}, params, tolerance=0.10)
    assert alone.probabilities["x"] == 1.0 and alone.knee == "x"


def test_with_two_configs_the_pooled_error_is_the_pairs_own() -> None:
    # the additive model on two configs leaves residuals +-(d_i - mean d) / 2: s^2 = var(d) / 2, so
    # sqrt(2 s^2 / n) is the pair's own standard error and nothing changes
    ref = [100.0, 103.0, 98.0, 101.0, 99.0]
    other = [91.0, 96.0, 90.0, 93.0, 89.0]
    params = {"ref": {"pool_size": 2}, "other": {"pool_size": 1}}
    result = paired_decision({"ref": ref, "other": other}, params, tolerance=0.10)
    logs = [math.log(o / r) for o, r in zip(other, ref, strict=True)]
    mean = sum(logs) / 5
    se = math.sqrt(sum((x - mean) ** 2 for x in logs) / 4 / 5)
    assert math.log(result.ratios["other"].low) == pytest.approx(mean - 2.7764 * se, abs=1e-4)  # t(0.975, 4)


def test_the_tie_set_is_hsus_comparison_with_the_best_not_one_pairs_interval() -> None:
    # log qps in 4 rounds: ref 0; x -0.0463 every round (ratio 0.9548); y and z ln 0.6 +- a in opposite
    # phase (a = 0.03), so the rounds' effects are 0 and the residuals are 0 (ref, x) and +-a (y, z):
    # SS = 8 a^2 over (4 - 1)(4 - 1) = 9 degrees of freedom, s^2 = 8 a^2 / 9, and the pooled standard error
    # of a mean of 4 log ratios is sqrt(2 s^2 / 4) = 2a/3 = 0.02 (x's own spread is 0, so the pooled one).
    # One pair's two-sided interval: -0.0463 + t(0.975, 9) 0.02 = -0.0463 + 2.262 x 0.02 = -0.0011 < 0: x
    # would be "worse than the reference". But the reference is the highest of 4 means and x is one of 3
    # compared with it: the one-sided Dunnett value for 3 comparisons on 9 degrees of freedom is 2.37
    # (Dunnett's table), -0.0463 + 2.37 x 0.02 = +0.0011 >= 0: x could be the best, it is in the tie set
    a = 0.03
    signs = [1.0, -1.0, 1.0, -1.0]
    qps = {
        "ref": [100.0] * 4,
        "x": [100.0 * math.exp(-0.0463)] * 4,
        "y": [60.0 * math.exp(a * s) for s in signs],
        "z": [60.0 * math.exp(-a * s) for s in signs],
    }
    params = {"ref": {"pool_size": 4}, "x": {"pool_size": 3}, "y": {"pool_size": 2}, "z": {"pool_size": 1}}
    result = paired_decision(qps, params, tolerance=0.10)
    assert result.reference == "ref"
    assert result.ratios["x"].high < 1.0  # the pair's own two-sided interval stays below 1
    assert math.log(result.ratios["x"].high) == pytest.approx(-0.0463 + 2.2622 * 0.02, abs=2e-4)
    assert math.log(result.tie_bounds["x"]) == pytest.approx(-0.0463 + 2.3721 * 0.02, abs=2e-4)
    assert result.tie_set == ("x", "ref") and result.best == "x"
    assert "y" not in result.tie_set and "z" not in result.tie_set
    assert result.tie_bounds["ref"] == 1.0
    # with only x and the reference (one comparison) the bound is one-sided t(0.95): tighter than the pair's
    # two-sided interval, and x's own spread of 0 leaves nothing to reach 1 with
    alone = paired_decision({"ref": qps["ref"], "x": qps["x"]}, params, tolerance=0.10)
    assert alone.tie_set == ("ref",)


def test_one_measurement_far_below_what_the_others_predict_is_left_out_as_interference() -> None:
    # x's ratio to the reference in rounds 1-4: 0.95, 0.97, 0.96, 0.94; round 0 read 0.70 (a neighbour's
    # burst). With two configs the others predict round 0 from the mean of the other four log ratios, and the
    # outlier test is the textbook prediction-interval t: mean m = -0.046112, sd s = 0.013519 on 3 dof,
    # t = (ln 0.70 - m) / (s sqrt(1 + 1/4)) = -20.546, F(t; 3) = 1.2605e-4, times the 10 measurements tested
    # = 1.2605e-3 <= 0.05; and 0.70 is 26.7 % below the predicted exp(m) = 0.95493, more than the tolerance.
    ref = [100.0] * 5
    x = [70.0, 95.0, 97.0, 96.0, 94.0]
    params = {"ref": {"pool_size": 2}, "x": {"pool_size": 1}}
    result = paired_decision({"ref": ref, "x": x}, params, tolerance=0.10)
    assert len(result.interference) == 1
    found = result.interference[0]
    assert (found.config, found.round, found.qps) == ("x", 0, 70.0)
    assert found.expected_qps == pytest.approx(95.493, abs=1e-3)
    assert found.p_value == pytest.approx(1.2605e-3, rel=1e-3)
    # the decision is the one over the other four rounds: x is proven within 10 %
    assert result.ratios["x"].n == 4 and result.ratios["x"].mean == pytest.approx(0.95493, abs=1e-5)
    assert result.knee == "x" and result.knee_confidence > 0.99
    # the same five rounds with the dip kept would not prove it: that is what the exclusion changes
    kept = paired_decision({"ref": ref, "x": x}, params, tolerance=0.10, confidence=0.999)
    assert kept.interference == ()  # at 0.999 the test (p 1.26e-3 > 0.001) keeps it
    assert kept.ratios["x"].n == 5 and kept.probabilities["x"] < 0.95


def test_a_dip_smaller_than_the_tolerance_is_kept_however_significant() -> None:
    # every other measurement fits the additive model exactly, so a 7 % dip is infinitely significant; but
    # it cannot change a decision at 10 %, and the pooled error already counts it
    ref = [100.0] * 4
    x = [93.0 * 0.95, 95.0, 95.0, 95.0]
    y = [80.0] * 4
    params = {"ref": {"pool_size": 3}, "x": {"pool_size": 2}, "y": {"pool_size": 1}}
    assert paired_decision({"ref": ref, "x": x, "y": y}, params, tolerance=0.10).interference == ()
    # at 5 % tolerance the same dip (7.0 % below the prediction) is more than the tolerance: left out
    strict = paired_decision({"ref": ref, "x": x, "y": y}, params, tolerance=0.05)
    assert [(f.config, f.round) for f in strict.interference] == [("x", 0)]


def test_a_config_slow_in_every_round_or_fast_once_is_not_interference() -> None:
    rng = np.random.default_rng(7)
    noise = {k: 1.0 + 0.01 * rng.standard_normal(5) for k in ("ref", "slow", "mid")}
    qps = {
        "ref": (100.0 * noise["ref"]).tolist(),
        "slow": (55.0 * noise["slow"]).tolist(),  # half the reference, every round: the config, not a burst
        "mid": (90.0 * noise["mid"]).tolist(),
    }
    qps["mid"][2] = 130.0  # a reading 44 % above the rest: interference only slows, so this is not it
    params = {"ref": {"pool_size": 3}, "slow": {"pool_size": 1}, "mid": {"pool_size": 2}}
    result = paired_decision(qps, params, tolerance=0.10)
    assert result.interference == ()
    assert result.ratios["slow"].n == 5 and result.ratios["mid"].n == 5


def test_a_config_keeps_two_rounds_and_a_round_wide_dip_cancels_instead() -> None:
    # round 1 is 40 % slow for everyone: the round's effect, which pairing cancels, not one measurement's
    base = {"ref": 100.0, "a": 97.0, "b": 60.0}
    qps = {k: [v, 0.6 * v, v * 1.01, v * 0.99] for k, v in base.items()}
    params = {"ref": {"pool_size": 3}, "a": {"pool_size": 2}, "b": {"pool_size": 1}}
    assert paired_decision(qps, params).interference == ()
    # a config measured in three rounds, one of them halved, keeps the other two
    qps = {"ref": [100.0, 101.0, 99.0], "x": [48.0, 96.0, 95.0]}
    few = paired_decision(qps, {"ref": {"pool_size": 2}, "x": {"pool_size": 1}})
    assert [(f.config, f.round) for f in few.interference] == [("x", 0)]
    assert few.ratios["x"].n == 2
    # slow in two rounds of four: that is how the config behaves (bimodal), not one burst -- kept
    qps = {"ref": [100.0, 101.0, 99.0, 100.0], "x": [48.0, 96.0, 95.0, 50.0], "y": [70.0, 71.0, 69.0, 70.5]}
    params = {"ref": {"pool_size": 3}, "x": {"pool_size": 1}, "y": {"pool_size": 2}}
    twice = paired_decision(qps, params)
    assert twice.interference == () and twice.ratios["x"].n == 4


def test_a_tie_member_whose_estimate_is_below_the_band_is_the_best_but_not_the_knee() -> None:
    # cheap: ratios 0.75, 1.02, 0.80, 0.97 (geometric mean 0.878, below 0.9) -- so noisy that it cannot be
    # told from the plateau (tie set), and more likely outside the 10 % band than in (P < 1/2): the best (the
    # cheapest tie member) but not the knee.
    qps = {
        "ref": [100.0] * 4,
        "mid": [97.0] * 4,
        "cheap": [75.0, 102.0, 80.0, 97.0],
    }
    params = {"ref": {"pool_size": 3}, "mid": {"pool_size": 2}, "cheap": {"pool_size": 1}}
    result = paired_decision(qps, params, tolerance=0.10)
    assert result.interference == ()
    assert result.ratios["cheap"].mean < 0.9 and result.probabilities["cheap"] < 0.5
    assert "cheap" in result.tie_set and result.best == "cheap"
    # mid (0.97 every round) carries the pooled error of cheap's noise, so it is not proven at 95 % either,
    # but it is in the tie set with its estimate in the band: the knee, with its P as the confidence
    assert result.knee == "mid" and 0.5 <= result.knee_confidence < 0.95
