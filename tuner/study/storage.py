"""Study storage: opening a storage (RDB or journal file) with heartbeats, storage errors, redaction.

What the user wrote becomes a URL in :func:`tuner.config.storage_url.resolve_storage_url`;
:func:`open_storage` opens it (heartbeats on
by default, so the trials of a dead worker are noticed), :func:`storage_errors` turns a lost database
into one :class:`~tuner.errors.StorageError` line, and :func:`redact` / :func:`scrub` keep passwords
out of everything shown or stored. Studies themselves are :mod:`tuner.study.studies`.
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import StorageError
from tuner.study.optuna_internals import heartbeat_base, trial_id_of
from tuner.text import first_line

# Importing this module changes no process-wide state (Optuna's log level, warning filters): the
# ``tuner`` command quiets Optuna itself (tuner.cli._common.quiet_optuna); the experimental heartbeat
# API is used inside ``warnings.catch_warnings()`` below.

HEARTBEAT_S = 10
GRACE_S = 60
#: retries of a trial whose worker died (its heartbeat stopped): Optuna's RetryHeartbeatStaleTrialCallback
MAX_RETRY = 2

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]+):[^@\s'\"]*@")


def redact(url: str) -> str:
    """A storage URL (or any text holding URLs) with every password replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1:***@", str(url))


def scrub(text: str, url: str) -> str:
    """``text`` with the password of ``url`` removed wherever it appears (driver messages may echo it)."""
    text = redact(text)
    m = re.search(r"://[^:/@\s]+:([^@\s]*)@", url)
    if m and m.group(1):
        for secret in {m.group(1), unquote(m.group(1))}:
            if len(secret) >= 3:
                text = text.replace(secret, "***")
    return text


def is_storage_error(err: BaseException, url: str = "journal:") -> bool:
    """Whether ``err`` comes from the storage (database down, disk full, read-only, lost connection).

    Looks down the chain too: when the storage dies mid-trial, Optuna's own clean-up fails next and
    raises something else *while handling* the storage error.
    """
    import sqlalchemy.exc

    kinds: tuple[type[BaseException], ...] = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
    if url.startswith("journal:"):
        kinds += (OSError,)  # a journal file on a full, read-only or vanished (NFS) disk
    seen: BaseException | None = err
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def storage_errors(what: str, url: str) -> Iterator[None]:
    """Turn a storage error inside the block into one :class:`StorageError` line (password scrubbed)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        if not is_storage_error(err, url):
            raise
        raise StorageError(f"{what} {redact(url)}: {scrub(first_line(root_cause(err)), url)}") from None


def root_cause(err: BaseException) -> BaseException:
    """The driver error under Optuna's and SQLAlchemy's wrappers (it says what actually went wrong)."""
    seen = 0
    while seen < 5:
        inner = getattr(err, "orig", None) or err.__cause__ or err.__context__
        if inner is None or not isinstance(inner, BaseException):
            return err
        err, seen = inner, seen + 1
    return err


class _RDBStorage(optuna.storages.RDBStorage):
    """RDB storage whose heartbeat thread survives a lost database (it retries on the next beat).

    Optuna's heartbeat thread dies with a traceback on the first failed beat; here a failed beat is
    counted and skipped, so the trial's own writes decide what happens (see ``tuner.study.spool``).
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception:
            pass  # the database is gone for now: the next beat tries again


class _JournalStorage(optuna.storages.JournalStorage, heartbeat_base()):  # type: ignore[misc]
    """Journal file storage with heartbeats (Optuna's has none): a worker that died is noticed too.

    A beat is the trial system attribute ``tuner:heartbeat`` (wall-clock seconds of the beating
    worker); a RUNNING trial whose last beat is older than the grace period is stale. Machines sharing a
    journal on NFS should keep their clocks in sync (NTP) to well under the grace period.
    """

    def __init__(
        self,
        backend: Any,
        heartbeat_interval: int,
        grace_period: int,
        callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        self._hb_interval = heartbeat_interval
        self._hb_grace = grace_period
        self._hb_callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, "tuner:heartbeat", time.time())
        except Exception:
            pass  # finished meanwhile, or the file is unreachable: the next beat tries again

    def stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get("tuner:heartbeat")
            if isinstance(beat, int | float) and now - beat > self._hb_grace:
                stale.append(trial_id_of(t))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._hb_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._hb_callback


def open_storage(
    url: str,
    *,
    create: bool = True,
    heartbeat: bool = True,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: RDB (SQLite, PostgreSQL, ...) or ``journal:PATH`` (a journal file).

    With ``heartbeat`` every running trial beats every ``heartbeat_s``; a RUNNING trial silent for
    ``grace_s`` (its worker died: kill -9, power, network) is marked FAIL by the next worker that starts
    a trial, and re-queued once more (Optuna's ``RetryHeartbeatStaleTrialCallback``) so its config is
    measured by whoever is alive.
    """
    if grace_s <= heartbeat_s:
        raise StorageError(f"heartbeat grace period ({grace_s} s) must be longer than the interval ({heartbeat_s} s)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY) if heartbeat else None
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:")).expanduser()
        if not create and not path.exists():
            raise StorageError(f"no journal storage at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
            if heartbeat:
                return _JournalStorage(backend, int(heartbeat_s), int(grace_s), callback)
            return optuna.storages.JournalStorage(backend)
        except OSError as err:
            raise StorageError(f"cannot open journal storage {path}: {err.strerror or err}") from None
        except Exception as err:
            raise StorageError(f"cannot open journal storage {path}: {first_line(err)}") from None
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not create and not path.exists():
            raise StorageError(f"no study storage at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"cannot create {path.parent}: {err.strerror}") from None
        if create:
            _check_writable(path)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs.update(
            heartbeat_interval=int(heartbeat_s), grace_period=int(grace_s), heartbeat_stale_trial_callback=callback
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        # a pulled cable must not hang a worker for the kernel's TCP timeout (hours): libpq keepalives
        engine_kwargs = {
            "pool_pre_ping": True,
            "connect_args": {
                "connect_timeout": 10,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "application_name": "tuner",
            },
        }
    import sqlalchemy.exc

    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return _RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.InternalError,
            optuna.exceptions.StorageInternalError,
        ):
            # workers starting at once on an empty database race to create Optuna's tables: the loser retries
            if attempt == 5:
                raise StorageError(f"cannot create the study tables in {redact(url)}") from None
            time.sleep(0.2 + 0.3 * attempt)
        except Exception as err:  # SQLAlchemy/driver errors of many kinds
            msg = scrub(first_line(root_cause(err)), url)
            if "No module named" in msg and "psycopg" in msg:
                msg += " (PostgreSQL needs the driver: pip install 'tuner[postgres]')"
            raise StorageError(f"cannot open study storage {redact(url)}: {msg}") from None
    raise AssertionError("unreachable")


def _check_writable(path: Path) -> None:
    """A study file (or its folder, for a new one) that cannot be written is a clear error up front."""
    import tempfile

    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            with tempfile.TemporaryFile(dir=path.parent):
                pass
    except OSError as err:
        where = path if path.exists() else path.parent
        raise StorageError(f"cannot write the study storage {path}: {where}: {err.strerror}") from None


def list_studies(storage: optuna.storages.BaseStorage) -> list[optuna.study.StudySummary]:
    try:
        return optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as err:
        raise StorageError(f"cannot read studies: {redact(first_line(root_cause(err)))}") from None
