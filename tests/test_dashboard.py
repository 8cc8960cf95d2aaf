"""``tuner dashboard`` and the real optuna-dashboard (the ``test`` extra installs it).

A real study is made by ``tuner optimize`` (a 3-config sim workload) into an SQLite file. Then:

- optuna-dashboard's own WSGI app (``optuna_dashboard.wsgi``) is served on a free port, on the storage
  as tuner opens it, and its HTTP API (``/api/studies``, ``/api/studies/<id>``, the routes of
  ``optuna_dashboard/_app.py``) must show the study, its trials and their user attributes with the
  values Optuna reads from the file;
- ``tuner dashboard STORAGE --port P`` runs as a process and must answer the same API;
- without the extra (the import blocked in the child process before the CLI runs) the command says how
  to install it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import pytest
from _pg import ROOT, run, sim_workload, start
from optuna.trial import TrialState

optuna_dashboard = pytest.importorskip("optuna_dashboard")


@dataclass(frozen=True)
class Made:
    folder: Path  # the project folder the study was made from (``studies/dash.db`` is relative to it)
    db: Path
    study: optuna.Study


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    folder = tmp_path_factory.mktemp("dash")
    workload = sim_workload(folder, "dash", search={"pool_size": [1, 2, 3]}, study={"sampler": "grid", "trials": 3})
    result = run("optimize", workload, cwd=folder, timeout=120)
    assert result.returncode == 0, result.stderr
    db = folder / "studies" / "dash.db"
    assert db.is_file()
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    return Made(folder, db, optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        assert response.status == 200
        return json.load(response)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def served(made: Made) -> Iterator[str]:
    """optuna-dashboard's WSGI app on the storage as ``tuner dashboard`` opens it, on a free port."""
    from tuner.study.storage import open_storage

    app = optuna_dashboard.wsgi(open_storage(f"sqlite:///{made.db}", create=False, heartbeat=False))
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _attrs(items: list[dict[str, str]]) -> dict[str, str]:
    """The dashboard's ``[{"key", "value"}]`` attribute list as a dict (values are strings there)."""
    return {a["key"]: a["value"] for a in items}


def test_the_dashboard_lists_the_study(made: Made, served: str) -> None:
    (listed,) = _get(served, "/api/studies")["study_summaries"]
    assert listed["study_name"] == made.study.study_name
    assert listed["study_name"].startswith("dash@")
    assert listed["directions"] == ["maximize"]
    attrs = _attrs(listed["user_attrs"])
    assert attrs["spec_hash"] == made.study.user_attrs["spec_hash"]
    assert attrs["workload_name"] == "dash"
    assert json.loads(attrs["platform"])["cpu_logical"] == made.study.user_attrs["platform"]["cpu_logical"]


def test_the_dashboard_shows_every_trial_with_tuner_s_attributes(made: Made, served: str) -> None:
    (listed,) = _get(served, "/api/studies")["study_summaries"]
    detail = _get(served, f"/api/studies/{listed['study_id']}")
    assert detail["name"] == made.study.study_name
    ours = {t.number: t for t in made.study.get_trials(deepcopy=False)}
    assert len(ours) == 3 and all(t.state == TrialState.COMPLETE for t in ours.values())
    shown = {t["number"]: t for t in detail["trials"]}
    assert sorted(shown) == [0, 1, 2]
    pools = set()
    for number, trial in shown.items():
        mine = ours[number]
        assert trial["state"] == "Complete"
        assert trial["values"] == pytest.approx(mine.values)
        params = {p["name"]: p["param_external_value"] for p in trial["params"]}
        assert params == {"pool_size": str(mine.params["pool_size"])}
        pools.add(int(params["pool_size"]))
        attrs = _attrs(trial["user_attrs"])
        assert float(attrs["qps"]) == pytest.approx(mine.user_attrs["qps"]) and float(attrs["qps"]) > 0
        config = json.loads(attrs["config"])
        assert config == {"pool_size": mine.params["pool_size"], "threads": 1, "requests_per_sync": 1, "batch_size": 1}
        assert float(attrs["latency_p99_ms"]) > 0
        assert attrs["feasible"] == "True"  # a bool, as str() shows it
    assert pools == {1, 2, 3}
    # the best trial the dashboard names is the one with the highest qps
    (best,) = detail["best_trials"]
    assert best["number"] == max(ours, key=lambda n: ours[n].user_attrs["qps"])
    # every attribute tuner stored is a column the dashboard offers
    columns = {a["key"] for a in detail["union_user_attrs"]}
    assert {"qps", "config", "latency_p99_ms", "peak_rss_mb", "worker"} <= columns


def test_tuner_dashboard_serves_the_storage_over_http(made: Made) -> None:
    port = _free_port()
    # a relative STORAGE is relative to the directory the command runs in
    proc = start("dashboard", "studies/dash.db", "--port", str(port), cwd=made.folder)
    base = f"http://127.0.0.1:{port}"
    try:
        listing = None
        deadline = time.monotonic() + 60
        while listing is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                listing = _get(base, "/api/studies")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert listing is not None, "tuner dashboard did not answer within 60 s"
        (listed,) = listing["study_summaries"]
        assert listed["study_name"] == made.study.study_name
        detail = _get(base, f"/api/studies/{listed['study_id']}")
        assert sorted(t["number"] for t in detail["trials"]) == [0, 1, 2]
        with urllib.request.urlopen(base + "/dashboard", timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert f"optuna-dashboard for sqlite:///{made.db} on http://127.0.0.1:{port}/" in " ".join(err.split())


def test_tuner_dashboard_on_a_missing_file_is_one_error(tmp_path: Path) -> None:
    result = run("dashboard", "nothing.db", "--port", str(_free_port()), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no study storage at ") and "nothing.db" in result.stderr
    assert not (tmp_path / "nothing.db").exists()


def test_without_the_extra_it_says_how_to_install(made: Made) -> None:
    # blocks the import in a real child process (None in sys.modules makes `import` raise ImportError)
    code = (
        "import sys; sys.modules['optuna_dashboard'] = None; "
        "from tuner.cli import main; sys.argv = ['tuner', 'dashboard', sys.argv[1]]; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(made.db)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "optuna-dashboard is not installed" in result.stderr
    assert "pip install 'tuner[dashboard]'" in result.stderr
    assert "Traceback" not in result.stderr
