"""A local spool for results the study storage could not take (database down, disk full, cable pulled).

When a trial has been measured but writing its result fails with a storage error, the result is
appended as one JSON line to ``studies/.spool/<storage>.jsonl`` (the spec's studies folder, whatever
the storage) and the run stops with a message naming the file. The next run against the same storage
writes every spooled result of its study into the study as a new trial (``spooled_from`` names the
lost trial, which is marked FAIL with ``failure.kind = "storage"``) before it measures anything, then
removes the lines it wrote. If the spool itself cannot be written (the same full or read-only disk),
the message says what was not saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

from tuner.config.spec import Spec
from tuner.config.storage_url import resolve_storage_url
from tuner.errors import StorageError
from tuner.study.optuna_internals import storage_of, trial_id_of
from tuner.study.storage import redact


def spool_path(spec: Spec, url: str) -> Path:
    """``<studies>/.spool/<name>-<hash of the redacted URL>.jsonl``; ``TUNER_SPOOL_DIR`` overrides the folder."""
    folder = os.environ.get("TUNER_SPOOL_DIR")
    if folder:
        base = Path(folder)
    else:
        default = resolve_storage_url(None, base_dir=spec.base_dir, default=f"studies/{spec.name}.db")
        base = Path(default.removeprefix("sqlite:///")).parent / ".spool"
    digest = hashlib.sha256(redact(url).encode()).hexdigest()[:12]
    return base / f"{spec.name}-{digest}.jsonl"


def entry(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    *,
    state: TrialState,
    values: list[float] | None,
    user_attrs: Mapping[str, Any],
    constraints: Mapping[str, float],
) -> dict[str, Any]:
    """One spool line: everything needed to recreate the trial in the study."""
    return {
        "id": uuid.uuid4().hex,
        "study": study.study_name,
        "trial_number": trial.number,
        "state": state.name,
        "values": values,
        "params": dict(trial.params),
        "distributions": {k: distribution_to_json(d) for k, d in trial.distributions.items()},
        "user_attrs": dict(user_attrs),
        "constraints": dict(constraints),
    }


def append(path: Path, item: Mapping[str, Any]) -> None:
    """Append one line and fsync it; raises OSError when the disk refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(item, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def pending(path: Path, study_name: str | None = None) -> list[dict[str, Any]]:
    """The spooled results (of one study, when named); unreadable lines are kept in the file, not lost."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StorageError(f"cannot read the result spool {path}: {err.strerror}") from None
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and (study_name is None or item.get("study") == study_name):
            out.append(item)
    return out


def flush(study: optuna.Study, path: Path) -> list[tuple[int, int]]:
    """Write the study's spooled results into it; returns ``(lost trial, new trial)`` pairs.

    Idempotent: a result already in the study (same ``spool_id``) is not added twice, so a run that
    dies between writing the study and rewriting the spool loses and duplicates nothing.
    """
    items = pending(path, study.study_name)
    if not items:
        return []
    trials = study.get_trials(deepcopy=False)
    present = {t.user_attrs.get("spool_id"): t.number for t in trials if t.user_attrs.get("spool_id")}
    by_number = {t.number: t for t in trials}
    done: list[tuple[int, int]] = []
    written: set[str] = set()
    for item in items:
        sid = item["id"]
        if sid in present:
            written.add(sid)
            continue
        state = TrialState[item["state"]]
        attrs = {**item["user_attrs"], "spool_id": sid, "spooled_from": item["trial_number"]}
        attrs.pop("claimed", None)
        frozen = optuna.trial.create_trial(
            state=state,
            values=item["values"] if state == TrialState.COMPLETE else None,
            params=item["params"],
            distributions={k: json_to_distribution(v) for k, v in item["distributions"].items()},
            user_attrs=attrs,
            system_attrs={f"constraints:{k}": float(v) for k, v in item["constraints"].items()},
        )
        study.add_trial(frozen)
        number = next(t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("spool_id") == sid)
        lost = by_number.get(item["trial_number"])
        if lost is not None and lost.state in (TrialState.RUNNING, TrialState.WAITING):
            storage_of(study).set_trial_user_attr(
                trial_id_of(lost),
                "failure",
                {
                    "kind": "storage",
                    "message": f"the study storage was unreachable when this trial ended; its result was kept in "
                    f"the local spool and recorded as trial {number}",
                },
            )
            storage_of(study).set_trial_state_values(trial_id_of(lost), state=TrialState.FAIL)
        done.append((item["trial_number"], number))
        written.add(sid)
    _rewrite_without(path, written)
    return done


def _rewrite_without(path: Path, ids: set[str]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            keep.append(line)
            continue
        if not (isinstance(item, dict) and item.get("id") in ids):
            keep.append(line)
    if keep:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        os.replace(tmp, path)
    else:
        path.unlink(missing_ok=True)
