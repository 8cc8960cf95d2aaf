"""``tuner confirm``: one long MLPerf LoadGen run of one measured configuration, stored on its study.

The search's LoadGen runs are short (``load.min_duration_s`` each) and judged on the bound alone; a
*confirmation* is the run a submission would make: ONE LoadGen run of the picked configuration at a fixed rate
-- Server: the ``server_qps`` its search found (a closed-loop or offline study: 0.9 x its measured rate, said
so in the record) -- with LoadGen's own settings for the scenario (MLPerf's 600 s minimum duration, its query
minimum and seeds; ``duration_s`` shortens the minimum duration), VALID or INVALID with LoadGen's reasons.

:func:`spec_from_study` rebuilds the workload from the text stored on the study (relative paths from the
stored file's folder), :func:`plan_confirmation` decides the scenario, the rate and the bound (typed errors when
there is nothing to confirm at), :func:`run_confirmation` runs it in a fresh trial child (the pool's
``serve_with_loadgen`` in confirm mode) and adds it to the study as a trial marked ``loadgen_confirm`` (the
record below) with LoadGen's summary and detail logs as Optuna artifacts
(:class:`optuna.artifacts.FileSystemArtifactStore` in :func:`artifacts_folder`). The trial carries no metric of
its own at the top level -- its figures live in the mark -- so no analysis reads it as a measurement of the
search, and :func:`tuner.trial_attrs.is_extra` keeps it out of the budget.

The mark: ``pick``, ``trial`` (the picked trial), ``params``, ``scenario``, ``target_qps``, ``rate_source``,
``result`` (VALID | INVALID), ``valid``, ``reasons``, ``rate_qps`` (LoadGen's scheduled rate; Offline: samples
per second), ``completed_qps``, ``percentile``, ``latency_bound_ms``, ``percentile_latency_ms``, ``latency_ms``
(every percentile LoadGen reported), ``query_count``, ``duration_s`` (what LoadGen ran), ``min_duration_s``
(asked; None: LoadGen's default), ``early_stopping``, ``errors``, ``closed_loop`` (the child's closed-loop
figures before the run), ``artifacts`` (``{"summary": id, "detail": id}``), ``artifact_store``, ``platform_tag``,
``confirmed_at``, ``notes``.
"""

from __future__ import annotations

import datetime as _dt
import math
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.config.spec import Spec, parse_spec
from tuner.errors import SpecError, StorageError, StudyError, TrialFailed
from tuner.execution.child import run_job
from tuner.execution.runner import build_job, resolve_model_path
from tuner.measurement.loadgen import loadgen_module, parse_detail
from tuner.platform import platform_tag
from tuner.search.space import distributions
from tuner.study.objective import result_outcome
from tuner.study.optuna_internals import storage_of, trial_id_of
from tuner.study.storage import open_storage, redact, storage_errors
from tuner.study.studies import worker_identity
from tuner.text import finite_or_none, json_safe
from tuner.workloads.registry import get_kind

__all__ = [
    "MARK",
    "ConfirmPlan",
    "artifacts_folder",
    "open_study_for_writing",
    "plan_confirmation",
    "run_confirmation",
    "spec_from_study",
]

#: the trial user attribute that marks a LoadGen confirmation (:class:`tuner.trial_attrs.TrialAttrs`)
MARK = "loadgen_confirm"
#: a closed-loop (or offline) rate is the most a server completes flat out; a Server run asks this much of it
CLOSED_LOOP_SHARE = 0.9
#: LoadGen's built-in minimum duration for Server and Offline (mlperf.conf), for the timeout when not overridden
LOADGEN_DEFAULT_DURATION_S = 600.0
#: LoadGen's default minimum query count (the run lasts until both minimums are reached)
LOADGEN_DEFAULT_QUERIES = 100
#: the closed-loop figures kept in the record (the child measures the closed loop before LoadGen)
_CLOSED_LOOP = ("qps", "latency_p50_ms", "latency_p99_ms", "peak_rss_mb", "cpu_util", "load_s", "stable")

EventSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ConfirmPlan:
    """What one confirmation runs: the configuration, the scenario, the rate and the bound."""

    spec: Spec
    study: str
    pick: str
    trial: int
    params: Mapping[str, Any]
    scenario: str
    target_qps: float
    rate_source: str
    latency_ms: float | None
    percentile: float
    #: LoadGen's minimum duration asked (None: LoadGen's own default for the scenario, 600 s)
    duration_s: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def expected_s(self) -> float:
        """How long LoadGen should run: the minimum duration, or the minimum query count at the rate if longer."""
        duration = LOADGEN_DEFAULT_DURATION_S if self.duration_s is None else self.duration_s
        if self.scenario == "server" and self.target_qps > 0:
            duration = max(duration, LOADGEN_DEFAULT_QUERIES / self.target_qps)
        return duration

    @property
    def timeout_s(self) -> float:
        """The child's timeout: a trial's (load, closed loop) plus twice the run plus a minute of margin."""
        return float(self.spec.study.trial_timeout_s) + 2.0 * self.expected_s + 60.0


def spec_from_study(user_attrs: Mapping[str, Any], study: str) -> tuple[Spec, list[str]]:
    """The study's workload, parsed from the text stored on it (``workload_text``); relative paths resolve from
    the stored file's folder (``workload_path``) when it exists here, else from the current directory."""
    text = user_attrs.get("workload_text")
    if not isinstance(text, str) or not text.strip():
        raise StudyError(f"study {study!r} stores no workload file (workload_text): nothing to rebuild a trial from")
    notes: list[str] = []
    stored = user_attrs.get("workload_path")
    path: Path | None = None
    if isinstance(stored, str) and stored:
        candidate = Path(stored).expanduser()
        if candidate.parent.is_dir():
            path = candidate
        else:
            notes.append(
                f"the study's workload folder {candidate.parent} is not here: relative paths from {Path.cwd()}"
            )
    try:
        spec = parse_spec(text, path=path)
    except SpecError as err:
        raise SpecError(f"the workload stored with study {study!r} no longer loads: {err}") from None
    return spec, notes


def plan_confirmation(
    spec: Spec,
    *,
    study: str,
    pick: str,
    trial: int,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    scenario: str | None = None,
    duration_s: float | None = None,
    rate_qps: float | None = None,
    rate_share: float | None = None,
    notes: list[str] | None = None,
) -> ConfirmPlan:
    """The confirmation of the picked trial (``metrics``: what the study measured of it); typed errors when the
    scenario, the bound or the rate is missing.

    ``rate_qps`` replaces the rate the study gives (``--rate``); ``rate_share`` scales it (``--rate-share``: a
    search's short runs judge the tail on a few hundred queries, so the long run at the same rate can miss the
    bound; confirming at a share of it says how much headroom the claim needs). Not both.
    """
    kind = get_kind(spec.workload.kind)
    if not getattr(kind, "serves_loadgen", False):
        raise StudyError(
            f"study {study!r} is a kind: {spec.workload.kind} workload; LoadGen drives a pool of instances, so only "
            "kind: pool studies can be confirmed"
        )
    load = spec.model.load
    if scenario is not None and scenario.strip().lower() not in ("server", "offline"):
        raise SpecError(f"--scenario {scenario!r}: a confirmation is one LoadGen run, server or offline")
    chosen = (scenario or load.scenario).strip().lower()
    if chosen == "closed":
        raise SpecError(
            f"study {study!r} measured the closed loop only (load.scenario closed): pass --scenario server or "
            "--scenario offline"
        )
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise SpecError(f"--duration-s {duration_s!r}: expected a positive number of seconds")
    if rate_qps is not None and rate_share is not None:
        raise SpecError(
            f"--rate {rate_qps:g} and --rate-share {rate_share:g}: give one (a rate, or a share of the study's)"
        )
    if rate_qps is not None and not (math.isfinite(rate_qps) and rate_qps > 0):
        raise SpecError(f"--rate {rate_qps!r}: expected a positive arrival rate in samples/s")
    if rate_share is not None and not (math.isfinite(rate_share) and 0 < rate_share <= 1):
        raise SpecError(f"--rate-share {rate_share!r}: expected a share of the study's rate in (0, 1]")
    loadgen_module()  # LoadGenMissing names the extra before anything runs
    notes = list(notes or [])
    if chosen == "server":
        if load.latency_ms is None:
            raise SpecError(
                f"a Server confirmation needs a latency bound, and the workload stored with study {study!r} gives "
                "no load.latency_ms (add load: {latency_ms: N} to the file and run a new study, or confirm with "
                "--scenario offline)"
            )
        if load.scenario == "server":
            rate = finite_or_none(metrics.get("server_qps"))
            if rate is None or rate <= 0:
                raise StudyError(
                    f"trial {trial} of {study!r} met the latency bound at no arrival rate in the search (server_qps "
                    f"{metrics.get('server_qps')!r}): there is no rate to confirm; pick a trial that served one"
                )
            target, source = rate, f"server_qps of trial {trial} (the search's peak at the bound)"
        else:
            base_metric = "offline_qps" if load.scenario == "offline" else "qps"
            base = _positive(metrics, base_metric, trial, study)
            target = CLOSED_LOOP_SHARE * base
            source = f"{CLOSED_LOOP_SHARE:g} x the {base_metric} {base:.4g} of trial {trial}"
            notes.append(
                f"the study measured no server rate (load.scenario {load.scenario}): the Server run asks "
                f"{CLOSED_LOOP_SHARE:g} x its measured {base_metric}, the most a server completes flat out"
            )
    else:
        base_metric = "offline_qps" if load.scenario == "offline" else "qps"
        target = _positive(metrics, base_metric, trial, study)
        source = f"the {base_metric} of trial {trial} (LoadGen's expected Offline rate)"
    if rate_qps is not None:
        target, source = rate_qps, f"--rate {rate_qps:g} (the study's would be {target:.4g})"
    elif rate_share is not None:
        target, source = rate_share * target, f"--rate-share {rate_share:g} x {source}"
    return ConfirmPlan(
        spec=spec,
        study=study,
        pick=pick,
        trial=trial,
        params=dict(params),
        scenario=chosen,
        target_qps=float(target),
        rate_source=source,
        latency_ms=load.latency_ms,
        percentile=load.percentile,
        duration_s=None if duration_s is None else float(duration_s),
        notes=tuple(notes),
    )


def _positive(metrics: Mapping[str, Any], name: str, trial: int, study: str) -> float:
    value = finite_or_none(metrics.get(name))
    if value is None or value <= 0:
        raise StudyError(f"trial {trial} of {study!r} has no measured {name} to set the LoadGen rate from")
    return value


def artifacts_folder(url: str, given: str | Path | None) -> Path:
    """Where the LoadGen logs go: ``given``, else ``<storage file>.artifacts/`` beside a SQLite or journal file;
    a server storage (PostgreSQL, MySQL ...) needs ``given``."""
    if given is not None:
        return Path(given).expanduser()
    if url.startswith("journal:"):
        journal = Path(url.removeprefix("journal:")).expanduser()
        return journal.with_name(journal.name + ".artifacts")
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:"):
            return path.with_name(path.name + ".artifacts")
    raise StorageError(
        f"{redact(url)} is not a file beside which the LoadGen logs could be kept: pass --artifacts DIR (a folder "
        "every reader of the study can reach)"
    )


def open_study_for_writing(url: str, name: str) -> optuna.Study:
    """The study ``name`` of ``url`` opened to add a trial (no heartbeats: the trial is written at once)."""
    with storage_errors("cannot open study storage", url):
        storage = open_storage(url, create=False, heartbeat=False)
        return optuna.load_study(study_name=name, storage=storage)


def run_confirmation(
    study: optuna.Study, plan: ConfirmPlan, *, url: str, artifacts_dir: Path, emit: EventSink | None = None
) -> dict[str, Any]:
    """Run ``plan`` in a fresh trial child, store it on ``study`` (of storage ``url``) as a marked trial with its
    logs as artifacts; the record (the mark, with ``number``: the confirmation trial, and ``artifact_paths``).
    A failed run stores nothing: :class:`~tuner.errors.TrialFailed` with the reason."""
    spec = plan.spec
    model_path = resolve_model_path(spec)
    job = build_job(spec, plan.params, model_path)
    job["load"] = {
        **spec.model.load.model_dump(mode="json"),
        "scenario": plan.scenario,
        "confirm_rate": plan.target_qps,
        "confirm_duration_s": plan.duration_s,
    }
    result = run_job(job, timeout_s=plan.timeout_s, memory_limit_mb=spec.study.memory_limit_mb, on_event=emit)
    if not result.ok:
        assert result.failure is not None
        raise TrialFailed(f"the LoadGen confirmation run failed ({result.failure.describe()}); nothing was stored")
    loadgen = result.applied.get("loadgen") if isinstance(result.applied, Mapping) else None
    run = loadgen.get("confirmation") if isinstance(loadgen, Mapping) else None
    if not isinstance(run, Mapping):
        raise TrialFailed(
            "the trial child returned no LoadGen confirmation (does this tuner's pool serve LoadGen?); nothing was "
            "stored"
        )
    record = _record(plan, run, result.metrics, artifacts_dir)
    return _store(study, url, plan, record, result, run, artifacts_dir)


def _record(plan: ConfirmPlan, run: Mapping[str, Any], metrics: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    entries = parse_detail(str(run.get("detail") or ""))
    duration_ns = entries.get("generated_query_duration")
    latency = dict(run.get("latency_ms") or {})
    # LoadGenRun.latency_ms's keys: "p99", "p99.9", ...
    key = "p" + f"{plan.percentile * 100:.1f}".rstrip("0").rstrip(".")
    tag = platform_tag()
    notes = list(plan.notes)
    early = entries.get("early_stopping_result")
    return {
        "id": uuid.uuid4().hex[:12],
        "pick": plan.pick,
        "trial": plan.trial,
        "params": dict(plan.params),
        "scenario": plan.scenario,
        "target_qps": plan.target_qps,
        "rate_source": plan.rate_source,
        "result": str(run.get("result")),
        "valid": run.get("result") == "VALID",
        "reasons": list(run.get("reasons") or []),
        "rate_qps": finite_or_none(run.get("rate_qps")),
        "completed_qps": finite_or_none(run.get("completed_qps")),
        "percentile": plan.percentile,
        "latency_bound_ms": plan.latency_ms if plan.scenario == "server" else None,
        "percentile_latency_ms": finite_or_none(latency.get(key)),
        "latency_ms": {k: finite_or_none(v) for k, v in latency.items()},
        "query_count": int(run.get("query_count") or 0),
        "duration_s": float(duration_ns) / 1e9 if isinstance(duration_ns, int | float) else None,
        "min_duration_s": plan.duration_s,
        "early_stopping": " ".join(str(early).split()) if early else None,
        "bound_met": bool(run.get("bound_met")),
        "errors": list(run.get("errors") or []),
        "closed_loop": {k: metrics[k] for k in _CLOSED_LOOP if k in metrics},
        "artifacts": {},
        "artifact_store": str(folder.resolve()),
        "platform_tag": tag,
        "confirmed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "notes": notes,
    }


def _store(
    study: optuna.Study,
    url: str,
    plan: ConfirmPlan,
    record: dict[str, Any],
    result: Any,
    run: Mapping[str, Any],
    folder: Path,
) -> dict[str, Any]:
    """Add the trial (RUNNING, so the artifacts can be attached), upload the logs, then finish it."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    spec = plan.spec
    their_tag = study.user_attrs.get("platform_tag")
    if their_tag and their_tag != record["platform_tag"]:
        record["notes"].append(f"confirmed on {record['platform_tag']}; the study was measured on {their_tag}")
    outcome = result_outcome(spec, result)
    values = [finite_or_none(v) for v in outcome.values] if outcome.failed is None else []
    complete = len(values) == len(spec.objectives) and all(v is not None for v in values)
    dists = {k: d for k, d in distributions(spec).items() if k in plan.params}
    searched = {n for n, a in spec.axes.items() if a.kind != "fixed"}
    dists = {k: d for k, d in dists.items() if k in searched}
    attrs: dict[str, Any] = {
        "config": dict(plan.params),
        "worker": worker_identity(),
        "wall_s": result.wall_s,
    }
    if not complete:
        # an objective the confirmation does not measure (e.g. server_qps under --scenario offline)
        attrs["skip_reason"] = "a LoadGen confirmation (tuner confirm) that did not measure every objective"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"cannot create the artifact folder {folder}: {err.strerror}") from None
    store = FileSystemArtifactStore(str(folder))
    storage = storage_of(study)
    with storage_errors("cannot write the confirmation to", url):
        frozen = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={k: plan.params[k] for k in dists},
            distributions=dists,
            user_attrs=json_safe({**attrs, MARK: record}),
            system_attrs={f"constraints:{k}": float(v) for k, v in outcome.constraints.items()},
        )
        study.add_trial(frozen)
        trial = next(
            t
            for t in reversed(study.get_trials(deepcopy=False))
            if (t.user_attrs.get(MARK) or {}).get("id") == record["id"]
        )
        trial_id = trial_id_of(trial)
        try:
            with tempfile.TemporaryDirectory(prefix="tuner-confirm-") as tmp:
                for which in ("summary", "detail"):
                    path = Path(tmp) / f"mlperf_log_{which}.txt"
                    path.write_text(str(run.get(which) or ""), encoding="utf-8")
                    record["artifacts"][which] = upload_artifact(
                        artifact_store=store, file_path=str(path), study_or_trial=trial, storage=storage
                    )
            record["number"] = trial.number
            storage.set_trial_user_attr(trial_id, MARK, json_safe(record))
            if complete:
                storage.set_trial_state_values(
                    trial_id, TrialState.COMPLETE, [float(v) for v in values if v is not None]
                )
            else:
                storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        except BaseException as err:
            storage.set_trial_user_attr(
                trial_id, "failure", {"kind": "storage", "message": f"the LoadGen logs could not be stored: {err}"}
            )
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            raise
    return {**record, "artifact_paths": {k: str(folder.resolve() / v) for k, v in record["artifacts"].items()}}
