"""The search under a latency SLO: every knee and best is decided on the study's rate metric.

With ``load.scenario: server`` the rate is ``server_qps`` (MLPerf LoadGen's highest Poisson arrival rate
whose percentile latency meets the bound). The analysis reads the records' *rate view*
(:func:`tuner.study.ledger.rate_view`: ``qps`` := the rate), every report record shows honest metrics
(``metrics.qps`` is the closed-loop qps), and a server trial that met the bound at no rate is infeasible
with LoadGen's reason.

End to end on the ``sim`` twin with the real ``mlperf_loadgen``; the rest on constructed trials and
records. No test asserts a wall-clock bound.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from tuner.analysis.knee import TrialRecord, find_knee
from tuner.cli._render import render_report
from tuner.config.spec import parse_spec
from tuner.errors import SpecError
from tuner.measurement.result import TrialResult
from tuner.report.charts import study_figures
from tuner.report.compare import CompareItem, compare_studies
from tuner.report.study_data import StudyData, TrialRow
from tuner.report.summary import record_dict, study_report
from tuner.search.knee_sampler import observation_of
from tuner.study.confirm import candidates, confirmation_rounds
from tuner.study.early_stop import MIN_WINDOWS, EarlyStop
from tuner.study.ledger import CLOSED_LOOP_ONLY, closed_loop_view, rate_view, trial_records
from tuner.study.objective import result_outcome
from tuner.study.run import optimize
from tuner.study.storage import open_storage
from tuner.trial_attrs import rate_metric_of, rate_of

pytest.importorskip("mlperf_loadgen")

FAST = {"warmup_s": 0.2, "window_s": 0.2, "stable_windows": 2, "stability": 0.2, "max_s": 3}

#: the sim twin: 4 independent units, host 4.53 ms per request, device 3.2 ms x batch ** 0.75. One request
#: of batch 1 takes 7.73 ms; of batch 8 (a partial batch runs the full prepared batch) 4.53 + 15.22 = 19.75 ms
#: -- more than the 14 ms bound at any arrival rate, while flat out batch 8 serves ~3x more than batch 1
SIM = {"units": 4, "service_ms": 3.2, "host_overhead_ms": 4.53, "noise": 0.02}
BOUND_MS = 14.0


def server_workload(tmp_path: Path) -> Path:
    doc = {
        "name": "slo",
        "workload": {"kind": "pool", "backend": "sim", "options": SIM},
        "search": {"pool_size": [1, 2, 4], "batch_size": [1, 8]},
        "objectives": [{"server_qps": "maximize"}],
        "load": {
            "scenario": "server",
            "latency_ms": BOUND_MS,
            "percentile": 0.99,
            "min_duration_s": 1.0,
            "min_queries": 40,
            "max_runs": 4,
        },
        "measure": FAST,
        "study": {
            "storage": "slo.db",
            "sampler": "grid",
            "trials": 6,
            "trial_timeout_s": 60,
            "seed": 0,
            "confirm": {"rounds": 0},
        },
    }
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def slo_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Any]:
    from tuner.config.spec import load_spec

    path = server_workload(tmp_path_factory.mktemp("slo"))
    spec = load_spec(path)
    result = optimize(spec)
    study = optuna.load_study(study_name=result.study_name, storage=open_storage(spec.storage_url(), heartbeat=False))
    return study, result


# ------------------------------------------------------------------------------------------ end to end


def test_a_server_study_decides_its_knee_and_best_on_server_qps(slo_study: tuple[optuna.Study, Any]) -> None:
    study, result = slo_study
    assert study.user_attrs["rate_metric"] == "server_qps"
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert len(trials) == 6 and result.measured == 6
    # flat out the big batches win by far ...
    closed_best = max(trials, key=lambda t: t.user_attrs["qps"])
    assert closed_best.params["batch_size"] == 8
    report = json.loads(json.dumps(study_report(study, bootstrap=20)))  # what --json prints
    assert report["rate_metric"] == "server_qps"
    best, knee = report["best"], report["knee"]
    # ... under the bound only batch 1 serves at all: the knee and the best are batch-1 configs
    assert best["params"]["batch_size"] == 1 and knee["params"]["batch_size"] == 1
    served = [t for t in trials if (rate_of(t, "server_qps") or 0.0) > 0]
    assert served and all(t.params["batch_size"] == 1 for t in served)
    top_rate = max(rate_of(t, "server_qps") or 0.0 for t in served)
    assert best["metrics"]["server_qps"] == pytest.approx(top_rate)
    assert knee["metrics"]["server_qps"] >= (1 - report["tolerance"]) * report["plateau_qps"] * (1 - 1e-9)
    assert report["plateau_qps"] <= top_rate * (1 + 1e-9)
    assert " qps plateau" not in report["knee_reason"]  # it names the rate it was decided on
    # the JSON's metrics.qps is the closed-loop figure, the rate stands under its own name
    by_number = {t.number: t for t in trials}
    for doc in (best, knee, *report["top"]):
        trial = by_number[doc["number"]]
        assert doc["metrics"]["qps"] == pytest.approx(trial.user_attrs["qps"])
        assert doc["metrics"]["server_qps"] == pytest.approx(trial.user_attrs["server_qps"])
        assert "closed_qps" not in doc["metrics"]
    # the ranking is by the rate
    rates = [d["metrics"]["server_qps"] for d in report["top"]]
    assert rates == sorted(rates, reverse=True) and len(rates) == len(served)
    # what LoadGen said of the run behind the best's rate
    assert best["loadgen"]["result"] in ("VALID", "INVALID")


def test_a_config_that_meets_the_bound_at_no_rate_is_infeasible_with_its_reason(
    slo_study: tuple[optuna.Study, Any],
) -> None:
    study, _ = slo_study
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    batch8 = [t for t in trials if t.params["batch_size"] == 8]
    assert len(batch8) == 3
    for t in batch8:
        assert t.user_attrs["server_qps"] == 0.0 and t.user_attrs["feasible"] is False
        assert "no arrival rate met the bound" in t.user_attrs["infeasible_reason"]
        assert t.user_attrs["qps"] > 0  # its closed-loop figures are real measurements
    report = study_report(study, bootstrap=0)
    listed = {d["number"]: d["reason"] for d in report["infeasible"]}
    assert set(listed) >= {t.number for t in batch8}
    assert all("no arrival rate met the bound" in listed[t.number] for t in batch8)
    assert report["trials"]["failed"] == 0  # the study went on
    out = io.StringIO()
    render_report(Console(file=out, width=240, color_system=None), report)
    text = out.getvalue()
    assert "server_qps" in text and "infeasible trials" in text and "no arrival rate met the bound" in text
    assert re.search(r"top \d by server_qps", text)


def test_the_figures_plot_the_rate(slo_study: tuple[optuna.Study, Any]) -> None:
    study, _ = slo_study
    data = StudyData(
        study.study_name,
        dict(study.user_attrs),
        ["maximize"],
        [
            TrialRow(t.number, t.state, dict(t.params), dict(t.user_attrs), t.values, distributions=t.distributions)
            for t in study.get_trials(deepcopy=False)
        ],
    )
    report = study_report(data, bootstrap=0)
    charts = {c["id"]: c for c in study_figures(data, report)["charts"]}
    saturation = charts["saturation"]
    assert "server_qps" in saturation["y_label"] and "server_qps" in saturation["title"]
    top = max(y for s in saturation["series"] for y in s["y"])
    assert top == pytest.approx(report["best"]["metrics"]["server_qps"])
    knee_marker = next(m for m in saturation["markers"] if m["name"].startswith("knee"))
    assert knee_marker["y"] == pytest.approx(report["knee"]["metrics"]["server_qps"])
    assert "server_qps" in charts["history"]["y_label"]
    # the latency chart stays closed-loop: p99 against qps flat out
    assert charts["latency"]["x_label"].startswith("qps")


def test_compare_and_export_read_the_rate(slo_study: tuple[optuna.Study, Any]) -> None:
    study, _ = slo_study
    trials = study.get_trials(deepcopy=False)
    report = study_report(study, bootstrap=0)
    item = CompareItem(report, trial_records(trials, rate="server_qps"), storage="a")
    doc = compare_studies([item, CompareItem({**report, "study": report["study"] + "~2"}, item.records, storage="b")])
    assert doc["studies"][0]["rate_metric"] == "server_qps"
    assert doc["ratios"][1]["best_qps"] == pytest.approx(1.0)
    assert max(doc["curves"][0]["y"]) == pytest.approx(report["best"]["metrics"]["server_qps"])

    from tuner.export.select import select

    picked = select(StudyData(study.study_name, dict(study.user_attrs), ["maximize"], list(trials)), report, "knee")
    prov = picked.provenance()
    assert prov["knee"]["rate_metric"] == "server_qps"
    assert prov["metrics"]["server_qps"] == pytest.approx(report["knee"]["metrics"]["server_qps"])
    assert prov["metrics"]["qps"] == pytest.approx(report["knee"]["metrics"]["qps"])


# ---------------------------------------------------------------------------------------- the rate view


def frozen(number: int, pool: int, qps: float, server_qps: float | None, *, feasible: bool = True) -> Any:
    attrs: dict[str, Any] = {
        "config": {"pool_size": pool},
        "qps": qps,
        "window_qps": [qps * 0.99, qps * 1.01],
        "qps_ci_low": qps * 0.98,
        "qps_ci_high": qps * 1.02,
        "qps_cv": 0.01,
        "latency_p99_ms": 10.0 * pool,
        "feasible": feasible,
    }
    if server_qps is not None:
        attrs.update(server_qps=server_qps, server_latency_ms=9.0, loadgen_valid=1.0)
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=qps,
        params={"pool_size": pool},
        distributions={"pool_size": optuna.distributions.CategoricalDistribution([1, 2, 4, 8])},
        user_attrs=attrs,
    )
    trial.number = number
    return trial


def test_the_rate_view_puts_the_rate_under_qps_and_drops_the_closed_loop_only_figures() -> None:
    trials = [frozen(0, 1, 100.0, 60.0), frozen(1, 2, 200.0, 150.0), frozen(2, 4, 210.0, None)]
    closed = trial_records(trials)
    assert [r.metrics["qps"] for r in closed] == [100.0, 200.0, 210.0]
    served = trial_records(trials, rate="server_qps")
    assert [r.number for r in served] == [0, 1]  # no server_qps: left out
    first = served[0].metrics
    assert first["qps"] == 60.0 and first["server_qps"] == 60.0 and first["closed_qps"] == 100.0
    assert not set(CLOSED_LOOP_ONLY) & set(first)
    assert first["latency_p99_ms"] == 10.0
    assert rate_view({"qps": 1.0}, "server_qps") is None
    assert rate_view({"qps": 1.0, "server_qps": float("nan")}, "server_qps") is None
    assert rate_view({"qps": 1.0, "window_qps": [1.0]}, "qps") == {"qps": 1.0, "window_qps": [1.0]}
    # and back: honest metrics, the rate under its own name
    honest = closed_loop_view({**first, "qps": 61.0, "qps_raw": 60.0}, "server_qps")
    assert honest["qps"] == 100.0 and honest["server_qps"] == 61.0 and honest["server_qps_raw"] == 60.0
    assert "closed_qps" not in honest and "qps_raw" not in honest
    assert record_dict(served[0], rate="server_qps")["metrics"]["qps"] == 100.0
    assert record_dict(served[0], rate="server_qps")["metrics"]["server_qps"] == 60.0


def test_the_knee_follows_the_rate_not_the_closed_loop_qps() -> None:
    # flat out pool 2 is within 10 % of pool 8; under the bound only pool 8 serves near its best
    trials = [
        frozen(0, 1, 100.0, 50.0),
        frozen(1, 2, 190.0, 80.0),
        frozen(2, 4, 195.0, 120.0),
        frozen(3, 8, 200.0, 180.0),
    ]
    assert find_knee(trial_records(trials), 0.10, bootstrap=0).knee.params == {"pool_size": 2}
    by_rate = find_knee(trial_records(trials, rate="server_qps"), 0.10, bootstrap=0)
    assert by_rate.knee.params == {"pool_size": 8} and by_rate.plateau_qps == pytest.approx(180.0)


def test_old_studies_read_qps_and_rate_of_reads_one_metric() -> None:
    assert rate_metric_of({}) == "qps"
    assert rate_metric_of({"rate_metric": "server_qps"}) == "server_qps"
    assert rate_metric_of({"rate_metric": "bogus"}) == "qps"
    t = frozen(0, 1, 100.0, 60.0)
    assert rate_of(t, "server_qps") == 60.0 and rate_of(t, "offline_qps") is None and rate_of(t, "qps") == 100.0
    assert observation_of(t, "server_qps").qps == 60.0 and observation_of(t).qps == 100.0


def test_a_report_of_constructed_rows_ranks_by_the_rate_and_keeps_qps_honest() -> None:
    trials = [frozen(0, 1, 100.0, 90.0), frozen(1, 2, 300.0, 95.0), frozen(2, 4, 310.0, 0.0, feasible=False)]
    rows = [TrialRow(t.number, t.state, dict(t.params), dict(t.user_attrs), t.values) for t in trials]
    rows[2].user_attrs["infeasible_reason"] = "no arrival rate met the bound: at 10 qps LoadGen said INVALID"
    data = StudyData("s", {"rate_metric": "server_qps", "knee_tolerance": 0.1}, ["maximize"], rows)
    report = study_report(data, bootstrap=0)
    # pool 1 serves 90 of pool 2's 95 under the bound: the knee, though it completes a third flat out
    assert report["knee"]["params"] == {"pool_size": 1} and report["best"]["params"] == {"pool_size": 2}
    assert report["knee"]["metrics"]["qps"] == 100.0 and report["knee"]["metrics"]["server_qps"] == 90.0
    assert report["knee_reason"].startswith("saturation reached") and "95 server_qps plateau" in report["knee_reason"]
    assert [d["number"] for d in report["top"]] == [1, 0]
    assert report["infeasible"] == [
        {"number": 2, "params": {"pool_size": 4}, "reason": rows[2].user_attrs["infeasible_reason"]}
    ]
    assert report["best"]["loadgen"] == {"result": "VALID", "reasons": [], "reason": None, "runs": None}
    # a study made before load: existed reads qps
    plain = study_report(StudyData("s", {}, ["maximize"], rows[:2]), bootstrap=0)
    assert plain["rate_metric"] == "qps" and plain["best"]["params"] == {"pool_size": 2}


def test_confirmation_candidates_and_rounds_read_the_rate() -> None:
    # flat out pool 2 could be the knee; under the bound it is far off, and pool 1 could be
    trials = [frozen(0, 1, 100.0, 170.0), frozen(1, 2, 190.0, 80.0), frozen(2, 8, 200.0, 180.0)]
    assert [r.params["pool_size"] for r in candidates(trial_records(trials), 0.10, 3)] == [8, 2]
    assert [r.params["pool_size"] for r in candidates(trial_records(trials, rate="server_qps"), 0.10, 3)] == [8, 1]
    rows = []
    for n, (pool, server) in enumerate([(2, 80.0), (8, 170.0), (2, 82.0), (8, 0.0)]):
        t = frozen(10 + n, pool, 200.0, server)
        attrs = {**t.user_attrs, "confirm": {"session": "s1", "round": n // 2, "slot": n % 2, "config": n % 2}}
        rows.append(TrialRow(t.number, t.state, dict(t.params), attrs, t.values))
    rounds = confirmation_rounds(rows, rate="server_qps")
    assert rounds is not None and rounds["qps_by_round"][0] == [80.0, 82.0]
    assert rounds["qps_by_round"][1] == [170.0, 0.0]
    assert confirmation_rounds(rows)["qps_by_round"][0] == [200.0, 200.0]


def test_early_stop_compares_the_closed_loop_upper_bound_with_the_knee_candidates_rate() -> None:
    trials = [frozen(0, 1, 100.0, 50.0), frozen(1, 2, 190.0, 160.0), frozen(2, 4, 200.0, 170.0)]
    records = trial_records(trials, rate="server_qps")
    stop = EarlyStop.for_trial(records, {"pool_size": 8}, 0.10, rate="server_qps")
    assert stop.bar_qps == pytest.approx(0.9 * 160.0)  # the knee candidate (pool 2)'s rate, no interval
    sink = stop.wrap(lambda _e: None)
    for i in range(MIN_WINDOWS):
        sink({"event": "window", "index": i + 1, "qps": 150.0 + i * 0.1})
    assert stop.reason() is None  # 150 flat out could still serve 144 under the bound
    low = EarlyStop.for_trial(records, {"pool_size": 8}, 0.10, rate="server_qps")
    sink = low.wrap(lambda _e: None)
    for i in range(MIN_WINDOWS):
        sink({"event": "window", "index": i + 1, "qps": 100.0 + i * 0.1})
    reason = low.reason() or ""
    assert "stopped early" in reason and "server_qps" in reason
    # the closed-loop rule is unchanged: the bar is a fraction of the knee's qps interval
    closed = EarlyStop.for_trial(trial_records(trials), {"pool_size": 8}, 0.10)
    assert closed.bar_qps == pytest.approx(0.9 * 190.0 * 0.98)


# ------------------------------------------------------------------------------------------ feasibility

SERVER_TEXT = """\
name: t
workload: {kind: pool, backend: sim}
search: {pool_size: [1, 2]}
objectives:
  - server_qps: maximize
load: {scenario: server, latency_ms: 20}
"""


def test_a_server_trial_without_a_served_rate_is_infeasible_with_loadgens_reason() -> None:
    spec = parse_spec(SERVER_TEXT)
    why = "no arrival rate met the bound: at 12 qps (the lowest tried) LoadGen said INVALID (...)"
    unserved = TrialResult(
        params={"pool_size": 1},
        metrics={"qps": 100.0, "server_qps": 0.0, "loadgen_valid": 0.0, "server_runs": 4.0},
        applied={"loadgen": {"runs": [], "result": "INVALID", "bound_met": False, "reason": why}},
    )
    outcome = result_outcome(spec, unserved)
    assert outcome.attrs.feasible is False and outcome.attrs.infeasible_reason == why and outcome.failed is None
    assert outcome.attrs.to_user_attrs()["infeasible_reason"] == why
    served = TrialResult(
        params={"pool_size": 1}, metrics={"qps": 100.0, "server_qps": 80.0, "loadgen_valid": 1.0}, applied={}
    )
    outcome = result_outcome(spec, served)
    assert outcome.attrs.feasible is True and outcome.attrs.infeasible_reason is None
    # closed loop: server_qps means nothing to feasibility
    closed = parse_spec("workload: {kind: pool, backend: sim}\nsearch: {pool_size: [1, 2]}\n")
    assert result_outcome(closed, unserved).attrs.feasible is True


@pytest.mark.parametrize(
    ("text", "where", "needs"),
    [
        ("objectives:\n  - server_qps: maximize\n", ":4: objectives[0]: server_qps", "load.scenario: server"),
        ("constraints:\n  server_latency_ms: {max: 5}\n", ":4: constraints.server_latency_ms", "scenario: server"),
        ("objectives:\n  - offline_qps: maximize\n", ":4: objectives[0]: offline_qps", "scenario: offline"),
        ("constraints:\n  loadgen_valid: {min: 1}\n", ":4: constraints.loadgen_valid", "server or offline"),
        (
            "objectives:\n  - qps: maximize\n  - server_runs: minimize\n",
            ":5: objectives[1]: server_runs",
            "scenario: server",
        ),
    ],
)
def test_a_loadgen_metric_needs_its_scenario(text: str, where: str, needs: str) -> None:
    base = "workload: {kind: pool, backend: sim}\nsearch: {pool_size: [1, 2]}\n"
    with pytest.raises(SpecError) as err:
        parse_spec(base + text)
    message = str(err.value)
    assert where in message and needs in message and "\n" not in message


def test_the_loadgen_metrics_of_the_scenario_are_accepted() -> None:
    spec = parse_spec(SERVER_TEXT + "constraints:\n  server_latency_ms: {max: 20}\n  loadgen_valid: {min: 1}\n")
    assert spec.model.load.rate_metric == "server_qps"
    offline = parse_spec(
        "workload: {kind: pool, backend: sim}\nobjectives:\n  - offline_qps: maximize\nload: {scenario: offline}\n"
    )
    assert offline.model.load.rate_metric == "offline_qps"
    with pytest.raises(SpecError, match="scenario: offline"):
        parse_spec(SERVER_TEXT.replace("server_qps", "offline_qps"))


def test_records_of_one_rate_never_mix_in_trials_without_it() -> None:
    records = trial_records([frozen(0, 1, 100.0, None)], rate="server_qps")
    assert records == []
    assert find_knee(records, 0.1, bootstrap=0).knee is None
    assert isinstance(trial_records([frozen(0, 1, 100.0, None)])[0], TrialRecord)
