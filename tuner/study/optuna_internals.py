"""Every use tuner makes of Optuna's private API and of Optuna's SQL table layout, in one module.

Optuna's public API has no way to do a few things tuner needs, so tuner reaches past it here -- and
only here. Each name below says why it is needed and what breaks when Optuna changes it;
``tests/test_optuna_internals.py`` pins every one of them against the installed Optuna (and a real
SQLite / PostgreSQL study), so an Optuna upgrade fails those tests loudly instead of corrupting a study
or a report quietly. The supported range is :data:`SUPPORTED_OPTUNA` (pyproject.toml pins the same).

Private API:

* :func:`heartbeat_base` -- ``optuna.storages._heartbeat.BaseHeartbeat``. Optuna's journal storage has
  no heartbeats; tuner's (:mod:`tuner.study.storage`) adds them by inheriting this class, which is what
  ``optuna.storages.fail_stale_trials`` and ``Study.optimize`` look for (``isinstance``). If it moves or
  gains an abstract method, the journal storage cannot be built or is silently ignored: trials of dead
  workers on a journal file stay RUNNING forever.
* :data:`STALE_TRIAL_HOOK` -- ``BaseHeartbeat._get_stale_trial_ids(study_id)``, the private abstract
  method ``fail_stale_trials`` calls to learn which RUNNING trials are stale. :func:`heartbeat_base`
  routes it to the public ``stale_trial_ids``. If it is renamed, the override is never called: stale
  journal trials are never failed nor retried.
* :func:`heartbeat_enabled` -- ``optuna.storages._heartbeat.is_heartbeat_enabled``: whether a storage
  beats. If it goes, tuner would call ``fail_stale_trials`` on storages without heartbeats.
* :func:`storage_of` / :func:`study_id_of` -- ``Study._storage`` / ``Study._study_id``: the storage and
  the database id of a study (``fail_stale_trials`` needs the storage; a study's identity across
  workers of one process needs the id; writing to *another* trial of the study needs the storage).
  If renamed: ``AttributeError`` in the ledger, the spool and the heartbeat check.
* :func:`trial_id_of` -- ``FrozenTrial._trial_id``: the storage id of a trial, needed to write to a
  trial that is not the current one (the spool fails a lost trial; the journal hook returns ids).

Table layout (Alembic revision :data:`SCHEMA_REVISIONS`, ``version_info.schema_version``
:data:`RDB_SCHEMA_VERSION`): reports read a whole study in one query per table
(:mod:`tuner.report.sql_read`), because Optuna's RDB storage builds each ``FrozenTrial`` with several
queries and takes tens of seconds on 10,000 trials. The ``SQL_*`` texts are every query tuner runs on
Optuna's tables; :data:`REQUIRED_TABLES` are the tables they read; :func:`trial_state_name`,
:func:`objective_value` and :func:`direction_name` decode Optuna's enum columns. If Optuna renames a
table or column, the queries fail (reports say the storage cannot be read); if it changes what a
column holds (e.g. how infinities or states are stored), reports would show wrong numbers -- hence the
row-by-row tests.

Nothing here imports Optuna at module level: :mod:`tuner.report.sql_read` reads the SQL texts without
paying for the import.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

#: the Optuna releases every name and query below was checked against (pyproject.toml pins the same)
SUPPORTED_OPTUNA = ">=5.0,<5.1"

# ------------------------------------------------------------------------------------- private API

#: the private method of ``BaseHeartbeat`` that ``optuna.storages.fail_stale_trials`` calls
STALE_TRIAL_HOOK = "_get_stale_trial_ids"


@functools.cache
def heartbeat_base() -> type[Any]:
    """The base class of a storage with heartbeats: Optuna's private ``BaseHeartbeat``, with its private
    stale-trial hook (:data:`STALE_TRIAL_HOOK`) routed to the public abstract ``stale_trial_ids``.

    A subclass implements ``record_heartbeat(trial_id)``, ``stale_trial_ids(study_id) -> list[int]``,
    ``get_heartbeat_interval()`` and ``get_heartbeat_stale_trial_callback()``.
    """
    import abc

    from optuna.storages._heartbeat import BaseHeartbeat

    class HeartbeatBase(BaseHeartbeat):
        @abc.abstractmethod
        def stale_trial_ids(self, study_id: int) -> list[int]:
            """The storage ids of the RUNNING trials of ``study_id`` whose worker stopped beating."""

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:  # STALE_TRIAL_HOOK
            return self.stale_trial_ids(study_id)

    return HeartbeatBase


def heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    """Whether ``storage`` records heartbeats (so ``optuna.storages.fail_stale_trials`` does something)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return bool(is_heartbeat_enabled(storage))


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The storage id of a study (unique in its storage; names can be long)."""
    return int(study._study_id)


def trial_id_of(trial: FrozenTrial) -> int:
    """The storage id of a trial (what the storage's ``set_trial_*`` methods take)."""
    return int(trial._trial_id)


# ------------------------------------------------------------------------------------ table layout

#: the Alembic revisions of Optuna's RDB schema the queries below were written for (head since Optuna 3.2)
SCHEMA_REVISIONS = ("v3.2.0.a",)
#: ``optuna.storages._rdb.models.SCHEMA_VERSION`` (the ``version_info`` table) of those revisions
RDB_SCHEMA_VERSION = 12
#: the tables the queries read
REQUIRED_TABLES = frozenset(
    {
        "studies",
        "study_directions",
        "study_user_attributes",
        "trials",
        "trial_user_attributes",
        "trial_values",
        "trial_params",
    }
)

#: the schema revision of a storage: one row, ``version_num``
SQL_SCHEMA_REVISION = "SELECT version_num FROM alembic_version"
#: every study: ``study_id, study_name`` in creation order
SQL_STUDIES = "SELECT study_id, study_name FROM studies ORDER BY study_id"
#: a study's user attributes: ``key, value_json`` (a JSON text)
SQL_STUDY_USER_ATTRS = "SELECT s.key, s.value_json FROM study_user_attributes s WHERE s.study_id = {study_id}"
#: a study's directions in objective order: ``direction`` (``MAXIMIZE`` / ``MINIMIZE``)
SQL_STUDY_DIRECTIONS = "SELECT direction FROM study_directions WHERE study_id = {study_id} ORDER BY objective"
#: a study's trials: ``trial_id, number, state, datetime_start, datetime_complete``, by number
SQL_TRIALS = (
    "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
    "WHERE study_id = {study_id} ORDER BY number"
)
_OF_STUDY = "WHERE a.trial_id IN (SELECT trial_id FROM trials WHERE study_id = {study_id})"
#: the user attributes of a study's trials: ``trial_id, key, value_json`` (portable)
SQL_TRIAL_USER_ATTRS = f"SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a {_OF_STUDY}{{skip}}"
#: the same on SQLite with JSON functions: ``trial_id, attrs`` with ``attrs`` one JSON object per trial
SQL_TRIAL_USER_ATTRS_SQLITE_JSON = (
    "SELECT a.trial_id, '{{' || group_concat(json_quote(a.key) || ':' || a.value_json, ',') || '}}' "
    f"FROM trial_user_attributes a {_OF_STUDY}{{skip}} GROUP BY a.trial_id"
)
#: the objective values of a study's trials: ``trial_id, objective, value, value_type``
SQL_TRIAL_VALUES = f"SELECT a.trial_id, a.objective, a.value, a.value_type FROM trial_values a {_OF_STUDY}"
#: the parameters of a study's trials: ``trial_id, param_name, param_value`` (internal repr), ``distribution_json``
SQL_TRIAL_PARAMS = (
    f"SELECT a.trial_id, a.param_name, a.param_value, a.distribution_json FROM trial_params a {_OF_STUDY}"
)


def study_query(template: str, study_id: int, *, skip_keys: Sequence[str] = ()) -> str:
    """One of the ``SQL_*`` templates for study ``study_id``; ``skip_keys``: user attributes not to read.

    The id (an integer from the database) and the keys (quoted) are inlined, so the text needs no
    driver-specific parameter style.
    """
    skip = ""
    if skip_keys:
        skip = " AND a.key NOT IN (" + ", ".join("'" + str(k).replace("'", "''") + "'" for k in skip_keys) + ")"
    return template.format(study_id=int(study_id), skip=skip)


def _enum_name(stored: object) -> str:
    # SQLAlchemy stores an Enum column as the member's name; some drivers hand back ``Enum.NAME``
    return str(stored).rsplit(".", 1)[-1]


def trial_state_name(stored: object) -> str:
    """``trials.state`` -> a ``TrialState`` member name (``COMPLETE``, ``FAIL``, ...)."""
    return _enum_name(stored)


def direction_name(stored: object) -> str:
    """``study_directions.direction`` -> ``maximize`` / ``minimize``."""
    return _enum_name(stored).lower()


def objective_value(value: Any, value_type: object) -> float:
    """A ``trial_values`` row's ``value, value_type`` -> the float (infinities are stored as a type, no value)."""
    kind = _enum_name(value_type)
    if kind == "INF_POS":
        return math.inf
    if kind == "INF_NEG":
        return -math.inf
    return float(value)
