"""ONNX Runtime backend: one ``InferenceSession`` per pool instance.

Axes: ``threads`` -> ``intra_op_num_threads``; ``batch_size`` -> the model's dynamic batch dim (dimension 0,
or where the workload's ``inputs:`` put ``batch``); ``requests_per_sync`` -> that many ``session.run`` calls in
flight on the session at once (on driver threads: ``run`` releases the GIL and is thread-safe; ``run_async``
needs an intra-op pool of 2+ threads, so it cannot serve ``threads=1``). Options, fixed or searchable:
``inter_op_threads``, ``execution_mode``, ``graph_optimization_level``, ``allow_spinning``,
``thread_affinity``, ``provider``, ``precision``, ``quantization``.

Precision (issue 15): ``precision: fp32 | int8 | int8-dynamic | fp16`` (default ``fp32``, the model file as
it is) makes the session open a variant of the model built by :func:`tuner.models.precision.ort_variant`:
static QDQ int8 (calibrated), dynamic int8 (weights only) or fp16 (feeds and outputs stay float32). The
variant is built in the parent before any trial (:meth:`OnnxRuntimeBackend.prepare`, the pre-flight of
:func:`tuner.execution.runner.resolve_model_path`) and cached per source model sha256, precision and
settings; a trial finds it in the cache (one that does not builds it at load, never in the measured part).
``quantization`` holds the int8 settings (:class:`tuner.models.precision.QuantizationSettings`)::

    quantization: {method: minmax | entropy | percentile, per_channel: true, activation_type: uint8 | int8,
                   reduce_range: false, samples: 32, seed: 0, data: {<input>: <data form of inputs:>}}

``int8`` uses them all (calibration: ``samples`` feeds of the workload's inputs at batch 1, made with
``seed``, or ``data``'s source for an input; absolute paths); ``int8-dynamic`` only ``per_channel`` and
``reduce_range``; ``fp16`` none. ``applied_options()["precision"]`` is the precision the session ran and
``["variant"]`` the file (``path``, ``sha256``, ``source``, ``source_sha256``, ``key``, ``settings``; None
for fp32).

Inputs: the session's own signature (``session.get_inputs()``) checked against ``RuntimeConfig.inputs`` by
:func:`tuner.models.feeds.resolve_feeds` when the session opens (a bad declaration fails at load), arrays made
by :func:`tuner.models.feeds.make_array`; ``applied_options()["input_shapes"]`` holds the shapes fed. A
model saved with external data (``model.onnx`` + ``model.onnx.data``) loads from its folder.

Host threads (the oversubscription rule, :meth:`OnnxRuntimeBackend.host_threads`): a session computes on
its intra-op pool, ``intra_op_num_threads = threads`` of them counting the thread that calls ``run`` (ORT
starts ``threads - 1`` pool threads and the caller joins in). In ``execution_mode: parallel`` ORT adds an
inter-op pool that runs up to ``inter_op_threads`` independent nodes at once, each on its own thread, and
each of those threads joins the intra-op pool for the node's parallel loops: up to ``threads - 1 +
inter_op_threads`` busy threads (``inter_op_threads: 0`` lets ORT size that pool to the physical cores). In
sequential mode ORT ignores ``inter_op_threads``. A pool is ``pool_size`` such sessions. Not counted: the
``requests_per_sync - 1`` further ``run`` callers of a session (they share its intra-op pool; the search
measures whether more requests in flight pay). A provider that is not a CPU one (CUDA, TensorRT, ...)
computes on its device: no host-thread count (None).

Providers (issue 16, :mod:`tuner.backends.ort_providers`): ``provider`` is ``CPU``, ``CUDA``, ``TensorRT`` or
any ORT provider name; ``provider_options`` one mapping of options per provider (searchable one by one as
``options.provider_options.<Provider>.<key>``; a provider the session does not use ignores its options);
``io_binding: true`` binds each prepared request's inputs and outputs on the provider's device.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuner.backends.base import Backend, Instance, RuntimeConfig
from tuner.backends.ort_providers import (
    IoBinder,
    ProviderOptions,
    ProviderPlan,
    engine_cached,
    fold_provider_options,
    missing_provider_hint,
    provider_name,
    searchable_provider_options,
)
from tuner.errors import BackendError, ModelError
from tuner.models.feeds import Feed, make_array, resolve_feeds
from tuner.models.precision import OrtPrecision, QuantizationSettings, Variant
from tuner.models.signature import Dim, ModelInput, read_signature

#: ONNX Runtime's input types -> numpy dtype names (any other type is refused by resolve_feeds, naming it)
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def session_signature(session: Any) -> tuple[ModelInput, ...]:
    """The session's inputs as a signature: fixed dims as ints, named open dims as their names, others None."""
    out = []
    for meta in session.get_inputs():
        shape = meta.shape
        dims: tuple[Dim, ...] | None = None
        if shape is not None:
            dims = tuple(
                d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else None) for d in shape
            )
        out.append(ModelInput(meta.name, ORT_DTYPES.get(meta.type, meta.type), dims))
    return tuple(out)


class OrtOptions(BaseModel):
    """Session options tuner applies (anything else stays at ONNX Runtime's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inter_op_threads: int = Field(0, ge=0, le=1024, description="inter-op threads (0 = ORT default)")
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    allow_spinning: bool = Field(True, description="session.intra_op.allow_spinning")
    thread_affinity: str | None = Field(
        None, description="session.intra_op_thread_affinities, e.g. '1;2' (threads - 1 groups)"
    )
    provider: str = Field("CPUExecutionProvider", description="CPU, CUDA, TensorRT or an ORT provider name")
    provider_options: ProviderOptions = Field(
        default_factory=ProviderOptions, description="per provider: {CPU: {}, CUDA: {...}, TensorRT: {...}}"
    )
    io_binding: bool = Field(False, description="bind inputs and outputs on the provider's device (IOBinding)")
    precision: OrtPrecision = Field("fp32", description="the model variant the session opens (tuner.models.precision)")
    quantization: QuantizationSettings = Field(
        default_factory=QuantizationSettings, description="int8 calibration settings (see the module docstring)"
    )

    @model_validator(mode="before")
    @classmethod
    def fold_searched_provider_options(cls, data: Any) -> Any:
        """``provider_options.<Provider>.<key>`` (a searched axis) into ``provider_options`` (ort_providers)."""
        return fold_provider_options(data)

    @field_validator("provider")
    @classmethod
    def known_provider(cls, value: str) -> str:
        """``CUDA`` -> ``CUDAExecutionProvider`` (:func:`tuner.backends.ort_providers.provider_name`)."""
        return provider_name(value)


#: execution providers that compute on the host's cores (any other one is a device: no host-thread count)
CPU_PROVIDERS = frozenset(
    {"CPUExecutionProvider", "DnnlExecutionProvider", "XnnpackExecutionProvider", "ACLExecutionProvider"}
)


def _session_threads(opts: OrtOptions, threads: int) -> tuple[int, str]:
    """Busy threads of one session and how they add up (see the module docstring)."""
    if opts.execution_mode != "parallel":
        return threads, f"threads {threads}"
    inter, named = opts.inter_op_threads, f"inter_op_threads {opts.inter_op_threads}"
    if inter == 0:
        import psutil

        inter = psutil.cpu_count(logical=False) or 1
        named = f"inter_op_threads {inter} (ORT's default: the physical cores)"
    inter = max(1, inter)
    return threads - 1 + inter, f"(threads {threads} - 1 + {named}, execution_mode parallel)"


class OrtInstance(Instance):
    def __init__(
        self,
        config: RuntimeConfig,
        session: Any,
        applied: dict[str, Any],
        feeds: tuple[Feed, ...],
        binder: IoBinder | None = None,
    ) -> None:
        super().__init__(config)
        #: io_binding: requests run through ONNX Runtime's IOBinding (tuner.backends.ort_providers.IoBinder)
        self.binder = binder
        self.session = session
        self.feeds = feeds
        self._applied = {**applied, "input_shapes": {f.name: list(f.shape) for f in feeds}}
        self._outputs = [o.name for o in session.get_outputs()]
        self._rng = np.random.default_rng(config.index)

    def prepare_inputs(self) -> dict[str, np.ndarray]:
        arrays = {feed.name: make_array(feed, self._rng) for feed in self.feeds}
        return self.binder.prepare(arrays) if self.binder is not None else arrays

    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        if self.binder is not None:
            return self.binder.run(inputs)
        return self.session.run(self._outputs, inputs)

    def applied_options(self) -> dict[str, Any]:
        return dict(self._applied)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    options_model = OrtOptions
    uses_feeds = True

    def __init__(self, model: Path | None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self._variants: dict[str, Variant] = {}
        self._cache_dir: Path | None = None
        if self.options.precision != "fp32":  # type: ignore[attr-defined]
            from tuner.models.zoo import default_cache_dir

            self._cache_dir = default_cache_dir()  # resolved (its module imported) before a trial times its load

    def open(self, config: RuntimeConfig) -> OrtInstance:
        import onnxruntime as ort

        opts: OrtOptions = self.options  # type: ignore[assignment]
        available = ort.get_available_providers()
        if opts.provider not in available:
            raise BackendError(
                f"provider {opts.provider!r} is not available here (available: {', '.join(available)})"
                + missing_provider_hint(opts.provider)
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = config.threads
        if opts.inter_op_threads:
            so.inter_op_num_threads = opts.inter_op_threads
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if opts.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opts.graph_optimization_level]
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.allow_spinning else "0")
        if opts.thread_affinity:
            groups = opts.thread_affinity.split(";")
            if len(groups) != config.threads - 1:
                raise BackendError(
                    f"thread_affinity {opts.thread_affinity!r} has {len(groups)} group(s); with threads = "
                    f"{config.threads} ONNX Runtime expects threads - 1 = {config.threads - 1}"
                )
            so.add_session_config_entry("session.intra_op_thread_affinities", opts.thread_affinity)
        so.log_severity_level = 3
        model_file, variant = self.model_file(config.inputs)
        shapes: dict[str, tuple[int, ...]] = {}
        if engine_cached(opts.provider, opts.provider_options):  # the engine folder is keyed by the shapes fed
            fed = resolve_feeds(read_signature(model_file), config.inputs, config.batch_size)
            shapes = {f.name: f.shape for f in fed}
        plan = ProviderPlan.build(
            opts.provider,
            opts.provider_options,
            io_binding=opts.io_binding,
            requests_per_sync=config.requests_per_sync,
            model=model_file,
            shapes=shapes,
            ort_version=ort.__version__,
        )
        try:
            sessions = [
                ort.InferenceSession(str(model_file), sess_options=so, providers=plan.providers)
                for _ in range(plan.sessions)
            ]
            session = sessions[0]
        except Exception as err:  # ORT raises its own exception types
            raise ModelError(f"ONNX Runtime could not load {model_file}: {str(err).strip()}") from None
        applied = {
            "intra_op_num_threads": so.intra_op_num_threads,
            "inter_op_num_threads": so.inter_op_num_threads,
            "execution_mode": opts.execution_mode,
            "graph_optimization_level": opts.graph_optimization_level,
            "session.intra_op.allow_spinning": so.get_session_config_entry("session.intra_op.allow_spinning"),
            "session.intra_op_thread_affinities": opts.thread_affinity,
            "providers": session.get_providers(),
            "requests_in_flight": config.requests_per_sync,
            "precision": opts.precision,
            "variant": variant.record() if variant is not None else None,
            **plan.applied(session),
        }
        # fail at load, not mid-measurement, on inputs the model cannot take as declared
        feeds = resolve_feeds(session_signature(session), config.inputs, config.batch_size)
        plan.check_sessions(sessions)
        plan.warm_up(sessions, {f.name: make_array(f, np.random.default_rng(config.index)) for f in feeds})
        binder = IoBinder(sessions, plan.binding, cuda_graph=plan.cuda_graph) if plan.binding is not None else None
        return OrtInstance(config, session, applied, feeds, binder)

    def model_file(self, inputs: Mapping[str, Any] | None = None) -> tuple[Path, Variant | None]:
        """The file a session opens: the model (``fp32``), or its ``precision`` variant for the plan ``inputs``
        (built on first use; cached on disk and, per plan, in this backend)."""
        from tuner.models.precision import ort_variant

        opts: OrtOptions = self.options  # type: ignore[assignment]
        assert self.model is not None
        if opts.precision == "fp32":
            return Path(self.model), None
        memo = json.dumps(inputs or {}, sort_keys=True, default=str)
        variant = self._variants.get(memo)
        if variant is None:
            variant = ort_variant(
                Path(self.model), opts.precision, opts.quantization, inputs, cache_dir=self._cache_dir
            )
            self._variants[memo] = variant
        return variant.path, variant

    def prepare(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pre-flight: build (or find) the ``precision`` variant for the plan ``inputs``; its record."""
        _path, variant = self.model_file(inputs)
        return [] if variant is None else [{**variant.record(), "built": variant.built}]

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
        """``pool_size`` x a session's busy threads: ``threads``, plus ``inter_op_threads - 1`` when parallel."""
        opts: OrtOptions = cls.validate_options(options)  # type: ignore[assignment]
        if opts.provider not in CPU_PROVIDERS:
            return None
        busy, how = _session_threads(opts, threads)
        return pool_size * busy, f"pool_size {pool_size} x {how} on {cls.name}"

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options, and every provider option as the flat name a search axis uses (ort_providers)."""
        return (*super().option_names(), *searchable_provider_options())

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}
