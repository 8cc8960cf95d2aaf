"""The workload-kind protocol: what ``workload.kind: NAME`` plugs in (``pool``, ``pipeline``, ``command``, yours).

A *workload kind* decides what one trial of a configuration does: drive a pool of backend instances,
push images through a pipeline of stages, run an external program. Kinds are found by name in the
entry-point group ``tuner.workloads`` (:mod:`tuner.workloads.registry`, through :mod:`tuner.plugins`); the
built-ins are registered in tuner's ``pyproject.toml`` exactly as a third-party package registers its own::

    [project.entry-points."tuner.workloads"]
    mykind = "my_package.kind:MyKind"

Contract (a subclass sets ``name`` and implements :meth:`WorkloadKind.build_job` plus one of the two ways to run):

* ``name`` is the name workload files use; it equals the entry point's name.
* ``check(ctx)`` validates the kind's part of a loaded workload file, in the parent, when the file is
  loaded (``tuner run`` and ``tuner optimize`` refuse a bad file before anything starts). ``ctx`` is a
  :class:`tuner.config.checks.CheckContext`: the validated file (``ctx.model``, ``ctx.workload``), its axes
  and objectives, its folder; ``raise ctx.error(loc, message)`` gives the one-line ``file:line: key: message``
  error every bad workload file gets, and ``ctx.check_backend()`` validates ``workload.backend`` and its
  options (call it when the kind drives a backend). Settings of a third-party kind go in
  ``workload.options`` (the workload section's other keys belong to the built-ins), searchable as
  ``options.<name>``; check them here. The default checks nothing.
* ``build_job(spec, params, model_path) -> dict`` (abstract) runs in the parent and turns one
  configuration into a JSON-serialisable job; tuner adds ``"kind"``. Heavy preparation belongs here
  (it is never timed): a generated input set, a resolved path. :func:`worker_job` builds the usual job
  of a kind that drives ``workload.backend``.
* Running it, one of two ways, chosen by ``runs_in_worker``:

  - ``runs_in_worker = True`` (default; ``pool``, ``pipeline``): the execution layer starts the trial's
    child process (``python -m tuner.execution.worker``), hands it the job, and inside it calls
    ``run_in_child(job, emit) -> {"metrics", "applied", "versions"}``; ``emit`` sends JSON events to the
    parent (``measure_start`` and ``measure_end`` around the measured part make the parent measure
    ``cpu_util``; :func:`tuner.measurement.steady_state.measure_steady_state` emits them). The parent
    watches the child's process tree (``peak_rss_mb``), the timeout and the memory limit, and turns a
    crash, a signal or a raised error into a failed trial.
  - ``runs_in_worker = False`` (``command``): the kind launches its own program and measures it in the
    parent: ``run(job, *, timeout_s, memory_limit_mb, on_event) -> TrialResult``, which never raises for
    a failed trial (it returns a :class:`~tuner.measurement.result.TrialResult` with a ``failure``);
    :func:`tuner.measurement.process.run_process` runs a program in its own session and watches its tree.

  The child process belongs to the execution layer, which sits above the workloads: so a kind never
  starts the worker itself; it says which half it implements and execution does the rest.
* ``host_threads(spec, params, usable_cores=)``: how many host threads the trial of ``params`` keeps
  computing at once, as a :class:`tuner.search.rules.HostThreads` (the count and, for the reason of a
  pruned config, where it comes from), or None when it waits on a device: a config whose count exceeds
  the usable cores is oversubscription, pruned unless ``study.allow_oversubscription``. ``pool`` asks its
  backend (``Backend.host_threads``, :func:`backend_host_threads`); ``pipeline`` the backend for its infer
  stage and its stages' workers; ``command`` nothing unless the file declares ``workload.host_threads``.
  The default counts ``pool_size x threads`` when ``cpu_bound(spec)`` (True by default; a kind written
  before ``host_threads`` existed may still override it) and None otherwise.
* ``serves_loadgen`` (class attribute, default False): the kind runs the LoadGen scenarios of ``load:``
  (``pool`` does: :meth:`tuner.workloads.pool.PoolWorkload.serve`); a file asking one of another kind is an
  error naming the kinds that do.
* ``guards_accuracy`` (class attribute, default False): the kind runs the accuracy guard (``accuracy:``, a
  ``precision`` option, an ``accuracy_*`` objective or constraint: ``pool`` does, through
  :mod:`tuner.workloads.accuracy_guard`); another kind given ``accuracy:`` is an error, and so is an
  ``accuracy_*`` metric for a kind that runs in the worker child.
* ``uses_backend(spec)``: whether the trial opens ``workload.backend``'s instances (then an
  ``onnxruntime`` model is checked as ONNX before any trial). Default False.

Every metric name follows the contract of :mod:`tuner.metrics`; a trial needs ``qps``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tuner.backends.registry import get_backend
from tuner.config.inputs import declared_inputs, plan_inputs
from tuner.errors import TunerError
from tuner.measurement.result import EventSink, TrialResult
from tuner.search.rules import HostThreads

if TYPE_CHECKING:
    from tuner.config.checks import CheckContext
    from tuner.config.spec import Spec


class WorkloadKind(ABC):
    """One workload kind; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    #: True: tuner runs :meth:`run_in_child` in the trial's worker process; False: tuner calls :meth:`run`
    runs_in_worker: ClassVar[bool] = True
    #: whether the kind runs ``load.scenario`` server / offline (MLPerf LoadGen drives it; ``pool`` does)
    serves_loadgen: ClassVar[bool] = False
    #: whether the kind runs the accuracy guard (``accuracy_*`` metrics; ``pool`` does)
    guards_accuracy: ClassVar[bool] = False

    def check(self, ctx: CheckContext) -> None:
        """Validate this kind's part of a loaded workload file; ``raise ctx.error(loc, message)``."""
        return None  # a kind with nothing of its own in the file checks nothing

    def host_threads(self, spec: Spec, params: Mapping[str, Any], *, usable_cores: int) -> HostThreads | None:
        """Host threads the trial of ``params`` computes on (None: device-bound); default ``pool_size x threads``."""
        if not self.cpu_bound(spec):
            return None
        pool_size, threads = int(params.get("pool_size", 1)), int(params.get("threads", 1))
        return HostThreads(pool_size * threads, f"pool_size {pool_size} x threads {threads}")

    def cpu_bound(self, spec: Spec) -> bool:
        """Whether the default :meth:`host_threads` counts ``pool_size x threads`` (a kind's older hook)."""
        return True

    def uses_backend(self, spec: Spec) -> bool:
        """Whether a trial opens instances of ``workload.backend``."""
        return False

    @abstractmethod
    def build_job(self, spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
        """The JSON job of one trial of ``params`` (in the parent)."""

    def run_in_child(self, job: dict[str, Any], emit: EventSink) -> dict[str, Any]:
        """Measure ``job`` in this (the worker child's) process: ``{"metrics", "applied", "versions"}``."""
        raise TunerError(f"workload kind {self.name!r} ({type(self).__name__}) does not run in a worker process")

    def run(
        self,
        job: Mapping[str, Any],
        *,
        timeout_s: float,
        memory_limit_mb: float | None = None,
        on_event: EventSink | None = None,
    ) -> TrialResult:
        """Measure ``job`` from the parent (kinds with ``runs_in_worker = False``); never raises for a failure."""
        raise TunerError(
            f"workload kind {self.name!r} ({type(self).__name__}) runs in the worker process; tuner starts it"
        )


def worker_job(spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
    """The job of a kind that drives ``workload.backend`` in the worker child.

    ``options`` are the fixed ``workload.options`` with the searched ``options.*`` of ``params`` applied;
    ``inputs`` the plan of the file's ``inputs:`` for ``params`` (:func:`tuner.config.inputs.plan_inputs`: concrete
    shapes, dtypes, data; ``{}`` when it declares none), which the instances get as ``RuntimeConfig.inputs``;
    ``measure`` the steady-state settings (without the repeat keys: the parent runs the repeats); ``load``
    the file's ``load`` section when it is not the closed loop (a LoadGen scenario after the closed-loop part).
    """
    job = {
        "backend": spec.workload.backend,
        "model": str(model_path) if model_path else None,
        "options": config_options(spec, params),
        "params": dict(params),
        "inputs": plan_inputs(declared_inputs(spec.workload), params, spec.base_dir),
        "measure": spec.measure.child_settings(),
        "spec_path": str(spec.path) if spec.path else None,
    }
    if spec.model.load.scenario != "closed":
        job["load"] = spec.model.load.model_dump(mode="json")
    return job


def config_options(spec: Spec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The backend options of one config: the fixed ``workload.options`` with its searched ``options.*``."""
    options = dict(spec.workload.options)
    for key, value in params.items():
        if key.startswith("options."):
            options[key[len("options.") :]] = value
    return options


def backend_host_threads(spec: Spec, params: Mapping[str, Any], *, usable_cores: int) -> HostThreads | None:
    """What ``workload.backend`` says a pool of ``params`` computes on (``Backend.host_threads``)."""
    backend = get_backend(spec.workload.backend)
    shape: dict[str, Any] = {
        "pool_size": int(params.get("pool_size", 1)),
        "threads": int(params.get("threads", 1)),
        "requests_per_sync": int(params.get("requests_per_sync", 1)),
        "options": config_options(spec, params),
        "usable_cores": usable_cores,
    }
    demand = backend.host_threads(**shape)
    if demand is None:
        return None
    count, origin = demand
    return HostThreads(int(count), origin)
