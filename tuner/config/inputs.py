"""``inputs:``: what a workload feeds each model input -- its shape, dtype and data (issue 13).

A workload file declares, per input name (``workload.inputs`` for ``kind: pool``; the infer stage's
``inputs`` for ``kind: pipeline``)::

    inputs:
      images: {shape: [batch, 3, image_size, image_size]}      # image_size: an axis under search:
      tokens: {shape: [batch, seq_len], data: {int: {low: 0, high: 999}}}
      sr:     {shape: [], dtype: int64, data: {value: 16000}}
      state:  {shape: [2, batch, 128], data: zeros}

``shape`` items are integers, the word ``batch`` (the ``batch_size`` axis: that dimension is the batch),
or the name of a searchable *dimension axis* declared under ``search:`` like any other axis (``seq_len``,
``image_size``: positive integers). ``dtype`` is checked against the model (default: the model's).
``data`` is one of

* ``normal`` (default for floats), ``zeros``;
* ``uniform: {low, high}`` (floats), ``int: {low, high}`` (inclusive; default for integers ``{low: 0,
  high: 1}``, never random garbage ids), ``value: X`` (a constant: a scalar such as a sample rate);
* ``file: PATH`` (``.npy``, or ``.npz`` holding an array named like the input or a single array), sliced or
  tiled along the batch dimension to the batch size;
* ``images: DIR`` with ``layout: NCHW | NHWC`` (default NCHW), ``mean`` / ``std`` (per channel, applied
  to pixels scaled to 0..1; default none): every image in DIR decoded, resized to the declared height
  and width, stacked to the batch (cycling through the folder).

This module holds the file's models (:class:`InputDecl`, :class:`InputData`), the dimension axes a file
declares (:func:`dimension_axes`) and the per-configuration *plan* (:func:`plan_inputs`): the concrete
shapes with ``batch`` and the dimension axes replaced by a config's values, file paths made absolute.
The plan is plain JSON (it travels in the trial's job); :mod:`tuner.models.feeds` checks it against the
model and makes the arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

#: the dtypes a declared input may name (numpy names)
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
#: the ``data`` kinds
DATA_KINDS = ("normal", "zeros", "uniform", "int", "value", "file", "images")
#: the word in a shape that stands for the batch dimension
BATCH = "batch"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputData(_Strict):
    """``inputs.<name>.data`` in one canonical form: ``kind`` and that kind's settings.

    The file writes it the short way (``normal``, ``{uniform: {low, high}}``, ``{int: {...}}``,
    ``{value: 16000}``, ``{file: x.npy}``, ``{images: DIR, layout: NHWC, mean: [...], std: [...]}``);
    the before-validator turns that into ``kind`` + fields, and every other form is an error naming the
    forms it expected.
    """

    kind: Literal["normal", "zeros", "uniform", "int", "value", "file", "images"]
    low: float | None = None
    high: float | None = None
    value: float | int | bool | None = None
    path: str | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, raw: Any) -> Any:
        forms = (
            "expected normal, zeros, {uniform: {low, high}}, {int: {low, high}}, {value: X}, {file: PATH} "
            "or {images: DIR, layout?, mean?, std?}"
        )
        if isinstance(raw, str):
            if raw in ("normal", "zeros"):
                return {"kind": raw}
            raise ValueError(forms)
        if not isinstance(raw, Mapping):
            raise ValueError(forms)
        if "kind" in raw:  # already canonical (a plan read back)
            return raw
        kinds = [k for k in raw if k in DATA_KINDS]
        if len(kinds) != 1:
            raise ValueError(forms)
        kind = kinds[0]
        body = raw[kind]
        rest = {k: v for k, v in raw.items() if k != kind}
        if kind in ("normal", "zeros"):
            if body not in (None, {}) or rest:
                raise ValueError(f"{kind} takes no settings; {forms}")
            return {"kind": kind}
        if kind in ("uniform", "int"):
            if rest or not isinstance(body, Mapping) or set(body) - {"low", "high"}:
                raise ValueError(f"{kind} takes {{low, high}}")
            default = (0.0, 1.0) if kind == "uniform" else (0, 1)
            return {"kind": kind, "low": body.get("low", default[0]), "high": body.get("high", default[1])}
        if kind == "value":
            if rest:
                raise ValueError("value takes one number (value: X)")
            return {"kind": kind, "value": body}
        if kind == "file":
            if rest or not isinstance(body, str) or not body.strip():
                raise ValueError("file takes a path to a .npy or .npz file (file: PATH)")
            return {"kind": kind, "path": body}
        # images: DIR plus its own options beside it
        if not isinstance(body, str) or not body.strip():
            raise ValueError("images takes a folder (images: DIR, layout?, mean?, std?)")
        unknown = set(rest) - {"layout", "mean", "std"}
        if unknown:
            raise ValueError(f"images takes layout, mean and std beside the folder, not {sorted(unknown)}")
        return {"kind": kind, "path": body, **rest}

    @model_validator(mode="after")
    def _consistent(self) -> InputData:
        if self.kind in ("uniform", "int"):
            assert self.low is not None and self.high is not None
            if self.low > self.high:
                raise ValueError(f"low ({self.low:g}) > high ({self.high:g})")
            if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError(f"int takes whole numbers, got low {self.low:g}, high {self.high:g}")
        if self.kind == "value" and self.value is None:
            raise ValueError("value takes one number (value: X)")
        if self.kind == "images":
            for name in ("mean", "std"):
                values = getattr(self, name)
                if values is not None and not values:
                    raise ValueError(f"{name} takes one number per channel")
            if self.std is not None and any(s <= 0 for s in self.std):
                raise ValueError(f"std must be positive, got {list(self.std)}")
        return self

    def to_plan(self, base_dir: Path) -> dict[str, Any]:
        """The canonical JSON of this source, a relative ``path`` made absolute against ``base_dir``."""
        out = self.model_dump(mode="json", exclude_none=True)
        if self.kind != "images":
            out.pop("layout", None)
        if self.path is not None:
            path = Path(self.path).expanduser()
            out["path"] = str(path if path.is_absolute() else (Path(base_dir) / path).resolve())
        return out


class InputDecl(_Strict):
    """``inputs.<name>``: ``shape`` (ints, ``batch``, dimension-axis names), ``dtype``, ``data``."""

    shape: tuple[int | str, ...] | None = None
    dtype: Literal["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"] | None = None
    data: InputData | None = None

    @field_validator("shape", mode="before")
    @classmethod
    def _shape(cls, raw: Any) -> Any:
        if raw is None:
            return raw
        if not isinstance(raw, list | tuple):
            raise ValueError("expected a list of dimensions, e.g. [batch, 3, 224, 224] ([] for a scalar)")
        for i, dim in enumerate(raw):
            if isinstance(dim, bool) or not isinstance(dim, int | str):
                raise ValueError(f"dimension {i} = {dim!r}: expected a positive integer, batch or an axis name")
            if isinstance(dim, int) and dim < 1:
                raise ValueError(f"dimension {i} = {dim}: expected a positive integer")
            if isinstance(dim, str) and not dim.isidentifier():
                raise ValueError(f"dimension {i} = {dim!r}: expected batch or an axis name (letters, digits, _)")
        if sum(1 for d in raw if d == BATCH) > 1:
            raise ValueError("at most one dimension is the batch")
        return tuple(raw)

    def dimension_names(self) -> tuple[str, ...]:
        """The axis names in ``shape`` (not ``batch``), in order."""
        return tuple(d for d in self.shape or () if isinstance(d, str) and d != BATCH)


InputsSection = dict[str, InputDecl]
"""``workload.inputs`` / an infer stage's ``inputs``: input name -> declaration."""


def declared_inputs(workload: Any) -> dict[str, InputDecl]:
    """The inputs a validated workload section declares: ``workload.inputs``, or the pipeline infer stage's.

    ``workload`` is a :class:`tuner.config.models.WorkloadSection`; a pipeline's stages are raw mappings
    here (the pipeline validates them), so its infer stage's ``inputs`` are validated by this function.
    """
    if getattr(workload, "inputs", None):
        return dict(workload.inputs)
    for stage in workload.stages or ():
        if isinstance(stage, Mapping) and stage.get("type") == "infer" and stage.get("inputs"):
            raw = stage["inputs"]
            if not isinstance(raw, Mapping):
                raise ValueError("an infer stage's inputs: expected a mapping of input name -> {shape, dtype, data}")
            return {str(name): InputDecl.model_validate(decl or {}) for name, decl in raw.items()}
    return {}


def inputs_location(workload: Any) -> tuple[Any, ...]:
    """The key path of the file's ``inputs`` mapping: ``workload.inputs``, or the infer stage's."""
    if getattr(workload, "inputs", None):
        return ("workload", "inputs")
    for i, stage in enumerate(workload.stages or ()):
        if isinstance(stage, Mapping) and stage.get("type") == "infer" and stage.get("inputs"):
            return ("workload", "stages", i, "inputs")
    return ("workload", "inputs")


def raw_dimension_names(workload: Any) -> set[str]:
    """The axis names the file's shapes use, read without validating the declarations (for the axes check of
    a file whose infer-stage ``inputs`` the pipeline will reject with its own line)."""
    raw: Any = None
    loc = inputs_location(workload)
    if len(loc) == 2:
        raw = {n: d.model_dump() for n, d in (workload.inputs or {}).items()}
    else:
        raw = workload.stages[loc[2]].get("inputs")
    names: set[str] = set()
    if isinstance(raw, Mapping):
        for decl in raw.values():
            shape = decl.get("shape") if isinstance(decl, Mapping) else None
            if isinstance(shape, list | tuple):
                names.update(d for d in shape if isinstance(d, str) and d != BATCH)
    return names


def dimension_axes(inputs: Mapping[str, InputDecl]) -> dict[str, tuple[str, ...]]:
    """Dimension-axis name -> the inputs whose shape names it (the search may declare these names)."""
    out: dict[str, list[str]] = {}
    for name, decl in inputs.items():
        for dim in decl.dimension_names():
            out.setdefault(dim, []).append(name)
    return {dim: tuple(names) for dim, names in out.items()}


def plan_inputs(inputs: Mapping[str, InputDecl], params: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """The JSON plan of one configuration: ``{name: {"shape": [ints] | None, "batch_axis": int | None,
    "dtype": str | None, "data": {...} | None}}``.

    ``batch`` becomes ``params["batch_size"]`` (default 1) and ``batch_axis`` its index; a dimension axis
    becomes ``params[axis]``, which must be there (the spec checks that every name is a declared axis).
    """
    batch = int(params.get("batch_size", 1))
    plan: dict[str, Any] = {}
    for name, decl in inputs.items():
        shape: list[int] | None = None
        batch_axis: int | None = None
        if decl.shape is not None:
            shape = []
            for i, dim in enumerate(decl.shape):
                if dim == BATCH:
                    batch_axis = i
                    shape.append(batch)
                elif isinstance(dim, str):
                    shape.append(int(params[dim]))
                else:
                    shape.append(int(dim))
        plan[name] = {
            "shape": shape,
            "batch_axis": batch_axis,
            "dtype": decl.dtype,
            "data": decl.data.to_plan(base_dir) if decl.data is not None else None,
        }
    return plan
