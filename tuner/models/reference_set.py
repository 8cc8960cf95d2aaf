"""The accuracy guard's reference set and the fp32 reference outputs on it, both cached on disk.

A *reference set* is a fixed set of model inputs (and optionally their integer labels) that every config of
a study is run on after its measurement (:mod:`tuner.workloads.accuracy_guard`). :func:`build_reference_set`
makes it from a data file -- a ``.npy`` (the model's first input) or an ``.npz`` (one array per input name;
inputs it does not name are fed as the workload's ``inputs:`` declare) -- or, without one, from the
workload's own input plan (:func:`tuner.models.feeds.make_array` with the set's seed): ``samples`` samples
along each input's batch dimension (default: all of the file, else :data:`DEFAULT_SAMPLES`). It is written
as one ``.npz`` (input name -> ``[samples ...]`` arrays) keyed by :attr:`ReferenceSet.key`, a digest of what
the set is made of (the data and label files' sha256, the shapes, dtypes, data sources, samples, seed).

:func:`reference_outputs` runs the set through the *original* model file in plain fp32 -- ONNX Runtime on
the CPU with default session options for ``.onnx``, OpenVINO's CPU with ``INFERENCE_PRECISION_HINT: f32``
for an ``.xml`` IR -- and keeps one output: ``output`` or the model's first. It is cached per (model sha256,
reference-set key, output, runtime and version). The output's batch dimension is the one the model names
like the inputs' batch dimension (dimension 0 when it names none). The output is a *classifier* output when
it is ``[batch, classes > 1]``, or when labels are given (one score per class, the sample's other
dimensions flattened).

Every cache file is written atomically (like the zoo's) under :func:`accuracy_cache_dir`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import InputError, ModelError
from tuner.models.feeds import Feed, make_array, resolve_feeds
from tuner.models.precision import feeds_record, file_sha256
from tuner.models.signature import ModelInput
from tuner.models.zoo import _atomic_write, default_cache_dir
from tuner.text import first_line, json_digest

#: samples in a reference set made from the workload's own inputs (no data file)
DEFAULT_SAMPLES = 64
#: the largest request the reference run makes (a model that fixes its batch gets that batch)
REFERENCE_CHUNK = 32
#: bump when the layout or meaning of a cache file changes: old files are never reused
CACHE_VERSION = 1


def accuracy_cache_dir() -> Path:
    """``<zoo cache>/accuracy``: reference sets, reference outputs and guard results."""
    return default_cache_dir() / "accuracy"


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` as JSON atomically (the directory is made when missing)."""
    _ensure_dir(path.parent)
    _atomic_write(path, json.dumps(document, sort_keys=True).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON document at ``path``; None when it is missing or unreadable (then it is computed again)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create accuracy cache directory {directory}: {exc}") from exc


def _write_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    _ensure_dir(path.parent)
    _atomic_write(path, buffer.getvalue())


# ------------------------------------------------------------------------------------------ reference set


@dataclass(frozen=True)
class ReferenceSet:
    """A reference set on disk: ``inputs_file`` (``.npz``, input name -> array), its labels, its key."""

    key: str
    inputs_file: Path
    #: input name -> the batch dimension of its array (None: the same array feeds every request)
    batch_axes: Mapping[str, int | None]
    samples: int
    labels_file: Path | None = None
    #: whether this call made the set (False: read from the cache)
    computed: bool = False


def _data_arrays(path: Path, signature: Sequence[ModelInput]) -> dict[str, tuple[int, ...]]:
    """Input name -> the shape of its array in the data file (``.npy``: the first input; ``.npz``: the inputs
    it names). Raises :class:`InputError` naming the file."""
    names = [m.name for m in signature]
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                given = {name: archive[name].shape for name in archive.files if name in names}
                if not given:
                    raise InputError(
                        f"accuracy.data: {path} holds {', '.join(archive.files) or 'no arrays'}; name an array after "
                        f"a model input ({', '.join(names)})"
                    )
        else:
            given = {names[0]: np.load(path, mmap_mode="r", allow_pickle=False).shape}
    except InputError:
        raise
    except (OSError, ValueError) as err:
        raise InputError(f"accuracy.data: {path} is not a .npy/.npz array file: {first_line(err)}") from None
    return {name: tuple(shape) for name, shape in given.items()}


def build_reference_set(
    signature: Sequence[ModelInput],
    plan: Mapping[str, Any],
    *,
    data: Path | None,
    labels: Path | None,
    samples: int | None,
    seed: int,
    cache_dir: Path | None = None,
) -> ReferenceSet:
    """The reference set of a model (``signature``) for one config's input ``plan`` (at batch 1), made or reused.

    ``data`` feeds what it names (see the module docstring); every other input follows ``plan``. ``labels``: a
    ``.npy`` of integer labels, one per sample of ``data``. Raises :class:`InputError` naming ``accuracy.*``.
    """
    plan = {name: dict(entry) for name, entry in plan.items()}
    shapes: dict[str, tuple[int, ...]] = {}
    if data is not None:
        shapes = _data_arrays(data, signature)
        for name in shapes:
            entry = plan.setdefault(name, {"shape": None, "batch_axis": None, "dtype": None, "data": None})
            entry["data"] = {"kind": "file", "path": str(data)}
    feeds = resolve_feeds(signature, plan, 1)
    counts: dict[str, int] = {}
    for feed in feeds:
        if feed.name not in shapes:
            continue
        shape, axis = shapes[feed.name], feed.batch_axis
        if axis is None:
            raise InputError(f"accuracy.data: input {feed.name!r} has no batch dimension; it cannot take samples")
        if len(shape) != len(feed.shape):
            raise InputError(
                f"accuracy.data: {data} holds shape {list(shape)} for input {feed.name!r}; expected "
                f"{list(_with_samples(feed, 0).shape)} with the samples on dimension {axis}"
            )
        counts[feed.name] = shape[axis]
    available = min(counts.values()) if counts else None
    if available is not None and len(set(counts.values())) > 1:
        raise InputError(f"accuracy.data: {data} holds different sample counts per input: {counts}")
    count = samples if samples is not None else (available if available is not None else DEFAULT_SAMPLES)
    if available is not None and count > available:
        raise InputError(f"accuracy.samples = {count}: {data} holds {available} samples")
    if count < 1:
        raise InputError(f"accuracy.data: {data} holds no samples")
    label_values = _labels(labels, available, count) if labels is not None else None
    set_feeds = [_with_samples(feed, count) for feed in feeds]
    key = json_digest(
        {
            "version": CACHE_VERSION,
            "inputs": [
                {**entry, "axis": f.batch_axis} for f, entry in zip(set_feeds, feeds_record(set_feeds), strict=True)
            ],
            "samples": count,
            "seed": seed,
            "labels": file_sha256(labels) if labels is not None else None,
        }
    )
    directory = Path(cache_dir) if cache_dir is not None else accuracy_cache_dir()
    inputs_file = directory / f"set-{key[:32]}.npz"
    labels_file = directory / f"set-{key[:32]}-labels.npy" if label_values is not None else None
    computed = False
    if not inputs_file.is_file() or (labels_file is not None and not labels_file.is_file()):
        rng = np.random.default_rng(seed)
        arrays = {feed.name: _make(feed, rng) if feed.name in counts else make_array(feed, rng) for feed in set_feeds}
        if labels_file is not None and label_values is not None:
            _write_npy(labels_file, label_values)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _ensure_dir(directory)
        _atomic_write(inputs_file, buffer.getvalue())
        computed = True
    return ReferenceSet(key, inputs_file, {f.name: f.batch_axis for f in set_feeds}, count, labels_file, computed)


def _make(feed: Feed, rng: np.random.Generator) -> np.ndarray:
    """:func:`make_array`, its errors naming ``accuracy.data`` where the array comes from the set's data file."""
    try:
        return make_array(feed, rng)
    except InputError as err:
        raise InputError(str(err).replace(f"inputs.{feed.name}.data", f"accuracy.data (input {feed.name!r})")) from None


def _with_samples(feed: Feed, count: int) -> Feed:
    """``feed`` with ``count`` samples on its batch dimension (unchanged without one)."""
    if feed.batch_axis is None:
        return feed
    shape = list(feed.shape)
    shape[feed.batch_axis] = count
    return Feed(feed.name, tuple(shape), feed.dtype, feed.data, feed.batch_axis, feed.declared)


def _labels(path: Path, available: int | None, count: int) -> np.ndarray:
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"accuracy.labels: {path} is not a .npy array file: {first_line(err)}") from None
    if not isinstance(values, np.ndarray) or values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        shown = f"{values.dtype} {list(values.shape)}" if isinstance(values, np.ndarray) else type(values).__name__
        raise InputError(f"accuracy.labels: {path} holds {shown}; expected a 1-D array of integer class labels")
    if available is not None and values.shape[0] != available:
        raise InputError(f"accuracy.labels: {path} holds {values.shape[0]} labels for {available} samples of data")
    return np.ascontiguousarray(values[:count].astype(np.int64))


def load_reference_set(reference: ReferenceSet) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays of a reference set (input name -> array) and its labels."""
    with np.load(reference.inputs_file, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    labels = np.load(reference.labels_file, allow_pickle=False) if reference.labels_file is not None else None
    return arrays, labels


def batch_slice(array: np.ndarray, axis: int | None, start: int, size: int, batch: int) -> np.ndarray:
    """Samples ``start .. start + size`` of ``array`` along ``axis``, padded to ``batch`` by repeating the last
    one (the padding's outputs are dropped); the whole array when it has no batch dimension."""
    if axis is None:
        return array
    index = np.arange(start, start + batch)
    index[size:] = start + size - 1
    return np.ascontiguousarray(np.take(array, index, axis=axis))


# ------------------------------------------------------------------------------------------ reference outputs


@dataclass(frozen=True)
class ReferenceOutputs:
    """The fp32 outputs of a reference set (one output, ``[samples ...]`` along ``batch_axis``) on disk."""

    key: str
    file: Path
    output: str
    #: the output's position among the model's outputs
    output_index: int
    batch_axis: int
    classifier: bool
    runtime: str
    computed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "file": str(self.file),
            "output": self.output,
            "output_index": self.output_index,
            "batch_axis": self.batch_axis,
            "classifier": self.classifier,
            "runtime": self.runtime,
        }


def is_classifier(outputs: np.ndarray, batch_axis: int, labelled: bool) -> bool:
    """``[batch, classes > 1]``, or any output with 2+ scores per sample when labels are given."""
    scores = int(np.prod([d for i, d in enumerate(outputs.shape) if i != batch_axis], dtype=np.int64))
    return scores > 1 and (outputs.ndim == 2 or labelled)


def reference_outputs(
    model: Path,
    reference: ReferenceSet,
    *,
    output: str | None,
    cache_dir: Path | None = None,
) -> ReferenceOutputs:
    """The fp32 outputs of ``reference`` through the original ``model`` (see the module docstring), cached."""
    runtime = _runtime(model)
    key = json_digest(
        {
            "version": CACHE_VERSION,
            "model": file_sha256(model),
            "set": reference.key,
            "output": output,
            "runtime": runtime,
        }
    )
    directory = Path(cache_dir) if cache_dir is not None else accuracy_cache_dir()
    array_file = directory / f"ref-{key[:32]}.npy"
    meta_file = directory / f"ref-{key[:32]}.json"
    meta = read_json(meta_file)
    if meta is not None and array_file.is_file():
        return ReferenceOutputs(
            key,
            array_file,
            str(meta["output"]),
            int(meta["output_index"]),
            int(meta["batch_axis"]),
            bool(meta["classifier"]),
            runtime,
        )
    arrays, labels = load_reference_set(reference)
    run = _openvino_fp32 if model.suffix.lower() == ".xml" else _onnxruntime_fp32
    name, index, axis, values = run(model, arrays, reference, output)
    classifier = is_classifier(values, axis, labels is not None)
    if labels is not None and not classifier:
        raise InputError(
            f"accuracy.labels: output {name!r} {list(values.shape)} gives one score per sample; top-1 needs one "
            "score per class"
        )
    result = ReferenceOutputs(key, array_file, name, index, axis, classifier, runtime, computed=True)
    _write_npy(array_file, values)
    write_json(meta_file, result.to_json())
    return result


def _runtime(model: Path) -> str:
    """The runtime (and version) the reference of ``model`` runs on: part of its cache key."""
    if model.suffix.lower() == ".xml":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"openvino {version('openvino')} f32"
        except PackageNotFoundError:
            raise ModelError(
                f"{model}: the fp32 reference of an OpenVINO IR needs openvino: pip install 'tuner[openvino]'"
            ) from None
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} CPU fp32"


def _pick_output(names: Sequence[str], output: str | None, model: Path) -> int:
    if output is None:
        return 0
    if output not in names:
        raise InputError(
            f"accuracy.output = {output!r}: {model.name} has no output {output!r} (its outputs: {', '.join(names)})"
        )
    return list(names).index(output)


def _chunk(reference: ReferenceSet, fixed: int | None) -> int:
    return fixed if fixed is not None else min(reference.samples, REFERENCE_CHUNK)


def _run_chunks(
    infer: Any, arrays: Mapping[str, np.ndarray], reference: ReferenceSet, chunk: int, axis: int
) -> np.ndarray:
    """``infer({name: batch})`` over the set in requests of ``chunk`` samples; the outputs joined on ``axis``."""
    parts = []
    for start in range(0, reference.samples, chunk):
        size = min(chunk, reference.samples - start)
        request = {
            name: batch_slice(array, reference.batch_axes.get(name), start, size, chunk)
            for name, array in arrays.items()
        }
        out = np.asarray(infer(request))
        parts.append(np.take(out, np.arange(size), axis=axis))
    return np.concatenate(parts, axis=axis)


def _onnxruntime_fp32(
    model: Path, arrays: Mapping[str, np.ndarray], reference: ReferenceSet, output: str | None
) -> tuple[str, int, int, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        raise ModelError(f"ONNX Runtime could not load {model} for the fp32 reference: {first_line(err)}") from None
    outputs = session.get_outputs()
    index = _pick_output([o.name for o in outputs], output, model)
    name = outputs[index].name
    batch_dims = {
        meta.shape[reference.batch_axes[meta.name]]
        for meta in session.get_inputs()
        if reference.batch_axes.get(meta.name) is not None and meta.shape
    }
    fixed = next((d for d in batch_dims if isinstance(d, int) and d > 0), None)
    axis = next((i for i, d in enumerate(outputs[index].shape or ()) if isinstance(d, str) and d in batch_dims), 0)

    def infer(request: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([name], request)[0]

    try:
        values = _run_chunks(infer, arrays, reference, _chunk(reference, fixed), axis)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        raise InputError(f"the fp32 reference run of {model.name} failed: {first_line(err)}") from None
    return name, index, axis, values


def _openvino_fp32(
    model: Path, arrays: Mapping[str, np.ndarray], reference: ReferenceSet, output: str | None
) -> tuple[str, int, int, np.ndarray]:
    import openvino as ov

    core = ov.Core()
    try:
        read = core.read_model(str(model))
    except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
        raise ModelError(f"OpenVINO could not read {model} for the fp32 reference: {first_line(err)}") from None
    names = [port.get_any_name() for port in read.outputs]
    index = _pick_output(names, output, model)
    pshape = read.outputs[index].get_partial_shape()
    axis = next((i for i, d in enumerate(pshape) if d.is_dynamic), 0) if not pshape.rank.is_dynamic else 0
    fixed = None
    for port in read.inputs:
        batch_axis = reference.batch_axes.get(port.get_any_name())
        dims = port.get_partial_shape()
        if batch_axis is not None and not dims.rank.is_dynamic and not dims[batch_axis].is_dynamic:
            fixed = dims[batch_axis].get_length()
    chunk = _chunk(reference, fixed)
    shapes = {}
    for port in read.inputs:
        array = arrays[port.get_any_name()]
        batch_axis = reference.batch_axes.get(port.get_any_name())
        shape = list(array.shape)
        if batch_axis is not None:
            shape[batch_axis] = chunk
        shapes[port] = ov.PartialShape(shape)
    try:
        read.reshape(shapes)
        compiled = core.compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
        raise InputError(f"OpenVINO could not compile {model.name} for the fp32 reference: {first_line(err)}") from None
    request = compiled.create_infer_request()
    by_port = [port.get_any_name() for port in compiled.inputs]

    def infer(batch: dict[str, np.ndarray]) -> np.ndarray:
        result = request.infer({i: batch[n] for i, n in enumerate(by_port)})
        return np.array(list(result.values())[index])

    return names[index], index, axis, _run_chunks(infer, arrays, reference, chunk, axis)


def guard_result_path(key: Mapping[str, Any], versions: Mapping[str, Any], cache_dir: Path | None = None) -> Path:
    """Where the guard's metrics of one (model, backend, options, reference) and runtime versions are cached."""
    directory = Path(cache_dir) if cache_dir is not None else accuracy_cache_dir()
    return directory / f"guard-{json_digest({'key': dict(key), 'versions': dict(versions)})[:32]}.json"
