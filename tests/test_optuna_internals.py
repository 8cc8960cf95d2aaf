"""Pins of every Optuna internal tuner uses (:mod:`tuner.study.optuna_internals`).

Each private class, attribute and method is checked where Optuna defines it (``inspect``) and by what it
does on real storages; each SQL query tuner runs on Optuna's tables is run on a real study written by
Optuna itself (SQLite, and PostgreSQL through the ``pg_url`` fixture) and its rows are compared with
what Optuna's API says. An Optuna upgrade that moves any of them fails here, by name, before a study or
a report goes wrong. A last test checks that no other module of tuner reaches past the module.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution, json_to_distribution
from optuna.storages import _heartbeat
from optuna.trial import TrialState, create_trial
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tuner.report.load import _api_studies, load_studies
from tuner.report.sql_read import _Connection
from tuner.study import ledger, storage
from tuner.study import optuna_internals as oi

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ the supported range


def test_the_installed_optuna_is_in_the_supported_range_that_pyproject_pins() -> None:
    assert Version(optuna.__version__) in SpecifierSet(oi.SUPPORTED_OPTUNA), (
        f"Optuna {optuna.__version__} is outside {oi.SUPPORTED_OPTUNA}: check every pin in this file, then widen "
        "SUPPORTED_OPTUNA and pyproject.toml together"
    )
    deps = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    assert deps, "pyproject.toml has no dependencies list"
    pins = re.findall(r'^\s*"optuna([^"]*)"', deps.group(1), re.M)
    assert pins and SpecifierSet(pins[0]) == SpecifierSet(oi.SUPPORTED_OPTUNA), pins


# ----------------------------------------------------------------------------------- private API


def _params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def test_base_heartbeat_has_the_abstract_methods_tuner_implements() -> None:
    base = _heartbeat.BaseHeartbeat
    assert inspect.isabstract(base)
    # a new abstract method would make tuner's journal storage impossible to build
    assert base.__abstractmethods__ == frozenset(
        {"record_heartbeat", oi.STALE_TRIAL_HOOK, "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    )
    assert _params(getattr(base, oi.STALE_TRIAL_HOOK)) == ["self", "study_id"]
    assert _params(base.record_heartbeat) == ["self", "trial_id"]
    assert _params(base.get_heartbeat_interval) == ["self"]
    assert _params(base.get_heartbeat_stale_trial_callback) == ["self"]

    hb = oi.heartbeat_base()
    assert issubclass(hb, base) and oi.heartbeat_base() is hb
    assert hb.__abstractmethods__ == frozenset(
        {"record_heartbeat", "stale_trial_ids", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    )
    assert issubclass(storage._JournalStorage, base) and not inspect.isabstract(storage._JournalStorage)


def test_fail_stale_trials_and_is_heartbeat_enabled_are_what_tuner_calls() -> None:
    assert _params(optuna.storages.fail_stale_trials) == ["study"]
    assert _params(_heartbeat.is_heartbeat_enabled) == ["storage"]
    source = inspect.getsource(optuna.storages.fail_stale_trials)
    # the hook tuner overrides, and the private study attributes Optuna itself reads there
    assert f"storage.{oi.STALE_TRIAL_HOOK}(study._study_id)" in source, source
    assert "study._storage" in source, source


def test_heartbeat_enabled_tells_storages_that_beat_from_those_that_do_not(tmp_path: Path) -> None:
    assert oi.heartbeat_enabled(storage.open_storage(f"journal:{tmp_path}/a.log"))
    assert not oi.heartbeat_enabled(storage.open_storage(f"journal:{tmp_path}/b.log", heartbeat=False))
    assert oi.heartbeat_enabled(storage.open_storage(f"sqlite:///{tmp_path}/c.db"))
    assert not oi.heartbeat_enabled(storage.open_storage(f"sqlite:///{tmp_path}/d.db", heartbeat=False))
    assert not oi.heartbeat_enabled(optuna.storages.InMemoryStorage())


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_storage_study_and_trial_ids_agree_with_optunas_public_lookups(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.log"
    store = storage.open_storage(url, heartbeat=False)
    first = optuna.create_study(storage=store, study_name="first")
    second = optuna.create_study(storage=store, study_name="second")
    # the storage itself, or Optuna's cache in front of an RDB storage: the same database either way
    through = oi.storage_of(second)
    assert isinstance(through, optuna.storages.BaseStorage)
    assert through is store or type(through).__name__ == "_CachedStorage"
    assert through.get_study_id_from_name("second") == store.get_study_id_from_name("second")
    assert oi.study_id_of(second) == store.get_study_id_from_name("second")
    assert oi.study_id_of(first) == store.get_study_id_from_name("first") != oi.study_id_of(second)
    for n in range(3):
        first.tell(first.ask(), float(n))
        second.tell(second.ask(), float(n))
    for t in second.get_trials(deepcopy=False):
        assert oi.trial_id_of(t) == store.get_trial_id_from_study_id_trial_number(oi.study_id_of(second), t.number)
    # the id reaches the same trial through the storage (what the spool does to a lost trial)
    first.ask()
    lost = second.ask()
    frozen = second.get_trials(deepcopy=False)[lost.number]
    oi.storage_of(second).set_trial_user_attr(oi.trial_id_of(frozen), "failure", {"kind": "storage"})
    oi.storage_of(second).set_trial_state_values(oi.trial_id_of(frozen), state=TrialState.FAIL)
    after = second.get_trials(deepcopy=False)[lost.number]
    assert after.state == TrialState.FAIL and after.user_attrs == {"failure": {"kind": "storage"}}
    assert first.get_trials(deepcopy=False)[-1].state == TrialState.RUNNING


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("via", ["optuna", "tuner"])
def test_optunas_fail_stale_trials_calls_the_journal_override(tmp_path: Path, via: str) -> None:
    # a grace of a day: only the trial whose last beat is ten days old can be stale, however slow the machine
    store = storage.open_storage(f"journal:{tmp_path}/j.log", heartbeat_s=1, grace_s=86400)
    assert isinstance(store, storage._JournalStorage)
    study = optuna.create_study(storage=store, study_name="j")
    dead, alive, silent = study.ask(), study.ask(), study.ask()
    ids = {t.number: oi.trial_id_of(t) for t in study.get_trials(deepcopy=False)}
    store.set_trial_system_attr(ids[dead.number], "tuner:heartbeat", time.time() - 10 * 86400)
    store.record_heartbeat(ids[alive.number])
    assert store.stale_trial_ids(oi.study_id_of(study)) == [ids[dead.number]]

    if via == "optuna":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    else:
        ledger.fail_stale_trials(study)

    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    assert trials[silent.number].state == TrialState.RUNNING  # never beat: not tuner's to judge
    # Optuna's RetryHeartbeatStaleTrialCallback (open_storage's callback) queued the config again
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs.get("failed_trial") == dead.number


# ---------------------------------------------------------------------------------- table layout


@pytest.fixture(params=["sqlite", "postgresql"])
def rdb_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/layout.db"
    return str(request.getfixturevalue("pg_url"))


_DISTS = {
    "pool_size": IntDistribution(1, 16),
    "threads": CategoricalDistribution([1, 2, 4]),
    "scale": FloatDistribution(0.5, 2.0, log=True),
}


def _write_studies(url: str) -> tuple[optuna.Study, optuna.Study]:
    """Two studies written by Optuna itself: every state, infinities, JSON attrs, two objectives."""
    store = optuna.storages.RDBStorage(url)
    a = optuna.create_study(storage=store, study_name="a", direction="maximize")
    a.set_user_attr("spec_hash", "abc123")
    a.set_user_attr("platform", {"cpu": "x86", "cores": 4, "runtimes": ["ort", "ov"]})
    a.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=812.5,
            params={"pool_size": 9, "threads": 4, "scale": 1.5},
            distributions=_DISTS,
            user_attrs={"qps": 812.5, "config": {"pool_size": 9}, "applied": {"x": 1}, "note": 'it\'s "quoted"'},
        )
    )
    a.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"pool_size": 2, "threads": 1, "scale": 0.5},
            distributions=_DISTS,
            user_attrs={"failure": {"kind": "timeout", "message": "3 s"}, "applied": {"x": 2}},
        )
    )
    a.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=math.inf,
            params={"pool_size": 16},
            distributions={"pool_size": _DISTS["pool_size"]},
        )
    )
    a.add_trial(
        create_trial(state=TrialState.PRUNED, params={"threads": 2}, distributions={"threads": _DISTS["threads"]})
    )
    running = a.ask(_DISTS)
    running.set_user_attr("claimed", True)
    a.enqueue_trial({"pool_size": 3})  # WAITING (after the ask, which would have taken it)
    b = optuna.create_study(storage=store, study_name="b", directions=["maximize", "minimize"])
    b.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            values=[5.0, -math.inf],
            params={"pool_size": 1},
            distributions={"pool_size": _DISTS["pool_size"]},
            user_attrs={"qps": 5.0},
        )
    )
    return optuna.load_study(study_name="a", storage=url), optuna.load_study(study_name="b", storage=url)


def _query(conn: _Connection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = conn.raw.cursor()
    try:
        cursor.execute(sql)
        return [d[0] for d in cursor.description], cursor.fetchall()
    finally:
        cursor.close()


def test_the_schema_is_the_revision_the_queries_were_written_for(rdb_url: str) -> None:
    a, _ = _write_studies(rdb_url)
    store = optuna.storages.RDBStorage(rdb_url)
    assert store.get_head_version() in oi.SCHEMA_REVISIONS, store.get_head_version()
    assert store.get_current_version() in oi.SCHEMA_REVISIONS
    from optuna.storages._rdb import models

    assert models.SCHEMA_VERSION == oi.RDB_SCHEMA_VERSION
    with _Connection(rdb_url) as conn:
        assert oi.REQUIRED_TABLES <= conn.tables()
        cols, rows = _query(conn, oi.SQL_SCHEMA_REVISION)
        assert cols == ["version_num"] and [r[0] for r in rows] == [store.get_current_version()]
        _, rows = _query(conn, "SELECT schema_version, library_version FROM version_info")
        assert rows == [(oi.RDB_SCHEMA_VERSION, optuna.__version__)]


def test_every_query_gives_back_what_optuna_stored(rdb_url: str) -> None:
    a, b = _write_studies(rdb_url)
    sid_a, sid_b = oi.study_id_of(a), oi.study_id_of(b)
    with _Connection(rdb_url) as conn:
        cols, rows = _query(conn, oi.SQL_STUDIES)
        assert cols == ["study_id", "study_name"] and rows == [(sid_a, "a"), (sid_b, "b")]

        cols, rows = _query(conn, oi.study_query(oi.SQL_STUDY_USER_ATTRS, sid_a))
        assert cols == ["key", "value_json"]
        assert {k: json.loads(v) for k, v in rows} == a.user_attrs

        cols, rows = _query(conn, oi.study_query(oi.SQL_STUDY_DIRECTIONS, sid_b))
        assert cols == ["direction"] and [oi.direction_name(d) for (d,) in rows] == ["maximize", "minimize"]
        _, rows = _query(conn, oi.study_query(oi.SQL_STUDY_DIRECTIONS, sid_a))
        assert [oi.direction_name(d) for (d,) in rows] == ["maximize"]

        trials = a.get_trials(deepcopy=False)
        by_id = {oi.trial_id_of(t): t for t in trials}
        cols, rows = _query(conn, oi.study_query(oi.SQL_TRIALS, sid_a))
        assert cols == ["trial_id", "number", "state", "datetime_start", "datetime_complete"]
        assert [(tid, n, oi.trial_state_name(s)) for tid, n, s, _, _ in rows] == [
            (oi.trial_id_of(t), t.number, t.state.name) for t in trials
        ]
        assert {oi.trial_state_name(r[2]) for r in rows} == {"COMPLETE", "FAIL", "PRUNED", "WAITING", "RUNNING"}
        for tid, _, _, start, complete in rows:
            assert (start is None) == (by_id[tid].datetime_start is None)
            assert (complete is None) == (by_id[tid].datetime_complete is None)

        skip = ("applied",)
        cols, rows = _query(conn, oi.study_query(oi.SQL_TRIAL_USER_ATTRS, sid_a, skip_keys=skip))
        assert cols == ["trial_id", "key", "value_json"]
        found: dict[int, dict[str, Any]] = {}
        for tid, key, value in rows:
            found.setdefault(tid, {})[key] = json.loads(value)
        expected = {
            oi.trial_id_of(t): {k: v for k, v in t.user_attrs.items() if k not in skip} for t in trials if t.user_attrs
        }
        assert found == expected and all("applied" not in v for v in found.values())
        if conn.dialect == "sqlite":
            cols, rows = _query(conn, oi.study_query(oi.SQL_TRIAL_USER_ATTRS_SQLITE_JSON, sid_a, skip_keys=skip))
            assert len(cols) == 2 and cols[0] == "trial_id"
            assert {tid: json.loads(text) for tid, text in rows} == expected

        cols, rows = _query(conn, oi.study_query(oi.SQL_TRIAL_VALUES, sid_a))
        assert cols == ["trial_id", "objective", "value", "value_type"]
        values: dict[int, list[float]] = {}
        for tid, objective, value, kind in sorted(rows, key=lambda r: (r[0], r[1])):
            assert objective == len(values.get(tid, []))
            values.setdefault(tid, []).append(oi.objective_value(value, kind))
        assert values == {oi.trial_id_of(t): t.values for t in trials if t.values is not None}
        assert math.inf in [v[0] for v in values.values()]
        _, rows = _query(conn, oi.study_query(oi.SQL_TRIAL_VALUES, sid_b))
        assert sorted((o, oi.objective_value(v, k)) for _, o, v, k in rows) == [(0, 5.0), (1, -math.inf)]

        cols, rows = _query(conn, oi.study_query(oi.SQL_TRIAL_PARAMS, sid_a))
        assert cols == ["trial_id", "param_name", "param_value", "distribution_json"]
        params: dict[int, dict[str, Any]] = {}
        for tid, name, internal, djson in rows:
            dist = json_to_distribution(djson)
            assert dist == by_id[tid].distributions[name]
            params.setdefault(tid, {})[name] = dist.to_external_repr(internal)
        assert params == {oi.trial_id_of(t): t.params for t in trials if t.params}


def test_the_fast_read_path_agrees_with_optunas_api(rdb_url: str) -> None:
    _write_studies(rdb_url)
    fast = load_studies(rdb_url)
    slow = _api_studies(rdb_url, None)
    assert [s.study_name for s in fast] == [s.study_name for s in slow] == ["a", "b"]
    for f, s in zip(fast, slow, strict=True):
        assert (f.user_attrs, f.directions) == (s.user_attrs, s.directions)
        assert len(f.trials) == len(s.trials) > 0
        for ft, st in zip(f.trials, s.trials, strict=True):
            assert (ft.number, ft.state, ft.params, ft.user_attrs, ft.values) == (
                st.number,
                st.state,
                st.params,
                st.user_attrs,
                st.values,
            )
            assert ft.distributions == st.distributions
            assert (ft.datetime_start, ft.datetime_complete) == (st.datetime_start, st.datetime_complete)


# ------------------------------------------------------------------------------ the only module

_PRIVATE_USE = re.compile(
    r"optuna(\.[a-z_]+)*\._[a-z]"  # a private Optuna module or name
    r"|(\.|\b)_storage\b|\._study_id\b|\._trial_id\b"  # private attributes of Study / FrozenTrial
    r"|\b" + oi.STALE_TRIAL_HOOK + r"\b"
    r"|\b(FROM|JOIN|INTO|UPDATE)\s+(studies|trials|trial_[a-z_]+|study_[a-z_]+|version_info|alembic_version)\b"
    r"|\b(" + "|".join(sorted(oi.REQUIRED_TABLES - {"studies", "trials"})) + r"|alembic_version|version_info)\b"
)


def test_no_other_module_reaches_past_optuna_internals() -> None:
    found = []
    for path in sorted((ROOT / "tuner").rglob("*.py")):
        if path.name == "optuna_internals.py":
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _PRIVATE_USE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not found, "Optuna internals outside tuner/study/optuna_internals.py:\n" + "\n".join(found)
