"""The backend protocol: what a runtime family must provide so the pool workload can drive it.

A *backend* is a runtime family (ONNX Runtime, OpenVINO, the ``sim`` device twin, a vendor NPU
runtime). It validates its fixed/searched ``options`` and opens *instances*. An *instance* is one
runtime of the pool (an ``InferenceSession``, a compiled model, an NPU context); the pool workload
drives each instance from its own worker.

Contract (every implementation runs ``tests/test_backend_contract.py``):

* ``Backend.__init__(model, options)`` validates ``options`` against ``options_model`` and raises
  :class:`~tuner.errors.BackendError` naming the bad option. It does not load anything heavy.
* ``Backend.open(config)`` loads one instance for ``config`` (threads, batch size, requests in flight,
  its index in the pool) and returns an :class:`Instance`. Errors are ``BackendError``/``ModelError``.
* ``Instance.prepare_inputs()`` returns one request's inputs (``batch_size`` samples); it is called
  before timing starts, so it may be slow.
* Inputs: ``RuntimeConfig.inputs`` is this configuration's plan of the workload's ``inputs:``
  (:func:`tuner.config.inputs.plan_inputs`: per input name its concrete ``shape`` with ``batch`` and the
  dimension axes filled in, ``batch_axis``, ``dtype`` and ``data``; empty when the file declares none). A
  backend that feeds real tensors reads the model's input signature, checks the plan against it in
  ``open`` with :func:`tuner.models.feeds.resolve_feeds` (so a bad declaration fails at load, never
  mid-measurement), keeps the result as ``Instance.feeds`` and makes each array with
  :func:`tuner.models.feeds.make_array` (so every backend feeds the same arrays, and the pool can say what
  it fed when the first request fails); it reports the shapes fed as ``applied_options()["input_shapes"]``
  (``{name: [dims]}``) and sets ``uses_feeds = True``, which makes the parent check the plan against the
  model file before any trial. A third-party backend may ignore ``inputs`` (``uses_feeds`` stays False and
  ``feeds`` empty): its instances feed what they feed.
* ``Instance.infer(inputs)`` runs one request to completion, blocking. It must be safe to call from
  ``requests_per_sync`` threads at once (the default :meth:`Instance.submit` does that).
* ``Instance.submit(inputs, done)`` starts one request and returns at once; ``done(error_or_None)``
  is called exactly once when it completes. Backends with a native async API (OpenVINO's
  ``AsyncInferQueue``) override it; the default runs ``infer`` on ``requests_per_sync`` driver threads,
  so that many requests are really in flight.
* ``Instance.applied_options()`` reports what the runtime actually applied/resolved (not only what
  was asked); ``Backend.versions()`` reports runtime versions for the platform fingerprint.
* ``Instance.close()`` releases the runtime; it is called once, even after an error.
* ``Backend.prepare(inputs)`` builds, in the parent before any trial, what its instances will open besides
  the model file (ONNX Runtime's and OpenVINO's precision variants, :mod:`tuner.models.precision`), so no
  build time lands in a trial; ``inputs`` is a config's plan (as ``RuntimeConfig.inputs``). It returns one
  record per file built or found (``{"precision", "path", "built", ...}``); the default builds nothing.
* ``Backend.host_threads(pool_size=, threads=, requests_per_sync=, options=, usable_cores=)`` (a
  classmethod, nothing loaded) says how many host threads a pool of its instances keeps computing at
  once, or None when they wait on a device (an NPU, a GPU, a modelled twin): the oversubscription rule
  prunes a config whose count exceeds the usable cores (unless ``study.allow_oversubscription``). The
  default is ``pool_size x threads`` when ``cpu_bound`` (the class attribute, True by default) and None
  when not, so a plugin that only sets ``cpu_bound = False`` is device-bound. Override it where the
  runtime spends host threads differently (ONNX Runtime's inter-op pool; OpenVINO's CPU plugin, which
  caps its threads at the cores). It returns the count with the few words a pruned config's reason gives
  for it: ``(4, "pool_size 2 x threads 2 on onnxruntime")``. ``options`` are the
  raw fixed and searched backend options of the config; ``usable_cores`` the cores this process may use.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tuner.errors import BackendError

if TYPE_CHECKING:
    from tuner.models.feeds import Feed

DoneCallback = Callable[[BaseException | None], None]


class NoOptions(BaseModel):
    """Options model of a backend that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RuntimeConfig:
    """What one pool instance is opened with."""

    threads: int = 1
    batch_size: int = 1
    requests_per_sync: int = 1
    pool_size: int = 1
    index: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: the plan of this config's declared inputs (:func:`tuner.config.inputs.plan_inputs`; JSON; empty: none)
    inputs: Mapping[str, Any] = field(default_factory=dict)


class Instance(ABC):
    """One runtime of the pool. See the module docstring for the contract."""

    #: what each model input is fed (:func:`tuner.models.feeds.resolve_feeds`); empty: the backend's own inputs
    feeds: tuple[Feed, ...] = ()

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def prepare_inputs(self) -> Any:
        """Return one request's inputs (``config.batch_size`` samples)."""

    @abstractmethod
    def infer(self, inputs: Any) -> Any:
        """Run one request to completion (blocking)."""

    def submit(self, inputs: Any, done: DoneCallback) -> None:
        """Start one request; call ``done(None)`` or ``done(error)`` exactly once when it ends."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, self.config.requests_per_sync),
                    thread_name_prefix=f"tuner-req-{self.config.index}",
                )
            executor = self._executor

        def _run() -> None:
            try:
                self.infer(inputs)
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                done(err)
            else:
                done(None)

        executor.submit(_run)

    def applied_options(self) -> dict[str, Any]:
        """Options the runtime actually applied or resolved."""
        return {}

    def close(self) -> None:
        """Release the runtime (and the default driver threads)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class Backend(ABC):
    """A runtime family. Subclasses set ``name`` and ``options_model`` and implement :meth:`open`."""

    name: ClassVar[str] = ""
    options_model: ClassVar[type[BaseModel]] = NoOptions
    #: whether this backend needs a model file (``sim`` does not)
    needs_model: ClassVar[bool] = True
    #: whether its instances compute on host cores; the default :meth:`host_threads` reads it (False: None)
    cpu_bound: ClassVar[bool] = True
    #: whether its instances feed ``RuntimeConfig.inputs`` through :mod:`tuner.models.feeds` (then the parent
    #: checks the workload's inputs against the model file before any trial)
    uses_feeds: ClassVar[bool] = False

    def __init__(self, model: Path | None, options: Mapping[str, Any] | None = None) -> None:
        if self.needs_model and model is None:
            raise BackendError(f"backend {self.name!r} needs a model (workload.model)")
        self.model = model
        self.options = self.validate_options(options or {})

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> BaseModel:
        """Validate ``options`` with ``options_model``; raise ``BackendError`` naming the option."""
        try:
            return cls.options_model.model_validate(dict(options))
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "options"
            valid = ", ".join(sorted(cls.options_model.model_fields)) or "none"
            value = first.get("input")
            raise BackendError(
                f"backend {cls.name!r}: option {key!r} = {value!r}: {first['msg']} (valid options: {valid})"
            ) from None

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(cls.options_model.model_fields)

    @classmethod
    def host_threads(
        cls,
        *,
        pool_size: int,
        threads: int,
        requests_per_sync: int,
        options: Mapping[str, Any],
        usable_cores: int,
    ) -> tuple[int, str] | None:
        """``(host threads a pool of pool_size instances keeps computing at once, how that adds up)``.

        The second item is the few words a pruned config's reason gives for the count; None: device-bound.
        Default: ``pool_size x threads`` for a ``cpu_bound`` backend (each instance computes on its
        ``threads``; the requests in flight share them), None otherwise.
        """
        if not cls.cpu_bound:
            return None
        return pool_size * threads, f"pool_size {pool_size} x threads {threads} on {cls.name}"

    @abstractmethod
    def open(self, config: RuntimeConfig) -> Instance:
        """Load one instance for ``config``."""

    def prepare(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Build what instances of these options open besides the model (in the parent, before any trial)."""
        return []

    def versions(self) -> dict[str, str]:
        """Runtime versions, e.g. ``{"onnxruntime": "1.20.1"}``."""
        return {}
