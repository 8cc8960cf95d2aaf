"""Read studies fast: every trial of a study in a few SQL queries, as plain rows.

Optuna's RDB storage builds each :class:`~optuna.trial.FrozenTrial` with several queries and
validations; on a study of 10,000 trials that takes tens of seconds. Reports only read, so for an
SQL storage (SQLite, PostgreSQL, MySQL ...) this module reads Optuna's tables directly -- one query
per table for the whole study -- and returns :class:`TrialRow` records that carry what a report
needs (``number``, ``state``, ``params``, ``user_attrs``, ``values``, times). They duck-type
``FrozenTrial`` for :func:`tuner.report.study_report` and :func:`tuner.study.studies.trial_records`. A
journal storage (``journal:PATH``) and anything the fast path cannot read go through Optuna's API.

A *study reference* names a storage and optionally one study in it: a ``.db`` path, any SQLAlchemy
URL, ``file.db:study-name`` (also ``sqlite:///file.db:study-name``) or ``URL#study-name``.

The rows are defined in :mod:`tuner.report.study_data` and the SQL fast path is
:mod:`tuner.report.sql_read`; this module parses references and picks the path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import StorageError, StudyError
from tuner.report.sql_read import _check_schema, _Connection, _rows, _sql_study
from tuner.report.study_data import StudyData, TrialRow
from tuner.study.optuna_internals import SQL_STUDIES
from tuner.study.storage import redact
from tuner.text import first_line

__all__ = ["REPORT_SKIP", "StudyRef", "load_ref", "load_studies", "parse_ref", "study_names"]

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
#: trial user attributes that reports, compare and export never read (what each backend applied)
REPORT_SKIP = ("applied",)


@dataclass(frozen=True)
class StudyRef:
    """A storage URL (as given, made absolute for files) and an optional study name."""

    url: str
    study: str | None = None

    @property
    def shown(self) -> str:
        from tuner.study.storage import redact

        return redact(self.url) + (f":{self.study}" if self.study else "")


def parse_ref(text: str, study: str | None = None) -> StudyRef:
    """``a.db`` | URL | ``a.db:name`` | ``sqlite:///a.db:name`` | ``URL#name`` -> :class:`StudyRef`."""
    from tuner.config.storage_url import resolve_storage_url

    raw = str(text).strip()
    if not raw:
        raise StorageError("empty storage reference")
    name: str | None = None
    if "#" in raw and "://" in raw:
        raw, _, name = raw.rpartition("#")
    else:
        m = re.match(r"^(.*?(?:" + "|".join(re.escape(s) for s in _SQLITE_SUFFIXES) + r")):([^/\\]+)$", raw)
        if m and not Path(raw).exists():
            raw, name = m.group(1), m.group(2)
    if study and name and study != name:
        raise StudyError(f"{text}: names study {name!r} but --study says {study!r}")
    return StudyRef(resolve_storage_url(raw, base_dir=Path.cwd()), name or study)


# ------------------------------------------------------------------------------------- optuna API


def _api_studies(url: str, names: Sequence[str] | None) -> list[StudyData]:
    import optuna

    from tuner.study.storage import list_studies, open_storage

    storage = open_storage(url, create=False, heartbeat=False)
    all_names = [s.study_name for s in list_studies(storage)]
    out = []
    for name in _select(all_names, names, url):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = [
            TrialRow(
                number=t.number,
                state=t.state,
                params=dict(t.params),
                user_attrs=dict(t.user_attrs),
                values=list(t.values) if t.values is not None else None,
                datetime_start=t.datetime_start,
                datetime_complete=t.datetime_complete,
                distributions=dict(t.distributions),
            )
            for t in study.get_trials(deepcopy=False)
        ]
        directions = [d.name.lower() for d in study.directions]
        out.append(StudyData(name, dict(study.user_attrs), directions, trials, storage=redact(url)))
    return out


def _select(all_names: Sequence[str], names: Sequence[str] | None, url: str) -> list[str]:
    if not names:
        if not all_names:
            raise StudyError(f"{redact(url)} holds no studies")
        return list(all_names)
    missing = [n for n in names if n not in all_names]
    if missing:
        import difflib

        near = difflib.get_close_matches(missing[0], list(all_names), n=1, cutoff=0.5)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        shown = ", ".join(all_names) or "none"
        raise StudyError(f"no study {missing[0]!r} in {redact(url)}{hint}; studies there: {shown}")
    return list(names)


# ------------------------------------------------------------------------------------------ public


def _is_sql(url: str) -> bool:
    return "://" in url and not url.startswith("journal:") and not url.endswith(".log")


def study_names(url: str) -> list[str]:
    """Names of the studies a storage holds, in creation order."""
    if not _is_sql(url):
        from tuner.study.storage import list_studies, open_storage

        return [s.study_name for s in list_studies(open_storage(url, create=False, heartbeat=False))]
    with _Connection(url) as conn:
        try:
            _check_schema(conn, url)
            return [name for _, name in _rows(conn, SQL_STUDIES)]
        except (StorageError, StudyError):
            raise
        except Exception as err:
            raise StorageError(f"cannot read studies from {redact(url)}: {first_line(err)}") from None


def load_studies(url: str, names: Sequence[str] | None = None, *, skip_attrs: Sequence[str] = ()) -> list[StudyData]:
    """The named studies of a storage (all of them when ``names`` is empty), each with all its trials.

    ``skip_attrs``: trial user attributes not to read (e.g. :data:`REPORT_SKIP`, bulky and unused by
    reports).
    """
    if not _is_sql(url):
        return _api_studies(url, names)
    with _Connection(url) as conn:
        try:
            _check_schema(conn, url)
            ids = {n: i for i, n in _rows(conn, SQL_STUDIES)}
            return [_sql_study(conn, ids[n], n, url, skip_attrs) for n in _select(list(ids), names, url)]
        except (StorageError, StudyError):
            raise
        except Exception as err:
            raise StorageError(f"cannot read studies from {redact(url)}: {first_line(err)}") from None


def load_ref(ref: StudyRef, *, skip_attrs: Sequence[str] = ()) -> list[StudyData]:
    """The studies a reference names: its one study, or every study of its storage."""
    return load_studies(ref.url, [ref.study] if ref.study else None, skip_attrs=skip_attrs)


def load_one_study(ref: StudyRef, *, skip_attrs: Sequence[str] = ()) -> StudyData:
    """The one study a command acts on: the one ``ref`` names, else the storage's only study.

    A storage holding several studies and no name chosen, or none at all, is a :class:`StudyError`.
    """
    name = ref.study
    if name is None:
        names = study_names(ref.url)
        if len(names) > 1:
            raise StudyError(
                f"{ref.shown} holds {len(names)} studies ({', '.join(names)}); choose one with --study NAME "
                "or FILE.db:NAME"
            )
        if not names:
            raise StudyError(f"{ref.shown} holds no studies")
        name = names[0]
    (data,) = load_studies(ref.url, [name], skip_attrs=skip_attrs)
    return data
