"""OpenVINO backend (extra ``openvino``): compiled models driven through ``AsyncInferQueue``.

How the axes map
----------------
* ``pool_size`` -> **streams of one compiled model** (``pool_mode: streams``, the default): one model is
  compiled with ``NUM_STREAMS = pool_size`` and shared by the pool; each pool worker drives it through its
  own ``AsyncInferQueue``. This is OpenVINO's own throughput mechanism (what the throughput hint and
  ``benchmark_app -nstreams`` do): the CPU plugin gives every stream its own cores and thread pool, the
  weights are held once (separate compiled models hold them ``pool_size`` times), and compiling once keeps
  ``load_s`` flat. ``pool_mode: instances`` compiles ``pool_size`` separate models (``NUM_STREAMS = 1``
  each, or ``num_streams``) for runtimes whose instances are the lever (the NPU-pool pattern); it is an
  option, so a study can search both. Measured on zoo resnet50 (2-core EPYC, f32, batch 1, 2 requests
  in flight): see the README ("OpenVINO") for the figures behind the default.
* ``threads`` -> ``INFERENCE_NUM_THREADS``, *per stream*: a compiled model gets ``threads x its streams``
  (streams mode: ``threads x pool_size``; instances mode: ``threads``), so ``pool_size x threads`` is the
  number of cores the pool asks for in both modes, as for ONNX Runtime. What the CPU plugin *runs* is
  less when that is more than the cores (see "Host threads").
* ``requests_per_sync`` -> infer requests in flight per instance: each instance owns an ``AsyncInferQueue``
  of that many jobs, :meth:`OvInstance.submit` is ``start_async`` on it (native, no driver threads).
* ``batch_size`` -> the model is reshaped to the inputs' shapes before compiling: dimension 0 is the batch,
  or where the workload's ``inputs:`` put ``batch``.

Inputs: the model's own signature (its ports: names, partial shapes, element types) checked against
``RuntimeConfig.inputs`` by :func:`tuner.models.feeds.resolve_feeds`; the model is reshaped to the feeds'
shapes (declared dimensions, a searched ``seq_len`` or ``image_size``: every open dimension becomes static)
and compiled once per set of shapes; arrays are made by :func:`tuner.models.feeds.make_array`, keyed by the
compiled model's input index. ``applied_options()["input_shapes"]`` is ``{name: [dims]}`` read back from the
compiled model.

Options (fixed or searched): ``performance_hint`` (``none``: the axes decide streams and threads;
``latency``/``throughput``: the device picks the streams within the thread budget, unless ``num_streams``
is set), ``num_streams`` (explicit ``NUM_STREAMS`` per compiled model), ``inference_precision`` (default
``f32``: some CPUs (AMX/AVX-512 BF16) silently run bf16 otherwise, and numbers would not compare with
ONNX Runtime; ``auto`` leaves it to the device), ``device`` (default ``CPU``), ``pool_mode``,
``enable_cpu_pinning``, ``config`` (any other compile property, verbatim).

Precision (issue 15): ``precision: f32 | bf16 | f16 | int8`` (default unset: ``inference_precision`` rules).
f32 / bf16 / f16 set ``INFERENCE_PRECISION_HINT`` (the same setting as ``inference_precision``, which stays
for existing files: giving both with different values is an error naming the two; ``auto`` + a precision is
one too). ``int8`` compiles an NNCF post-training-quantized IR of the model
(:func:`tuner.models.precision.openvino_int8_variant`; the ``precision`` extra brings nncf), calibrated like
ONNX Runtime's int8 (``quantization: {samples, seed, data}``; ``method``, ``per_channel``,
``activation_type``, ``reduce_range`` are ONNX Runtime's and refused here) and built in the parent before any
trial (:meth:`OpenVinoBackend.prepare`), cached like ONNX Runtime's variants; the layers NNCF leaves
unquantized run in ``inference_precision``. ``applied_options()["precision"]`` is what the compute layers ran
in (the most common of ``executed_precisions``, ``u8``/``i8`` written ``int8``), ``["precision_asked"]`` the
option and ``["variant"]`` the int8 IR's record (path, sha256, source, settings; None otherwise).

Every trial records what the device *resolved*, read back from the compiled model (``NUM_STREAMS``,
``OPTIMAL_NUMBER_OF_INFER_REQUESTS``, ``INFERENCE_PRECISION_HINT``, ``INFERENCE_NUM_THREADS``,
``PERFORMANCE_HINT``, ``ENABLE_CPU_PINNING``, ``EXECUTION_DEVICES``) and the precisions the compute
layers of the runtime graph really execute in (``executed_precisions``).

Host threads (the oversubscription rule, :meth:`OpenVinoBackend.host_threads`)
------------------------------------------------------------------------------
The CPU plugin caps a compiled model's threads at the cores the process may use, and its streams at its
threads: read back on a 2-core box, ``NUM_STREAMS 2`` + ``INFERENCE_NUM_THREADS 4`` (pool 2 x threads 2)
resolves to 2 streams x 1 thread, exactly ``benchmark_app -nstreams 2 -nthreads 2`` (whose ``-nthreads``
is the total), and 8 streams x 1 thread to the same 2 x 1. So one compiled model computes on
``min(INFERENCE_NUM_THREADS, usable cores)`` threads, whatever was asked: streams mode (one compiled model)
never oversubscribes the host; instances mode runs ``pool_size`` compiled models, each with its own
threads on the same cores: ``pool_size x min(INFERENCE_NUM_THREADS, cores)``. ``INFERENCE_NUM_THREADS``
is what :meth:`OpenVinoBackend.compile_config` sets (``threads x`` the streams budget, or ``config``'s own
value; 0 means all cores). The pool workers and the ``AsyncInferQueue`` callbacks only wait. A device
other than the CPU (GPU, NPU, or a virtual device whose list has no CPU) computes there: None.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.backends.base import Backend, DoneCallback, Instance, RuntimeConfig
from tuner.errors import BackendError, InputError, ModelError
from tuner.models.feeds import Feed, make_array, resolve_feeds
from tuner.models.precision import OpenVinoPrecision, QuantizationSettings, Variant
from tuner.models.signature import openvino_signature
from tuner.text import first_line

#: properties read back from every compiled model (what the device resolved)
RESOLVED_PROPERTIES = (
    "NUM_STREAMS",
    "OPTIMAL_NUMBER_OF_INFER_REQUESTS",
    "INFERENCE_PRECISION_HINT",
    "INFERENCE_NUM_THREADS",
    "PERFORMANCE_HINT",
    "ENABLE_CPU_PINNING",
    "EXECUTION_DEVICES",
)
#: runtime-graph layer types whose precision is "the precision the model ran in"
_COMPUTE_LAYERS = frozenset(
    {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm", "BinaryConvolution"}
)


class OpenVinoOptions(BaseModel):
    """Compile options tuner applies (anything else stays at the device's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field("CPU", min_length=1, description="OpenVINO device: CPU, GPU, NPU, AUTO, ...")
    pool_mode: Literal["streams", "instances"] = Field(
        "streams", description="pool_size -> streams of one compiled model, or separate compiled models"
    )
    performance_hint: Literal["none", "latency", "throughput"] = Field(
        "none", description="none: the axes set NUM_STREAMS; latency/throughput: the device picks them"
    )
    num_streams: int | None = Field(None, ge=1, le=1024, description="explicit NUM_STREAMS per compiled model")
    inference_precision: Literal["f32", "bf16", "f16", "auto"] = Field(
        "f32", description="INFERENCE_PRECISION_HINT (auto: the device's default, bf16 on some CPUs)"
    )
    enable_cpu_pinning: bool | None = Field(None, description="ENABLE_CPU_PINNING (None: device default)")
    config: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="further compile properties, passed verbatim"
    )
    precision: OpenVinoPrecision | None = Field(
        None,
        description="f32/bf16/f16: INFERENCE_PRECISION_HINT; int8: an NNCF-quantized IR (None: inference_precision)",
    )
    quantization: QuantizationSettings = Field(
        default_factory=QuantizationSettings, description="int8 calibration: samples, seed, data"
    )

    @model_validator(mode="after")
    def _one_precision(self) -> OpenVinoOptions:
        asked = self.precision
        if asked in ("f32", "bf16", "f16") and "inference_precision" in self.model_fields_set:
            if self.inference_precision != asked:
                raise ValueError(
                    f"precision {asked} contradicts inference_precision {self.inference_precision}: both set "
                    "INFERENCE_PRECISION_HINT; give one (precision is the searchable one)"
                )
        foreign = sorted(self.quantization.model_fields_set - {"samples", "seed", "data"})
        if foreign:
            raise ValueError(
                f"quantization.{foreign[0]} is an onnxruntime setting; NNCF on openvino takes samples, seed and data"
            )
        return self

    def hint(self) -> str | None:
        """The INFERENCE_PRECISION_HINT asked (None: the device's default)."""
        if self.precision in ("f32", "bf16", "f16"):
            return self.precision
        return None if self.inference_precision == "auto" else self.inference_precision


def compile_properties(opts: OpenVinoOptions, *, threads: int, pool_size: int) -> tuple[dict[str, Any], int | None]:
    """The compile properties of one compiled model, and the NUM_STREAMS asked (None: the device's)."""
    streams_mode = opts.pool_mode == "streams"
    if opts.num_streams is not None:
        streams: int | None = opts.num_streams
    elif opts.performance_hint == "none":
        streams = pool_size if streams_mode else 1
    else:
        streams = None  # the hint decides
    props: dict[str, Any] = {}
    if opts.performance_hint != "none":
        props["PERFORMANCE_HINT"] = opts.performance_hint.upper()
    if streams is not None:
        props["NUM_STREAMS"] = streams
    budget = streams if streams is not None else (pool_size if streams_mode else 1)
    props["INFERENCE_NUM_THREADS"] = threads * budget
    if opts.hint() is not None:
        props["INFERENCE_PRECISION_HINT"] = opts.hint()
    if opts.enable_cpu_pinning is not None:
        props["ENABLE_CPU_PINNING"] = opts.enable_cpu_pinning
    props.update(opts.config)
    return props, streams


_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def computes_on_cpu(device: str) -> bool:
    """Whether ``device`` runs on the host CPU: ``CPU``, or a virtual device listing it (bare ``AUTO`` may pick it)."""
    base, _, listed = device.partition(":")
    base = base.split(".", 1)[0].upper()
    if base not in _VIRTUAL_DEVICES:
        return base == "CPU"
    names = [d.split(".", 1)[0].split("(", 1)[0].strip().upper() for d in listed.split(",") if d.strip()]
    return "CPU" in names if names else base in ("AUTO", "MULTI")


def _demand(opts: OpenVinoOptions, pool_size: int, threads: int, cores: int) -> tuple[int, str] | None:
    """Host threads of a pool and how they add up; None when the device is not the CPU."""
    if not computes_on_cpu(opts.device):
        return None
    props, _streams = compile_properties(opts, threads=threads, pool_size=pool_size)
    try:
        asked = int(props["INFERENCE_NUM_THREADS"])
    except (TypeError, ValueError):
        raise BackendError(
            f"backend 'openvino': config INFERENCE_NUM_THREADS = {props['INFERENCE_NUM_THREADS']!r}: expected a number"
        ) from None
    per_model = cores if asked <= 0 else min(asked, cores)
    capped = f", capped by the CPU plugin at {cores} usable cores" if asked > cores else ""
    if asked <= 0:
        asked_text = f"0 (all {cores} usable cores)"
    elif "INFERENCE_NUM_THREADS" in opts.config:
        asked_text = f"{asked} (from config)"
    else:
        asked_text = f"{asked} = threads {threads} x streams {asked // max(1, threads)}"
    if opts.pool_mode == "streams":
        return per_model, f"one compiled model, INFERENCE_NUM_THREADS {asked_text}{capped}, on openvino"
    return (
        pool_size * per_model,
        f"pool_size {pool_size} compiled models x INFERENCE_NUM_THREADS {asked_text}{capped}, on openvino",
    )


def _plain(value: Any) -> Any:
    """A property value as JSON-able data (``<Type: 'float32'>`` -> ``"f32"``, enums -> names)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    to_string = getattr(value, "to_string", None)
    if callable(to_string):
        try:
            return str(to_string())
        except Exception:  # noqa: BLE001 - fall back to str()
            pass
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value)


#: how long an instance's close lets OpenVINO's callback thread finish what it holds (see OvInstance.close)
CALLBACK_GRACE_S = 0.02


class _Compiled:
    """One compiled model and the instances that share it."""

    def __init__(self, compiled: Any, streams_asked: int | None) -> None:
        self.model = compiled
        self.streams_asked = streams_asked
        self.users = 0
        self._resolved: dict[str, Any] | None = None

    def resolved(self) -> dict[str, Any]:
        if self._resolved is None:
            out: dict[str, Any] = {}
            for key in RESOLVED_PROPERTIES:
                try:
                    out[key] = _plain(self.model.get_property(key))
                except Exception:  # noqa: BLE001 - not every device reports every property
                    out[key] = None
            out["executed_precisions"] = _executed_precisions(self.model)
            self._resolved = out
        return dict(self._resolved)


def _executed_precisions(compiled: Any) -> dict[str, int]:
    """How many compute layers of the runtime graph run in each precision, e.g. ``{"f32": 54}``."""
    counts: Counter[str] = Counter()
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" not in info or "runtimePrecision" not in info:
                continue
            if info["layerType"].astype(str) in _COMPUTE_LAYERS:
                counts[info["runtimePrecision"].astype(str)] += 1
    except Exception:  # noqa: BLE001 - a device without a runtime graph (e.g. some plugins)
        return {}
    return dict(counts)


class OvInstance(Instance):
    """One pool worker's view: a compiled model (maybe shared) and its own AsyncInferQueue."""

    def __init__(
        self, backend: OpenVinoBackend, config: RuntimeConfig, compiled: _Compiled, key: Any, feeds: tuple[Feed, ...]
    ) -> None:
        import openvino as ov

        super().__init__(config)
        self._backend = backend
        self._key = key
        self._compiled = compiled
        self.feeds = feeds
        self._ports = _port_indices(compiled.model, feeds)
        self._rng = np.random.default_rng(config.index)
        self._queue = ov.AsyncInferQueue(compiled.model, max(1, config.requests_per_sync))
        self._queue.set_callback(_completed)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False

    def prepare_inputs(self) -> dict[int, np.ndarray]:
        return {index: make_array(feed, self._rng) for index, feed in zip(self._ports, self.feeds, strict=True)}

    def infer(self, inputs: dict[int, np.ndarray]) -> Any:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.model.create_infer_request()
        try:
            return request.infer(inputs, share_inputs=True)
        finally:
            self._idle.put(request)

    def submit(self, inputs: dict[int, np.ndarray], done: DoneCallback) -> None:
        """``start_async`` on this instance's queue; ``done`` runs on OpenVINO's callback thread."""
        try:
            self._queue.start_async(inputs, userdata=done, share_inputs=True)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            done(err)

    def applied_options(self) -> dict[str, Any]:
        opts: OpenVinoOptions = self._backend.options  # type: ignore[assignment]
        applied = self._compiled.resolved()
        applied.update(
            {
                "device": opts.device,
                "pool_mode": opts.pool_mode,
                "performance_hint_asked": opts.performance_hint,
                "num_streams_asked": self._compiled.streams_asked,
                "inference_precision_asked": opts.inference_precision,
                "precision": _ran_in(applied.get("executed_precisions"), opts),
                "precision_asked": opts.precision,
                "variant": self._backend.variant_record(),
                "compiled_models": 1 if opts.pool_mode == "streams" else self.config.pool_size,
                "requests_in_flight_per_instance": self.config.requests_per_sync,
                "input_shapes": {
                    feed.name: list(self._compiled.model.inputs[index].get_shape())
                    for index, feed in zip(self._ports, self.feeds, strict=True)
                },
            }
        )
        return applied

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.wait_all()
            # wait_all returns when the requests are done, but OpenVINO's callback thread may still be in a
            # callback's epilogue, waiting for the GIL; freeing the compiled model now (this thread holds the
            # GIL) would join that thread forever. Let go of the GIL long enough for it to finish.
            time.sleep(CALLBACK_GRACE_S)
        finally:
            self._queue = None
            while not self._idle.empty():
                self._idle.get_nowait()
            self._backend._release(self._key)
            super().close()


#: runtimePrecision of a compute layer -> the ``precision`` option's word for it
_PRECISION_WORDS = {"f32": "f32", "bf16": "bf16", "f16": "f16", "u8": "int8", "i8": "int8"}


def _ran_in(executed: Mapping[str, int] | None, opts: OpenVinoOptions) -> str | None:
    """The precision most compute layers executed in (``executed_precisions``), else the one asked."""
    if executed:
        top = max(executed.items(), key=lambda item: item[1])[0]
        return _PRECISION_WORDS.get(top, top)
    return opts.precision or opts.hint()


def _completed(_request: Any, done: DoneCallback) -> None:
    done(None)


def _port_indices(compiled: Any, feeds: tuple[Feed, ...]) -> tuple[int, ...]:
    """The compiled model's input index of each feed (found by name; the model's order where no name matches)."""
    names = [set(port.get_names()) for port in compiled.inputs]
    out = []
    for position, feed in enumerate(feeds):
        matches = [i for i, port_names in enumerate(names) if feed.name in port_names]
        out.append(matches[0] if matches else position)
    return tuple(out)


class OpenVinoBackend(Backend):
    name = "openvino"
    options_model = OpenVinoOptions
    uses_feeds = True

    def __init__(self, model: Path | None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self._core: Any = None
        self._model: Any = None
        self._models: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._compiled: dict[Any, _Compiled] = {}
        self._lock = threading.Lock()
        self._variant: Variant | None = None
        self._cache_dir: Path | None = None
        if self.options.precision == "int8":  # type: ignore[attr-defined]
            from tuner.models.zoo import default_cache_dir

            self._cache_dir = default_cache_dir()  # resolved (its module imported) before a trial times its load

    def _ov_core(self) -> Any:
        if self._core is None:
            try:
                import openvino as ov
            except ImportError as err:
                raise BackendError(
                    f"backend 'openvino' needs the openvino package: pip install 'tuner[openvino]' ({err})"
                ) from None
            self._core = ov.Core()
            opts: OpenVinoOptions = self.options  # type: ignore[assignment]
            base = opts.device.split(":", 1)[0].split(".", 1)[0]
            virtual = base in ("AUTO", "MULTI", "HETERO", "BATCH")
            available = self._core.available_devices
            if not virtual and not any(d == opts.device or d.split(".", 1)[0] == opts.device for d in available):
                raise BackendError(f"OpenVINO device {opts.device!r} is not available here (available: {available})")
        return self._core

    def model_file(self, inputs: Mapping[str, Any] | None = None) -> Path:
        """The file compiled: the model, or (``precision: int8``) its NNCF variant for the plan ``inputs``."""
        from tuner.models.precision import openvino_int8_variant

        opts: OpenVinoOptions = self.options  # type: ignore[assignment]
        assert self.model is not None
        if opts.precision != "int8":
            return Path(self.model)
        if self._variant is None:
            self._variant = openvino_int8_variant(
                Path(self.model), opts.quantization, inputs, cache_dir=self._cache_dir
            )
        return self._variant.path

    def variant_record(self) -> dict[str, Any] | None:
        """The int8 variant compiled (path, sha256, source, settings); None for the model itself."""
        return self._variant.record() if self._variant is not None else None

    def prepare(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pre-flight: build (or find) the int8 variant for the plan ``inputs``; its record."""
        self.model_file(inputs)
        return [] if self._variant is None else [{**self._variant.record(), "built": self._variant.built}]

    def _read(self, inputs: Mapping[str, Any] | None = None) -> Any:
        """The model (or its precision variant) as read from its file (once); reshaped copies are made from it."""
        if self._model is None:
            path = self.model_file(inputs)
            try:
                self._model = self._ov_core().read_model(str(path))
            except BackendError:
                raise
            except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
                raise ModelError(f"OpenVINO could not read {path}: {first_line(err)}") from None
        return self._model

    def _reshaped(self, feeds: tuple[Feed, ...]) -> Any:
        """The model reshaped to the feeds' shapes (once per set of shapes)."""
        key = tuple(feed.shape for feed in feeds)
        if key in self._models:
            return self._models[key]
        import openvino as ov

        model = self._read().clone()
        shapes = {port: ov.PartialShape(list(feed.shape)) for port, feed in zip(model.inputs, feeds, strict=True)}
        try:
            model.reshape(shapes)
        except Exception as err:  # noqa: BLE001
            wanted = ", ".join(f"{feed.name} {list(feed.shape)}" for feed in feeds)
            raise InputError(f"OpenVINO could not reshape {self.model} to {wanted}: {first_line(err)}") from None
        self._models[key] = model
        return model

    def compile_config(self, config: RuntimeConfig) -> tuple[dict[str, Any], int | None]:
        """The properties one compiled model gets for ``config``, and the NUM_STREAMS asked (None: device's)."""
        return compile_properties(self.options, threads=config.threads, pool_size=config.pool_size)  # type: ignore[arg-type]

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
        """Compiled models x ``min(INFERENCE_NUM_THREADS, cores)``; None off the CPU (module docstring)."""
        return _demand(cls.validate_options(options), pool_size, threads, usable_cores)  # type: ignore[arg-type]

    def open(self, config: RuntimeConfig) -> OvInstance:
        opts: OpenVinoOptions = self.options  # type: ignore[assignment]
        with self._lock:
            feeds = resolve_feeds(openvino_signature(self._read(config.inputs)), config.inputs, config.batch_size)
            key: Any = (config.threads, tuple(feed.shape for feed in feeds), config.pool_size)
            if opts.pool_mode == "instances":
                key = key + (config.index,)
            shared = self._compiled.get(key)
            if shared is None:
                model = self._reshaped(feeds)
                props, streams = self.compile_config(config)
                try:
                    compiled = self._ov_core().compile_model(model, opts.device, props)
                except Exception as err:  # noqa: BLE001
                    raise BackendError(
                        f"OpenVINO could not compile {self.model} for {opts.device} with {props}: {first_line(err)}"
                    ) from None
                shared = self._compiled[key] = _Compiled(compiled, streams)
            shared.users += 1
        return OvInstance(self, config, shared, key, feeds)

    def _release(self, key: Any) -> None:
        with self._lock:
            shared = self._compiled.get(key)
            if shared is not None:
                shared.users -= 1
                if shared.users <= 0:
                    del self._compiled[key]

    def versions(self) -> dict[str, str]:
        try:
            from importlib.metadata import version

            return {"openvino": version("openvino")}
        except Exception:  # noqa: BLE001 - not installed as a distribution
            try:
                import openvino as ov

                return {"openvino": str(ov.__version__)}
            except ImportError:
                return {}
