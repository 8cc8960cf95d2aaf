"""Search axes: :class:`Axis`, one-value checks, and the ``search`` section -> axes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from tuner.config.inputs import declared_inputs, dimension_axes, inputs_location, raw_dimension_names
from tuner.config.lines import _EXPECT, _clean_msg, _first_error, _LineMap, _nearest
from tuner.config.models import RangeAxisModel, WorkloadFile
from tuner.errors import SpecError
from tuner.metrics import CORE_AXES

#: axes that must be positive integers
INT_AXES = frozenset(CORE_AXES)
MAX_AXIS_VALUE = 1_000_000


@dataclass(frozen=True)
class Axis:
    """One search axis: a fixed value, a list of choices, or a numeric range."""

    name: str
    kind: Literal["fixed", "choices", "range"]
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        if self.kind == "range":
            return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) and (
                self.step is None or isinstance(self.step, int)
            )
        return all(isinstance(v, int) and not isinstance(v, bool) for v in self.values)

    @property
    def default(self) -> Any:
        """The value a config takes when nothing sets this axis: its first choice or its low bound."""
        return self.values[0] if self.kind != "range" else self.low

    def grid(self) -> tuple[Any, ...]:
        """Every value of the axis (ranges enumerated by step, or by 1 / powers of two for ints)."""
        if self.kind != "range":
            return self.values
        assert self.low is not None and self.high is not None
        if self.log and self.is_int:
            out, v = [], int(self.low)
            while v <= self.high:
                out.append(v)
                v *= 2
            return tuple(out)
        if self.is_int:
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise SpecError(f"search.{self.name}: a float range needs a step to be enumerated")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return tuple(round(self.low + i * self.step, 12) for i in range(n + 1))

    def contains(self, value: Any) -> bool:
        if self.kind != "range":
            return value in self.values
        return isinstance(value, int | float) and self.low <= value <= self.high  # type: ignore[operator]


def check_axis_value(name: str, value: Any, *, where: str) -> Any:
    """Validate one concrete axis value (type and range) and return it."""
    if name in INT_AXES or (name.startswith("stages.") and name.endswith((".workers", ".queue"))):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} = {value!r}: expected a positive integer")
        if not 1 <= value <= MAX_AXIS_VALUE:
            raise SpecError(f"{where} = {value!r}: expected an integer between 1 and {MAX_AXIS_VALUE}")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where} = {value!r}: expected a finite number")
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise SpecError(f"{where} = {value!r}: expected a number, string or boolean")
    return value


def _dimension_axes(model: WorkloadFile) -> tuple[dict[str, tuple[str, ...]], bool]:
    """The dimension axes the file's ``inputs`` name, and whether the declarations validated.

    A malformed infer stage is the pipeline's to report (with its line): its shapes' names still count as
    axes here, so the search does not call them unknown first.
    """
    try:
        return dimension_axes(declared_inputs(model.workload)), True
    except ValueError:
        return {name: () for name in raw_dimension_names(model.workload)}, False


def _build_axes(model: WorkloadFile, where: str, lines: _LineMap, *, validate_backend: bool) -> dict[str, Axis]:
    axes: dict[str, Axis] = {}
    dims, valid = _dimension_axes(model)
    for key, raw in model.search.items():
        loc = ("search", key)
        at = f"{where}:{lines.line(loc)}: search.{key}"
        if not isinstance(key, str) or not key:
            raise SpecError(f"{at}: expected a non-empty axis name")
        if key not in CORE_AXES and key not in dims and not key.startswith(("options.", "stages.")):
            raise SpecError(
                f"{at}: unknown axis{_nearest(key, [*CORE_AXES, *dims])} (valid: {', '.join(CORE_AXES)}, "
                "options.<backend option>, stages.<stage>.workers, or a dimension named in an input's shape)"
            )
        axes[key] = _parse_axis(key, raw, at)
        if key in dims:
            _check_dimension_axis(axes[key], at)
    for dim, users in dims.items():
        if dim not in axes and valid:
            first = users[0]
            loc = (*inputs_location(model.workload), first, "shape")
            raise SpecError(
                f"{where}:{lines.line(loc)}: inputs.{first}.shape names "
                f"dimension {dim!r}, which is not an axis: declare it under search (e.g. 'search: {{{dim}: [128]}}' "
                "for one value, or a list/range to tune it), or write the number in the shape"
            )
    for key in CORE_AXES:
        axes.setdefault(key, Axis(name=key, kind="fixed", values=(1,)))
    # the four core axes first, in their usual order, then options and stages as written
    axes = {**{k: axes[k] for k in CORE_AXES}, **{k: v for k, v in axes.items() if k not in CORE_AXES}}
    for key in model.workload.options:
        if f"options.{key}" in axes:
            raise SpecError(
                f"{where}:{lines.line(('search', 'options.' + key))}: search.options.{key}: also fixed in "
                "workload.options; keep one"
            )
    return axes


def _check_dimension_axis(axis: Axis, at: str) -> None:
    """A dimension axis takes positive integers only (it is a tensor dimension)."""
    values = axis.grid() if axis.kind == "range" else axis.values
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_AXIS_VALUE:
            raise SpecError(f"{at} = {value!r}: a dimension axis takes positive integers (it sizes an input)")


def _parse_axis(name: str, raw: Any, at: str) -> Axis:
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{at} = []: expected at least one choice")
        values = tuple(check_axis_value(name, v, where=f"{at}[{i}]") for i, v in enumerate(raw))
        if len(set(map(repr, values))) != len(values):
            raise SpecError(f"{at} = {raw!r}: choices repeat a value")
        return Axis(name=name, kind="choices" if len(values) > 1 else "fixed", values=values)
    if isinstance(raw, dict):
        try:
            rng = RangeAxisModel.model_validate(raw)
        except ValidationError as err:
            e = _first_error(err)
            # pydantic names the member of ``int | float`` it tried ('low.int'): not a key of the file
            key = ".".join(str(p) for p in e["loc"] if p not in ("int", "float"))
            if e["type"] == "extra_forbidden":
                raise SpecError(
                    f"{at}.{key}: unknown key{_nearest(key, RangeAxisModel.model_fields)} "
                    "(a range is {low, high, step?, log?})"
                ) from None
            if e["type"] == "missing":
                raise SpecError(f"{at}: missing {key!r} (a range is {{low, high, step?, log?}})") from None
            suffix = f".{key}" if key else ""
            expected = _EXPECT.get(e["type"]) or _clean_msg(e["msg"])
            raise SpecError(f"{at}{suffix} = {e.get('input')!r}: {expected}") from None
        for bound in ("low", "high"):
            value = getattr(rng, bound)
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(f"{at}.{bound} = {value!r}: expected a finite number")
        if name in INT_AXES or (name.startswith("stages.") and name.endswith((".workers", ".queue"))):
            for bound in ("low", "high", "step"):
                value = getattr(rng, bound)
                if value is not None:
                    check_axis_value(name, value, where=f"{at}.{bound}")
        if rng.low == rng.high:
            return Axis(name=name, kind="fixed", values=(rng.low,))
        return Axis(name=name, kind="range", low=rng.low, high=rng.high, step=rng.step, log=rng.log)
    return Axis(name=name, kind="fixed", values=(check_axis_value(name, raw, where=at),))
