"""ONNX Runtime execution providers: names, per-provider options, the providers list, IOBinding, CUDA graphs.

``options.provider`` names the session's provider: ``CPU``, ``CUDA``, ``TensorRT`` (or any ONNX Runtime
provider name, e.g. ``DnnlExecutionProvider``). ``options.provider_options`` holds one mapping per provider,
validated against that provider's model here (an unknown key names the provider and its valid keys)::

    options:
      provider: CUDA
      io_binding: true
      provider_options:
        CUDA: {cudnn_conv_algo_search: HEURISTIC, arena_extend_strategy: kSameAsRequested}
        TensorRT: {trt_fp16_enable: true}
    search:
      options.provider: [CUDA, TensorRT]
      options.provider_options.CUDA.cudnn_conv_algo_search: [EXHAUSTIVE, HEURISTIC]

A provider option is searched as ``options.provider_options.<Provider>.<key>`` (one flat axis; the dotted
key is folded back into the mapping, :func:`fold_provider_options`; the same key fixed and searched is an
error). The rule for options of a provider the session does not use: they are **ignored**, and the trial's
``applied_options()["provider_options_ignored"]`` lists them. That is what lets ``options.provider`` be
searched with the options of every candidate written once (a CPU trial ignores ``CUDA:``); a TensorRT
session also uses the ``CUDA:`` options, for the nodes TensorRT leaves to its CUDA fallback.

Sessions' providers (:func:`session_providers`): ``CPU`` -> ``[CPU]``; ``CUDA`` -> ``[CUDA, CPU]``;
``TensorRT`` -> ``[TensorRT, CUDA, CPU]`` (the fallback CUDA provider runs on TensorRT's ``device_id``).

TensorRT engines are cached (``trt_engine_cache_enable``, default on) in a folder keyed by the model file's
sha256, the ONNX Runtime and TensorRT versions, the input shapes fed and the engine-build options
(:func:`engine_cache_dir`), under ``trt_engine_cache_path`` (default ``<tuner cache>/trt-engines``): an
engine built for another model, runtime, shape or precision is never reused. The engine is built while the
instance opens (one warm-up request in :meth:`ProviderPlan.warm_up`), so its build time is ``load_s`` and never
measured time.

IOBinding (``io_binding: true``, :class:`IoBinder`): a prepared request's inputs are copied to the
provider's device once, when it is prepared (before timing), and bound with its outputs on the device, so
a measured request copies nothing between host and device: the figure of a deployment whose inputs are
already on the GPU. Inputs that arrive as host arrays at request time (a pipeline's batches) are copied in
and their outputs copied back within the request: the deployment makes those copies, so they are measured.
ONNX Runtime's CPU provider binds on device ``cpu`` (the same API runs; this is what CI tests).

CUDA graphs (``provider_options.CUDA.enable_cuda_graph``): ONNX Runtime captures the session's kernels on
the first runs and then replays them on the same device buffers, so they need ``io_binding: true``, fixed
input shapes (each instance feeds one shape) and outputs preallocated on the device (done here from one
run), and one captured graph runs on one session at a time: the instance opens one session per driver
thread (``requests_per_sync`` of them), each request slot bound to its own session. Host arrays cannot be
fed to a captured graph (an error naming the rule).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import BackendError
from tuner.models.precision import file_sha256
from tuner.text import first_line

#: the short names a workload file uses -> ONNX Runtime's provider names
PROVIDERS: dict[str, str] = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "TensorRT": "TensorrtExecutionProvider",
}
#: providers that compute on an NVIDIA GPU (their IOBinding device is ``cuda``)
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
#: the pip line that brings the GPU providers (onnxruntime-gpu replaces onnxruntime)
GPU_INSTALL = "pip uninstall onnxruntime && pip install 'tuner[gpu]' (onnxruntime-gpu)"
PROVIDER_OPTIONS_KEY = "provider_options"


def provider_name(value: str) -> str:
    """ONNX Runtime's name of provider ``value``: a short name (any case) or a full ``...ExecutionProvider``."""
    for short, full in PROVIDERS.items():
        if value.lower() in (short.lower(), full.lower()):
            return full
    if value.endswith("ExecutionProvider"):
        return value
    raise ValueError(
        f"unknown provider {value!r}: expected {', '.join(PROVIDERS)} or an ONNX Runtime provider name ending in "
        "'ExecutionProvider'"
    )


def short_name(provider: str) -> str | None:
    """``CPU`` / ``CUDA`` / ``TensorRT`` for one of those providers (either spelling); None for another one."""
    try:
        full = provider_name(provider)
    except ValueError:
        return None
    return next((short for short, name in PROVIDERS.items() if name == full), None)


# ------------------------------------------------------------------------------------------ options


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def given(self) -> dict[str, Any]:
        """The options the file set (the others stay at ONNX Runtime's defaults)."""
        return {k: getattr(self, k) for k in self.model_fields_set}


class CpuProviderOptions(_Options):
    """The CPU provider takes no provider options (its threads are ``threads`` and the session options)."""


class CudaProviderOptions(_Options):
    """ONNX Runtime's CUDA provider options tuner passes through (the others keep ORT's defaults)."""

    device_id: int = Field(0, ge=0, le=63, description="the GPU the session runs on")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kNextPowerOfTwo"
    gpu_mem_limit: int | None = Field(None, gt=0, description="the CUDA arena's limit in bytes (None: no limit)")
    enable_cuda_graph: bool = False


class TensorrtProviderOptions(_Options):
    """ONNX Runtime's TensorRT provider options tuner passes through."""

    device_id: int = Field(0, ge=0, le=63)
    trt_fp16_enable: bool = False
    trt_int8_enable: bool = False
    trt_engine_cache_enable: bool = True
    trt_engine_cache_path: str | None = Field(None, description="root of the keyed engine folders")
    trt_max_workspace_size: int | None = Field(None, gt=0, description="bytes")
    trt_builder_optimization_level: int | None = Field(None, ge=0, le=5)


#: short provider name -> its options model
OPTION_MODELS: dict[str, type[_Options]] = {
    "CPU": CpuProviderOptions,
    "CUDA": CudaProviderOptions,
    "TensorRT": TensorrtProviderOptions,
}


class ProviderOptions(BaseModel):
    """``options.provider_options``: one mapping per provider, keyed ``CPU`` / ``CUDA`` / ``TensorRT``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    CPU: CpuProviderOptions = Field(default_factory=CpuProviderOptions)
    CUDA: CudaProviderOptions = Field(default_factory=CudaProviderOptions)
    TensorRT: TensorrtProviderOptions = Field(default_factory=TensorrtProviderOptions)

    @model_validator(mode="before")
    @classmethod
    def check_keys(cls, data: Any) -> Any:
        """Provider keys in either spelling; an unknown provider or option is one message naming the valid ones."""
        if isinstance(data, ProviderOptions):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping of provider -> options ({', '.join(PROVIDERS)}), got {data!r}")
        out: dict[str, Any] = {}
        for key, value in data.items():
            short = short_name(str(key))
            if short is None:
                raise ValueError(f"unknown provider {key!r} (valid: {', '.join(PROVIDERS)})")
            if not isinstance(value, Mapping):
                raise ValueError(f"{short}: expected a mapping of option -> value, got {value!r}")
            valid = tuple(OPTION_MODELS[short].model_fields)
            for name in value:
                if name not in valid:
                    raise ValueError(
                        f"unknown option {name!r} of provider {short} (valid: {', '.join(valid) or 'none'})"
                    )
            try:
                OPTION_MODELS[short].model_validate(dict(value))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"{short}.{where} = {first.get('input')!r}: {first['msg']}") from None
            out[short] = dict(value)
        return out

    def ignored(self, used: Sequence[str]) -> list[str]:
        """The providers with options set that a session using ``used`` (ORT names) ignores."""
        used_short = {short_name(p) for p in used}
        return [s for s in PROVIDERS if getattr(self, s).model_fields_set and s not in used_short]


def searchable_provider_options() -> tuple[str, ...]:
    """Every provider option as the flat option name a search axis uses: ``provider_options.CUDA.device_id``."""
    return tuple(
        f"{PROVIDER_OPTIONS_KEY}.{short}.{name}"
        for short, model in OPTION_MODELS.items()
        for name in model.model_fields
    )


def fold_provider_options(data: Any) -> Any:
    """Fold flat ``provider_options.<Provider>.<key>`` options (a searched axis) into ``provider_options``."""
    if not isinstance(data, Mapping):
        return data
    prefix = PROVIDER_OPTIONS_KEY + "."
    dotted = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith(prefix)}
    if not dotted:
        return data
    out = {k: v for k, v in data.items() if k not in dotted}
    nested = out.get(PROVIDER_OPTIONS_KEY) or {}
    if not isinstance(nested, Mapping):
        return data  # the mapping's own validation names the problem
    merged: dict[str, dict[str, Any]] = {str(p): dict(v) if isinstance(v, Mapping) else v for p, v in nested.items()}
    for key, value in dotted.items():
        provider, _, name = key[len(prefix) :].partition(".")
        short = short_name(provider) or provider
        if not name:
            raise ValueError(f"{key!r}: expected {PROVIDER_OPTIONS_KEY}.<provider>.<option>")
        slot = merged.setdefault(short, {})
        if not isinstance(slot, dict):
            return data
        if name in slot:
            raise ValueError(f"{key!r} is set twice (in {PROVIDER_OPTIONS_KEY}.{short} and as {key}); keep one")
        slot[name] = value
    out[PROVIDER_OPTIONS_KEY] = merged
    return out


# ------------------------------------------------------------------------------------------ providers list

ProviderEntry = str | tuple[str, dict[str, str]]


def _ort_value(value: Any) -> str:
    """ONNX Runtime's provider options are strings; its parsers take ``True``/``False`` for booleans."""
    return str(bool(value)) if isinstance(value, bool) else str(value)


def cuda_options(options: CudaProviderOptions, device_id: int | None = None) -> dict[str, str]:
    given = options.given()
    if device_id is not None:
        given["device_id"] = device_id
    return {k: _ort_value(v) for k, v in sorted(given.items()) if v is not None}


def trt_options(options: TensorrtProviderOptions, cache_dir: Path | None) -> dict[str, str]:
    given = {k: v for k, v in options.given().items() if k not in ("trt_engine_cache_enable", "trt_engine_cache_path")}
    given["trt_engine_cache_enable"] = cache_dir is not None
    if cache_dir is not None:
        given["trt_engine_cache_path"] = str(cache_dir)
    return {k: _ort_value(v) for k, v in sorted(given.items()) if v is not None}


def session_providers(
    provider: str, options: ProviderOptions, *, trt_cache_dir: Path | None = None
) -> list[ProviderEntry]:
    """The ``providers=`` list of an ``InferenceSession`` on ``provider`` (ORT's name) with its options."""
    if provider == PROVIDERS["TensorRT"]:
        trt = options.TensorRT
        return [
            (provider, trt_options(trt, trt_cache_dir)),
            (PROVIDERS["CUDA"], cuda_options(options.CUDA, device_id=trt.device_id)),
            PROVIDERS["CPU"],
        ]
    if provider == PROVIDERS["CUDA"]:
        return [(provider, cuda_options(options.CUDA)), PROVIDERS["CPU"]]
    return [provider]


def binding_device(provider: str, options: ProviderOptions) -> tuple[str, int]:
    """The IOBinding device of a session on ``provider``: ``("cuda", device_id)`` on a GPU, else ``("cpu", 0)``."""
    if provider == PROVIDERS["TensorRT"]:
        return "cuda", options.TensorRT.device_id
    if provider == PROVIDERS["CUDA"]:
        return "cuda", options.CUDA.device_id
    return "cpu", 0


def missing_provider_hint(provider: str) -> str:
    """What to install for a provider that is not available here ('' when tuner knows no install line)."""
    return f"; for {short_name(provider)}: {GPU_INSTALL}" if provider in GPU_PROVIDERS else ""


# ------------------------------------------------------------------------------------------ TensorRT engines


def engine_cache_dir(
    root: Path,
    *,
    model_sha256: str,
    ort_version: str,
    trt_version: str,
    shapes: Mapping[str, Sequence[int]],
    build: Mapping[str, Any],
) -> Path:
    """The engine folder of one (model, ORT version, TensorRT version, input shapes, build options) under ``root``.

    A pure function: ``<root>/<sha256[:12]>-ort<ver>-trt<ver>-<key>``, where ``key`` hashes all of them
    (the shapes by input name, the build options: precision, workspace, optimization level). Any change
    of one of them is another folder, so ONNX Runtime never loads an engine built for something else.
    """
    key = json.dumps(
        {
            "model": model_sha256,
            "onnxruntime": ort_version,
            "tensorrt": trt_version,
            "shapes": {name: [int(d) for d in dims] for name, dims in sorted(shapes.items())},
            "build": {k: build[k] for k in sorted(build)},
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]

    def clean(text: str) -> str:
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)

    return Path(root) / f"{model_sha256[:12]}-ort{clean(ort_version)}-trt{clean(trt_version)}-{digest}"


#: TensorRT options that change the engine built (part of its cache key)
ENGINE_BUILD_OPTIONS = (
    "trt_fp16_enable",
    "trt_int8_enable",
    "trt_max_workspace_size",
    "trt_builder_optimization_level",
)


def engine_cached(provider: str, options: ProviderOptions) -> bool:
    """Whether a session on ``provider`` keeps TensorRT engines in a keyed folder (then it needs the shapes fed)."""
    return provider == PROVIDERS["TensorRT"] and options.TensorRT.trt_engine_cache_enable


def tensorrt_version() -> str:
    """The TensorRT version ONNX Runtime will load: the ``tensorrt`` package's, else libnvinfer's own number."""
    try:
        import tensorrt  # type: ignore[import-not-found]

        return str(tensorrt.__version__)
    except ImportError:
        pass
    import ctypes

    for soname in ("libnvinfer.so.10", "libnvinfer.so.9", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(soname)
        except OSError:
            continue
        try:
            return f"lib{int(lib.getInferLibVersion())}"
        except AttributeError:
            continue
    return "unknown"


def default_engine_root() -> Path:
    from tuner.models.zoo import default_cache_dir

    return default_cache_dir() / "trt-engines"


# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class ProviderPlan:
    """How the sessions of one instance are opened on their provider, and how they are run."""

    provider: str
    providers: list[ProviderEntry]
    #: the IOBinding device, or None: plain ``session.run`` on host arrays
    binding: tuple[str, int] | None
    cuda_graph: bool
    #: sessions per instance: one per driver thread with a CUDA graph, else one
    sessions: int
    trt_cache_dir: Path | None = None
    ignored: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        provider: str,
        options: ProviderOptions,
        *,
        io_binding: bool,
        requests_per_sync: int,
        model: Path | None,
        shapes: Mapping[str, Sequence[int]] | None = None,
        ort_version: str = "",
    ) -> ProviderPlan:
        """The plan of ``provider``; a CUDA graph without IOBinding is a :class:`BackendError` naming the rule.

        ``shapes`` (input name -> the shape fed) and ``model`` key the TensorRT engine folder.
        """
        cuda_graph = provider == PROVIDERS["CUDA"] and options.CUDA.enable_cuda_graph
        if cuda_graph and not io_binding:
            raise BackendError(
                "provider_options.CUDA.enable_cuda_graph replays the captured kernels on the same device buffers: "
                "set options.io_binding: true"
            )
        cache_dir = None
        trt = options.TensorRT
        if engine_cached(provider, options):
            root = Path(trt.trt_engine_cache_path).expanduser() if trt.trt_engine_cache_path else default_engine_root()
            build = {k: getattr(trt, k) for k in ENGINE_BUILD_OPTIONS}
            cache_dir = engine_cache_dir(
                root,
                model_sha256=file_sha256(model) if model is not None else "none",
                ort_version=ort_version,
                trt_version=tensorrt_version(),
                shapes=shapes or {},
                build=build,
            )
            cache_dir.mkdir(parents=True, exist_ok=True)
        providers = session_providers(provider, options, trt_cache_dir=cache_dir)
        used = [p if isinstance(p, str) else p[0] for p in providers]
        return cls(
            provider=provider,
            providers=providers,
            binding=binding_device(provider, options) if io_binding else None,
            cuda_graph=cuda_graph,
            sessions=max(1, requests_per_sync) if cuda_graph else 1,
            trt_cache_dir=cache_dir,
            ignored=tuple(options.ignored(used)),
        )

    def applied(self, session: Any) -> dict[str, Any]:
        """What the plan applied, for ``applied_options()``: ORT's resolved provider options among them."""
        out: dict[str, Any] = {
            "provider_options": {k: dict(v) for k, v in session.get_provider_options().items()},
            "io_binding": None if self.binding is None else f"{self.binding[0]}:{self.binding[1]}",
            "sessions_per_instance": self.sessions,
        }
        if self.cuda_graph:
            out["cuda_graph"] = "one session per driver thread, inputs and outputs fixed on the device"
        if self.trt_cache_dir is not None:
            out["trt_engine_cache"] = str(self.trt_cache_dir)
        if self.ignored:
            out["provider_options_ignored"] = list(self.ignored)
        return out

    def check_sessions(self, sessions: Sequence[Any]) -> None:
        """Each session runs on the provider asked for: ONNX Runtime's Python API falls back to the next ones
        (with a warning on stderr) when a provider's libraries do not load, and a trial measured on the fallback
        must not be recorded as the provider's."""
        for session in sessions:
            got = session.get_providers()
            if not got or got[0] != self.provider:
                raise BackendError(
                    f"provider {self.provider!r} did not load (ONNX Runtime fell back to {', '.join(got) or 'none'}; "
                    f"its reason is on stderr): check the CUDA, cuDNN and TensorRT libraries it needs"
                )

    def warm_up(self, sessions: Sequence[Any], arrays: Mapping[str, np.ndarray]) -> None:
        """TensorRT: one request per session while the instance opens, so the engine build is in ``load_s``."""
        if self.provider != PROVIDERS["TensorRT"]:
            return
        for session in sessions:
            try:
                session.run(None, dict(arrays))
            except Exception as err:  # noqa: BLE001 - ORT raises its own types
                raise BackendError(
                    f"TensorRT engine build (the warm-up request at load) failed: {first_line(err)}"
                ) from None


# ------------------------------------------------------------------------------------------ IOBinding


class BoundFeed(dict):  # type: ignore[type-arg]
    """One prepared request with IOBinding: the host arrays (a dict, as every backend's inputs) and their
    binding on the device of one session (inputs copied there once, outputs bound there)."""

    def __init__(
        self, arrays: Mapping[str, np.ndarray], *, session: Any, binding: Any, device_values: list[Any]
    ) -> None:
        super().__init__(arrays)
        self.session = session
        self.binding = binding
        self.device_values = device_values  # the OrtValues the binding points at (kept alive with it)


#: ONNX Runtime's output types -> numpy dtypes (the outputs a CUDA graph gets preallocated)
_OUTPUT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def output_shapes(session: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[list[int], Any]]:
    """Each output's concrete shape and dtype for the inputs ``arrays``, from the session's signature: a named
    open dimension takes the size the inputs give the same name (``batch``). Anything else is a
    :class:`BackendError`: a CUDA graph needs outputs of a shape known before the first run."""
    sizes: dict[str, int] = {}
    for meta in session.get_inputs():
        for dim, size in zip(meta.shape or (), np.shape(arrays[meta.name]), strict=False):
            if isinstance(dim, str) and dim:
                sizes.setdefault(dim, int(size))
    out: dict[str, tuple[list[int], Any]] = {}
    for meta in session.get_outputs():
        shape = []
        for dim in meta.shape or ():
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str) and dim in sizes:
                shape.append(sizes[dim])
            else:
                raise BackendError(
                    f"provider_options.CUDA.enable_cuda_graph needs outputs of a known shape: output {meta.name!r} "
                    f"{list(meta.shape or [])} has dimension {dim!r}, which no input fixes"
                )
        if meta.type not in _OUTPUT_DTYPES:
            raise BackendError(f"enable_cuda_graph: output {meta.name!r} has unsupported type {meta.type}")
        out[meta.name] = (shape, _OUTPUT_DTYPES[meta.type])
    return out


class IoBinder:
    """Runs an instance's requests through ONNX Runtime's IOBinding (see the module docstring)."""

    def __init__(self, sessions: Sequence[Any], device: tuple[str, int], *, cuda_graph: bool) -> None:
        self.sessions = list(sessions)
        self.device_type, self.device_id = device
        self.cuda_graph = cuda_graph
        self.outputs = [o.name for o in self.sessions[0].get_outputs()]
        self._next = 0

    def prepare(self, arrays: Mapping[str, np.ndarray]) -> BoundFeed:
        """Copy one request's inputs to the device and bind them (and its outputs) on the next session."""
        import onnxruntime as ort

        session = self.sessions[self._next % len(self.sessions)]
        self._next += 1
        binding = session.io_binding()
        values = []
        for name, array in arrays.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device_type, self.device_id)
            binding.bind_ortvalue_input(name, value)
            values.append(value)
        if self.cuda_graph:
            # a captured graph writes to the buffers it was captured with: outputs preallocated. Their shapes come
            # from the signature, not from a run: any run on the session would be the one captured
            for name, (shape, dtype) in output_shapes(session, arrays).items():
                value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, self.device_type, self.device_id)
                binding.bind_ortvalue_output(name, value)
                values.append(value)
        else:
            for name in self.outputs:
                binding.bind_output(name, self.device_type, self.device_id)
        return BoundFeed(arrays, session=session, binding=binding, device_values=values)

    def run(self, inputs: Mapping[str, Any]) -> list[Any]:
        """One request: a prepared one on its device buffers (outputs stay there); host arrays copied in and out."""
        if isinstance(inputs, BoundFeed):
            inputs.session.run_with_iobinding(inputs.binding)
            return list(inputs.binding.get_outputs())
        if self.cuda_graph:
            raise BackendError(
                "provider_options.CUDA.enable_cuda_graph replays fixed device buffers: it runs the requests the "
                "instance prepared (kind: pool), not host arrays handed to each request"
            )
        session = self.sessions[0]
        binding = session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.outputs:
            binding.bind_output(name, self.device_type, self.device_id)
        session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())
