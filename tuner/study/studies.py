"""Studies: create/resume with the spec hash, study attributes, the platform checks.

One Optuna study per (workload, platform): ``<name>@<platform-tag>``. A study's user attributes carry
the workload text and hash, the platform fingerprint and the tuner version. A changed workload is
refused for an existing study unless a new one is asked for; ``--new`` creates ``<name>@<tag>~2`` (then
``~3``, ...), keeping the old study, and later runs of the same workload resume the newest match.

Storage URLs, opening and errors live in :mod:`tuner.study.storage`, trial records and the coordination
between workers in :mod:`tuner.study.ledger`; both are re-exported here, where callers import them from.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from tuner.config.spec import Spec
from tuner.errors import StudyError
from tuner.platform import fingerprint, hardware_identity, platform_tag
from tuner.study.storage import (
    list_studies,
    redact,
)


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
        # what the knee and the best are decided on: qps, or LoadGen's server_qps / offline_qps (load.scenario);
        # absent on studies made before load: existed, which read it as qps (tuner.trial_attrs.rate_metric_of)
        "rate_metric": spec.model.load.rate_metric,
        "drift_correction": spec.measure.drift_correction,
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
