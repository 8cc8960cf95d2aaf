"""The pool workload: ``pool_size`` runtime instances, each driven by its own closed-loop worker.

Each worker keeps ``requests_per_sync`` requests in flight on its instance, then waits for all of them
(async submit ... sync); with 1 it makes plain synchronous calls on its own thread. Inputs are prepared
before timing (what each model input is fed: the job's ``inputs`` plan, handed to every instance as
``RuntimeConfig.inputs``). The first request runs before measurement, so a value the model rejects fails at
load. A request's latency runs from its submission to its completion. With the accuracy guard on, the job's
``accuracy`` entry makes instance 0 run the reference set after the measured part
(:mod:`tuner.workloads.accuracy_guard`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuner.backends.base import Backend, Instance, RuntimeConfig
from tuner.backends.registry import get_backend
from tuner.errors import InputError
from tuner.models.feeds import describe_feeds
from tuner.search.rules import HostThreads
from tuner.text import first_line
from tuner.workloads.base import WorkloadKind, backend_host_threads, worker_job

if TYPE_CHECKING:
    from pathlib import Path

    from tuner.config.checks import CheckContext
    from tuner.config.spec import Spec


_STOP_SERVING = object()


class PoolWorkload:
    """Opens the pool, then drives it until :meth:`stop`. Implements :class:`tuner.measurement.steady_state.Source`."""

    def __init__(
        self,
        backend: Backend,
        *,
        pool_size: int,
        threads: int,
        requests_per_sync: int,
        batch_size: int,
        inputs: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.backend = backend
        self.inputs: Mapping[str, Any] = dict(inputs or {})
        self.pool_size = pool_size
        self.threads = threads
        self.requests_per_sync = requests_per_sync
        self.batch_size = batch_size
        self.completions: list[tuple[float, float]] = []
        self.instances: list[Instance] = []
        self._inputs: list[list[Any]] = []
        self._clock = clock
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._drivers: list[threading.Thread] = []
        self._serve_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._serving: list[threading.Thread] = []

    # -------------------------------------------------------------------------------- lifecycle
    def load(self) -> float:
        """Open every instance and prepare its inputs; return the seconds it took (``load_s``)."""
        t0 = self._clock()
        for index in range(self.pool_size):
            config = RuntimeConfig(
                threads=self.threads,
                batch_size=self.batch_size,
                requests_per_sync=self.requests_per_sync,
                pool_size=self.pool_size,
                index=index,
                inputs=self.inputs,
            )
            self.instances.append(self.backend.open(config))
        load_s = self._clock() - t0
        for inst in self.instances:
            self._inputs.append([inst.prepare_inputs() for _ in range(self.requests_per_sync)])
        return load_s

    def first_request(self) -> float:
        """Latency of the very first request on instance 0 (ms), kept apart from the steady state.

        It runs before measurement: a value the model rejects (a token id beyond its vocabulary, a shape
        a layer cannot take) fails here, as an :class:`~tuner.errors.InputError` that says what was fed.
        """
        t0 = self._clock()
        try:
            self.instances[0].infer(self._inputs[0][0])
        except Exception as err:  # noqa: BLE001 - every runtime raises its own types
            raise InputError(
                f"the first request failed: {first_line(err)}; check what the workload feeds: {self._fed()}"
            ) from None
        return (self._clock() - t0) * 1000.0

    def _fed(self) -> str:
        """What instance 0 feeds, in the workload file's words (``inputs.<name>``)."""
        inst = self.instances[0]
        if inst.feeds:
            return describe_feeds(inst.feeds)
        if self.inputs:
            return "; ".join(f"{name}: {entry}" for name, entry in self.inputs.items())
        return f"the {self.backend.name} backend's own inputs (the workload declares no inputs:)"

    def start(self) -> None:
        for index, inst in enumerate(self.instances):
            target = self._drive_sync if self.requests_per_sync == 1 else self._drive_async
            t = threading.Thread(target=self._guard, args=(target, inst, self._inputs[index]), daemon=True)
            t.name = f"tuner-driver-{index}"
            self._drivers.append(t)
            t.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._drivers:
            t.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for inst in self.instances:
            inst.close()
        self.instances.clear()

    def failed(self) -> BaseException | None:
        return self._error

    def applied_options(self) -> dict[str, Any]:
        return self.instances[0].applied_options() if self.instances else {}

    # -------------------------------------------------------------------------------- serving (LoadGen)
    def serve(self, complete: Callable[[Sequence[int]], None]) -> Callable[[Sequence[int]], None]:
        """Serve sample ids from one shared queue (:class:`tuner.measurement.loadgen.Served`).

        Each instance runs ``requests_per_sync`` serving threads; a thread takes the oldest id (waiting for
        one), then up to ``batch_size - 1`` more that are already queued (no waiting for a batch to fill),
        runs one request and calls ``complete(ids)``. A partial batch runs the full prepared batch (a
        runtime compiled for a fixed batch pads the same way). After an error every id is completed at once
        without inference, so LoadGen's run ends; :meth:`failed` reports the error.
        """
        self._serve_queue = queue.SimpleQueue()
        self._serving = []
        for index, inst in enumerate(self.instances):
            for slot in range(self.requests_per_sync):
                t = threading.Thread(
                    target=self._serve_loop, args=(inst, self._inputs[index][slot], complete), daemon=True
                )
                t.name = f"tuner-serve-{index}-{slot}"
                self._serving.append(t)
                t.start()
        put = self._serve_queue.put

        def enqueue(ids: Sequence[int]) -> None:
            for i in ids:
                put(i)

        return enqueue

    def stop_serving(self, timeout_s: float = 30.0) -> None:
        threads, self._serving = self._serving, []
        for _ in threads:
            self._serve_queue.put(_STOP_SERVING)
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _serve_loop(self, inst: Instance, x: Any, complete: Callable[[Sequence[int]], None]) -> None:
        q, batch = self._serve_queue, self.batch_size
        while True:
            first = q.get()
            if first is _STOP_SERVING:
                return
            ids, stop = [first], False
            while len(ids) < batch:
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP_SERVING:
                    stop = True
                    break
                ids.append(more)
            if self._error is None:
                try:
                    inst.infer(x)
                except BaseException as err:  # noqa: BLE001 - reported through failed()
                    if self._error is None:
                        self._error = err
            complete(ids)
            if stop:
                return

    # -------------------------------------------------------------------------------- drivers
    def _guard(self, target: Callable[[Instance, list[Any]], None], inst: Instance, inputs: list[Any]) -> None:
        try:
            target(inst, inputs)
        except BaseException as err:  # noqa: BLE001 - reported through failed()
            if self._error is None:
                self._error = err
            self._stop.set()

    def _drive_sync(self, inst: Instance, inputs: list[Any]) -> None:
        clock, stop, record, x = self._clock, self._stop, self.completions.append, inputs[0]
        infer = inst.infer
        while not stop.is_set():
            t0 = clock()
            infer(x)
            t1 = clock()
            record((t1, t1 - t0))

    def _drive_async(self, inst: Instance, inputs: list[Any]) -> None:
        clock, stop, record = self._clock, self._stop, self.completions.append
        while not stop.is_set():
            sync = _Sync(len(inputs))
            for x in inputs:
                inst.submit(x, sync.callback(clock(), clock, record))
            sync.wait()
            if sync.errors:
                raise sync.errors[0]


class _Sync:
    """One round of ``requests_per_sync`` submissions and the wait for all of them."""

    def __init__(self, count: int) -> None:
        self.pending = count
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._all_done = threading.Event()

    def callback(
        self, t_submit: float, clock: Callable[[], float], record: Callable[[tuple[float, float]], None]
    ) -> Callable[[BaseException | None], None]:
        def done(err: BaseException | None) -> None:
            t1 = clock()
            if err is not None:
                self.errors.append(err)
            else:
                record((t1, t1 - t_submit))
            with self._lock:
                self.pending -= 1
                last = self.pending == 0
            if last:
                self._all_done.set()

        return done

    def wait(self) -> None:
        self._all_done.wait()


def run_pool_job(job: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Measure one pool configuration in this process (the trial child calls this)."""
    from pathlib import Path

    from tuner.measurement.steady_state import MeasureSettings, measure_steady_state

    params = job["params"]
    backend_cls = get_backend(job["backend"])
    model = Path(job["model"]) if job.get("model") else None
    backend = backend_cls(model, job.get("options", {}))
    pool = PoolWorkload(
        backend,
        pool_size=int(params.get("pool_size", 1)),
        threads=int(params.get("threads", 1)),
        requests_per_sync=int(params.get("requests_per_sync", 1)),
        batch_size=int(params.get("batch_size", 1)),
        inputs=job.get("inputs") or {},
    )
    emit({"event": "load"})
    try:
        load_s = pool.load()
        first_ms = pool.first_request()
        pool.start()
        try:
            metrics = measure_steady_state(pool, MeasureSettings(**job["measure"]), emit)
        finally:
            pool.stop()
        applied = pool.applied_options()
        load = job.get("load")
        if load and load.get("scenario", "closed") != "closed":
            # the closed-loop qps just measured seeds LoadGen: a server cannot sustain more than that flat out
            metrics.update(serve_with_loadgen(pool, load, seed_qps=float(metrics["qps"]), applied=applied, emit=emit))
        guard = job.get("accuracy")
        if guard:  # after the measured part: the reference set through instance 0 (tuner.workloads.accuracy_guard)
            from tuner.workloads.accuracy_guard import run_guard

            emit({"event": "accuracy", "samples": guard["set"]["samples"]})
            accuracy, applied["accuracy"] = run_guard(guard, pool.instances[0], backend.versions())
            metrics.update(accuracy)
    finally:
        pool.close()
    metrics["load_s"] = load_s
    metrics["first_request_ms"] = first_ms
    return {"metrics": metrics, "applied": applied, "versions": backend.versions()}


def serve_with_loadgen(
    served: Any,
    load: Mapping[str, Any],
    *,
    seed_qps: float,
    applied: dict[str, Any],
    emit: Callable[[dict[str, Any]], None],
) -> dict[str, float]:
    """The LoadGen part of a trial (``load.scenario`` server or offline): its metrics; ``applied["loadgen"]``
    gets what LoadGen said of each run (result, reasons, rates, latencies).

    ``load["confirm_rate"]`` set (``tuner confirm``): ONE run at that rate instead of the search -- LoadGen's
    own settings for the scenario (:class:`~tuner.measurement.loadgen.LoadGenSettings` with None: MLPerf's
    600 s minimum duration, its query minimum and seeds) unless ``load["confirm_duration_s"]`` sets the
    minimum duration; ``applied["loadgen"]["confirmation"]`` is its result with the summary and detail logs.
    Its metrics are those of a search that tried that one rate.
    """
    from tuner.measurement.loadgen import (
        LoadGenSettings,
        find_server_peak,
        infeasible_reason,
        run_loadgen,
        server_metrics,
    )

    if load.get("confirm_rate") is not None:
        duration = load.get("confirm_duration_s")
        confirm = LoadGenSettings(
            scenario=str(load["scenario"]),
            target_qps=float(load["confirm_rate"]),
            latency_ms=load.get("latency_ms"),
            percentile=float(load.get("percentile", 0.99)),
            min_duration_s=None if duration is None else float(duration),
            min_queries=None,
            samples=int(load.get("samples", 1024)),
            seed=None,
        )
        emit(
            {
                "event": "loadgen_confirm",
                "scenario": confirm.scenario,
                "target_qps": confirm.target_qps,
                "min_duration_s": confirm.min_duration_s,
            }
        )
        run = run_loadgen(served, confirm)
        applied["loadgen"] = {"confirmation": run.to_dict(logs=True), "result": "VALID" if run.valid else "INVALID"}
        if confirm.scenario == "offline":
            return {"offline_qps": run.rate_qps, "loadgen_valid": 1.0 if run.valid else 0.0}
        return server_metrics(run if run.bound_met else None, [run], confirm.percentile)

    settings = LoadGenSettings(
        scenario=str(load["scenario"]),
        target_qps=seed_qps,
        latency_ms=load.get("latency_ms"),
        percentile=float(load.get("percentile", 0.99)),
        min_duration_s=float(load.get("min_duration_s", 20.0)),
        min_queries=int(load.get("min_queries", 64)),
        samples=int(load.get("samples", 1024)),
    )
    emit({"event": "loadgen_start", "scenario": settings.scenario})
    if settings.scenario == "offline":
        run = run_loadgen(served, settings)
        applied["loadgen"] = {"runs": [run.to_dict()], "result": "VALID" if run.valid else "INVALID"}
        return {"offline_qps": run.rate_qps, "loadgen_valid": 1.0 if run.valid else 0.0}
    best, runs = find_server_peak(
        served,
        settings,
        seed_qps=seed_qps,
        max_runs=int(load.get("max_runs", 6)),
        precision=float(load.get("precision", 0.05)),
        emit=emit,
    )
    applied["loadgen"] = {
        "runs": [r.to_dict() for r in runs],
        "result": "VALID" if best is not None and best.valid else "INVALID",
        "bound_met": best is not None,
        "reason": infeasible_reason(runs, settings),
    }
    return server_metrics(best, runs, settings.percentile)


class PoolKind(WorkloadKind):
    """``kind: pool``: ``pool_size`` instances of ``workload.backend``, measured in the worker child."""

    name = "pool"
    serves_loadgen = True
    guards_accuracy = True

    def check(self, ctx: CheckContext) -> None:
        from tuner.workloads.accuracy_guard import check_accuracy

        ctx.check_backend()
        check_accuracy(ctx)
        if ctx.model.load.scenario != "closed":
            from importlib.util import find_spec

            if find_spec("mlperf_loadgen") is None:
                raise ctx.error(
                    ("load", "scenario"),
                    f"{ctx.model.load.scenario} runs MLPerf LoadGen: pip install 'tuner[serving]' (mlcommons-loadgen)",
                )

    def host_threads(self, spec: Spec, params: Mapping[str, Any], *, usable_cores: int) -> HostThreads | None:
        """The backend's count (``Backend.host_threads``): the pool is its instances and nothing else computes."""
        return backend_host_threads(spec, params, usable_cores=usable_cores)

    def uses_backend(self, spec: Spec) -> bool:
        return True

    def build_job(self, spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
        from tuner.workloads.accuracy_guard import guard_job

        job = worker_job(spec, params, model_path)
        get_backend(spec.workload.backend).validate_options(job["options"])
        guard = guard_job(spec, params, model_path)
        if guard is not None:
            job["accuracy"] = guard
        return job

    def run_in_child(self, job: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        return run_pool_job(job, emit)
