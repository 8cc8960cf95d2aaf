"""The trial user-attribute schema: what tuner writes on every Optuna trial, and how a stored trial reads back.

One definition of a stored trial, shared by its writer (the study loop) and every reader (the worker
ledger, the knee sampler, the spool, report, compare, export). The attribute names are a contract: old
studies keep them, and optuna-dashboard shows them as they are.

A trial's user attributes are its *bookkeeping* (:class:`TrialAttrs`' fields other than ``metrics``) and
its *metrics*: every other attribute (the contract metrics of DESIGN.md, per-stage figures, ...).

How a stored trial counts (:func:`is_measured`, :func:`is_yield`, ...) lives here too, so
the budget, the claims and the samplers classify trials one way. The functions take Optuna's
``FrozenTrial`` or any row with ``state``, ``user_attrs`` and ``params`` (report's SQL reader gives those).

Imports nothing from tuner but :mod:`tuner.text`: any layer may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from tuner.text import json_safe


@dataclass(frozen=True)
class TrialAttrs:
    """The user attributes of one trial. ``None`` fields are not written."""

    #: the full configuration (every axis, fixed ones too); ``params`` holds only the searched ones
    config: dict[str, Any] | None = None
    #: which machine and process measured it: ``{"host", "pid", "platform_tag"}``
    worker: dict[str, Any] | None = None
    #: set once this trial decided to measure its config (see :func:`tuner.study.ledger.claim`)
    claimed: bool | None = None
    #: why it was not measured (a validity rule, another worker, the budget taken): PRUNED
    skip_reason: str | None = None
    #: it stood back for another worker: ``{"to": trial number or None, "reason"}``
    yielded: dict[str, Any] | None = None
    #: the earlier trial whose measurement it reuses (a config is measured once)
    duplicate_of: int | None = None
    #: what the backend actually applied or resolved
    applied: dict[str, Any] | None = None
    #: the trial's wall time, the child's start to its end (s)
    wall_s: float | None = None
    #: ``{"kind", "message", "exit_code", "signal", "stderr_tail"}`` of a failed trial
    failure: dict[str, Any] | None = None
    #: one Optuna-style value per constraint (<= 0 feasible), in file order
    constraints: list[float] | None = None
    feasible: bool | None = None
    #: a result that came back from the local spool: its spool id and the trial it was measured as
    spool_id: str | None = None
    spooled_from: int | None = None
    #: a paired confirmation measurement: ``{"session", "round", "slot", "config"}`` (:mod:`tuner.study.confirm`)
    confirm: dict[str, Any] | None = None
    #: why the trial was stopped before its measurement ended (it could be neither knee nor best): PRUNED
    stopped_early: str | None = None
    #: a drift reference re-measurement: ``{"reference": trial number, "after": measured trials}``
    drift: dict[str, Any] | None = None
    #: a LoadGen confirmation run (``tuner confirm``): ``{"pick", "trial", "params", "scenario", "target_qps",
    #: "result", "reasons", "rate_qps", "latency_ms", "artifacts", ...}`` (:mod:`tuner.study.loadgen_confirm`)
    loadgen_confirm: dict[str, Any] | None = None
    #: why a complete trial is infeasible besides its constraints (load.scenario server: no arrival rate met
    #: the latency bound, LoadGen's reason); such a trial is never knee or best
    infeasible_reason: str | None = None
    #: everything measured: contract metrics and any other figure
    metrics: dict[str, Any] = field(default_factory=dict)

    #: attributes that belong to the trial itself, never copied to a trial that reuses its measurement
    OWN: ClassVar[tuple[str, ...]] = (
        "config",
        "duplicate_of",
        "constraints",
        "feasible",
        "worker",
        "claimed",
        "spool_id",
        "spooled_from",
        "confirm",
        "drift",
        "loadgen_confirm",
    )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every bookkeeping attribute name (not the metrics)."""
        return tuple(f.name for f in fields(cls) if f.name != "metrics")

    @classmethod
    def read(cls, user_attrs: Mapping[str, Any]) -> TrialAttrs:
        """Split stored user attributes into bookkeeping and metrics."""
        known = set(cls.names())
        given = {k: v for k, v in user_attrs.items() if k in known}
        metrics = {k: v for k, v in user_attrs.items() if k not in known}
        return cls(**given, metrics=metrics)

    def to_user_attrs(self) -> dict[str, Any]:
        """The attributes to write: the set bookkeeping fields and every metric, JSON-safe (NaN -> null)."""
        out = {name: getattr(self, name) for name in self.names() if getattr(self, name) is not None}
        out.update(self.metrics)
        return json_safe(out)


# --------------------------------------------------------------------------------- how a trial counts


def _state(trial: Any) -> str:
    state = trial.state
    return str(getattr(state, "name", state))


def config_of(trial: Any) -> dict[str, Any]:
    """The trial's full configuration (its searched params when an old trial has no ``config``)."""
    return dict(trial.user_attrs.get("config") or trial.params)


def is_duplicate(trial: Any) -> bool:
    """A trial that reused an earlier trial's measurement."""
    return "duplicate_of" in trial.user_attrs


def is_yield(trial: Any) -> bool:
    """A trial that stood back for another worker (same config being measured, or the budget taken)."""
    return "yielded" in trial.user_attrs


#: the marks of trials added outside the search (paired confirmation, drift reference, LoadGen confirmation)
EXTRA_MARKS: tuple[str, ...] = ("confirm", "drift", "loadgen_confirm")


def is_extra(trial: Any) -> bool:
    """A confirmation, drift or LoadGen confirmation (``tuner confirm``) run, added after (or between) the
    search's own trials."""
    return any(mark in trial.user_attrs for mark in EXTRA_MARKS)


def failure_of(trial: Any) -> dict[str, Any]:
    """The recorded failure (empty when none)."""
    return dict(trial.user_attrs.get("failure") or {})


def is_measured(trial: Any) -> bool:
    """A trial that spent a measurement: complete (not a reused duplicate) or failed with a reason.

    A trial stopped early (PRUNED, ``stopped_early``) spent its measurement too. Not measured: interrupted
    (Ctrl-C), spooled (its result was recorded as another trial), or died (the worker was killed: Optuna
    re-queues the config and the retry is the measurement). Confirmation, drift and LoadGen confirmation runs
    (:func:`is_extra`) are not the search's: they never spend its budget.
    """
    if is_extra(trial):
        return False
    state = _state(trial)
    if state == "PRUNED":
        return bool(trial.user_attrs.get("stopped_early"))
    if state == "COMPLETE":
        return not is_duplicate(trial)
    if state == "FAIL":
        failure = failure_of(trial)
        return bool(failure) and failure.get("kind") not in ("interrupted", "storage")
    return False


def is_open_failure(trial: Any) -> bool:
    """A FAIL trial that was never measured (Ctrl-C, a dead worker, a spooled result): its config is open."""
    return _state(trial) == "FAIL" and not is_measured(trial)


def rate_of(trial: Any, metric: str) -> float | None:
    """The measured value of rate ``metric`` (``qps``, ``server_qps``, ``offline_qps``) of a complete trial
    (a duplicate carries its original's); None when the trial is not complete or has no such number."""
    value = trial.user_attrs.get(metric)
    if _state(trial) != "COMPLETE" or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def qps_of(trial: Any) -> float | None:
    """The measured (closed-loop) qps of a complete trial (a duplicate carries its original's)."""
    return rate_of(trial, "qps")


#: the rate a study's knee and best are decided on, by ``load.scenario`` (closed, server, offline)
RATE_METRICS: tuple[str, ...] = ("qps", "server_qps", "offline_qps")


#: the study attribute holding the next steps beyond the measured range that this host's validity rules skip,
#: ``[{"params", "reason"}]``: written by the study loop after a run, read by the report's edge rule
EDGE_LIMITS = "edge_limits"


def edge_limits_of(study_attrs: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The study's ``edge_limits`` as ``(params, reason)`` pairs; empty when absent."""
    return [
        (dict(item["params"]), str(item["reason"]))
        for item in study_attrs.get(EDGE_LIMITS) or []
        if isinstance(item, Mapping) and isinstance(item.get("params"), Mapping) and item.get("reason")
    ]


def rate_metric_of(study_attrs: Mapping[str, Any]) -> str:
    """The study's rate metric from its user attributes (``rate_metric``, written at creation); ``qps`` for
    a study made before ``load:`` existed, or an unknown value."""
    value = study_attrs.get("rate_metric")
    return str(value) if value in RATE_METRICS else "qps"


def is_feasible(trial: Any) -> bool:
    """Whether the trial met every constraint and the load's bound (a trial without constraints is feasible)."""
    return bool(trial.user_attrs.get("feasible", True))
