"""Decisions that survive a noisy machine: the paired confirmation round, drift references, early stopping.

End to end on the ``sim`` twin (real child processes, real SQLite studies) plus the pure parts on
constructed data. No test asserts a wall-clock bound: early stopping is decided by the count of windows
the trial's own child produced.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from tuner.analysis.knee import TrialRecord
from tuner.cli._render import render_report
from tuner.config.spec import load_spec
from tuner.errors import SpecError
from tuner.execution.child import run_job
from tuner.report.charts import study_figures
from tuner.report.summary import study_report
from tuner.study.confirm import candidates, confirmation_rounds
from tuner.study.early_stop import MIN_WINDOWS, EarlyStop
from tuner.study.run import optimize
from tuner.study.storage import open_storage
from tuner.trial_attrs import is_measured

FAST = {"warmup_s": 0.2, "window_s": 0.2, "stable_windows": 2, "stability": 0.2, "max_s": 3}


def workload(tmp_path: Path, *, study: dict[str, Any], search: dict[str, Any] | None = None) -> Path:
    doc = {
        "name": "decide",
        "workload": {
            "kind": "pool",
            "backend": "sim",
            "options": {"units": 3, "service_ms": 3.2, "host_overhead_ms": 4.53, "noise": 0.02},
        },
        "search": search or {"pool_size": [1, 2, 3, 6, 9, 12]},
        "objectives": [{"qps": "maximize"}],
        "measure": FAST,
        "study": {"storage": "decide.db", "sampler": "grid", "trials": 6, "trial_timeout_s": 30, "seed": 0, **study},
    }
    path = tmp_path / "decide.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trials_of(path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    url = load_spec(path).storage_url()
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False)).get_trials(deepcopy=False)


# ------------------------------------------------------------------------------------ confirmation


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    path = workload(tmp_path_factory.mktemp("confirm"), study={"confirm": {"rounds": 2, "max_configs": 3}})
    return path, optimize(load_spec(path))


def test_the_confirmation_round_measures_candidates_interleaved_and_spends_no_budget(confirmed: Any) -> None:
    path, result = confirmed
    trials = trials_of(path, result.study_name)
    marks = [t.user_attrs["confirm"] for t in trials if "confirm" in t.user_attrs]
    assert result.measured == 6 and sum(is_measured(t) for t in trials) == 6
    configs = result.confirmation["configs"]
    # the saturated end of the curve (9 and 12 runtimes); never the far-off 1..3
    assert result.confirmation["rounds"] == 2
    pools = sorted(c["pool_size"] for c in configs)
    assert {9, 12} <= set(pools) and min(pools) >= 6 and len(pools) <= 3
    assert len(marks) == 2 * len(configs)  # every config in both rounds, each a trial of its own
    assert {m["session"] for m in marks} == {result.confirmation["session"]}
    # every round holds every config exactly once
    for r in (0, 1):
        assert sorted(m["config"] for m in marks if m["round"] == r) == list(range(len(configs)))
    # confirmation trials come after every search trial
    search = [t.number for t in trials if is_measured(t)]
    assert min(result.confirmation["trials"]) > max(search)


def test_the_report_decides_from_the_paired_rounds(confirmed: Any) -> None:
    path, result = confirmed
    study = optuna.load_study(study_name=result.study_name, storage=open_storage(load_spec(path).storage_url()))
    report = study_report(study, bootstrap=50)
    assert report["decided_by"] == "paired rounds"
    rounds = report["confirmation"]
    assert report["trials"]["confirmation"] == 2 * len(rounds["configs"])
    assert rounds["rounds"] == 2 and len(rounds["configs"]) == len(result.confirmation["configs"])
    tie = [d["params"] for d in report["tie_set"]]
    # the best is the cheapest member of the tie set, and the reference (plateau candidate) is in it
    assert report["best"]["params"] == tie[0]
    assert rounds["reference"] in tie
    for d in rounds["configs"]:
        assert len(d["qps_by_round"]) == 2 and all(q > 0 for q in d["qps_by_round"])
        if d["params"] == rounds["reference"]:
            assert d["paired_ratio"] == pytest.approx(1.0)
    # the sim's modelled curve saturates past 9 runtimes: 1..6 are far below the plateau, never the knee
    assert report["knee"]["params"]["pool_size"] >= 9


def test_a_resumed_study_keeps_its_confirmation_and_does_not_repeat_it(confirmed: Any) -> None:
    path, first = confirmed
    again = optimize(load_spec(path))
    assert again.confirmation["rounds"] == 0 and "already confirmed" in again.confirmation["reason"]
    assert confirmation_rounds(trials_of(path, first.study_name))["session"] == first.confirmation["session"]


def test_rounds_with_their_own_window_measure_a_fixed_length(tmp_path: Path) -> None:
    # the search's windows are 0.2 s and stop once 2 agree within 20 %; the rounds measure exactly 2 windows
    # of 0.3 s each, stability off, one run each even though the search repeats twice
    path = workload(
        tmp_path,
        study={"trials": 4, "confirm": {"rounds": 2, "max_configs": 2, "window_s": 0.3}, "drift": {"every": 0}},
        search={"pool_size": [3, 6, 9, 12]},
    )
    doc = yaml.safe_load(path.read_text())
    doc["measure"] = {**FAST, "repeats": 2}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = optimize(load_spec(path))
    trials = trials_of(path, result.study_name)
    rounds = [t for t in trials if "confirm" in t.user_attrs]
    search = [t for t in trials if is_measured(t) and t.state == TrialState.COMPLETE]
    assert len(rounds) == 4
    for t in rounds:
        assert len(t.user_attrs["window_qps"]) == 2
        assert "qps_runs" not in t.user_attrs  # one run
    assert all(len(t.user_attrs.get("qps_runs") or []) == 2 for t in search)


def test_no_confirm_skips_the_round(tmp_path: Path) -> None:
    path = workload(tmp_path, study={"trials": 3})
    result = optimize(load_spec(path), confirm=False)
    assert result.confirmation["rounds"] == 0
    assert not [t for t in trials_of(path, result.study_name) if "confirm" in t.user_attrs]


def record(number: int, pool: int, qps: float, low: float | None = None, high: float | None = None) -> TrialRecord:
    metrics: dict[str, Any] = {"qps": qps}
    if low is not None:
        metrics.update(qps_ci_low=low, qps_ci_high=high)
    return TrialRecord(number=number, params={"pool_size": pool}, metrics=metrics, feasible=True)


def test_candidates_are_the_plateau_the_knee_candidate_and_what_could_be_best() -> None:
    records = [
        record(0, 1, 100.0, 98.0, 102.0),
        record(1, 3, 300.0, 290.0, 310.0),
        record(2, 6, 655.0, 640.0, 670.0),
        record(3, 9, 840.0, 820.0, 860.0),  # reaches (1 - 0.1) x 880 = 792: the knee candidate
        record(4, 12, 885.0, 870.0, 900.0),  # its interval reaches the plateau's lower bound
        record(5, 15, 900.0, 880.0, 920.0),  # the plateau
    ]
    chosen = [r.params["pool_size"] for r in candidates(records, 0.10, 3)]
    assert chosen == [15, 9, 12]
    assert [r.params["pool_size"] for r in candidates(records, 0.10, 2)] == [15, 9]
    assert candidates(records[:1], 0.10, 3) == []


def test_a_slot_is_kept_for_the_plateaus_nearest_rival_when_cheap_configs_could_fill_them_all() -> None:
    records = [
        record(0, 1, 100.0, 98.0, 102.0),
        record(1, 6, 815.0, 800.0, 830.0),  # three cheap knee candidates: (1 - 0.1) x 880 = 792 is in reach
        record(2, 7, 820.0, 805.0, 835.0),
        record(3, 8, 825.0, 810.0, 840.0),
        record(4, 12, 890.0, 875.0, 905.0),  # the nearest rival: its interval reaches the plateau's lower bound
        record(5, 15, 900.0, 880.0, 920.0),  # the plateau
    ]
    # cheapest first for the knee, but the rival keeps the last slot (the tie set needs it measured)
    assert [r.params["pool_size"] for r in candidates(records, 0.10, 4)] == [15, 6, 7, 12]
    assert [r.params["pool_size"] for r in candidates(records, 0.10, 3)] == [15, 6, 12]
    # with two slots the knee candidate comes first
    assert [r.params["pool_size"] for r in candidates(records, 0.10, 2)] == [15, 6]
    # no rival in reach: every slot for the knee region
    no_rival = [r for r in records if r.params["pool_size"] != 12]
    assert [r.params["pool_size"] for r in candidates(no_rival, 0.10, 4)] == [15, 6, 7, 8]


def test_candidates_of_equal_cost_fill_the_slots_in_the_params_order() -> None:
    def rec(number: int, params: dict[str, int], qps: float) -> TrialRecord:
        return TrialRecord(number, params, {"qps": qps, "qps_ci_low": qps * 0.98, "qps_ci_high": qps * 1.02}, True)

    plateau = rec(0, {"batch_size": 2, "pool_size": 2}, 100.0)
    # three configs of one cost (2 samples in flight, 1 thread each), all in the band, in scrambled qps order
    others = [
        rec(1, {"batch_size": 1, "pool_size": 2}, 99.0),
        rec(2, {"batch_size": 2, "pool_size": 1}, 93.0),
        rec(3, {"batch_size": 1, "pool_size": 1, "requests_per_sync": 2}, 97.0),
    ]
    for order in (others, others[::-1]):
        chosen = [r.number for r in candidates([plateau, *order], 0.10, 3)]
        # the plateau, then by the params' order: batch_size 1 first, then pool_size 1 before 2
        assert chosen == [0, 3, 1]


# ------------------------------------------------------------------------------------ drift


def test_drift_references_are_measured_every_n_trials_and_reported(tmp_path: Path) -> None:
    path = workload(
        tmp_path,
        study={"trials": 5, "drift": {"every": 2}, "confirm": {"rounds": 0}},
        search={"pool_size": [1, 2, 3, 6, 9]},
    )
    result = optimize(load_spec(path))
    trials = trials_of(path, result.study_name)
    refs = [t for t in trials if "drift" in t.user_attrs]
    assert result.measured == 5 and sum(is_measured(t) for t in trials) == 5
    # after the 2nd and 4th measured trials (none after the last: the budget is spent)
    assert [t.user_attrs["drift"]["after"] for t in refs] == [2, 4]
    first = min(t.number for t in trials if is_measured(t))
    assert {t.user_attrs["drift"]["reference"] for t in refs} == {first}
    assert all(t.user_attrs["config"] == trials[first].user_attrs["config"] for t in refs)
    study = optuna.load_study(study_name=result.study_name, storage=open_storage(load_spec(path).storage_url()))
    drift = study_report(study, bootstrap=0)["drift"]
    assert [p[0] for p in drift["points"]] == [first, *(t.number for t in refs)]
    assert drift["relative"] >= 0 and isinstance(drift["drifted"], bool)


def test_drift_correction_reads_every_trial_as_if_measured_with_the_first_reference(tmp_path: Path) -> None:
    path = workload(
        tmp_path,
        study={"trials": 5, "drift": {"every": 2}, "confirm": {"rounds": 0}},
        search={"pool_size": [1, 2, 3, 6, 9]},
    )
    text = path.read_text().replace("measure:\n", "measure:\n  drift_correction: true\n", 1)
    path.write_text(text)
    spec = load_spec(path)
    assert spec.measure.drift_correction
    result = optimize(spec)
    study = optuna.load_study(study_name=result.study_name, storage=open_storage(spec.storage_url()))
    report = study_report(study, top=20, bootstrap=0)
    assert report["drift"]["corrected"] is True
    first_number, first_qps = report["drift"]["points"][0]
    refs = {t.number for t in study.trials if "drift" in t.user_attrs}
    rows = {r["number"]: r["metrics"] for r in report["top"]}
    for number in refs & set(rows):
        # a re-measurement of the reference is exactly the reference's first figure once corrected
        assert rows[number]["qps"] == pytest.approx(first_qps, rel=1e-9)
        assert rows[number]["qps_raw"] == pytest.approx(rows[number]["qps"] * rows[number]["drift_factor"])
    assert all("qps_raw" in m for m in rows.values())
    charts = [c["id"] for c in study_figures(study, report)["charts"]]
    assert charts[-1] == "drift"


# ------------------------------------------------------------------------------------ early stop


def windows(*qps: float) -> list[dict[str, Any]]:
    return [{"event": "window", "index": i + 1, "qps": q} for i, q in enumerate(qps)]


def test_a_costlier_config_far_below_the_knee_is_stopped_after_enough_windows() -> None:
    records = [record(0, 1, 100.0, 98.0, 102.0), record(1, 2, 195.0, 190.0, 200.0), record(2, 4, 200.0, 196.0, 204.0)]
    # knee: pool 2 (195 >= 0.9 x plateau); its lower bound 190 -> bar 171
    stop = EarlyStop.for_trial(records, {"pool_size": 8}, 0.10)
    assert stop.bar_qps == pytest.approx(0.9 * 190.0)
    seen: list[dict[str, Any]] = []
    sink = stop.wrap(seen.append)
    for event in windows(*[120.0] * (MIN_WINDOWS - 1)):
        sink(event)
    assert stop.reason() is None  # too few windows to decide
    sink(windows(121.0)[0])
    assert "stopped early" in (stop.reason() or "") and len(seen) == MIN_WINDOWS


def test_a_config_that_could_still_reach_the_band_is_not_stopped() -> None:
    records = [record(0, 1, 100.0, 98.0, 102.0), record(1, 2, 195.0, 190.0, 200.0), record(2, 4, 200.0, 196.0, 204.0)]
    stop = EarlyStop.for_trial(records, {"pool_size": 8}, 0.10)
    sink = stop.wrap(lambda _e: None)
    for event in windows(150.0, 200.0, 160.0, 190.0):  # wide: the upper bound reaches the bar
        sink(event)
    assert stop.reason() is None


def test_a_cheaper_config_and_the_knee_itself_are_never_stopped() -> None:
    records = [record(0, 2, 195.0, 190.0, 200.0), record(1, 4, 200.0, 196.0, 204.0)]
    assert EarlyStop.for_trial(records, {"pool_size": 1}, 0.10).bar_qps is None
    assert EarlyStop.for_trial(records, {"pool_size": 2}, 0.10).bar_qps is None
    assert EarlyStop.for_trial([], {"pool_size": 8}, 0.10).bar_qps is None


def test_a_stopped_child_comes_back_as_stopped_with_its_windows() -> None:
    job = {
        "kind": "pool",
        "backend": "sim",
        "model": None,
        "options": {"units": 1, "service_ms": 2.0, "host_overhead_ms": 0.5},
        "params": {"pool_size": 1, "threads": 1, "requests_per_sync": 1, "batch_size": 1},
        # windows never agree within 0.001: without the stop the child would measure until max_s
        "measure": {
            "warmup_s": 0.1,
            "window_s": 0.1,
            "stable_windows": 50,
            "stability": 0.001,
            "max_s": 60.0,
            "min_window_requests": 2,
        },
    }
    stop = EarlyStop(bar_qps=math.inf, candidate={"pool_size": 1})  # everything is below an infinite bar
    result = run_job(job, timeout_s=120, on_event=stop.wrap(lambda _e: None), should_stop=stop.reason)
    assert result.failure is not None and result.failure.kind == "stopped"
    assert "stopped early" in result.failure.message
    assert len(result.metrics["window_qps"]) >= MIN_WINDOWS
    assert result.metrics["window_qps"][:MIN_WINDOWS] == stop.windows[:MIN_WINDOWS]


def test_an_early_stopped_trial_counts_as_measured_and_settles_its_config() -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            user_attrs={"config": {"pool_size": 8}, "stopped_early": "stopped early: ...", "window_qps": [1.0]},
        )
    )
    (t,) = study.get_trials()
    assert is_measured(t)


# ------------------------------------------------------------------------------------ adaptive rounds

REPLAY_PROGRAM = """\
import json, sys
from pathlib import Path
pool = int(sys.argv[1])
calls = Path(f"calls-{pool}.txt")
n = int(calls.read_text()) if calls.exists() else 0
calls.write_text(str(n + 1))
SEQUENCES = {2: [100.0], 1: POOL_1}
seq = SEQUENCES[pool]
print(json.dumps({"qps": seq[n % len(seq)]}))
"""


def replay_workload(tmp_path: Path, pool_1: list[float], confirm: dict[str, Any]) -> Path:
    """A command workload whose pool 1 replays ``pool_1`` call after call and pool 2 always gives 100 qps."""
    (tmp_path / "replay.py").write_text(REPLAY_PROGRAM.replace("POOL_1", repr(pool_1)))
    doc = {
        "name": "replay",
        "workload": {"kind": "command", "command": ["{python}", "replay.py", "{pool_size}"], "parse": "json"},
        "search": {"pool_size": [1, 2]},
        "objectives": [{"qps": "maximize"}],
        "study": {"storage": "replay.db", "sampler": "grid", "trials": 2, "trial_timeout_s": 30, "confirm": confirm},
    }
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_an_undecided_knee_gets_more_rounds_up_to_max_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pool 1 swings 95 / 70 / 99 / 72 ... against a steady 100: tied with the reference (its ratio's upper bound
    # reaches 1), its estimate below the band but far from shown outside it -- cheaper than the knee (the
    # reference) and possibly the best, round after round
    monkeypatch.chdir(tmp_path)
    path = replay_workload(tmp_path, [95.0, 95.0, 70.0, 99.0, 72.0, 98.0, 71.0], {"rounds": 2, "max_rounds": 4})
    events: list[dict[str, Any]] = []
    result = optimize(load_spec(path), on_event=events.append)
    assert result.confirmation["rounds"] == 4  # 2, then one at a time up to max_rounds
    assert len(result.confirmation["extra_rounds"]) == 2
    assert (
        "cheaper than the knee, could be the best (tie set) but is neither in nor out of the 10% band: P = "
        in (result.confirmation["extra_rounds"][0])
    )
    assert [e["round"] for e in events if e.get("event") == "confirm_more"] == [3, 4]
    marks = [t.user_attrs["confirm"] for t in trials_of(path, result.study_name) if "confirm" in t.user_attrs]
    assert sorted({m["round"] for m in marks}) == [0, 1, 2, 3] and len(marks) == 8  # both configs every round


def test_a_knee_in_the_band_but_not_proven_gets_more_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pool 1 reads 99 / 84 / 98 / 85 against a steady 100: its estimate (~0.91) is in the 10 % band and it ties
    # with the reference, so it is the knee, but two or three such rounds prove nothing at 95 %
    monkeypatch.chdir(tmp_path)
    path = replay_workload(tmp_path, [95.0, 99.0, 84.0, 98.0, 85.0], {"rounds": 2, "max_rounds": 3})
    result = optimize(load_spec(path))
    assert result.confirmation["rounds"] == 3
    assert result.confirmation["extra_rounds"][0].startswith(
        "the knee batch_size=1, pool_size=1, requests_per_sync=1, threads=1 is not proven within 10%: P = "
    )


def test_a_burst_in_one_round_is_left_out_and_the_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pool 1 reads 95 / 96 / 48 / 94 against a steady 100: round 3 is a neighbour's burst (half of what the
    # other rounds predict), left out; over the other three pool 1 is proven within 10 % and is the knee
    monkeypatch.chdir(tmp_path)
    path = replay_workload(tmp_path, [95.0, 95.0, 96.0, 48.0, 94.0], {"rounds": 4})
    result = optimize(load_spec(path))
    study = optuna.load_study(study_name=result.study_name, storage=open_storage(load_spec(path).storage_url()))
    report = study_report(study, bootstrap=50)
    rounds = report["confirmation"]
    [found] = rounds["interference"]
    assert found["params"]["pool_size"] == 1 and found["round"] == 2 and found["qps"] == 48.0
    assert found["expected_qps"] == pytest.approx(95.0, abs=1.0) and found["p_value"] <= 0.05
    pool_1 = next(d for d in rounds["configs"] if d["params"]["pool_size"] == 1)
    assert pool_1["left_out_rounds"] == [2] and pool_1["qps_by_round"][2] == 48.0
    assert report["knee"]["params"]["pool_size"] == 1 and report["knee"]["confidence"] >= 0.95
    console = Console(file=io.StringIO(), width=200)
    render_report(console, report)
    text = console.file.getvalue()
    assert "48 (left out)" in text
    assert "interference: round 3 of batch_size=1, pool_size=1, requests_per_sync=1, threads=1 measured 48 qps" in text


def test_a_decided_knee_gets_no_extra_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = replay_workload(tmp_path, [95.0], {"rounds": 2, "max_rounds": 4})  # 0.95 of the reference every round
    result = optimize(load_spec(path))
    assert result.confirmation["rounds"] == 2 and result.confirmation["extra_rounds"] == []


def test_max_rounds_below_rounds_is_refused(tmp_path: Path) -> None:
    path = replay_workload(tmp_path, [95.0], {"rounds": 3, "max_rounds": 2})
    with pytest.raises(SpecError, match=r"max_rounds \(2\) must be >= rounds \(3\)"):
        load_spec(path)
