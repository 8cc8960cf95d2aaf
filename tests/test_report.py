"""``tuner report`` / ``tuner studies`` on real sim studies, and the figures (``tuner dashboard``: test_dashboard)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from _sim_studies import SimStudies, combined_storage, sim_studies
from typer.testing import CliRunner

from tuner.cli import app
from tuner.report.axes import knee_axis, series_axis
from tuner.report.charts import param_importances, saturation_chart, study_figures
from tuner.report.load import load_studies, parse_ref
from tuner.report.study_data import StudyData, TrialRow
from tuner.report.summary import study_report
from tuner.study.ledger import trial_records


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> SimStudies:
    return sim_studies(tmp_path_factory)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


#: the sim device twin's throughput bound (samples/s) for study A's workload, by (pool_size, batch_size),
#: worked out by hand from the model in tuner/backends/sim.py: host H = 4.53 ms per request, device
#: D = 3.2 ms x batch ** 0.75 (5.382 ms at batch 2), 3 units, runtime i on unit i % 3. A runtime alone does
#: batch / (H + D); a unit serves at most batch / D. Pool 6 puts two runtimes on each unit.
BOUND_A = {
    (1, 1): 1 / 7.73e-3,  # 129.4
    (3, 1): 3 / 7.73e-3,  # 388.1
    (6, 1): 3 * 2 / 7.73e-3,  # 776.2 (two runtimes per unit, the unit 82 % busy)
    (1, 2): 2 / 9.912e-3,  # 201.8
    (3, 2): 3 * 2 / 9.912e-3,  # 605.3
    (6, 2): 3 * 2 / 5.382e-3,  # 1114.8: every unit busy
}


def test_report_json_follows_the_contract_and_names_the_knee_the_device_model_predicts(studies: SimStudies) -> None:
    code, out, err = cli("report", studies.a_db, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert isinstance(doc, dict), "one study: one object"
    for key in ("study", "platform", "trials", "best", "knee", "pareto"):
        assert key in doc
    assert doc["study"] == studies.a_name
    assert doc["platform"]["cpu_model"]
    assert doc["trials"]["complete"] == 6 and doc["trials"]["failed"] == 0
    for rec in [doc["best"], doc["knee"], *doc["pareto"]]:
        assert set(rec) >= {"number", "params", "metrics"}
        assert rec["metrics"]["qps"] > 0

    # the measurements, read with Optuna's own API, sit a few percent under the model's bound
    study = optuna.load_study(study_name=studies.a_name, storage=f"sqlite:///{studies.a_db}")
    qps = {(t.params["pool_size"], t.params["batch_size"]): t.user_attrs["qps"] for t in study.trials}
    assert set(qps) == set(BOUND_A)
    for config, bound in BOUND_A.items():
        assert 0.85 * bound < qps[config] < 1.02 * bound, (config, qps[config], bound)
    # so pool 6 x batch 2 is the best, and the knee: every cheaper config is under 90 % of the plateau
    # (pool 6 x batch 1, the next best, is at most 1.02 x 776 = 792 < 0.9 x 0.85 x 1115 = 853)
    six_by_two = {"pool_size": 6, "threads": 1, "requests_per_sync": 1, "batch_size": 2}
    assert doc["best"]["params"] == doc["knee"]["params"] == six_by_two
    by_number = {t.number: (t.params["pool_size"], t.params["batch_size"]) for t in study.trials}
    assert by_number[doc["knee"]["number"]] == (6, 2)
    assert doc["knee"]["metrics"]["qps"] == pytest.approx(qps[(6, 2)])
    # the plateau is the best qps less one standard error of its windows: under it, and near it (windows of
    # real sleeps on a loaded box spread a few %)
    assert 0.9 * qps[(6, 2)] < doc["plateau_qps"] <= qps[(6, 2)]
    # nothing costlier than the knee was measured; no resampled study can pick another config
    assert doc["knee"]["confirmed"] is False
    assert doc["knee"]["confidence"] == 1.0
    assert doc["best"]["number"] in {p["number"] for p in doc["pareto"]}


def test_fast_reader_matches_optuna(studies: SimStudies) -> None:
    (data,) = load_studies(f"sqlite:///{studies.a_db}")
    study = optuna.load_study(study_name=studies.a_name, storage=f"sqlite:///{studies.a_db}")
    theirs = {t.number: t for t in study.get_trials()}
    assert data.study_name == studies.a_name
    assert data.user_attrs == study.user_attrs
    assert data.directions == ["maximize", "minimize"]
    assert [t.number for t in data.trials] == sorted(theirs)
    for row in data.trials:
        t = theirs[row.number]
        assert (row.state, row.params, row.user_attrs, row.values) == (t.state, t.params, t.user_attrs, t.values)
        assert row.datetime_start == t.datetime_start and row.distributions == t.distributions
    # and the report from either is the same document
    assert study_report(data, trials=data.trials) == study_report(study)


def test_report_tables(studies: SimStudies) -> None:
    code, out, err = cli("report", studies.a_db, "--top", "3")
    assert code == 0, err
    assert studies.a_name in out
    assert "best" in out and "knee" in out and "top 3 by qps" in out
    assert "Pareto front" in out  # two objectives


def test_several_studies_give_a_list_and_study_selects_one(
    studies: SimStudies, tmp_path_factory: pytest.TempPathFactory
) -> None:
    both, names = combined_storage(studies, tmp_path_factory)
    code, out, err = cli("report", both, "--json")
    assert code == 0, err
    docs = json.loads(out)
    assert isinstance(docs, list) and [d["study"] for d in docs] == names
    assert docs[1]["platform"]["board"].startswith("Rockchip RK3576")
    code, out, _ = cli("report", both, "--json", "--study", names[1])
    assert code == 0 and json.loads(out)["study"] == names[1]
    code, out, _ = cli("report", f"{both}:{names[1]}", "--json")
    assert code == 0 and json.loads(out)["study"] == names[1]
    code, _, err = cli("report", both, "--study", "nope@x")
    assert code == 2 and "no study 'nope@x'" in err and names[0] in err


def test_report_errors_name_the_problem(tmp_path: Path) -> None:
    code, _, err = cli("report", tmp_path / "missing.db", "--json")
    assert code == 2 and "no study storage" in err
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    code, _, err = cli("report", other)
    assert code == 2 and "not an Optuna study storage" in err


def test_html_and_png_figures(studies: SimStudies, tmp_path: Path) -> None:
    html, png = tmp_path / "out" / "report.html", tmp_path / "png"
    code, out, err = cli("report", studies.a_db, "--html", html, "--png", png, "--json")
    assert code == 0, err
    json.loads(out)  # --json still prints the document
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") and studies.a_name in text
    assert "plotly" in text.lower() and len(text) > 1_000_000  # plotly.js inline: self-contained
    assert "<script src=" not in text  # nothing loaded from elsewhere
    files = sorted(png.glob("*.png"))
    assert [f.name.rsplit("-", 1)[1] for f in files] == [
        "history.png",
        "importance.png",
        "latency.png",
        "saturation.png",
    ]
    for f in files:
        data = f.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f


def test_figure_data(studies: SimStudies) -> None:
    (data,) = load_studies(f"sqlite:///{studies.a_db}")
    report = study_report(data, trials=data.trials)
    records = trial_records(data.trials)
    assert knee_axis(records) == "pool_size"  # 3 values beat batch_size's 2
    assert series_axis(records, "pool_size") == "batch_size"
    chart = saturation_chart(records, report)
    assert [s["name"] for s in chart["series"]] == ["batch_size=1", "batch_size=2"]
    # one trial per point: each y is that trial's qps as Optuna reads it from the file
    study = optuna.load_study(study_name=studies.a_name, storage=f"sqlite:///{studies.a_db}")
    qps = {(t.params["pool_size"], t.params["batch_size"]): t.user_attrs["qps"] for t in study.trials}
    for s, batch in zip(chart["series"], (1, 2), strict=True):
        assert s["x"] == [1, 3, 6]
        assert s["y"] == [pytest.approx(qps[(x, batch)]) for x in (1, 3, 6)]
    # the knee star sits on pool 6 x batch 2 (see the device-model bounds above)
    star = next(m for m in chart["markers"] if m["name"].startswith("knee"))
    assert (star["x"], star["y"]) == (6, pytest.approx(qps[(6, 2)]))
    assert chart["hlines"][0]["y"] == pytest.approx(report["plateau_qps"])
    figures = study_figures(data, report)
    assert [c["id"] for c in figures["charts"]] == ["saturation", "latency", "importance", "history"]
    importance = figures["charts"][2]
    assert set(importance["values"]) <= {"pool_size", "batch_size"} and importance["values"]


def test_importance_is_guarded_with_few_trials(studies: SimStudies) -> None:
    (data,) = load_studies(f"sqlite:///{studies.a_db}")
    few = StudyData(data.study_name, data.user_attrs, data.directions, data.trials[:2])
    values, note = param_importances(few)
    assert values == {} and "too few" in note
    same = [
        TrialRow(t.number, t.state, {"pool_size": 3}, t.user_attrs, t.values, distributions=t.distributions)
        for t in data.trials
    ]
    values, note = param_importances(StudyData("s", {}, ["maximize"], same))
    assert values == {} and "varies" in note


@pytest.fixture
def wide_console() -> object:
    """Render tables 220 columns wide (CliRunner is not a terminal: rich would use 80)."""
    from tuner.cli._common import out_console

    saved = out_console._width
    out_console.width = 220
    yield out_console
    out_console._width = saved


@pytest.mark.usefixtures("wide_console")
def test_studies_lists_both(studies: SimStudies, tmp_path_factory: pytest.TempPathFactory) -> None:
    both, names = combined_storage(studies, tmp_path_factory)
    code, out, err = cli("studies", both, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["study"] for r in rows] == names
    assert rows[1]["platform_tag"] == studies.b_tag and rows[1]["platform"]["board"].startswith("Rockchip")
    for r in rows:
        assert r["trials"]["complete"] == 6
        assert r["best"]["qps"] > 0 and r["knee"]["qps"] > 0 and "confirmed" in r["knee"]
    code, out, _ = cli("studies", both)
    assert code == 0
    for name in names:
        assert name in out
    assert "RK3576" in out


def test_parse_ref() -> None:
    ref = parse_ref("/tmp/x.db:sim@x86_64-2c-abcdef~2")
    assert (ref.url, ref.study) == ("sqlite:////tmp/x.db", "sim@x86_64-2c-abcdef~2")
    assert parse_ref("sqlite:////tmp/x.db:name").study == "name"
    assert parse_ref("postgresql://u:pw@db/studies#name") == parse_ref("postgresql://u:pw@db/studies", "name")
    assert parse_ref("/tmp/x.db").study is None


def test_report_reads_a_postgresql_storage(studies: SimStudies, pg_url: str) -> None:
    """The fast reader's portable path (not SQLite): the same report from PostgreSQL as from the file."""
    optuna.copy_study(from_study_name=studies.a_name, from_storage=f"sqlite:///{studies.a_db}", to_storage=pg_url)
    code, out, err = cli("report", pg_url, "--json")
    assert code == 0, err
    theirs = json.loads(cli("report", studies.a_db, "--json")[1])
    ours = json.loads(out)
    assert ours["study"] == theirs["study"] and ours["trials"] == theirs["trials"]
    assert ours["knee"]["number"] == theirs["knee"]["number"] and ours["best"] == theirs["best"]
    assert ours["platform"] == theirs["platform"]
    assert "***" not in out  # nothing here prints the URL; errors would print it redacted
