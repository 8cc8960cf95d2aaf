"""ONNX Runtime backend: one ``InferenceSession`` per pool instance.

Axes: ``threads`` -> ``intra_op_num_threads``; ``batch_size`` -> the model's dynamic batch dim (dimension 0,
or where the workload's ``inputs:`` put ``batch``); ``requests_per_sync`` -> that many ``session.run`` calls in
flight on the session at once (on driver threads: ``run`` releases the GIL and is thread-safe; ``run_async``
needs an intra-op pool of 2+ threads, so it cannot serve ``threads=1``). Options, fixed or searchable:
``inter_op_threads``, ``execution_mode``, ``graph_optimization_level``, ``allow_spinning``,
``thread_affinity``, ``provider``.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tuner.backends.base import Backend, Instance, RuntimeConfig
from tuner.errors import BackendError, ModelError
from tuner.models.feeds import Feed, make_array, resolve_feeds
from tuner.models.signature import Dim, ModelInput

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
    provider: str = "CPUExecutionProvider"


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
    def __init__(self, config: RuntimeConfig, session: Any, applied: dict[str, Any], feeds: tuple[Feed, ...]) -> None:
        super().__init__(config)
        self.session = session
        self.feeds = feeds
        self._applied = {**applied, "input_shapes": {f.name: list(f.shape) for f in feeds}}
        self._outputs = [o.name for o in session.get_outputs()]
        self._rng = np.random.default_rng(config.index)

    def prepare_inputs(self) -> dict[str, np.ndarray]:
        return {feed.name: make_array(feed, self._rng) for feed in self.feeds}

    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        return self.session.run(self._outputs, inputs)

    def applied_options(self) -> dict[str, Any]:
        return dict(self._applied)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    options_model = OrtOptions
    uses_feeds = True

    def open(self, config: RuntimeConfig) -> OrtInstance:
        import onnxruntime as ort

        opts: OrtOptions = self.options  # type: ignore[assignment]
        available = ort.get_available_providers()
        if opts.provider not in available:
            raise BackendError(f"provider {opts.provider!r} is not available here (available: {', '.join(available)})")
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
        try:
            session = ort.InferenceSession(str(self.model), sess_options=so, providers=[opts.provider])
        except Exception as err:  # ORT raises its own exception types
            raise ModelError(f"ONNX Runtime could not load {self.model}: {str(err).strip()}") from None
        applied = {
            "intra_op_num_threads": so.intra_op_num_threads,
            "inter_op_num_threads": so.inter_op_num_threads,
            "execution_mode": opts.execution_mode,
            "graph_optimization_level": opts.graph_optimization_level,
            "session.intra_op.allow_spinning": so.get_session_config_entry("session.intra_op.allow_spinning"),
            "session.intra_op_thread_affinities": opts.thread_affinity,
            "providers": session.get_providers(),
            "requests_in_flight": config.requests_per_sync,
        }
        # fail at load, not mid-measurement, on inputs the model cannot take as declared
        feeds = resolve_feeds(session_signature(session), config.inputs, config.batch_size)
        return OrtInstance(config, session, applied, feeds)

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

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}
