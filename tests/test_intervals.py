"""Intervals on every measured qps: Student-t, batch means, the contract metrics, and ``repeats: auto``.

The expected numbers are worked out by hand (mean, sample standard deviation, a Student-t quantile from a
table) and written literally. ``repeats: auto`` is driven through the real :func:`measure_config` loop on
``kind: command`` workloads whose program is a small script printing scripted figures run by run (a
counter file), so how many runs the loop makes is exact; one ``tuner run`` on the ``sim`` twin checks the
pool path end to end (counts of runs only, never times).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tuner.analysis.intervals import batch_means, dunnett_quantile, t_interval, t_quantile, windows_interval
from tuner.config.spec import load_spec
from tuner.execution.runner import measure_config
from tuner.measurement.process import Failure
from tuner.measurement.result import (
    TrialResult,
    aggregate_repeats,
    current_interval,
    interval_metrics,
    repeats_interval,
    run_interval,
    wants_another_run,
)
from tuner.metrics import METRICS, NUMERIC_METRICS

# ------------------------------------------------------------------------------------ pure functions


def test_t_quantile_against_the_table() -> None:
    assert t_quantile(0.95, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.95, 3) == pytest.approx(3.1824, abs=1e-4)
    assert t_quantile(0.95, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.90, 3) == pytest.approx(2.3534, abs=1e-4)
    assert t_quantile(0.95, 1_000_000) == pytest.approx(1.9600, abs=1e-4)  # the normal quantile


def test_t_interval_hand_computed() -> None:
    # [10, 12, 11, 13]: mean 11.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, sd = sqrt(5 / 3) = 1.2910;
    # t(0.975, 3) = 3.1824 -> half-width 3.1824 x 1.2910 / 2 = 2.0543
    interval = t_interval([10, 12, 11, 13])
    assert interval.mean == 11.5
    assert interval.half_width == pytest.approx(2.0543, abs=1e-4)
    assert interval.low == pytest.approx(9.4457, abs=1e-4)
    assert interval.high == pytest.approx(13.5543, abs=1e-4)
    assert interval.cv == pytest.approx(1.2910 / 11.5, abs=1e-4)  # 0.1123
    assert interval.n == 4 and interval.confidence == 0.95
    # the order does not matter; a constant sample has a zero-width interval
    assert t_interval([13, 11, 12, 10]).half_width == pytest.approx(interval.half_width, rel=1e-12)
    flat = t_interval([5.0, 5.0, 5.0])
    assert (flat.low, flat.high, flat.cv) == (5.0, 5.0, 0.0)


def test_t_interval_degenerate_samples() -> None:
    one = t_interval([7.0])
    assert one.mean == 7.0 and one.low == -math.inf and one.high == math.inf and math.isnan(one.cv)
    none = t_interval([])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.low)
    assert t_interval([1.0, math.nan, 3.0]).n == 2  # non-finite samples are dropped


def test_batch_means_of_known_sequences() -> None:
    assert batch_means([float(k) for k in range(1, 11)]) == [1.5, 3.5, 5.5, 7.5, 9.5]
    # 7 values in 5 contiguous batches cut at 7i // 5: [1], [2], [3, 4], [5], [6, 7]
    assert batch_means([1, 2, 3, 4, 5, 6, 7]) == [1.0, 2.0, 3.5, 5.0, 6.5]
    assert batch_means([3.0, 4.0]) == [3.0, 4.0]  # fewer values than batches: each is its own
    assert batch_means([1, 2, 3, 4], max_batches=2) == [1.5, 3.5]
    assert batch_means([]) == []


def test_windows_interval_on_known_windows() -> None:
    windows = [100, 102, 98, 101, 99, 100, 103, 97, 100, 100]
    # batch means of pairs: 101, 99.5, 99.5, 100, 100 -> mean 100, squared deviations 1 + 0.25 + 0.25 = 1.5,
    # sd = sqrt(1.5 / 4) = 0.61237; t(0.975, 4) = 2.7764 -> half-width 2.7764 x 0.61237 / sqrt(5) = 0.76036
    interval = windows_interval(windows)
    assert interval.mean == 100.0
    assert interval.half_width == pytest.approx(0.76036, abs=1e-5)
    # the CV is the windows' own: squared deviations 4 + 4 + 1 + 1 + 9 + 9 = 28, sd = sqrt(28 / 9) = 1.76383
    assert interval.cv == pytest.approx(0.0176383, abs=1e-7)
    assert interval.n == 10


# ------------------------------------------------------------------------------- contract metrics


def test_interval_metrics_are_contract_metrics() -> None:
    for name in ("qps_ci_low", "qps_ci_high", "qps_cv"):
        assert name in METRICS and name in NUMERIC_METRICS
        assert METRICS[name]


def test_run_interval_is_centred_on_the_contract_qps() -> None:
    windows = [100, 102, 98, 101, 99, 100, 103, 97, 100, 100]
    # the contract qps (completions over the measured seconds) need not be the windows' mean
    m = interval_metrics(run_interval(100.4, windows))
    assert m["qps_ci_low"] == pytest.approx(100.4 - 0.76036, abs=1e-5)
    assert m["qps_ci_high"] == pytest.approx(100.4 + 0.76036, abs=1e-5)
    assert m["qps_cv"] == pytest.approx(0.0176383, abs=1e-7)


def test_a_single_figure_has_no_interval() -> None:
    for windows in ([], [42.0], None):
        m = interval_metrics(run_interval(42.0, windows))
        assert all(math.isnan(v) for v in m.values()), (windows, m)
    assert all(math.isnan(v) for v in interval_metrics(repeats_interval([42.0])).values())


def result(qps: float, windows: list[float] | None = None, **metrics: Any) -> TrialResult:
    m: dict[str, Any] = {"qps": qps, "peak_rss_mb": 10.0, **metrics}
    if windows is not None:
        m["window_qps"] = windows
        m.update(interval_metrics(run_interval(qps, windows)))
    return TrialResult(params={"pool_size": 1}, metrics=m, wall_s=1.0)


def test_aggregate_repeats_gives_the_t_interval_over_the_runs() -> None:
    runs = [result(10, [9.0, 11.0]), result(12, [12.0, 12.0]), result(11, [10.0, 12.0]), result(13, [13.0, 13.0])]
    agg = aggregate_repeats(runs)
    m = agg.metrics
    # the median run is kept (the lower middle of 10, 11, 12, 13), with its own windows
    assert m["qps"] == 11 and m["window_qps"] == [10.0, 12.0]
    assert m["qps_runs"] == [10.0, 12.0, 11.0, 13.0]
    # Student-t over the runs, centred on their mean 11.5: half-width 2.0543 (see test_t_interval_hand_computed)
    assert m["qps_ci_low"] == pytest.approx(11.5 - 2.0543, abs=1e-4)
    assert m["qps_ci_high"] == pytest.approx(11.5 + 2.0543, abs=1e-4)
    assert m["qps_cv"] == pytest.approx(0.11226, abs=1e-5)


def test_aggregate_repeats_of_one_run_keeps_its_own_interval() -> None:
    only = result(100.4, [100, 102, 98, 101, 99, 100, 103, 97, 100, 100])
    failed = TrialResult(params={"pool_size": 1}, failure=Failure("crash", "exited with code 9"))
    m = aggregate_repeats([only, failed]).metrics
    assert m["qps_runs"] == [100.4]
    assert m["qps_ci_low"] == only.metrics["qps_ci_low"] and m["qps_cv"] == only.metrics["qps_cv"]


# ------------------------------------------------------------------------------- the auto rule


def test_auto_rule_on_constructed_runs() -> None:
    narrow = result(100.4, [100, 102, 98, 101, 99, 100, 103, 97, 100, 100])  # +-0.76 %
    assert current_interval([narrow]).half_width == pytest.approx(0.76036, abs=1e-5)
    assert not wants_another_run([narrow], target_ci=0.03, max_runs=5)
    assert wants_another_run([narrow], target_ci=0.005, max_runs=5)  # 0.76 % is wider than 0.5 %
    # no windows: unknown counts as too wide
    assert wants_another_run([result(100.0)], target_ci=0.5, max_runs=5)
    # two runs 100 and 100.2: sd 0.1414, t(0.975, 1) = 12.706 -> half-width 1.2706 over 100.1 = 1.27 %
    two = [result(100.0), result(100.2)]
    assert current_interval(two).relative_half_width == pytest.approx(0.012694, abs=1e-6)
    assert not wants_another_run(two, target_ci=0.03, max_runs=5)
    assert wants_another_run(two, target_ci=0.01, max_runs=5)
    # never past max_runs, however wide
    assert not wants_another_run([result(50.0), result(150.0)], target_ci=0.03, max_runs=2)


# ------------------------------------------------------------------- measure_config's loop (real programs)

#: a program printing one scripted JSON result per run (run n prints FIGURES[n - 1])
SCRIPTED = """\
import json, pathlib
FIGURES = {figures}
counter = pathlib.Path("count.txt")
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(json.dumps(FIGURES[n - 1]))
"""


def measure_scripted(tmp_path: Path, figures: list[dict[str, Any]], measure: str) -> TrialResult:
    (tmp_path / "prog.py").write_text(SCRIPTED.format(figures=repr(figures)))
    path = tmp_path / "w.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            workload:
              kind: command
              command: ["{{python}}", prog.py]
              parse: json
            measure: {measure}
            study: {{trial_timeout_s: 30}}
            """
        )
    )
    spec = load_spec(path)
    out = measure_config(spec, spec.default_params())
    assert out.ok, out.failure and out.failure.describe()
    return out


WIDE = [50.0, 150.0, 50.0, 150.0, 50.0, 150.0]
NARROW = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 103.0, 97.0, 100.0, 100.0]


def test_auto_stops_at_the_first_run_when_its_interval_is_narrow(tmp_path: Path) -> None:
    figures = [{"qps": 100.4, "window_qps": NARROW}, {"qps": 1.0}, {"qps": 1.0}]
    out = measure_scripted(tmp_path, figures, "{repeats: auto}")
    assert out.metrics["qps_runs"] == [100.4]
    assert (tmp_path / "count.txt").read_text() == "1"
    assert out.metrics["qps_ci_low"] == pytest.approx(100.4 - 0.76036, abs=1e-5)


def test_auto_goes_on_to_max_repeats_when_the_interval_stays_wide(tmp_path: Path) -> None:
    runs = [100.0, 140.0, 70.0, 120.0, 90.0, 1.0]
    figures = [{"qps": q, "window_qps": WIDE} for q in runs]
    out = measure_scripted(tmp_path, figures, "{repeats: auto}")
    assert out.metrics["qps_runs"] == runs[:5]  # the default max_repeats
    assert (tmp_path / "count.txt").read_text() == "5"
    # Student-t over the five: mean 104, sd sqrt(2920 / 4) = 27.019, t(0.975, 4) = 2.7764 -> half-width 33.548
    assert out.metrics["qps"] == 100.0  # the median run
    assert out.metrics["qps_ci_low"] == pytest.approx(104 - 33.548, abs=1e-3)
    assert out.metrics["qps_ci_high"] == pytest.approx(104 + 33.548, abs=1e-3)


def test_auto_stops_once_the_repeats_agree(tmp_path: Path) -> None:
    # run 1 has no windows (unknown: measure again); runs 1 and 2 agree within 1.27 % < 3 %
    figures = [{"qps": 100.0}, {"qps": 100.2}, {"qps": 1.0}]
    out = measure_scripted(tmp_path, figures, "{repeats: auto}")
    assert out.metrics["qps_runs"] == [100.0, 100.2]
    assert out.metrics["qps_ci_high"] - out.metrics["qps_ci_low"] == pytest.approx(2 * 1.2706, abs=1e-3)


def test_auto_honours_max_repeats_and_target_ci(tmp_path: Path) -> None:
    figures = [{"qps": 100.0}, {"qps": 100.2}, {"qps": 99.9}, {"qps": 1.0}]
    # 1.27 % after two runs is wider than target_ci 1 %: a third run, which max_repeats 3 makes the last
    out = measure_scripted(tmp_path, figures, "{repeats: auto, max_repeats: 3, target_ci: 0.01}")
    assert out.metrics["qps_runs"] == [100.0, 100.2, 99.9]


def test_command_single_figure_interval_is_unknown(tmp_path: Path) -> None:
    out = measure_scripted(tmp_path, [{"qps": 55.0}], "{repeats: 1}")
    assert out.metrics["qps"] == 55.0
    assert all(math.isnan(out.metrics[k]) for k in ("qps_ci_low", "qps_ci_high", "qps_cv"))


def test_command_windows_give_the_interval(tmp_path: Path) -> None:
    out = measure_scripted(tmp_path, [{"qps": 100.4, "window_qps": NARROW}], "{repeats: 1}")
    assert out.metrics["qps_ci_high"] == pytest.approx(100.4 + 0.76036, abs=1e-5)
    assert out.metrics["qps_cv"] == pytest.approx(0.0176383, abs=1e-7)


# ------------------------------------------------------------------------ tuner run on the sim twin

SIM = """\
workload:
  kind: pool
  backend: sim
  options: {{units: 3, service_ms: 3.2, host_overhead_ms: 4.53, noise: {noise}, memory_mb_per_runtime: 2, load_ms: 0}}
search:
  pool_size: [3]
measure:
  warmup_s: 0.1
  window_s: 0.15
  stable_windows: 3
  stability: 0.25
  max_s: 1.5
  repeats: auto
  max_repeats: 2
  target_ci: {target}
study: {{trial_timeout_s: 60}}
"""


def tuner_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner", "run", *args], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize(("noise", "target", "runs"), [(0.02, 0.9, 1), (0.3, 0.0001, 2)])
def test_tuner_run_auto_on_the_sim_twin(tmp_path: Path, noise: float, target: float, runs: int) -> None:
    # loose target: one run's windows are within 90 %; a 0.01 % target no noisy run meets: max_repeats runs
    path = tmp_path / "sim.yaml"
    path.write_text(SIM.format(noise=noise, target=target))
    proc = tuner_run(tmp_path, str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)["metrics"]
    assert len(metrics["qps_runs"]) == runs
    low, high = metrics["qps_ci_low"], metrics["qps_ci_high"]
    assert low is not None and high is not None and low <= high
    if runs == 1:  # one run: the windows' interval around its qps
        assert low <= metrics["qps"] <= high
        assert (high - low) / 2 == pytest.approx(windows_interval(metrics["window_qps"]).half_width, rel=1e-9)
    else:  # the t interval over the runs, centred on their mean
        assert (low + high) / 2 == pytest.approx(sum(metrics["qps_runs"]) / runs, rel=1e-9)


def test_tuner_run_table_shows_qps_plus_minus(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(SIM.format(noise=0.02, target=0.9))
    proc = tuner_run(tmp_path, str(path))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.strip("│ ").startswith("qps "))
    assert "±" in row, proc.stdout


def test_tables_show_qps_plus_minus_the_half_width() -> None:
    from tuner.cli._render import qps_pm

    assert qps_pm({"qps": 20.13, "qps_ci_low": 19.5, "qps_ci_high": 20.76}) == "20.13 ± 0.63"
    # unknown (null in the storage, NaN fresh from a run): the half-width is "-", never made up
    assert qps_pm({"qps": 18.0, "qps_ci_low": None, "qps_ci_high": None}) == "18 ± -"
    assert qps_pm({"qps": 18.0, "qps_ci_low": math.nan, "qps_ci_high": math.nan}) == "18 ± -"
    assert qps_pm({"qps": 18.0}) == "18 ± -"  # a trial stored before intervals existed
    assert qps_pm({}) == "-"


@pytest.mark.parametrize(
    ("comparisons", "dof", "table"),
    [
        # one-sided Dunnett critical values at 95 % (Dunnett 1955, Table 1a; Hochberg & Tamhane 1987, Table 4)
        (2, 5, 2.44),
        (3, 10, 2.34),
        (4, 20, 2.30),
        (3, math.inf, 2.06),
        (9, 20, 2.60),
        (9, 10, 2.81),
        (5, 20, 2.39),
        # one comparison is the one-sided t quantile (t tables): t(0.95; 1) = 6.314, t(0.95; 9) = 1.833
        (1, 1, 6.314),
        (1, 9, 1.833),
        (1, math.inf, 1.645),
    ],
)
def test_dunnett_quantile_matches_the_published_tables(comparisons: int, dof: float, table: float) -> None:
    assert dunnett_quantile(comparisons, dof) == pytest.approx(table, abs=0.006)


def test_dunnett_quantile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="comparisons"):
        dunnett_quantile(0, 5)
    with pytest.raises(ValueError, match="confidence"):
        dunnett_quantile(2, 5, 1.0)
