"""Studies: storage URLs, create/resume with the spec hash, study and trial attributes, records.

One Optuna study per (workload, platform): ``<name>@<platform-tag>``. A study's user attributes carry
the workload text and hash, the platform fingerprint and the tuner version. A changed workload is
refused for an existing study unless a new one is asked for; ``--new`` creates ``<name>@<tag>~2`` (then
``~3``, ...), keeping the old study, and later runs of the same workload resume the newest match.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import StorageError, StudyError
from tuner.platform import fingerprint, hardware_identity, platform_tag
from tuner.spec import Spec

# Optuna logs every failed trial as a WARNING with a Python traceback; tuner says why a trial failed in
# one line of its own, so only Optuna's errors get through
optuna.logging.set_verbosity(optuna.logging.ERROR)
# heartbeats are the documented way to recover trials of dead workers; we accept "experimental"
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

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


def storage_url(storage: str | Path) -> str:
    """A path to a ``.db`` file, ``journal:PATH`` or any SQLAlchemy URL -> URL (relative to the cwd)."""
    text = str(storage)
    if text.startswith("journal:"):
        return "journal:" + str(Path(text.removeprefix("journal:")).expanduser().resolve())
    if "://" in text:
        return text
    if text.endswith((".log", ".journal")):
        return "journal:" + str(Path(text).expanduser().resolve())
    return "sqlite:///" + str(Path(text).expanduser().resolve())


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
        raise StorageError(f"{what} {redact(url)}: {scrub(_first_line(_root_cause(err)), url)}") from None


def _root_cause(err: BaseException) -> BaseException:
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
    counted and skipped, so the trial's own writes decide what happens (see ``tuner.spool``).
    """

    heartbeat_failures = 0

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception:
            type(self).heartbeat_failures += 1


class _JournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
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

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get("tuner:heartbeat")
            if isinstance(beat, int | float) and now - beat > self._hb_grace:
                stale.append(t._trial_id)
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
            raise StorageError(f"cannot open journal storage {path}: {_first_line(err)}") from None
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
            msg = scrub(_first_line(_root_cause(err)), url)
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def base_study_name(spec: Spec) -> str:
    return f"{spec.name}@{platform_tag()}"


def _versions_of(storage: optuna.storages.BaseStorage, base: str) -> list[optuna.study.StudySummary]:
    pattern = re.compile(re.escape(base) + r"(~\d+)?$")
    found = [s for s in list_studies(storage) if pattern.match(s.study_name)]
    return sorted(found, key=lambda s: _suffix(s.study_name))


def _suffix(name: str) -> int:
    m = re.search(r"~(\d+)$", name)
    return int(m.group(1)) if m else 1


class _NotReady(Exception):
    """Another worker is creating the same study right now (its attributes are not all written yet)."""


#: how long a worker waits for another worker that is creating the same study
CREATE_WAIT_S = 15.0


def open_study(
    spec: Spec,
    storage: optuna.storages.BaseStorage,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    new: bool = False,
    allow_platform_mix: bool = False,
    on_notice: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Create or resume the study of ``spec`` on this platform (see the module docstring).

    Several workers may start at once on an empty storage: one creates the study, the others wait
    until its attributes are written and join it. With ``allow_platform_mix`` and no study of this
    workload for this platform, the newest study of the same workload (same hash) made on another
    platform is joined instead of starting one here; without it such studies are only mentioned
    through ``on_notice``.
    """
    deadline = time.monotonic() + CREATE_WAIT_S
    while True:
        try:
            return _open_study(
                spec, storage, sampler, new, allow_platform_mix, on_notice, patient=time.monotonic() < deadline
            )
        except (_NotReady, optuna.exceptions.DuplicatedStudyError):
            if time.monotonic() >= deadline:
                raise StudyError(
                    f"another worker is creating the study of {spec.name!r} in this storage and did not finish "
                    f"within {CREATE_WAIT_S:g} s; run the command again"
                ) from None
            time.sleep(0.2)


def _open_study(
    spec: Spec,
    storage: optuna.storages.BaseStorage,
    sampler: optuna.samplers.BaseSampler | None,
    new: bool,
    allow_platform_mix: bool,
    on_notice: Callable[[str], None] | None,
    *,
    patient: bool,
) -> optuna.Study:
    base = base_study_name(spec)
    summaries = list_studies(storage)
    pattern = re.compile(re.escape(base) + r"(~\d+)?$")
    existing = sorted((s for s in summaries if pattern.match(s.study_name)), key=lambda s: _suffix(s.study_name))
    if patient and any("spec_hash" not in s.user_attrs for s in existing):
        raise _NotReady()
    matching = [s for s in existing if s.user_attrs.get("spec_hash") == spec.spec_hash]
    directions = [
        optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
        for _, d in spec.objectives
    ]
    if matching and not new:
        name = matching[-1].study_name
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        _check_platform(study, allow_platform_mix)
        return study
    if not new:
        foreign = _foreign_studies(summaries, spec, base)
        if foreign and allow_platform_mix:
            theirs = foreign[-1]
            study = optuna.load_study(study_name=theirs.study_name, storage=storage, sampler=sampler)
            tags = list(study.user_attrs.get("platform_tags") or [study.user_attrs.get("platform_tag")])
            if platform_tag() not in tags:
                study.set_user_attr("platform_tags", [*tags, platform_tag()])
            if on_notice:
                on_notice(
                    f"joining study {theirs.study_name!r}, made on another platform "
                    f"({theirs.user_attrs.get('platform_tag')}; this machine is {platform_tag()}): "
                    "--allow-platform-mix; each trial records the platform that measured it"
                )
            return study
        if foreign and on_notice and not existing:
            names = ", ".join(repr(s.study_name) for s in foreign)
            on_notice(
                f"this storage holds {names} for the same workload from another platform; this machine "
                f"({platform_tag()}) records into its own study (pass --allow-platform-mix to join instead)"
            )
    if existing and not new:
        latest = existing[-1]
        raise StudyError(
            f"study {latest.study_name!r} was made from a different workload (hash "
            f"{latest.user_attrs.get('spec_hash')}, this file: {spec.spec_hash}); pass --new to start a fresh "
            "study beside it, or restore the file"
        )
    name = base if not existing else f"{base}~{_suffix(existing[-1].study_name) + 1}"
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions)
    fp = fingerprint()
    attrs = {
        "workload_name": spec.name,
        # never store a password: a study.storage URL in the file may carry one
        "workload_text": redact(spec.text),
        "workload_path": str(spec.path) if spec.path else None,
        "platform": fp,
        "platform_tag": platform_tag(fp),
        "tuner_version": fp["tuner"],
        "objectives": [list(o) for o in spec.objectives],
        "knee_tolerance": spec.knee.tolerance,
        "axes": {n: a.default for n, a in spec.axes.items() if a.kind == "fixed"},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # written last: a study with its hash is complete (workers starting at once wait for it)
        "spec_hash": spec.spec_hash,
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


def _foreign_studies(
    summaries: Sequence[optuna.study.StudySummary], spec: Spec, base: str
) -> list[optuna.study.StudySummary]:
    """Studies of the same workload (same hash) made on other platforms, oldest first."""
    pattern = re.compile(re.escape(spec.name) + r"@[^@~]+(~\d+)?$")
    found = [
        s
        for s in summaries
        if pattern.match(s.study_name)
        and not s.study_name.startswith(base)
        and s.user_attrs.get("spec_hash") == spec.spec_hash
    ]
    return sorted(found, key=lambda s: (s.datetime_start or _dt.datetime.min, s.study_name))


def worker_identity() -> dict[str, Any]:
    """Which machine and process measured a trial (stored on every trial as ``worker``)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "platform_tag": platform_tag()}


def _check_platform(study: optuna.Study, allow_mix: bool) -> None:
    theirs = study.user_attrs.get("platform") or {}
    ours = fingerprint()
    if allow_mix or not theirs:
        return
    a, b = hardware_identity(theirs), hardware_identity(ours)
    if a != b:
        diff = ", ".join(f"{k}: {a[k]!r} vs here {b[k]!r}" for k in a if a[k] != b[k])
        raise StudyError(
            f"study {study.study_name!r} was made on a different platform ({diff}); pass --allow-platform-mix "
            "to add trials from this machine anyway"
        )


# -------------------------------------------------------------------------------- trial records


def constraint_violations(metrics: Mapping[str, Any], constraints: Mapping[str, Any]) -> list[float]:
    """Optuna-style constraint values (<= 0 feasible), one per constraint, in file order."""
    out: list[float] = []
    for metric, bound in constraints.items():
        value = metrics.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(1.0)
            continue
        lo = bound["min"] if isinstance(bound, Mapping) else bound.min
        hi = bound["max"] if isinstance(bound, Mapping) else bound.max
        worst = -1.0
        if hi is not None:
            worst = max(worst, float(value) - float(hi))
        if lo is not None:
            worst = max(worst, float(lo) - float(value))
        out.append(worst if worst > 0 else -1.0)
    return out


def config_of(trial: FrozenTrial) -> dict[str, Any]:
    return dict(trial.user_attrs.get("config") or trial.params)


def list_studies(storage: optuna.storages.BaseStorage) -> list[optuna.study.StudySummary]:
    try:
        return optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as err:
        raise StorageError(f"cannot read studies: {redact(_first_line(_root_cause(err)))}") from None


def load_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)


def died(trial: FrozenTrial) -> bool:
    """A FAIL trial that recorded no reason: its worker died (heartbeat stale) or it broke unexpectedly."""
    return trial.state == TrialState.FAIL and not trial.user_attrs.get("failure")


def is_yield(trial: FrozenTrial) -> bool:
    """A trial that stood back for another worker (same config being measured, or the budget taken)."""
    return "yielded" in trial.user_attrs


def is_measured(trial: FrozenTrial) -> bool:
    """A trial that spent a measurement: complete (not a reused duplicate) or failed with a reason.

    Not measured: interrupted (Ctrl-C), spooled (its result was recorded as another trial), or died
    (the worker was killed: Optuna re-queues the config and the retry is the measurement).
    """
    if trial.state == TrialState.COMPLETE:
        return "duplicate_of" not in trial.user_attrs
    if trial.state == TrialState.FAIL:
        failure = trial.user_attrs.get("failure") or {}
        return bool(failure) and failure.get("kind") not in ("interrupted", "storage")
    return False


def _key(trial: FrozenTrial) -> Any:
    from tuner.space import config_key

    return config_key(config_of(trial))


def known_configs(trials: Sequence[FrozenTrial]) -> dict[Any, int]:
    """Config key -> the trial that settled it: a complete measurement if any, else the first failure/skip.

    Duplicates, yields, interrupted, spooled and died trials settle nothing (their config is open).
    """
    known: dict[Any, int] = {}
    complete: set[Any] = set()
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED):
            continue
        if "duplicate_of" in t.user_attrs or is_yield(t):
            continue
        if t.state == TrialState.FAIL and not is_measured(t):
            continue
        key = _key(t)
        if key not in known or (t.state == TrialState.COMPLETE and key not in complete):
            known[key] = t.number
            if t.state == TrialState.COMPLETE:
                complete.add(key)
    return known


def _alive_running(trials: Sequence[FrozenTrial], me: int, max_age_s: float) -> list[FrozenTrial]:
    now = _dt.datetime.now()
    host = socket.gethostname()
    out = []
    for t in trials:
        if t.state != TrialState.RUNNING or t.number == me:
            continue
        started = t.datetime_start
        # far past any trial's timeout: its worker is gone even if no heartbeat says so. Only for trials of
        # this host: Optuna stamps trials with the local clock of the worker, and clocks and time zones of
        # other machines may differ (their dead trials are found by the heartbeat)
        if (
            started is not None
            and (t.user_attrs.get("worker") or {}).get("host") == host
            and (now - started.replace(tzinfo=None)).total_seconds() > max_age_s
        ):
            continue
        out.append(t)
    return out


def claimed_running(trials: Sequence[FrozenTrial], me: int = -1, max_age_s: float = math.inf) -> list[FrozenTrial]:
    """RUNNING trials (other than ``me``) whose worker is measuring them right now."""
    return [t for t in _alive_running(trials, me, max_age_s) if t.user_attrs.get("claimed")]


@dataclass(frozen=True)
class Claim:
    """What a trial may do with its config: measure it, reuse an earlier trial, or stand back."""

    measure: bool = False
    reuse: int | None = None
    yielded_to: int | None = None
    reason: str = ""


#: the longest a new trial waits for lower-numbered trials of other workers to decide (then goes on)
CLAIM_WAIT_S = 10.0
_GAVE_UP: set[tuple[int, int]] = set()


def claim(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    key: Any,
    *,
    target: int,
    remeasure: bool = False,
    max_age_s: float = math.inf,
) -> Claim:
    """Decide, across every worker of the study, whether ``trial`` measures its config ``key``.

    Workers agree without a lock, bakery-style: a trial first waits until every running trial with a
    lower number has decided (set ``claimed``, or finished), then stands back if the config is
    measured or claimed by another trial, or if the measured trials plus the claimed ones already fill
    the budget of ``target``; otherwise it claims the config. So N workers on one study measure each
    config once and stop at the budget together.
    """
    me = trial.number
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        trials = study.get_trials(deepcopy=False)
        running = _alive_running(trials, me, max_age_s)
        undecided = [
            t
            for t in running
            if t.number < me and not t.user_attrs.get("claimed") and (study._study_id, t.number) not in _GAVE_UP
        ]
        if not undecided:
            break
        if time.monotonic() > deadline:
            # a worker that died between starting a trial and deciding: wait for it once, not for every trial
            _GAVE_UP.update((study._study_id, t.number) for t in undecided)
            break
        time.sleep(0.05)
    if not remeasure:
        earlier = known_configs(trials).get(key)
        if earlier is not None and earlier != me:
            return Claim(reuse=earlier)
        for t in running:
            if t.user_attrs.get("claimed") and _key(t) == key:
                return Claim(yielded_to=t.number, reason=f"trial {t.number} (another worker) is measuring this config")
    measured = sum(1 for t in trials if is_measured(t))
    busy = [t for t in running if t.user_attrs.get("claimed")]
    if measured + len(busy) >= target:
        return Claim(
            reason=f"the budget is taken: {measured} measured and {len(busy)} being measured by other workers "
            f"of {target}"
        )
    trial.set_user_attr("claimed", True)
    return Claim(measure=True)


@dataclass(frozen=True)
class Progress:
    """The study as every worker sees it: the budget spent, configs settled, trials in flight elsewhere."""

    measured: int
    distinct: int
    in_flight: int
    waiting: int


def study_progress(study: optuna.Study, *, max_age_s: float = math.inf) -> Progress:
    trials = study.get_trials(deepcopy=False)
    return Progress(
        measured=sum(1 for t in trials if is_measured(t)),
        distinct=len(known_configs(trials)),
        in_flight=len(claimed_running(trials, max_age_s=max_age_s)),
        waiting=sum(1 for t in trials if t.state == TrialState.WAITING),
    )


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of dead workers FAIL and re-queue them (Optuna's heartbeat machinery)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


#: user attributes that are metrics (copied into analysis records)
_NOT_METRICS = frozenset(
    {
        "config",
        "applied",
        "failure",
        "constraints",
        "feasible",
        "skip_reason",
        "duplicate_of",
        "wall_s",
        "worker",
        "claimed",
        "yielded",
        "spool_id",
        "spooled_from",
    }
)


def trial_records(trials: Sequence[FrozenTrial], *, include_duplicates: bool = False) -> list[Any]:
    """Complete trials as analysis records (duplicates left out: they are the same measurement)."""
    from tuner.analysis import TrialRecord

    out = []
    for t in trials:
        if t.state != TrialState.COMPLETE or t.user_attrs.get("qps") is None:
            continue
        if "duplicate_of" in t.user_attrs and not include_duplicates:
            continue
        metrics = {k: v for k, v in t.user_attrs.items() if k not in _NOT_METRICS}
        out.append(
            TrialRecord(
                number=t.number,
                params=config_of(t),
                metrics=metrics,
                feasible=bool(t.user_attrs.get("feasible", True)),
            )
        )
    return out
