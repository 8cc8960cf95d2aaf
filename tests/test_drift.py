"""Drift of a reference configuration over a study: the series, its size and the normalising factor."""

from __future__ import annotations

import math

import pytest

from tuner.analysis.drift import DriftSeries, drift_series, drifted


def test_drift_is_max_over_min_and_factors_interpolate_linearly() -> None:
    series = drift_series([(0, 100.0), (10, 110.0), (20, 99.0)])
    assert series.points == ((0, 100.0), (10, 110.0), (20, 99.0))
    assert series.drift == pytest.approx(110.0 / 99.0 - 1.0)  # 0.1111
    assert series.factor_at(0) == 1.0
    assert series.factor_at(5) == pytest.approx(1.05)  # halfway from 100 to 110
    assert series.factor_at(10) == pytest.approx(1.10)
    assert series.factor_at(15) == pytest.approx(1.045)  # halfway from 110 to 99: 104.5
    assert series.normalised(5, 210.0) == pytest.approx(200.0)


def test_factors_are_constant_beyond_the_ends() -> None:
    series = drift_series([(4, 200.0), (8, 180.0)])
    assert series.factor_at(0) == 1.0
    assert series.factor_at(-10) == 1.0
    assert series.factor_at(8) == pytest.approx(0.9)
    assert series.factor_at(100) == pytest.approx(0.9)


def test_drift_that_returns_to_the_start_still_counts() -> None:
    series = drift_series([(0, 100.0), (5, 120.0), (9, 100.0)])
    assert series.drift == pytest.approx(0.2)
    assert series.factor_at(9) == 1.0


def test_drifted_compares_with_the_tolerance() -> None:
    series = drift_series([(0, 100.0), (10, 110.0), (20, 99.0)])
    assert drifted(series, 0.10)
    assert not drifted(series, 0.12)
    assert not drifted(drift_series([(3, 50.0)]), 0.0)


def test_points_are_sorted_repeats_averaged_and_failures_left_out() -> None:
    series = drift_series([(10, 110.0), (0, 100.0), (0, 102.0), (5, math.nan)])
    assert series.points == ((0, 101.0), (10, 110.0))
    assert series.first == 101.0
    assert series.factor_at(10) == pytest.approx(110.0 / 101.0)
    assert series.drift == pytest.approx(110.0 / 101.0 - 1.0)


def test_one_point_means_no_drift() -> None:
    series = drift_series([(7, 42.0)])
    assert series == DriftSeries(points=((7, 42.0),), drift=0.0)
    assert series.factor_at(0) == 1.0 and series.factor_at(1000) == 1.0


def test_bad_points_are_refused() -> None:
    with pytest.raises(ValueError, match="no finite"):
        drift_series([])
    with pytest.raises(ValueError, match="no finite"):
        drift_series([(0, math.inf)])
    with pytest.raises(ValueError, match="positive"):
        drift_series([(0, 100.0), (1, 0.0)])


def test_normalising_undoes_a_drift_that_the_reference_saw() -> None:
    from tuner.analysis.drift import normalise_records
    from tuner.analysis.knee import TrialRecord

    # the machine slows linearly by 15 % from trial 0 to trial 10; the reference (100 qps when first
    # measured) saw it at trials 0, 5 and 10; every config measured in between is slowed the same way
    series = drift_series([(0, 100.0), (5, 92.5), (10, 85.0)])
    true = {1: 300.0, 4: 500.0, 8: 520.0}
    slowed = [
        TrialRecord(
            n,
            {"pool_size": p},
            {
                "qps": q * (1 - 0.015 * n),
                "qps_ci_low": q * (1 - 0.015 * n) * 0.98,
                "window_qps": [q * (1 - 0.015 * n)] * 3,
                "qps_cv": 0.01,
            },
        )
        for n, (p, q) in zip((1, 4, 8), true.items(), strict=True)
    ]
    fixed = normalise_records(slowed, series)
    for record, (_, q) in zip(fixed, true.items(), strict=True):
        assert record.metrics["qps"] == pytest.approx(q)
        assert record.metrics["qps_ci_low"] == pytest.approx(q * 0.98)
        assert record.metrics["window_qps"] == pytest.approx([q] * 3)
        assert record.metrics["qps_cv"] == 0.01  # a ratio: drift does not move it
        assert record.metrics["qps_raw"] == pytest.approx(q * (1 - 0.015 * record.number))
    assert slowed[0].metrics["qps"] == pytest.approx(300.0 * 0.985)  # the input is not changed
