"""Figure data, axes: which resource axis a saturation curve runs along, which axis splits it into lines,
and the best qps per point of each line. Pure functions of :class:`~tuner.analysis.TrialRecord` lists."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuner.analysis.knee import TrialRecord
from tuner.metrics import CORE_AXES

# --------------------------------------------------------------------------------------------- axes


def _resource_axis(name: str) -> bool:
    return name in CORE_AXES or (name.startswith("stages.") and name.endswith(".workers"))


def _distinct(records: Sequence[TrialRecord], name: str) -> int:
    return len({repr(r.params.get(name)) for r in records if name in r.params})


def knee_axis(records: Sequence[TrialRecord]) -> str:
    """The resource axis (pool size, threads, requests in flight, batch, stage workers) that varies most
    among ``records``; ties go to the earlier core axis. ``pool_size`` when none varies."""
    names: list[str] = list(CORE_AXES)
    for r in records:
        for name in r.params:
            if _resource_axis(name) and name not in names:
                names.append(name)
    best, count = "pool_size", 1
    for name in names:
        n = _distinct(records, name)
        if n > count:
            best, count = name, n
    return best


def series_axis(records: Sequence[TrialRecord], x_axis: str) -> str | None:
    """The axis that splits the saturation curve into lines: ``batch_size`` when it varies, else the
    most varying other axis (resource axes first, then backend options); None when nothing else varies."""
    if x_axis != "batch_size" and _distinct(records, "batch_size") > 1:
        return "batch_size"
    names: list[str] = []
    for r in records:
        for name in r.params:
            if name != x_axis and name not in names:
                names.append(name)
    names.sort(key=lambda n: (not _resource_axis(n), CORE_AXES.index(n) if n in CORE_AXES else len(CORE_AXES)))
    best, count = None, 1
    for name in names:
        n = _distinct(records, name)
        if n > count:
            best, count = name, n
    return best


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, int | float):
        return (0, float(value))
    return (1, str(value))


def _qps(record: TrialRecord) -> float | None:
    value = record.metrics.get("qps")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        return None
    return float(value)


def saturation_lines(records: Sequence[TrialRecord], x_axis: str, by: str | None) -> list[dict[str, Any]]:
    """Best qps per value of ``x_axis``, one line per value of ``by`` (or one line when ``by`` is None).

    ``records`` should be feasible and merged (:func:`~tuner.analysis.merge_repeats`). Each line is
    ``{"name", "value", "x": [...], "y": [...], "numbers": [...]}``, x sorted.
    """
    groups: dict[str, dict[str, Any]] = {}
    for r in records:
        qps = _qps(r)
        if qps is None or x_axis not in r.params:
            continue
        value = r.params.get(by) if by else None
        key = repr(value)
        line = groups.setdefault(key, {"value": value, "points": {}})
        x = r.params[x_axis]
        xkey = repr(x)
        old = line["points"].get(xkey)
        if old is None or qps > old[1]:
            line["points"][xkey] = (x, qps, r.number)
    out = []
    for line in sorted(groups.values(), key=lambda g: _sort_key(g["value"])):
        points = sorted(line["points"].values(), key=lambda p: _sort_key(p[0]))
        name = f"{by}={line['value']}" if by else "best qps"
        out.append(
            {
                "name": name,
                "value": line["value"],
                "x": [p[0] for p in points],
                "y": [p[1] for p in points],
                "numbers": [p[2] for p in points],
            }
        )
    return out


def _log_axis(values: Sequence[Any]) -> bool:
    nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return bool(nums) and len(nums) == len(values) and min(nums) > 0 and max(nums) / min(nums) >= 64
