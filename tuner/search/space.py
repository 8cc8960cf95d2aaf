"""Search space: spec axes -> Optuna distributions, suggestions, the full grid and config identity."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from tuner.config.axes import Axis
from tuner.config.spec import Spec

Params = Mapping[str, Any]


def distribution(axis: Axis) -> BaseDistribution:
    """The Optuna distribution of a searched axis."""
    if axis.kind == "choices":
        return CategoricalDistribution(list(axis.values))
    if axis.kind == "range":
        assert axis.low is not None and axis.high is not None
        if axis.is_int:
            return IntDistribution(int(axis.low), int(axis.high), log=axis.log, step=int(axis.step or 1))
        return FloatDistribution(float(axis.low), float(axis.high), log=axis.log, step=axis.step)
    raise ValueError(f"axis {axis.name!r} is fixed; it has no distribution")


def suggest(trial: Any, name: str, dist: BaseDistribution) -> Any:
    """Ask an Optuna trial for ``name`` with the public ``suggest_*`` call matching ``dist``."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"axis {name!r}: unsupported distribution {dist!r}")


def distributions(spec: Spec) -> dict[str, BaseDistribution]:
    return {name: distribution(axis) for name, axis in spec.searched_axes().items()}


def grid(spec: Spec) -> dict[str, tuple[Any, ...]]:
    """Every value of every searched axis (ranges enumerated; see :meth:`Axis.grid`)."""
    return {name: axis.grid() for name, axis in spec.searched_axes().items()}


def grid_size(spec: Spec) -> int:
    return math.prod(len(v) for v in grid(spec).values()) if spec.searched_axes() else 1


def iter_grid(spec: Spec) -> Iterator[dict[str, Any]]:
    """Every full config of the grid (fixed axes included)."""
    g = grid(spec)
    fixed = {n: a.default for n, a in spec.axes.items() if a.kind == "fixed"}
    names = list(g)
    for combo in itertools.product(*(g[n] for n in names)):
        yield {**fixed, **dict(zip(names, combo, strict=True))}


def config_key(params: Params) -> tuple[tuple[str, str], ...]:
    """A hashable identity of a config (same params -> same key), for 'already measured' checks."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
