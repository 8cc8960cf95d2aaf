"""Precision variants: derived model files (int8, fp16) built once from an fp32 model and cached (issue 15).

A backend option ``precision`` picks the variant a session opens; this module builds it and says what it is.

ONNX Runtime (:func:`ort_variant`; the fp32 model file itself is ``fp32``):

``int8``          static QDQ quantization, ``onnxruntime.quantization.quantize_static`` (``QuantFormat.QDQ``;
                  weights int8, per channel by default; activations uint8 by default -- the U8S8 path ONNX
                  Runtime's x86 kernels (AVX2/AVX-512 VNNI) are fastest on, measured 3x fp32 on zoo resnet50
                  against 1.2x for int8 activations), calibrated (``minmax`` | ``entropy`` | ``percentile``) on
                  ``samples`` inputs. The model is pre-processed first (``quant_pre_process``: symbolic shape
                  inference and graph optimisation), as ONNX Runtime recommends (a graph it cannot
                  pre-process is quantized as it is).
``int8-dynamic``  ``quantize_dynamic``: weights int8 ahead of time, activations quantized at run time (no
                  calibration; ConvInteger is slow on CPUs: it pays for MatMul-heavy models, not for convnets).
``fp16``          ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``: the feeds and
                  outputs stay float32. A CPU without fp16 arithmetic may run it slower; it is measured.

OpenVINO (:func:`openvino_int8_variant`): ``int8`` is NNCF post-training quantization
(``nncf.quantize(model, nncf.Dataset(samples), subset_size=samples)``) saved as an IR (``.xml`` + ``.bin``).
OpenVINO's f32 / bf16 / f16 are inference-precision hints of the same model (no file).

Calibration samples (:func:`calibration_samples`): ``samples`` single-sample feeds made the way the backend
feeds a trial -- the workload's declared inputs (``RuntimeConfig.inputs``, the plan of
:func:`tuner.config.inputs.plan_inputs`) resolved against the source model at batch 1
(:func:`tuner.models.feeds.resolve_feeds`) and made by :func:`tuner.models.feeds.make_array` with a generator
seeded with ``seed`` -- unless ``quantization.data`` names another source for an input, in the data forms of
``inputs:`` (``{file: PATH}`` ``.npy``/``.npz``, ``{images: DIR, layout?, mean?, std?}``, ``normal``,
``{uniform: ...}``, ...; see :mod:`tuner.config.inputs`). Backend options travel to the trial verbatim, so a
path there must be absolute (a relative one is refused: declare the data under ``inputs:`` to have it resolve
against the workload file).

The quantization settings (:class:`QuantizationSettings`, the backends' ``quantization`` option)::

    quantization: {method: minmax, per_channel: true, activation_type: uint8, reduce_range: false,
                   samples: 32, seed: 0, data: {input: {images: /data/calib}}}

Cache: one file per (source model sha256, precision, the settings that change the result -- the calibration
method, per-channel, types, sample count, seed, the calibration plan at batch 1 and its data sources with a
fingerprint of any file (content hash) or image folder (names, sizes, mtimes) they read -- and the versions of
the tools that build it), under ``<zoo cache>/variants/``
(:func:`variants_dir`; ``$TUNER_CACHE_DIR/variants`` in tests), named ``<model>-<precision>-<key16>.onnx``.
Written like the zoo's cache (temporary file in the same folder, fsync, rename), so a crash never leaves a
partial file under the final name; a changed setting is a new file. :class:`Variant` is what was built;
``Variant.record()`` is what a trial's applied options and an export say of it (precision, path, sha256,
source and its sha256, the key, the settings).

Models whose weights live in external data files (``model.onnx.data``, any model over 2 GB) are refused
with a clear error: the quantizers here would rewrite them in one protobuf, which cannot exceed 2 GB.

Everything heavy (onnxruntime.quantization, onnxconverter_common, nncf, openvino) is imported inside the
functions that need it; a missing optional package is one :class:`~tuner.errors.BackendError` line naming
the extra (``pip install 'tuner[precision]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuner.config.inputs import InputData
from tuner.errors import BackendError, InputError, ModelError
from tuner.models.feeds import IMAGE_SUFFIXES, Feed, make_array, resolve_feeds
from tuner.models.signature import ModelInput, read_signature
from tuner.text import first_line, json_digest

#: ONNX Runtime's precisions (``fp32``: the model file as it is); the backends' option types
OrtPrecision = Literal["fp32", "int8", "int8-dynamic", "fp16"]
#: OpenVINO's precisions (f32 / bf16 / f16: INFERENCE_PRECISION_HINT; int8: an NNCF-quantized IR)
OpenVinoPrecision = Literal["f32", "bf16", "f16", "int8"]
#: calibration methods of ``quantize_static``
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
ORT_PRECISIONS: tuple[str, ...] = get_args(OrtPrecision)
OPENVINO_PRECISIONS: tuple[str, ...] = get_args(OpenVinoPrecision)
CALIBRATION_METHODS: tuple[str, ...] = get_args(CalibrationMethod)
#: bump when a builder changes what it writes (every cached variant is then rebuilt)
VARIANT_FORMAT = 1
#: the pip extra that brings the optional builders
EXTRA = "pip install 'tuner[precision]'"
#: the quantization settings that apply to each precision (the others do not change the file)
_APPLIES: dict[str, tuple[str, ...]] = {
    "int8": ("method", "per_channel", "activation_type", "reduce_range", "samples", "seed", "data"),
    "int8-dynamic": ("per_channel", "reduce_range"),
    "fp16": (),
    "openvino-int8": ("samples", "seed", "data"),
}
_TWO_GB = 2**31


class QuantizationSettings(BaseModel):
    """The ``quantization`` option of a backend: how an int8 variant is calibrated (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: CalibrationMethod = Field("minmax", description="calibration method")
    per_channel: bool = Field(True, description="per-channel weight scales (else one per tensor)")
    activation_type: Literal["uint8", "int8"] = Field(
        "uint8", description="activations' int type: uint8 (U8S8, fastest on x86) or int8 (S8S8)"
    )
    reduce_range: bool = Field(False, description="7-bit weights (for CPUs without VNNI, which may saturate)")
    samples: int = Field(32, ge=1, le=100_000, description="calibration samples")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of generated calibration samples")
    data: dict[str, InputData] = Field(
        default_factory=dict, description="input name -> calibration data (the data forms of inputs:)"
    )

    @field_validator("data")
    @classmethod
    def _absolute_paths(cls, data: dict[str, InputData]) -> dict[str, InputData]:
        for name, source in data.items():
            if source.path is not None and not Path(source.path).expanduser().is_absolute():
                raise ValueError(
                    f"{name}: {source.kind} {source.path!r} is a relative path; backend options reach the trial "
                    f"verbatim, so give an absolute path (or declare the data under inputs.{name}.data, whose "
                    "paths are relative to the workload file)"
                )
        return data

    def applying_to(self, precision: str) -> dict[str, Any]:
        """The settings that change a ``precision`` variant, as canonical JSON (``data`` paths absolute)."""
        out: dict[str, Any] = {}
        for name in _APPLIES.get(precision, ()):
            if name == "data":
                out[name] = {k: v.to_plan(Path("/")) for k, v in sorted(self.data.items())}
            else:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class Variant:
    """A built (cached) precision variant of a source model."""

    precision: str
    path: Path
    source: Path
    source_sha256: str
    key: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: whether this call built it (False: it was in the cache)
    built: bool = False

    def sha256(self) -> str:
        return file_sha256(self.path)

    def record(self) -> dict[str, Any]:
        """What a trial's applied options and an export carry: precision, file, its sha256, source, key, settings."""
        return {
            "precision": self.precision,
            "path": str(self.path),
            "sha256": self.sha256(),
            "source": str(self.source),
            "source_sha256": self.source_sha256,
            "key": self.key,
            "settings": dict(self.settings),
        }


# ------------------------------------------------------------------------------------------ hashing

_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    """The sha256 of a model's bytes: the file, with an OpenVINO ``.xml``'s ``.bin`` or an ONNX model's external
    data file ``<name>.data`` when there is one; memoised per size and mtime."""
    path = Path(path)
    companion = path.with_suffix(".bin") if path.suffix.lower() == ".xml" else Path(f"{path}.data")
    parts = [path] + ([companion] if companion.is_file() else [])
    try:
        stats = [p.stat() for p in parts if p.exists() or p == path]
    except OSError as err:
        raise ModelError(f"cannot read {path}: {err.strerror}") from None
    memo = (str(path.resolve()), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
    with _HASH_LOCK:
        known = _HASHES.get(memo)
    if known is not None:
        return known
    digest = hashlib.sha256()
    try:
        for part in parts:
            if not part.exists():
                continue
            with part.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    except OSError as err:
        raise ModelError(f"cannot read {path}: {err.strerror}") from None
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASHES[memo] = value
    return value


_SIGNATURES: dict[tuple[str, int, int], tuple[ModelInput, ...]] = {}


def _signature(source: Path) -> tuple[ModelInput, ...]:
    """The source model's inputs (:func:`~tuner.models.signature.read_signature`), memoised per size and mtime."""
    st = source.stat()
    memo = (str(source.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        known = _SIGNATURES.get(memo)
    if known is None:
        known = read_signature(source)
        with _HASH_LOCK:
            _SIGNATURES[memo] = known
    return known


def _data_fingerprint(data: Mapping[str, Any]) -> str | None:
    """What a calibration ``file`` / ``images`` source holds (its content hash; names, sizes, mtimes of images)."""
    kind, path = data.get("kind"), data.get("path")
    if kind == "file" and path and Path(path).is_file():
        return file_sha256(Path(path))
    if kind == "images" and path and Path(path).is_dir():
        digest = hashlib.sha256()
        for p in sorted(Path(path).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                st = p.stat()
                digest.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    return None


# ------------------------------------------------------------------------------------------ calibration


def calibration_feeds(
    signature: Sequence[ModelInput], plan: Mapping[str, Any] | None, settings: QuantizationSettings
) -> tuple[Feed, ...]:
    """One single-sample :class:`Feed` per model input: the trial's plan at batch 1, ``settings.data`` applied."""
    at_one = _at_batch_one(plan)
    names = [m.name for m in signature]
    for name, source in settings.data.items():
        if name not in names:
            raise InputError(
                f"quantization.data.{name}: the model has no input {name!r} (its inputs: {', '.join(names)})"
            )
        entry = at_one.get(name) or {"shape": None, "batch_axis": None, "dtype": None}
        at_one[name] = {**entry, "data": source.to_plan(Path("/"))}
    try:
        return resolve_feeds(signature, at_one, 1)
    except InputError as err:
        raise InputError(f"quantization calibration data: {err}") from None


def _at_batch_one(plan: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plan of the workload's inputs with every declared batch dimension set to 1."""
    at_one: dict[str, Any] = {}
    for name, entry in (plan or {}).items():
        entry = dict(entry)
        if entry.get("shape") is not None and entry.get("batch_axis") is not None:
            shape = list(entry["shape"])
            shape[int(entry["batch_axis"])] = 1
            entry["shape"] = shape
        at_one[name] = entry
    return at_one


def calibration_samples(feeds: Sequence[Feed], samples: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``samples`` feeds of one sample each: every input's array made once for ``samples`` samples
    (:func:`~tuner.models.feeds.make_array`, a generator seeded with ``seed``), then split along its batch axis."""
    rng = np.random.default_rng(seed)
    made: list[tuple[str, int | None, np.ndarray]] = []
    for feed in feeds:
        if feed.batch_axis is None:
            made.append((feed.name, None, make_array(feed, rng)))
            continue
        shape = list(feed.shape)
        shape[feed.batch_axis] = samples
        made.append((feed.name, feed.batch_axis, make_array(replace(feed, shape=tuple(shape)), rng)))
    return [
        {
            name: array if axis is None else np.ascontiguousarray(np.take(array, [i], axis=axis))
            for name, axis, array in made
        }
        for i in range(samples)
    ]


def feeds_record(feeds: Sequence[Feed]) -> list[dict[str, Any]]:
    """Feeds as canonical JSON (name, shape, dtype, data, and a fingerprint of a file / image folder read)."""
    out = []
    for f in feeds:
        entry: dict[str, Any] = {"name": f.name, "shape": list(f.shape), "dtype": f.dtype, "data": dict(f.data)}
        fingerprint = _data_fingerprint(f.data)
        if fingerprint is not None:
            entry["fingerprint"] = fingerprint
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------ cache


def variants_dir(cache_dir: Path | None = None) -> Path:
    """Where variants are cached: ``<cache_dir or the zoo cache>/variants``."""
    from tuner.models.zoo import default_cache_dir

    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "variants"


def _tool_versions(precision: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {
        "int8": ("onnxruntime", "onnx"),
        "int8-dynamic": ("onnxruntime", "onnx"),
        "fp16": ("onnxconverter-common", "onnx"),
        "openvino-int8": ("nncf", "openvino"),
    }[precision]
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _check_size(source: Path) -> None:
    """An existing file under 2 GB (checked before hashing it)."""
    if not source.is_file():
        raise ModelError(f"model file not found: {source}")
    if source.suffix.lower() != ".xml" and source.stat().st_size >= _TWO_GB:
        raise ModelError(
            f"{source} is {source.stat().st_size / 2**30:.1f} GB: precision variants of models over 2 GB (external "
            "data) are not supported; quantize it yourself and point workload.model at the result"
        )


def _check_source(source: Path) -> None:
    """A source the builders can rewrite (before a build): one protobuf, no external data files."""
    if source.suffix.lower() == ".xml":
        return
    import onnx

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises DecodeError, OSError, ValueError ...
        raise ModelError(f"{source} is not a readable ONNX model: {first_line(err)}") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelError(
            f"{source} keeps its weights in external data files: precision variants of such models (> 2 GB) are "
            "not supported; quantize it yourself and point workload.model at the result"
        )


def _plan_variant(
    source: Path,
    precision: str,
    settings: QuantizationSettings,
    inputs: Mapping[str, Any] | None,
    cache_dir: Path | None,
    suffix: str,
) -> tuple[Path, str, dict[str, Any]]:
    """(target file, key, settings that apply) of one variant; nothing built, nothing but the source read.

    The key covers the calibration feeds without resolving them (that reads the model, with ``onnx``, a second
    of import in a trial's load): they follow from the source (its sha256), the plan at batch 1 and the data
    sources, whose files and folders are fingerprinted.
    """
    source = Path(source)
    _check_size(source)
    applies = settings.applying_to(precision)
    calibration: dict[str, Any] = {}
    if "samples" in applies:
        plan = _at_batch_one(inputs)
        sources = [entry.get("data") or {} for entry in plan.values()] + list(applies["data"].values())
        calibration = {"plan": plan, "fingerprints": [_data_fingerprint(d) for d in sources]}
    doc = {
        "format": VARIANT_FORMAT,
        "source_sha256": file_sha256(source),
        "precision": precision,
        "settings": applies,
        "calibration": calibration,
        "tools": _tool_versions(precision),
    }
    key = json_digest(doc)
    label = precision.replace("openvino-", "ov-")
    target = variants_dir(cache_dir) / f"{source.stem}-{label}-{key[:16]}{suffix}"
    return target, key, applies


def _feeds(source: Path, settings: QuantizationSettings, inputs: Mapping[str, Any] | None) -> tuple[Feed, ...]:
    """The calibration feeds of a build (the model's signature read)."""
    return calibration_feeds(_signature(source), inputs, settings)


def ort_variant(
    source: Path,
    precision: str,
    settings: QuantizationSettings | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    cache_dir: Path | None = None,
    build: bool = True,
) -> Variant:
    """The ``precision`` variant of the ONNX model ``source`` for ONNX Runtime, built on first use, then cached.

    ``inputs``: a plan of the workload's declared inputs (``RuntimeConfig.inputs``; any config's: the batch is
    set to 1). Raises :class:`~tuner.errors.ModelError` (the model cannot be quantized or converted),
    :class:`~tuner.errors.InputError` (the calibration data) or :class:`~tuner.errors.BackendError` (a missing
    optional package). ``fp32`` is not a variant: the caller opens ``source``. ``build=False``: only look the
    file up (an export); the variant returned may then name a file that does not exist.
    """
    if precision not in ORT_PRECISIONS[1:]:
        raise BackendError(f"precision {precision!r}: expected one of {', '.join(ORT_PRECISIONS)}")
    settings = settings or QuantizationSettings()
    source = Path(source)
    if precision == "fp16" and build:
        _need("onnxconverter_common", "precision fp16 on onnxruntime needs onnxconverter-common")
    target, key, applies = _plan_variant(source, precision, settings, inputs, cache_dir, ".onnx")
    variant = Variant(precision, target, source, file_sha256(source), key, applies)
    with _BUILD_LOCK:
        if target.is_file() or not build:
            return variant
        _check_source(source)
        feeds = _feeds(source, settings, inputs) if precision == "int8" else ()
        _mkdir(target.parent)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
            out = Path(tmp) / "model.onnx"
            try:
                _build_ort(precision, source, out, Path(tmp), settings, feeds)
            except (BackendError, ModelError):
                raise
            except Exception as err:  # noqa: BLE001 - the quantizers raise anything
                raise ModelError(
                    f"cannot build the {precision} variant of {source}: {type(err).__name__}: {first_line(err)}"
                ) from None
            _write(target, out)
    return replace(variant, built=True)


def _need(module: str, what: str) -> None:
    from importlib.util import find_spec

    try:
        found = find_spec(module) is not None
    except (ImportError, ValueError):  # sys.modules[module] = None, or a broken install
        found = False
    if not found:
        raise BackendError(f"{what}: {EXTRA}")


def _write(target: Path, built: Path) -> None:
    """``built`` copied under ``target`` the zoo cache's way (temporary file, fsync, rename)."""
    from tuner.models.zoo import _atomic_write

    _atomic_write(target, built.read_bytes())


def _mkdir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot create the precision variants folder {directory}: {err.strerror}") from None


def _build_ort(
    precision: str, source: Path, out: Path, tmp: Path, settings: QuantizationSettings, feeds: tuple[Feed, ...]
) -> None:
    import onnx

    if precision == "fp16":
        from onnxconverter_common import float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the model has values out of fp16 range: truncated", per tensor
            model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(model, str(out))
        return
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            quant_pre_process(str(source), str(pre))
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs: quantize them as they are
            pre = source
        if precision == "int8-dynamic":
            quantize_dynamic(
                str(pre),
                str(out),
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                weight_type=QuantType.QInt8,
            )
            return

        class Reader(CalibrationDataReader):  # the base class ORT checks for
            def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
                self._it = iter(samples)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._it, None)

        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[settings.method]
        quantize_static(
            str(pre),
            str(out),
            Reader(calibration_samples(feeds, settings.samples, settings.seed)),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8 if settings.activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )


def openvino_int8_variant(
    source: Path,
    settings: QuantizationSettings | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    cache_dir: Path | None = None,
    build: bool = True,
) -> Variant:
    """The NNCF int8 IR (``.xml`` + ``.bin``) of ``source`` (ONNX or IR), built on first use, then cached.

    Errors and ``build`` as :func:`ort_variant`; without nncf one :class:`~tuner.errors.BackendError` line
    naming the extra.
    """
    settings = settings or QuantizationSettings()
    source = Path(source)
    if build:
        _need("nncf", "precision int8 on openvino needs nncf")
    target, key, applies = _plan_variant(source, "openvino-int8", settings, inputs, cache_dir, ".xml")
    variant = Variant("int8", target, source, file_sha256(source), key, applies)
    with _BUILD_LOCK:
        if (target.is_file() and target.with_suffix(".bin").is_file()) or not build:
            return variant
        _check_source(source)
        feeds = _feeds(source, settings, inputs)
        _mkdir(target.parent)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
            xml = Path(tmp) / "model.xml"
            try:
                _build_openvino_int8(source, xml, settings, feeds)
            except (BackendError, ModelError):
                raise
            except Exception as err:  # noqa: BLE001 - NNCF and OpenVINO raise anything
                raise ModelError(
                    f"cannot build the int8 (NNCF) variant of {source}: {type(err).__name__}: {first_line(err)}"
                ) from None
            # the .bin first: an .xml under the final name always has its weights beside it
            _write(target.with_suffix(".bin"), xml.with_suffix(".bin"))
            _write(target, xml)
    return replace(variant, built=True)


def _build_openvino_int8(source: Path, xml: Path, settings: QuantizationSettings, feeds: tuple[Feed, ...]) -> None:
    import logging

    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.ERROR)
    model = ov.Core().read_model(str(source))
    samples = calibration_samples(feeds, settings.samples, settings.seed)
    # NNCF draws a progress bar on stdout: kept off it (the parent's stdout may be a --json document)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=settings.samples)
    ov.save_model(quantized, str(xml), compress_to_fp16=False)


__all__ = [
    "CALIBRATION_METHODS",
    "OPENVINO_PRECISIONS",
    "ORT_PRECISIONS",
    "CalibrationMethod",
    "OpenVinoPrecision",
    "OrtPrecision",
    "QuantizationSettings",
    "Variant",
    "calibration_feeds",
    "calibration_samples",
    "feeds_record",
    "file_sha256",
    "openvino_int8_variant",
    "ort_variant",
    "variants_dir",
]
