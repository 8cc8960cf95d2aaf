"""Studies: storage URLs, create/resume with the spec hash, study and trial attributes, records.

One Optuna study per (workload, platform): ``<name>@<platform-tag>``. A study's user attributes carry
the workload text and hash, the platform fingerprint and the tuner version. A changed workload is
refused for an existing study unless a new one is asked for; ``--new`` creates ``<name>@<tag>~2`` (then
``~3``, ...), keeping the old study, and later runs of the same workload resume the newest match.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import StorageError, StudyError
from tuner.platform import fingerprint, hardware_identity, platform_tag
from tuner.spec import Spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
# heartbeats are the documented way to recover trials of dead workers; we accept "experimental"
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = 10
GRACE_S = 60


def redact(url: str) -> str:
    """A storage URL with any password replaced by ``***`` (safe to print or store)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def storage_url(storage: str | Path) -> str:
    """A path to a ``.db`` file or any SQLAlchemy URL -> URL."""
    text = str(storage)
    if "://" in text:
        return text
    return "sqlite:///" + str(Path(text).expanduser().resolve())


def open_storage(url: str, *, create: bool = True, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (RDB with heartbeats; ``journal:PATH`` for a journal file)."""
    if url.startswith("journal:") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:")).expanduser()
        if not create and not path.exists():
            raise StorageError(f"no journal storage at {path}")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not create and not path.exists():
            raise StorageError(f"no study storage at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"cannot create {path.parent}: {err.strerror}") from None
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs.update(
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as err:  # SQLAlchemy/driver errors of many kinds
        raise StorageError(f"cannot open study storage {redact(url)}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def base_study_name(spec: Spec) -> str:
    return f"{spec.name}@{platform_tag()}"


def _versions_of(storage: optuna.storages.BaseStorage, base: str) -> list[optuna.study.StudySummary]:
    pattern = re.compile(re.escape(base) + r"(~\d+)?$")
    try:
        summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as err:
        raise StorageError(f"cannot read studies: {_first_line(err)}") from None
    found = [s for s in summaries if pattern.match(s.study_name)]
    return sorted(found, key=lambda s: _suffix(s.study_name))


def _suffix(name: str) -> int:
    m = re.search(r"~(\d+)$", name)
    return int(m.group(1)) if m else 1


def open_study(
    spec: Spec,
    storage: optuna.storages.BaseStorage,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    new: bool = False,
    allow_platform_mix: bool = False,
) -> optuna.Study:
    """Create or resume the study of ``spec`` on this platform (see the module docstring)."""
    base = base_study_name(spec)
    existing = _versions_of(storage, base)
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
        "workload_text": spec.text,
        "workload_path": str(spec.path) if spec.path else None,
        "spec_hash": spec.spec_hash,
        "platform": fp,
        "platform_tag": platform_tag(fp),
        "tuner_version": fp["tuner"],
        "objectives": [list(o) for o in spec.objectives],
        "knee_tolerance": spec.knee.tolerance,
        "axes": {n: a.default for n, a in spec.axes.items() if a.kind == "fixed"},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


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
        raise StorageError(f"cannot read studies: {_first_line(err)}") from None


def load_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)


def is_measured(trial: FrozenTrial) -> bool:
    """A trial that spent a measurement: complete (not a reused duplicate) or failed (not interrupted)."""
    if trial.state == TrialState.COMPLETE:
        return "duplicate_of" not in trial.user_attrs
    if trial.state == TrialState.FAIL:
        failure = trial.user_attrs.get("failure") or {}
        return failure.get("kind") != "interrupted"
    return False


#: user attributes that are metrics (copied into analysis records)
_NOT_METRICS = frozenset(
    {"config", "applied", "failure", "constraints", "feasible", "skip_reason", "duplicate_of", "wall_s"}
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
