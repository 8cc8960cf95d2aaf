"""MLPerf LoadGen runs: the Server and Offline scenarios on a *served* system, and the Server peak search.

The real LoadGen (PyPI ``mlcommons-loadgen``, module ``mlperf_loadgen``; the ``serving`` extra) schedules the
queries -- Poisson arrivals in Server, one query of every sample in Offline -- and times each from its
scheduled moment, so a system that falls behind is charged for the queueing (no coordinated omission). It
judges each run VALID or INVALID (the latency bound at the percentile, the minimum duration, the minimum
query count, early stopping) and writes its summary and detail logs; :class:`LoadGenRun` keeps what they say.

A *served* system (:class:`Served`, implemented by the pool workload) takes sample ids and completes them,
batching up to its batch size from what is queued; it runs in this process (the trial's child), so each
LoadGen run reuses the loaded instances. A system that raises while serving still completes the samples it
was given (LoadGen would wait for them forever otherwise) and the run raises the error afterwards.

:func:`find_server_peak` bisects the arrival rate: it starts just under the closed-loop qps of the same
configuration (a server cannot sustain more than it completes flat out: the closed-loop qps caps the search),
halves towards zero while runs miss the bound, and narrows between the best rate that met it and the lowest
that did not until they are ``precision`` apart or ``max_runs`` runs are made. A search run *meets the bound*
when LoadGen found the percentile latency within ``latency_ms``, the minimum duration and the minimum query
count: LoadGen's early stopping (part of its VALID) needs more queries than a short search run holds (about
460 for a p99 bound with no late query, more for each late one), so it is reported (``loadgen_valid``) but
left to the long confirmation run (``tuner confirm``, LoadGen's own defaults). ``server_qps`` is the
scheduled rate of the best run that met the bound (MLPerf's metric).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuner.config.models import LOADGEN_PERCENTILES
from tuner.errors import TunerError

Event = dict[str, Any]
EventSink = Callable[[Event], None]


#: Offline: LoadGen's expected rate is this many times the rate asked (see :class:`LoadGenSettings`)
OFFLINE_HEADROOM = 1.5

#: LoadGen's validity criteria (detail-log key -> what the reason says when it failed)
_CRITERIA = {
    "result_perf_constraints_met": "the latency bound was not met",
    "result_min_duration_met": "the minimum duration was not reached",
    "result_min_queries_met": "too few queries (min_queries) completed",
    "early_stopping_met": "early stopping could not confirm the percentile bound",
}


class LoadGenMissing(TunerError):
    """``mlperf_loadgen`` is not installed."""

    exit_code = 2


class Served(Protocol):
    """A system LoadGen can drive: sample ids in, completions out (see the module docstring)."""

    batch_size: int

    def serve(self, complete: Callable[[Sequence[int]], None]) -> Callable[[Sequence[int]], None]:
        """Start serving; returns the function that enqueues sample ids. ``complete(ids)`` once per batch."""

    def stop_serving(self) -> None:
        """Stop the serving threads (idempotent)."""

    def failed(self) -> BaseException | None:
        """The first error the serving threads hit, if any."""


@dataclass(frozen=True)
class LoadGenSettings:
    """One LoadGen run: ``scenario`` (``server`` | ``offline``), the rate asked and the criteria.

    ``min_duration_s``, ``min_queries`` and ``seed`` None: LoadGen's own settings for the scenario (its
    built-in ``mlperf.conf``: a 600 s minimum duration for Server and Offline, its minimum query count, the
    official seeds) -- what ``tuner confirm`` runs by default; the peak search sets all three.

    Offline: LoadGen sizes its one query from the expected rate (about ``1.1 x target_qps x`` the minimum
    duration) and calls a run that ends sooner INVALID, so a system only a little faster than the closed
    loop said would fail on duration; the run asks :data:`OFFLINE_HEADROOM` x ``target_qps``.
    """

    scenario: str
    target_qps: float
    latency_ms: float | None = None
    percentile: float = 0.99
    min_duration_s: float | None = 20.0
    min_queries: int | None = 64
    samples: int = 1024
    seed: int | None = 0


@dataclass(frozen=True)
class LoadGenRun:
    """What LoadGen said about one run (its detail log's ``result_*`` entries)."""

    scenario: str
    target_qps: float
    valid: bool
    reasons: tuple[str, ...]
    #: server: the scheduled (offered) rate; offline: the samples per second
    rate_qps: float
    completed_qps: float
    #: "p50", "p90", "p95", "p97", "p99", "p99.9", "mean", "min", "max" (ms)
    latency_ms: Mapping[str, float]
    query_count: int
    errors: tuple[str, ...] = ()
    #: the latency bound, the minimum duration and the minimum query count were met (the peak search's
    #: criterion: early stopping needs more queries than a short search run has -- ~660 for a p99 bound)
    bound_met: bool = False
    summary: str = ""
    detail: str = field(default="", repr=False)

    def percentile_latency_ms(self, percentile: float) -> float:
        return float(self.latency_ms.get(_pkey(percentile), float("nan")))

    def to_dict(self, *, logs: bool = False) -> dict[str, Any]:
        doc = {
            "scenario": self.scenario,
            "target_qps": self.target_qps,
            "result": "VALID" if self.valid else "INVALID",
            "reasons": list(self.reasons),
            "rate_qps": self.rate_qps,
            "completed_qps": self.completed_qps,
            "latency_ms": dict(self.latency_ms),
            "query_count": self.query_count,
            "bound_met": self.bound_met,
            "errors": list(self.errors),
        }
        if logs:
            doc.update(summary=self.summary, detail=self.detail)
        return doc


#: scenario -> its name in LoadGen's mlperf.conf
_CONF_SCENARIOS = {"server": "Server", "offline": "Offline"}


def _pkey(percentile: float) -> str:
    text = f"{percentile * 100:.1f}".rstrip("0").rstrip(".")
    return f"p{text}"


def loadgen_module() -> Any:
    """``mlperf_loadgen``, or :class:`LoadGenMissing` naming the extra."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise LoadGenMissing(
            "load.scenario server/offline runs MLPerf LoadGen: pip install 'tuner[serving]' (mlcommons-loadgen)"
        ) from None
    return mlperf_loadgen


def parse_detail(text: str) -> dict[str, Any]:
    """The ``:::MLLOG`` entries of a LoadGen detail log: key -> value (the last one of a key), errors under
    ``"__errors__"``."""
    entries: dict[str, Any] = {}
    errors: list[str] = []
    for line in text.splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        entries[str(entry.get("key"))] = entry.get("value")
        if (entry.get("metadata") or {}).get("is_error"):
            errors.append(f"{entry.get('key')}: {entry.get('value')}")
    entries["__errors__"] = errors
    return entries


def run_from_logs(settings: LoadGenSettings, detail: str, summary: str) -> LoadGenRun:
    """A :class:`LoadGenRun` from the text of one run's detail and summary logs."""
    e = parse_detail(detail)
    valid = e.get("result_validity") == "VALID"
    reasons = tuple(why for key, why in _CRITERIA.items() if e.get(key) is False)
    ms = {}
    for p in LOADGEN_PERCENTILES:
        value = e.get(f"result_{p * 100:.2f}_percentile_latency_ns")
        if isinstance(value, int | float):
            ms[_pkey(p)] = float(value) / 1e6
    for name in ("mean", "min", "max"):
        value = e.get(f"result_{name}_latency_ns")
        if isinstance(value, int | float):
            ms[name] = float(value) / 1e6
    if settings.scenario == "server":
        rate = e.get("result_scheduled_samples_per_sec")
        completed = e.get("result_completed_samples_per_sec")
    else:
        rate = e.get("result_samples_per_second")
        completed = rate
    return LoadGenRun(
        scenario=settings.scenario,
        target_qps=settings.target_qps,
        valid=valid,
        reasons=reasons if not valid else (),
        rate_qps=float(rate) if isinstance(rate, int | float) else float("nan"),
        completed_qps=float(completed) if isinstance(completed, int | float) else float("nan"),
        latency_ms=ms,
        query_count=int(e.get("result_query_count") or 0),
        errors=tuple(e["__errors__"]),
        bound_met=all(
            e.get(key) is True
            for key in ("result_perf_constraints_met", "result_min_duration_met", "result_min_queries_met")
        ),
        summary=summary,
        detail=detail,
    )


def run_loadgen(served: Served, settings: LoadGenSettings) -> LoadGenRun:
    """One LoadGen run of ``settings`` against ``served``; raises the system's error if it failed."""
    lg = loadgen_module()
    if settings.scenario not in _CONF_SCENARIOS:
        raise ValueError(f"unknown LoadGen scenario {settings.scenario!r}")
    test = lg.TestSettings()
    if settings.min_duration_s is None or settings.min_queries is None or settings.seed is None:
        # LoadGen's defaults for the scenario: its built-in mlperf.conf (conf_type 0: no user.conf), the
        # "*" entries of a model it does not know; what is set below overrides them
        test.FromConfig("", "tuner", _CONF_SCENARIOS[settings.scenario], 0)
    test.mode = lg.TestMode.PerformanceOnly
    if settings.min_duration_s is not None:
        test.min_duration_ms = max(1, round(settings.min_duration_s * 1000))
    if settings.min_queries is not None:
        test.min_query_count = settings.min_queries
    if settings.seed is not None:
        test.qsl_rng_seed = test.sample_index_rng_seed = test.schedule_rng_seed = settings.seed
    if settings.scenario == "server":
        assert settings.latency_ms is not None
        test.scenario = lg.TestScenario.Server
        test.server_target_qps = float(settings.target_qps)
        test.server_target_latency_ns = round(settings.latency_ms * 1e6)
        test.server_target_latency_percentile = float(settings.percentile)
    else:
        test.scenario = lg.TestScenario.Offline
        test.offline_expected_qps = OFFLINE_HEADROOM * float(settings.target_qps)
    enqueue = served.serve(lambda ids: lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids]))

    def issue(query_samples: Sequence[Any]) -> None:
        enqueue([q.id for q in query_samples])

    with tempfile.TemporaryDirectory(prefix="tuner-loadgen-") as outdir:
        log = lg.LogSettings()
        log.log_output.outdir = outdir
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = False
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = lg.ConstructQSL(settings.samples, settings.samples, lambda _ids: None, lambda _ids: None)
        try:
            lg.StartTestWithLogSettings(sut, qsl, test, log)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
            served.stop_serving()
        detail = _read(Path(outdir) / "mlperf_log_detail.txt")
        summary = _read(Path(outdir) / "mlperf_log_summary.txt")
    error = served.failed()
    if error is not None:
        raise error
    return run_from_logs(settings, detail, summary)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def find_server_peak(
    served: Served,
    base: LoadGenSettings,
    *,
    seed_qps: float,
    max_runs: int,
    precision: float,
    emit: EventSink | None = None,
    run: Callable[[Served, LoadGenSettings], LoadGenRun] = run_loadgen,
) -> tuple[LoadGenRun | None, list[LoadGenRun]]:
    """``(best run that met the bound or None, every run)``: the bisection of the module docstring.

    ``run`` is the LoadGen runner (tests hand in a recorded one to check the search alone).
    """
    from dataclasses import replace

    if not seed_qps > 0:
        raise ValueError(f"the seed rate must be positive, got {seed_qps!r}")
    runs: list[LoadGenRun] = []
    best: LoadGenRun | None = None
    # the best rate that met the bound and the lowest that did not; the closed-loop qps bounds the search from
    # above (untested): a config cannot serve more than it completes flat out, and a short run at a rate above
    # that has not yet built the queue that would show it
    low, high = 0.0, seed_qps
    target = 0.9 * seed_qps
    while len(runs) < max_runs:
        result = run(served, replace(base, target_qps=target))
        runs.append(result)
        if emit is not None:
            emit({"event": "loadgen_run", "target_qps": target, "valid": result.valid, "rate_qps": result.rate_qps})
        if result.bound_met:
            if best is None or result.rate_qps > best.rate_qps:
                best = result
            low = max(low, target)
        else:
            high = min(high, target)
        if low == 0.0:
            target = high / 2.0
        else:
            if high / low - 1.0 <= precision:
                break
            target = (low + high) / 2.0
    return best, runs


def server_metrics(best: LoadGenRun | None, runs: Sequence[LoadGenRun], percentile: float) -> dict[str, float]:
    """The contract metrics of a Server peak search (``server_qps`` 0 when no rate met the bound;
    ``loadgen_valid`` whether LoadGen also called that run VALID, early stopping included)."""
    if best is None:
        return {"server_qps": 0.0, "loadgen_valid": 0.0, "server_runs": float(len(runs))}
    return {
        "server_qps": best.rate_qps,
        "server_latency_ms": best.percentile_latency_ms(percentile),
        "server_latency_p50_ms": float(best.latency_ms.get("p50", float("nan"))),
        "loadgen_valid": 1.0 if best.valid else 0.0,
        "server_runs": float(len(runs)),
    }


def infeasible_reason(runs: Sequence[LoadGenRun], settings: LoadGenSettings) -> str | None:
    """Why no rate was VALID (None when one was): the lowest rate tried and what LoadGen said of it."""
    if not runs or any(r.bound_met for r in runs):
        return None
    lowest = min(runs, key=lambda r: r.target_qps)
    latency = lowest.percentile_latency_ms(settings.percentile)
    return (
        f"no arrival rate met the bound: at {lowest.target_qps:.4g} qps (the lowest tried) LoadGen said "
        f"{'VALID' if lowest.valid else 'INVALID'} "
        f"({'; '.join(lowest.reasons) or 'no reason given'}), p{settings.percentile * 100:g} latency "
        f"{latency:.4g} ms against load.latency_ms {settings.latency_ms:g}"
    )
