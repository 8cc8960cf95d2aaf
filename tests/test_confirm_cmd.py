"""``tuner confirm``: one MLPerf LoadGen run of a study's pick at a fixed rate, stored on the study with its logs.

End to end on the ``sim`` twin with the real LoadGen: a Server study (2 trials, short search runs), then
``tuner confirm --pick best --duration-s 2``; the confirmation is a trial marked ``loadgen_confirm`` that no
search count includes, its LoadGen logs are Optuna artifacts beside the storage, ``report`` shows it and every
export's provenance carries it. A closed-loop study with a bound far too tight (0.5 ms) confirmed under Server is
INVALID (exit 1) and says why. No test asserts a wall-clock bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config.spec import load_spec, parse_spec
from tuner.errors import SpecError, StorageError, StudyError
from tuner.export.provenance import MARKER, read_provenance
from tuner.study.loadgen_confirm import MARK, artifacts_folder, plan_confirmation
from tuner.study.run import optimize
from tuner.study.storage import open_storage
from tuner.trial_attrs import is_extra, is_measured

pytestmark = pytest.mark.skipif(
    find_spec("mlperf_loadgen") is None, reason="MLPerf LoadGen is not installed: pip install 'tuner[serving]'"
)

FAST = {"warmup_s": 0.2, "window_s": 0.2, "stable_windows": 2, "stability": 0.5, "max_s": 2}
#: two runtimes on two units, 2.5 ms a request: ~800 requests/s flat out (a 50 ms bound is loose)
SIM = {"units": 2, "service_ms": 2.0, "host_overhead_ms": 0.5, "noise": 0.0, "load_ms": 0, "memory_mb_per_runtime": 1}
SERVER_LOAD = {"scenario": "server", "latency_ms": 50, "min_duration_s": 1.0, "min_queries": 40, "max_runs": 3}


def workload(folder: Path, name: str, *, load: dict[str, Any], objective: str, search: dict[str, Any]) -> Path:
    doc = {
        "name": name,
        "workload": {"kind": "pool", "backend": "sim", "options": SIM},
        "search": search,
        "objectives": [{objective: "maximize"}],
        "load": load,
        "measure": FAST,
        "study": {
            "storage": f"{name}.db",
            "sampler": "grid",
            "trials": len(search.get("pool_size", [1])),
            "trial_timeout_s": 60,
            "seed": 0,
            "early_stop": False,
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def trials_of(db: Path, name: str) -> tuple[list[optuna.trial.FrozenTrial], Any]:
    storage = open_storage(f"sqlite:///{db}", create=False, heartbeat=False)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False), storage


@dataclass(frozen=True)
class Confirmed:
    folder: Path
    db: Path
    study: str
    code: int
    doc: dict[str, Any]
    stderr: str


@pytest.fixture(scope="module")
def slo(tmp_path_factory: pytest.TempPathFactory) -> Confirmed:
    folder = tmp_path_factory.mktemp("confirm")
    path = workload(folder, "slo", load=SERVER_LOAD, objective="server_qps", search={"pool_size": [1, 2]})
    result = optimize(load_spec(path), confirm=False)
    assert result.measured == 2
    db = folder / "slo.db"
    code, out, err = cli("confirm", db, "--pick", "best", "--duration-s", "2", "--json")
    assert "Traceback" not in err, err
    return Confirmed(folder, db, result.study_name, code, json.loads(out), err)


def test_one_loadgen_run_at_the_searched_rate_exits_by_its_verdict(slo: Confirmed) -> None:
    doc = slo.doc
    assert slo.code == (0 if doc["result"] == "VALID" else 1), (slo.code, doc["result"], doc["reasons"])
    assert doc["scenario"] == "server" and doc["pick"] == "best"
    code, out, _ = cli("report", slo.db, "--json")
    assert code == 0
    best = json.loads(out)["best"]
    assert doc["trial"] == best["number"] and doc["params"] == best["params"]
    # the rate the search found for that config, asked of LoadGen as it stands
    assert doc["target_qps"] == pytest.approx(best["metrics"]["server_qps"])
    assert "server_qps" in doc["rate_source"]
    # LoadGen's Poisson schedule at that rate, for the minimum duration asked (its own query minimum of 100)
    assert doc["rate_qps"] == pytest.approx(doc["target_qps"], rel=0.2)
    assert doc["duration_s"] >= 1.9 and doc["min_duration_s"] == 2.0
    assert doc["query_count"] >= 100
    assert doc["latency_bound_ms"] == 50 and doc["percentile"] == 0.99
    assert doc["percentile_latency_ms"] == doc["latency_ms"]["p99"]
    if doc["result"] == "VALID":
        assert doc["reasons"] == [] and doc["percentile_latency_ms"] <= 50
    else:
        assert doc["reasons"], doc
    assert "confirming" in slo.stderr and "LoadGen Server" in slo.stderr


def test_the_confirmation_is_a_marked_trial_outside_the_search_with_the_logs_as_artifacts(slo: Confirmed) -> None:
    trials, storage = trials_of(slo.db, slo.study)
    marked = [t for t in trials if MARK in t.user_attrs]
    assert len(marked) == 1
    trial = marked[0]
    assert trial.number == slo.doc["number"] and trial.state == TrialState.COMPLETE
    mark = trial.user_attrs[MARK]
    for key in ("pick", "params", "scenario", "target_qps", "result", "reasons", "rate_qps", "latency_ms"):
        assert mark[key] == slo.doc[key], key
    # no figure at the top level: nothing reads it as a measurement of the search
    assert "qps" not in trial.user_attrs and "server_qps" not in trial.user_attrs
    assert is_extra(trial) and not is_measured(trial)
    assert sum(is_measured(t) for t in trials) == 2
    # LoadGen's own logs, as Optuna artifacts of that trial, beside the storage file
    metas = {m.filename: m for m in get_all_artifact_meta(trial, storage=storage)}
    assert set(metas) == {"mlperf_log_summary.txt", "mlperf_log_detail.txt"}
    folder = slo.folder / "slo.db.artifacts"
    assert mark["artifacts"] == {
        "summary": metas["mlperf_log_summary.txt"].artifact_id,
        "detail": metas["mlperf_log_detail.txt"].artifact_id,
    }
    summary = (folder / mark["artifacts"]["summary"]).read_text()
    assert "MLPerf Results Summary" in summary and "Scenario : Server" in summary
    assert f"Result is : {slo.doc['result']}" in summary
    assert ":::MLLOG" in (folder / mark["artifacts"]["detail"]).read_text()
    assert slo.doc["artifact_paths"]["summary"] == str((folder / mark["artifacts"]["summary"]).resolve())


def test_report_shows_the_latest_confirmation_and_the_search_figures_leave_it_out(slo: Confirmed) -> None:
    code, out, _ = cli("report", slo.db, "--json")
    assert code == 0
    report = json.loads(out)
    shown = report["loadgen_confirmation"]
    assert shown["number"] == slo.doc["number"] and shown["count"] == 1
    assert shown["result"] == slo.doc["result"] and shown["artifacts"] == slo.doc["artifacts"]
    searched = {r["number"] for r in report["top"]} | {report["best"]["number"]}
    assert slo.doc["number"] not in searched and len(report["top"]) == 2
    assert report["trials"]["complete"] == 2  # the search's two trials; the confirmation is counted apart
    code, text, _ = cli("report", slo.db)
    assert code == 0
    assert "LoadGen confirmation" in text and slo.doc["result"] in text and "slo.db.artifacts" in text


def test_every_export_carries_the_confirmation_in_its_provenance(slo: Confirmed, tmp_path: Path) -> None:
    records = {}
    for fmt in ("tuner", "json"):
        out = tmp_path / f"deploy.{fmt}"
        code, _, err = cli("export", slo.db, "--pick", "best", "--format", fmt, "-o", out)
        assert code == 0, err
        text = out.read_text()
        prov = read_provenance(text)
        assert prov is not None
        records[fmt] = prov["loadgen_confirmation"]
        if fmt == "tuner":
            header = text.split(MARKER, 1)[0]
            assert f"loadgen:   server {slo.doc['result']}" in header and "this config" in header
    for c in records.values():
        assert c["result"] == slo.doc["result"] and c["same_config"] is True
        assert c["trial"] == slo.doc["number"] and c["of_trial"] == slo.doc["trial"]
        assert c["rate_qps"] == pytest.approx(slo.doc["rate_qps"])
        assert c["latency_bound_ms"] == 50 and c["reasons"] == slo.doc["reasons"]
        assert c["artifacts"] == slo.doc["artifacts"]


def test_a_bound_far_too_tight_is_invalid_exits_1_and_says_why(tmp_path: Path) -> None:
    # a closed-loop study whose file gives a bound: confirmed under Server at 0.9 x its qps (said so)
    path = workload(tmp_path, "tight", load={"latency_ms": 0.5}, objective="qps", search={"pool_size": [2]})
    result = optimize(load_spec(path), confirm=False)
    assert result.measured == 1
    db = tmp_path / "tight.db"
    code, out, err = cli("confirm", db, "--pick", "trial:0", "--scenario", "server", "--duration-s", "1")
    assert code == 1, (out, err)
    assert "INVALID" in out and "the latency bound was not met" in out
    assert "0.9 x the qps" in out  # the rate's source, in the table's notes
    trials, _ = trials_of(db, result.study_name)
    (mark,) = [t.user_attrs[MARK] for t in trials if MARK in t.user_attrs]
    assert mark["result"] == "INVALID" and not mark["valid"] and not mark["bound_met"]
    assert "the latency bound was not met" in mark["reasons"]
    assert mark["percentile_latency_ms"] > 0.5
    qps = next(t.user_attrs["qps"] for t in trials if t.number == 0)
    assert mark["target_qps"] == pytest.approx(0.9 * qps)


def test_a_missing_trial_is_a_clear_error(slo: Confirmed) -> None:
    code, _, err = cli("confirm", slo.db, "--pick", "trial:99", "--duration-s", "1")
    assert code == 2
    assert "has no trial 99" in err and "Traceback" not in err
    code, _, err = cli("confirm", slo.db, "--pick", "best", "--scenario", "closed")
    assert code == 2 and "--scenario 'closed'" in err and "server or offline" in err


CLOSED = """\
name: plain
workload: {kind: pool, backend: sim}
search: {pool_size: [1, 2]}
"""


def test_nothing_to_confirm_at_is_a_typed_error() -> None:
    spec = parse_spec(CLOSED)
    common: dict[str, Any] = {"study": "plain@x", "pick": "best", "trial": 0, "params": {"pool_size": 1}}
    with pytest.raises(SpecError, match="measured the closed loop only"):
        plan_confirmation(spec, metrics={"qps": 100.0}, **common)
    with pytest.raises(SpecError, match="no load.latency_ms"):
        plan_confirmation(spec, metrics={"qps": 100.0}, scenario="server", **common)
    offline = plan_confirmation(spec, metrics={"qps": 100.0}, scenario="offline", **common)
    assert offline.target_qps == 100.0 and offline.duration_s is None
    # LoadGen's default minimum duration (600 s) sizes the child's timeout when --duration-s is not given
    assert offline.timeout_s > 2 * 600
    server = parse_spec(CLOSED + "objectives: [{server_qps: maximize}]\nload: {scenario: server, latency_ms: 20}\n")
    with pytest.raises(StudyError, match="no arrival rate"):
        plan_confirmation(server, metrics={"qps": 100.0, "server_qps": 0.0}, **common)
    with pytest.raises(SpecError, match="--duration-s"):
        plan_confirmation(server, metrics={"server_qps": 80.0}, duration_s=0.0, **common)
    plan = plan_confirmation(server, metrics={"server_qps": 80.0}, duration_s=3.0, **common)
    assert plan.target_qps == 80.0 and plan.scenario == "server" and plan.latency_ms == 20
    # headroom for the short search runs' optimistic tail: a share of the searched rate, or a rate of one's own
    shared = plan_confirmation(server, metrics={"server_qps": 80.0}, rate_share=0.75, **common)
    assert shared.target_qps == 60.0 and "--rate-share 0.75" in shared.rate_source
    own = plan_confirmation(server, metrics={"server_qps": 80.0}, rate_qps=33.0, **common)
    assert own.target_qps == 33.0 and "80" in own.rate_source
    for bad, match in (
        ({"rate_share": 1.5}, "--rate-share"),
        ({"rate_share": 0.0}, "--rate-share"),
        ({"rate_qps": -1.0}, "--rate "),
        ({"rate_qps": 10.0, "rate_share": 0.5}, "give one"),
    ):
        with pytest.raises(SpecError, match=match):
            plan_confirmation(server, metrics={"server_qps": 80.0}, **bad, **common)


def test_the_logs_go_beside_a_file_storage_and_a_server_needs_a_folder(tmp_path: Path) -> None:
    assert artifacts_folder(f"sqlite:///{tmp_path}/a.db", None) == tmp_path / "a.db.artifacts"
    assert artifacts_folder(f"journal:{tmp_path}/j.log", None) == tmp_path / "j.log.artifacts"
    assert artifacts_folder("postgresql+psycopg://u:secret@h/db", str(tmp_path)) == tmp_path
    with pytest.raises(StorageError, match="--artifacts") as err:
        artifacts_folder("postgresql+psycopg://u:secret@h/db", None)
    assert "secret" not in str(err.value)
