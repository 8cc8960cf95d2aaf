"""Model zoo: reference inference graphs built offline with the onnx helper API, cached on disk.

The graphs carry random (seeded) float32 weights: throughput and latency do not depend on the
values, only on the operators and shapes. Batch normalisation is folded away (every Conv has a
bias). The reference graphs (``resnet50``, ``mobilenet_v2``, ``tiny``) have one input ``input``
with a dynamic first dimension named ``batch`` and one output ``logits``; the small graphs
``detector_hw``, ``text_seq``, ``speech_state`` and ``two_inputs`` differ (several or int64 or
rank-0 inputs, open dimensions other than ``batch``, ``batch`` not first, other output names), so
tests can exercise user models with declared inputs; their signatures are in
:mod:`tuner.models.graphs`.

A workload refers to a zoo graph as ``zoo:<name>``; :func:`resolve_model` turns such a reference
(or a plain file path) into a file on disk, building and caching the graph on first use.

``zoo:digits`` is trained, not random (scikit-learn's 8x8 digits, :mod:`tuner.models.train_digits`; the
``precision`` extra), and ships its held-out split beside the model: one rule names such an array, a data
reference ``zoo:<name>/<array>`` (``zoo:digits/test_x``: float32 ``[449, 1, 8, 8]`` as the model takes it;
``zoo:digits/test_y``: int64 labels), e.g. ``accuracy: {data: zoo:digits/test_x, labels: zoo:digits/test_y}``.
:func:`resolve_data` turns such a reference (or a plain ``.npy`` / ``.npz`` path) into a file, building the
model and its arrays together on first use (``digits-v1.onnx``, ``digits-v1-test-x.npy``,
``digits-v1-test-y.npy``; the arrays are written before the model, so a cached model has its arrays).

This module holds the cache (atomic writes), model references and file checks; the graph builders
are in :mod:`tuner.models.graphs` and MAC counting in :mod:`tuner.models.macs`, both re-exported here.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from tuner.errors import ModelError
from tuner.models.graphs import (
    _BUILDERS,
    ZOO_ARRAYS,
    ZOO_NAMES,
    ZOO_PREFIX,
    ZOO_VERSION,
    _unknown_name,
    build_artifacts,
)
from tuner.text import first_line

__all__ = [
    "check_model_file",
    "default_cache_dir",
    "parse_data_ref",
    "resolve_data",
    "resolve_model",
    "zoo_array_path",
    "zoo_file_name",
    "zoo_path",
]


# --------------------------------------------------------------------------------------------------
# cache


def default_cache_dir() -> Path:
    """``$TUNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tuner/zoo``, else ``~/.cache/tuner/zoo``."""
    env = os.environ.get("TUNER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tuner" / "zoo"


def zoo_file_name(name: str) -> str:
    """The cache file name of zoo graph ``name`` at the current :data:`ZOO_VERSION`."""
    if name not in _BUILDERS:
        raise _unknown_name(name)
    return f"{name}-v{ZOO_VERSION}.onnx"


def zoo_path(name: str, cache_dir: Path | None = None) -> Path:
    """The cached ``.onnx`` file of zoo graph ``name``, built and written on first use.

    The file is written atomically (temporary file in the same directory, fsync, rename), so a
    crash never leaves a partial file under the final name and concurrent builders are safe: each
    renames a complete file into place and the last rename wins.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / zoo_file_name(name)
    shipped = [directory / zoo_array_file_name(name, array) for array in ZOO_ARRAYS.get(name, ())]
    if target.is_file() and all(path.is_file() for path in shipped):
        return target
    model, arrays = build_artifacts(name)
    data = model.SerializeToString()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create zoo cache directory {directory}: {exc}") from exc
    for array, values in arrays.items():  # before the model: a cached model has its arrays
        buffer = io.BytesIO()
        np.save(buffer, values, allow_pickle=False)
        _atomic_write(directory / zoo_array_file_name(name, array), buffer.getvalue())
    _atomic_write(target, data)
    return target


def zoo_array_file_name(name: str, array: str) -> str:
    """The cache file name of array ``array`` shipped with zoo graph ``name`` (``digits-v1-test-x.npy``)."""
    if array not in ZOO_ARRAYS.get(name, ()):
        raise _unknown_array(name, array)
    return f"{name}-v{ZOO_VERSION}-{array.replace('_', '-')}.npy"


def zoo_array_path(name: str, array: str, cache_dir: Path | None = None) -> Path:
    """The cached ``.npy`` of array ``array`` shipped with zoo graph ``name``, built with the model on first use."""
    if name not in _BUILDERS:
        raise _unknown_name(name)
    file_name = zoo_array_file_name(name, array)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    zoo_path(name, directory)
    return directory / file_name


def _unknown_array(name: str, array: str) -> ModelError:
    shipped = ZOO_ARRAYS.get(name, ())
    if not shipped:
        with_data = ", ".join(f"{ZOO_PREFIX}{n}" for n in ZOO_ARRAYS)
        return ModelError(f"{ZOO_PREFIX}{name} ships no arrays (the zoo models with data: {with_data})")
    valid = ", ".join(f"{ZOO_PREFIX}{name}/{a}" for a in shipped)
    return ModelError(f"{ZOO_PREFIX}{name} ships no array {array!r} (valid: {valid})")


def _atomic_write(target: Path, data: bytes) -> None:
    tmp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            mode="wb", delete=False, dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # NamedTemporaryFile creates 0600; the cache is plain readable data
        os.replace(tmp_name, target)
        tmp_name = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise ModelError(f"cannot write zoo model {target}: {exc}") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows fsync on a directory (not on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# references and files


def resolve_model(ref: str, base_dir: Path) -> Path:
    """Turn a workload's model reference into a file on disk.

    ``zoo:<name>`` builds (or reuses) the cached zoo graph; anything else is a file path, relative
    paths being resolved against ``base_dir`` (the workload file's directory). The file's content is
    not loaded here; see :func:`check_model_file`.
    """
    if ref.startswith(ZOO_PREFIX):
        name = ref[len(ZOO_PREFIX) :].strip()
        if name not in _BUILDERS:
            raise ModelError(f"unknown zoo model in reference {ref!r}; valid names: {', '.join(ZOO_NAMES)}")
        return zoo_path(name)
    if not ref.strip():
        raise ModelError("empty model reference; expected zoo:<name> or a path to an .onnx file")
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise ModelError(f"model file not found: {ref!r} (looked for {path})")
    if not path.is_file():
        raise ModelError(f"model reference {ref!r} is not a file: {path}")
    return path


def parse_data_ref(ref: str) -> tuple[str, str] | None:
    """``(name, array)`` of a data reference ``zoo:<name>/<array>``, checked against :data:`ZOO_ARRAYS`; None for
    a file path. Raises :class:`ModelError` for a ``zoo:`` reference that names no shipped array."""
    if not ref.startswith(ZOO_PREFIX):
        return None
    name, _, array = ref[len(ZOO_PREFIX) :].strip().partition("/")
    if name not in _BUILDERS:
        raise ModelError(f"unknown zoo model in data reference {ref!r}; valid names: {', '.join(ZOO_NAMES)}")
    if not array:
        raise ModelError(f"data reference {ref!r}: expected zoo:<name>/<array>, e.g. zoo:digits/test_x")
    zoo_array_file_name(name, array)  # raises for an array the model does not ship
    return name, array


def resolve_data(ref: str, base_dir: Path) -> Path:
    """A data reference as a file: ``zoo:<name>/<array>`` built (or reused) in the zoo cache, anything else a
    path, relative ones resolved against ``base_dir``; a missing file raises :class:`ModelError`."""
    parsed = parse_data_ref(ref)
    if parsed is not None:
        return zoo_array_path(*parsed)
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise ModelError(f"data file not found: {ref!r} (looked for {path})")
    return path


def check_model_file(path: Path) -> None:
    """Raise :class:`ModelError` unless ``path`` holds a loadable, valid ONNX model.

    The checker is given the path rather than a loaded proto, so models over 2 GB and models
    with external data are checked too.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        if path.stat().st_size == 0:
            raise ModelError(f"{path} is not a valid ONNX model: the file is empty")
        onnx.checker.check_model(str(path))
    except ModelError:
        raise
    except (onnx.checker.ValidationError, DecodeError, OSError, ValueError, RuntimeError) as exc:
        message = first_line(exc)
        raise ModelError(f"{path} is not a valid ONNX model: {message}") from exc
