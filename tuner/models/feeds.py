"""Feeds: a workload's input plan checked against a model's signature, and the arrays made from it.

:func:`resolve_feeds` takes the model's inputs (:func:`tuner.models.signature.read_signature`), one
configuration's plan (:func:`tuner.config.inputs.plan_inputs`; empty when the file declares nothing) and the
batch size, and returns one :class:`Feed` per model input, in the model's order, with a concrete shape
and dtype -- or raises :class:`~tuner.errors.InputError` naming the input, the dimension and what was
expected. Rules:

* a declared name the model does not have is an error listing the model's inputs;
* a declared ``shape`` must have the model's rank and agree with every fixed dimension; ``batch`` marks
  the batch dimension (any position: a state tensor ``[2, batch, 64]``); a declared ``dtype`` must be the
  model's;
* an input without a declared shape keeps the rule of inputs nobody declared: dimension 0 is the batch
  when the model leaves it open (a fixed dimension 0 must equal the batch size), every other dimension
  must be fixed -- an open one is an error that gives the ``inputs:`` line to add
  (:func:`suggested_line`: ``inputs: {images: {shape: [batch, 3, HEIGHT, WIDTH]}}``);
* ``data`` defaults to ``normal`` for floats; integers get ``int: {low: 0, high: 1}`` when declared and
  zeros when not (today's behaviour for files that declare nothing); booleans zeros. A kind that cannot
  make the input's dtype (``normal`` or ``uniform`` for an integer input, ``images`` for anything but a
  float ``[batch, C, H, W]`` / ``[batch, H, W, C]``) is an error.

:func:`describe_feeds` says what was fed in the workload file's words (the pool's message when the first
request fails: a value the model rejects).

:func:`make_array` builds one request's array for a feed (called before timing: it may read files and
decode images). Pure numpy besides reading ``file`` / ``images`` data; no runtime is imported here, so the
parent can check a plan before any trial (:func:`check_feeds`) and every backend makes the same arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import InputError
from tuner.models.signature import ModelInput
from tuner.text import first_line

#: image files ``images: DIR`` reads
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Feed:
    """What one model input is fed for one configuration."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: Mapping[str, Any] = field(default_factory=lambda: {"kind": "normal"})
    #: the batch dimension's index (None: the input has no batch dimension, e.g. a scalar)
    batch_axis: int | None = 0
    #: whether the workload declared this input (then messages point at inputs.<name>)
    declared: bool = False


#: names a model gives its open batch dimension (the suggested ``inputs:`` line writes ``batch`` there)
_BATCH_NAMES = frozenset({"batch", "batch_size", "batchsize", "n", "b", "bs"})


def _batch_position(model_input: ModelInput) -> int | None:
    """Where the suggested shape puts ``batch``: an open dimension named like a batch, else an open dim 0."""
    dims = model_input.dims or ()
    for i, d in enumerate(dims):
        if isinstance(d, str) and d.lower() in _BATCH_NAMES:
            return i
    if dims and not isinstance(dims[0], int):
        return 0
    return None


def suggested_line(model_input: ModelInput) -> str:
    """The ``inputs:`` line that declares ``model_input``'s shape: fixed sizes kept, ``batch`` where the batch
    is, an upper-case placeholder (the model's name for it, or ``DIM<i>``) for every other open dimension."""
    batch_at = _batch_position(model_input)
    dims = []
    for i, d in enumerate(model_input.dims or ()):
        if isinstance(d, int):
            dims.append(str(d))
        elif i == batch_at:
            dims.append("batch")
        else:
            dims.append(str(d).upper() if isinstance(d, str) and d.isidentifier() else f"DIM{i}")
    return f"inputs: {{{model_input.name}: {{shape: [{', '.join(dims)}]}}}}"


def _undeclared_shape(model_input: ModelInput, batch: int) -> tuple[tuple[int, ...], int | None]:
    name = model_input.name
    if model_input.dims is None:
        raise InputError(
            f"input {name!r} has a dynamic rank; declare its shape in the workload: inputs: {{{name}: "
            "{shape: [batch, ...]}}"
        )
    if not model_input.dims:
        return (), None
    for i, dim in enumerate(model_input.dims):
        if i > 0 and not isinstance(dim, int):
            raise InputError(
                f"input {name!r} {model_input.shown()} has an open dimension {i} ({dim or '?'}) and the workload "
                f"declares no shape for it; add {suggested_line(model_input)} (numbers, or axis names declared "
                "under search:)"
            )
    first = model_input.dims[0]
    if isinstance(first, int) and first != batch:
        raise InputError(
            f"input {name!r} {model_input.shown()} has a fixed batch dimension of {first}; batch_size {batch} needs "
            "a model with a dynamic batch dimension"
        )
    return (batch, *(d for d in model_input.dims[1:] if isinstance(d, int))), 0  # every one is fixed (above)


def _declared_shape(model_input: ModelInput, entry: Mapping[str, Any]) -> tuple[tuple[int, ...], int | None]:
    name, shape = model_input.name, tuple(int(d) for d in entry["shape"])
    mismatch = model_input.first_mismatch(shape)
    if mismatch is not None:
        i, want = mismatch
        if i < 0:
            raise InputError(
                f"inputs.{name}.shape {list(shape)}: the model's input {name!r} has rank {want} "
                f"{model_input.shown()}, the declared shape rank {len(shape)}"
            )
        raise InputError(
            f"inputs.{name}.shape {list(shape)}: dimension {i} is {shape[i]}, but the model fixes it at {want} "
            f"{model_input.shown()}"
        )
    batch_axis = entry.get("batch_axis")
    return shape, None if batch_axis is None else int(batch_axis)


def _default_data(dtype: str, declared: bool) -> dict[str, Any]:
    if dtype.startswith("float"):
        return {"kind": "normal"}
    if dtype == "bool" or not declared:
        return {"kind": "zeros"}
    return {"kind": "int", "low": 0, "high": 1}


def _check_data(feed: Feed) -> None:
    kind, name, dtype = feed.data["kind"], feed.name, np.dtype(feed.dtype)
    at = f"inputs.{name}.data"
    if kind == "uniform" and not np.issubdtype(dtype, np.floating):
        raise InputError(f"{at}: uniform makes floats, but input {name!r} is {feed.dtype}; use int: {{low, high}}")
    if kind == "int" and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = feed.data["low"], feed.data["high"]
        if low < info.min or high > info.max:
            raise InputError(f"{at}: int {{low: {low:g}, high: {high:g}}} does not fit {feed.dtype}")
    if kind == "value":
        value = feed.data["value"]
        if np.issubdtype(dtype, np.integer) and (isinstance(value, float) and not float(value).is_integer()):
            raise InputError(f"{at}: value {value!r} is not a whole number, but input {name!r} is {feed.dtype}")
    if kind == "normal" and not np.issubdtype(dtype, np.floating):
        raise InputError(
            f"{at}: normal makes floats, but input {name!r} is {feed.dtype}; use int: {{low, high}}, value: X or zeros"
        )
    if kind == "images":
        rank_ok = len(feed.shape) == 4 and feed.batch_axis == 0
        channels = 0
        if rank_ok:
            channels = feed.shape[1] if feed.data.get("layout", "NCHW") == "NCHW" else feed.shape[3]
        if not rank_ok or channels not in (1, 3) or not np.issubdtype(dtype, np.floating):
            raise InputError(
                f"{at}: images feed a float input of shape [batch, C, H, W] (layout NCHW) or [batch, H, W, C] "
                f"(NHWC) with 1 or 3 channels; input {name!r} is {feed.dtype} {list(feed.shape)}"
            )
        for key in ("mean", "std"):
            values = feed.data.get(key)
            if values is not None and len(values) not in (1, channels):
                raise InputError(f"{at}.{key}: {len(values)} values for {channels} channels")


def resolve_feeds(signature: Sequence[ModelInput], plan: Mapping[str, Any] | None, batch: int) -> tuple[Feed, ...]:
    """One :class:`Feed` per model input (see the module docstring); raises :class:`InputError`."""
    plan = dict(plan or {})
    names = [m.name for m in signature]
    for name in plan:
        if name not in names:
            raise InputError(f"inputs.{name}: the model has no input {name!r} (its inputs: {', '.join(names)})")
    feeds = []
    for model_input in signature:
        entry = plan.get(model_input.name)
        declared = entry is not None
        if entry is not None and entry.get("shape") is not None:
            shape, batch_axis = _declared_shape(model_input, entry)
        else:
            shape, batch_axis = _undeclared_shape(model_input, batch)
        dtype = model_input.dtype
        if entry is not None and entry.get("dtype") and entry["dtype"] != dtype:
            raise InputError(
                f"inputs.{model_input.name}.dtype {entry['dtype']}: the model's input {model_input.name!r} is {dtype}"
            )
        if dtype not in ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"):
            raise InputError(f"input {model_input.name!r} has unsupported type {dtype}")
        data = (entry or {}).get("data") or _default_data(dtype, declared)
        feed = Feed(model_input.name, shape, dtype, data, batch_axis, declared)
        _check_data(feed)
        feeds.append(feed)
    return tuple(feeds)


# ------------------------------------------------------------------------------------------ arrays


def make_array(feed: Feed, rng: np.random.Generator) -> np.ndarray:
    """One request's array for ``feed`` (its ``batch_size`` samples included)."""
    kind, dtype, shape = feed.data["kind"], np.dtype(feed.dtype), feed.shape
    if kind == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    if kind == "uniform":
        return rng.uniform(feed.data["low"], feed.data["high"], size=shape).astype(dtype)
    if kind == "int":
        low, high = int(feed.data["low"]), int(feed.data["high"])
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    if kind == "value":
        return np.full(shape, feed.data["value"], dtype=dtype)
    if kind == "file":
        return _from_file(feed)
    if kind == "images":
        return _from_images(feed)
    raise InputError(f"inputs.{feed.name}.data: unknown kind {kind!r}")


def _fit_batch(feed: Feed, array: np.ndarray, source: str) -> np.ndarray:
    """``array`` sliced or tiled along the batch dimension to ``feed.shape``; other dimensions must match."""
    want = feed.shape
    if feed.batch_axis is None:
        if tuple(array.shape) != want:
            raise InputError(
                f"inputs.{feed.name}.data: {source} holds shape {list(array.shape)}, expected {list(want)}"
            )
        return array
    axis = feed.batch_axis
    other_got = tuple(d for i, d in enumerate(array.shape) if i != axis)
    other_want = tuple(d for i, d in enumerate(want) if i != axis)
    if array.ndim != len(want) or other_got != other_want or array.shape[axis] == 0:
        raise InputError(
            f"inputs.{feed.name}.data: {source} holds shape {list(array.shape)}; expected {list(want)} with any "
            f"number of samples on dimension {axis} (the batch)"
        )
    index = np.arange(want[axis]) % array.shape[axis]
    return np.take(array, index, axis=axis)


def _from_file(feed: Feed) -> np.ndarray:
    path = Path(feed.data["path"])
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"inputs.{feed.name}.data.file: {path} not found") from None
    except (OSError, ValueError) as err:
        raise InputError(f"inputs.{feed.name}.data.file: {path} is not a .npy/.npz array: {first_line(err)}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            if feed.name in keys:
                array = loaded[feed.name]
            elif len(keys) == 1:
                array = loaded[keys[0]]
            else:
                raise InputError(
                    f"inputs.{feed.name}.data.file: {path} holds {', '.join(keys)}; name one array {feed.name!r}"
                )
    else:
        array = loaded
    dtype = np.dtype(feed.dtype)
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise InputError(f"inputs.{feed.name}.data.file: {path} holds {array.dtype}, the input is {feed.dtype}")
    return np.ascontiguousarray(_fit_batch(feed, array, str(path)).astype(dtype, copy=False))


def _image_files(folder: Path, name: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"inputs.{name}.data.images: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"inputs.{name}.data.images: no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def _from_images(feed: Feed) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    layout = feed.data.get("layout", "NCHW")
    batch = feed.shape[0]
    if layout == "NCHW":
        channels, height, width = feed.shape[1], feed.shape[2], feed.shape[3]
    else:
        height, width, channels = feed.shape[1], feed.shape[2], feed.shape[3]
    files = _image_files(Path(feed.data["path"]), feed.name)
    mean = np.asarray(feed.data.get("mean") or [0.0], dtype=np.float32)
    std = np.asarray(feed.data.get("std") or [1.0], dtype=np.float32)
    samples = []
    for i in range(batch):
        path = files[i % len(files)]
        try:
            with Image.open(path) as img:
                pixels = img.convert("RGB" if channels == 3 else "L").resize((width, height), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as err:
            raise InputError(f"inputs.{feed.name}.data.images: cannot decode {path}: {first_line(err)}") from None
        hwc = np.asarray(pixels, dtype=np.float32).reshape(height, width, channels) / 255.0
        hwc = (hwc - mean) / std
        samples.append(hwc.transpose(2, 0, 1) if layout == "NCHW" else hwc)
        if len(samples) == len(files):  # the folder is smaller than the batch: cycle through what was decoded
            break
    stacked = np.stack(samples)
    index = np.arange(batch) % stacked.shape[0]
    return np.ascontiguousarray(stacked[index].astype(np.dtype(feed.dtype)))


def describe_data(data: Mapping[str, Any]) -> str:
    """A data source in the words of the workload file: ``int 0..999``, ``value 16000``, ``file x.npy`` ..."""
    kind = data["kind"]
    if kind in ("uniform", "int"):
        return f"{kind} {data['low']:g}..{data['high']:g}"
    if kind == "value":
        return f"value {data['value']!r}"
    if kind in ("file", "images"):
        return f"{kind} {data['path']}"
    return str(kind)


def describe_feeds(feeds: Sequence[Feed]) -> str:
    """``input_ids int64 [2, 16]: int 0..1; sr int64 []: value 16000``: what each input is fed."""
    return "; ".join(f"{f.name} {f.dtype} {list(f.shape)}: {describe_data(f.data)}" for f in feeds)


def check_feeds(signature: Sequence[ModelInput], plan: Mapping[str, Any] | None, batch: int) -> tuple[Feed, ...]:
    """:func:`resolve_feeds`, then one array of each feed made and dropped: a bad file or folder fails here."""
    feeds = resolve_feeds(signature, plan, batch)
    rng = np.random.default_rng(0)
    for feed in feeds:
        if feed.data["kind"] in ("file", "images"):
            make_array(feed, rng)
    return feeds
