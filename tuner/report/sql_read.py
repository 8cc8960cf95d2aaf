"""The fast path of :mod:`tuner.report.load`: a whole study from Optuna's SQL tables in one query per table.

A plain SQLite file is read through ``sqlite3`` (read-only, no SQLAlchemy import); any other SQL storage
through SQLAlchemy's engine, with the raw DB-API cursor for the bulk reads.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.errors import StorageError
from tuner.report.study_data import StudyData, TrialRow

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
            raise StorageError(f"cannot open study storage {_redact(url)}: {_first_line(err)}") from None
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


def _redact(url: str) -> str:
    from tuner.study.storage import redact

    return redact(url)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__


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
    needed = {"studies", "trials", "trial_user_attributes", "trial_values", "trial_params", "study_user_attributes"}
    if not needed <= tables:
        if not tables:
            raise StorageError(f"{_redact(url)} holds no studies (an empty database)")
        missing = ", ".join(sorted(needed - tables))
        raise StorageError(f"{_redact(url)} is not an Optuna study storage (missing tables: {missing})")


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


def _read_user_attrs(conn: _Connection, join: str, rows: dict[int, TrialRow], skip: Sequence[str] = ()) -> None:
    """Every trial's user attributes. On SQLite, SQL assembles one JSON object per trial (``group_concat``
    of the stored JSON texts), so Python decodes 10,000 objects in one call instead of 200,000 values."""
    if skip:
        join += " AND a.key NOT IN (" + ", ".join("'" + k.replace("'", "''") + "'" for k in skip) + ")"
    if conn.dialect == "sqlite":
        try:
            found = _rows(
                conn,
                "SELECT a.trial_id, '{' || group_concat(json_quote(a.key) || ':' || a.value_json, ',') || '}' "
                f"FROM trial_user_attributes a {join} GROUP BY a.trial_id",
            )
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
    found = _rows(conn, f"SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a {join}")
    decoded = _decode_all([r[2] for r in found])
    for (tid, key, _), value in zip(found, decoded, strict=True):
        row = rows.get(tid)
        if row is not None:
            row.user_attrs[key] = value


def _sql_study(conn: _Connection, study_id: int, name: str, url: str, skip: Sequence[str] = ()) -> StudyData:
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    sid = int(study_id)  # from the database; inlined so the SQL needs no driver-specific paramstyle
    attr_rows = _rows(conn, f"SELECT s.key, s.value_json FROM study_user_attributes s WHERE s.study_id = {sid}")
    attrs = dict(zip([k for k, _ in attr_rows], _decode_all([v for _, v in attr_rows]), strict=True))
    directions = [
        str(d).rsplit(".", 1)[-1].lower()
        for (d,) in _rows(conn, f"SELECT direction FROM study_directions WHERE study_id = {sid} ORDER BY objective")
    ]
    rows: dict[int, TrialRow] = {}
    states = {s.name: s for s in TrialState}
    for tid, number, state, start, complete in _rows(
        conn,
        "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
        f"WHERE study_id = {sid} ORDER BY number",
    ):
        rows[tid] = TrialRow(
            number=int(number),
            state=states.get(str(state).rsplit(".", 1)[-1], TrialState.FAIL),
            params={},
            user_attrs={},
            datetime_start=_when(start),
            datetime_complete=_when(complete),
        )
    join = f"WHERE a.trial_id IN (SELECT trial_id FROM trials WHERE study_id = {sid})"
    _read_user_attrs(conn, join, rows, skip)
    values: dict[int, dict[int, float]] = {}
    for tid, objective, value, kind in _rows(
        conn, f"SELECT a.trial_id, a.objective, a.value, a.value_type FROM trial_values a {join}"
    ):
        kind = str(kind).rsplit(".", 1)[-1]
        v = float("inf") if kind == "INF_POS" else float("-inf") if kind == "INF_NEG" else float(value)
        values.setdefault(tid, {})[int(objective)] = v
    for tid, per in values.items():
        if tid in rows:
            rows[tid].values = [per[i] for i in sorted(per)]
    dists: dict[str, Any] = {}
    external: dict[tuple[str, float], Any] = {}
    for tid, pname, pvalue, djson in _rows(
        conn, f"SELECT a.trial_id, a.param_name, a.param_value, a.distribution_json FROM trial_params a {join}"
    ):
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
    return StudyData(study_name=name, user_attrs=attrs, directions=directions, trials=trials, storage=_redact(url))
