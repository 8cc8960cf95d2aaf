"""The fast path of :mod:`tuner.report.load`: a whole study from Optuna's SQL tables in one query per table.

A plain SQLite file is read through ``sqlite3`` (read-only, no SQLAlchemy import); any other SQL storage
through SQLAlchemy's engine, with the raw DB-API cursor for the bulk reads. The queries themselves (Optuna's
table layout) live in :mod:`tuner.study.optuna_internals`, with the schema revision they were written for.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.errors import StorageError
from tuner.report.study_data import StudyData, TrialRow
from tuner.study.optuna_internals import (
    REQUIRED_TABLES,
    SQL_STUDY_DIRECTIONS,
    SQL_STUDY_USER_ATTRS,
    SQL_TRIAL_PARAMS,
    SQL_TRIAL_USER_ATTRS,
    SQL_TRIAL_USER_ATTRS_SQLITE_JSON,
    SQL_TRIAL_VALUES,
    SQL_TRIALS,
    direction_name,
    objective_value,
    study_query,
    trial_state_name,
)
from tuner.study.storage import redact
from tuner.text import first_line

# --------------------------------------------------------------------------------------------- SQL


class _Connection:
    """A DB-API connection to an SQL storage: ``sqlite3`` directly for a plain SQLite file (read-only,
    and without importing SQLAlchemy, which alone costs ~0.2 s), SQLAlchemy's engine for anything else."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Any = None
        self._sa: Any = None
        path = _sqlite_path(url)
        if path is not None:
            import sqlite3
            from urllib.parse import quote

            if not path.exists():
                raise StorageError(f"no study storage at {path}")
            try:
                self.raw = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=60)
            except sqlite3.Error as err:
                raise StorageError(f"cannot open study storage {path}: {err}") from None
            self.dialect = "sqlite"
            return
        import sqlalchemy

        try:
            self._engine = sqlalchemy.create_engine(url)
            self._sa = self._engine.connect()
        except Exception as err:  # bad URL, missing driver, server down
            if self._engine is not None:
                self._engine.dispose()
            raise StorageError(f"cannot open study storage {redact(url)}: {first_line(err)}") from None
        self.raw = self._sa.connection.dbapi_connection
        self.dialect = self._sa.dialect.name

    def tables(self) -> set[str]:
        if self.dialect == "sqlite" and self._sa is None:
            return {r[0] for r in _rows(self, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        import sqlalchemy

        return set(sqlalchemy.inspect(self._sa).get_table_names())

    def close(self) -> None:
        if self._sa is not None:
            self._sa.close()
            self._engine.dispose()
        else:
            self.raw.close()

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL (no query string), else None."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    rest = url.removeprefix("sqlite:///")
    return Path(rest) if rest and rest != ":memory:" else None


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _when(value: Any) -> _dt.datetime | None:
    if value is None or isinstance(value, _dt.datetime):
        return value
    try:
        return _dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _check_schema(conn: _Connection, url: str) -> None:
    tables = conn.tables()
    if not REQUIRED_TABLES <= tables:
        if not tables:
            raise StorageError(f"{redact(url)} holds no studies (an empty database)")
        missing = ", ".join(sorted(REQUIRED_TABLES - tables))
        raise StorageError(f"{redact(url)} is not an Optuna study storage (missing tables: {missing})")


def _rows(conn: _Connection, sql: str) -> list[tuple[Any, ...]]:
    """All rows of ``sql`` through the raw DB-API cursor (SQLAlchemy's row objects cost ~2 us a row)."""
    cursor = conn.raw.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        cursor.close()


def _decode_all(texts: Sequence[str]) -> list[Any]:
    """Many JSON texts at once: one ``json.loads`` of their array (per-call overhead dominates otherwise)."""
    try:
        return json.loads("[" + ",".join(texts) + "]")
    except (TypeError, ValueError):
        return [_loads(t) for t in texts]


def _read_user_attrs(conn: _Connection, sid: int, rows: dict[int, TrialRow], skip: Sequence[str] = ()) -> None:
    """Every trial's user attributes. On SQLite, SQL assembles one JSON object per trial (``group_concat``
    of the stored JSON texts), so Python decodes 10,000 objects in one call instead of 200,000 values."""
    if conn.dialect == "sqlite":
        try:
            found = _rows(conn, study_query(SQL_TRIAL_USER_ATTRS_SQLITE_JSON, sid, skip_keys=skip))
        except Exception:  # an SQLite without JSON functions: the portable way below
            found = None
        if found is not None:
            try:
                decoded = json.loads("[" + ",".join(text for _, text in found) + "]")
            except ValueError:
                decoded = None
            if decoded is not None:
                for (tid, _), attrs in zip(found, decoded, strict=True):
                    row = rows.get(tid)
                    if row is not None:
                        row.user_attrs = attrs
                return
    found = _rows(conn, study_query(SQL_TRIAL_USER_ATTRS, sid, skip_keys=skip))
    decoded = _decode_all([r[2] for r in found])
    for (tid, key, _), value in zip(found, decoded, strict=True):
        row = rows.get(tid)
        if row is not None:
            row.user_attrs[key] = value


def _sql_study(conn: _Connection, study_id: int, name: str, url: str, skip: Sequence[str] = ()) -> StudyData:
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    sid = int(study_id)
    attr_rows = _rows(conn, study_query(SQL_STUDY_USER_ATTRS, sid))
    attrs = dict(zip([k for k, _ in attr_rows], _decode_all([v for _, v in attr_rows]), strict=True))
    directions = [direction_name(d) for (d,) in _rows(conn, study_query(SQL_STUDY_DIRECTIONS, sid))]
    rows: dict[int, TrialRow] = {}
    states = {s.name: s for s in TrialState}
    for tid, number, state, start, complete in _rows(conn, study_query(SQL_TRIALS, sid)):
        rows[tid] = TrialRow(
            number=int(number),
            state=states.get(trial_state_name(state), TrialState.FAIL),
            params={},
            user_attrs={},
            datetime_start=_when(start),
            datetime_complete=_when(complete),
        )
    _read_user_attrs(conn, sid, rows, skip)
    values: dict[int, dict[int, float]] = {}
    for tid, objective, value, kind in _rows(conn, study_query(SQL_TRIAL_VALUES, sid)):
        values.setdefault(tid, {})[int(objective)] = objective_value(value, kind)
    for tid, per in values.items():
        if tid in rows:
            rows[tid].values = [per[i] for i in sorted(per)]
    dists: dict[str, Any] = {}
    external: dict[tuple[str, float], Any] = {}
    for tid, pname, pvalue, djson in _rows(conn, study_query(SQL_TRIAL_PARAMS, sid)):
        row = rows.get(tid)
        if row is None:
            continue
        dist = dists.get(djson)
        if dist is None:
            dist = dists[djson] = json_to_distribution(djson)
        key = (djson, pvalue)
        if key not in external:
            external[key] = dist.to_external_repr(pvalue)
        row.params[pname] = external[key]
        row.distributions[pname] = dist
    trials = sorted(rows.values(), key=lambda r: r.number)
    return StudyData(study_name=name, user_attrs=attrs, directions=directions, trials=trials, storage=redact(url))
