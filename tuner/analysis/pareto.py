"""The Pareto front of a study over its objectives. Pure functions over plain frozen records; no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from tuner.analysis.knee import TrialRecord, merge_repeats
from tuner.text import finite_or_none

__all__ = ["pareto_front"]

_DIRECTIONS = {"maximize": 1.0, "minimize": -1.0}


def _signs(objectives: Sequence[tuple[str, str]]) -> list[tuple[str, float]]:
    if not objectives:
        raise ValueError("pareto_front needs at least one objective")
    out = []
    for name, direction in objectives:
        sign = _DIRECTIONS.get(str(direction).lower())
        if sign is None:
            raise ValueError(f"objective {name!r}: direction must be 'maximize' or 'minimize', got {direction!r}")
        out.append((name, sign))
    return out


def _value(record: TrialRecord, name: str) -> float | None:
    return finite_or_none(record.metrics.get(name))


def pareto_front(trials: Iterable[TrialRecord], objectives: Sequence[tuple[str, str]]) -> list[TrialRecord]:
    """The feasible trials that no other feasible trial dominates, best first by the first objective.

    ``objectives`` are ``(metric, "maximize" | "minimize")`` pairs, e.g.
    ``[("qps", "maximize"), ("latency_p99_ms", "minimize")]``. A trial dominates another when it is at
    least as good in every objective and better in one; trials equal in every objective are all kept.
    Infeasible trials and trials missing an objective are left out; a
    configuration measured several times counts once (see :func:`~tuner.analysis.knee.merge_repeats`).
    Ties on the first objective are ordered by the next ones, then by trial number.
    """
    signs = _signs(objectives)
    complete = [t for t in trials if t.feasible and all(_value(t, name) is not None for name, _ in signs)]
    records = merge_repeats(complete, require_qps=False)
    if not records:
        return []
    # larger is better in every column
    gain = np.array([[sign * float(r.metrics[name]) for name, sign in signs] for r in records], dtype=float)
    keep = _non_dominated(gain)
    order = sorted(np.flatnonzero(keep), key=lambda i: (*(-gain[i]).tolist(), records[i].number))
    return [records[i] for i in order]


def _non_dominated(gain: np.ndarray) -> np.ndarray:
    """Mask of the rows no other row dominates (larger is better in every column)."""
    n, d = gain.shape
    if d == 1:
        return gain[:, 0] >= gain[:, 0].max()
    if d == 2:
        # sweep by the first column, best first: a row is dominated by a row with a larger first value and
        # a second value at least as large, or by a row with an equal first value and a larger second value
        order = np.lexsort((-gain[:, 1], -gain[:, 0]))
        first, second = gain[order, 0], gain[order, 1]
        new_group = np.ones(n, dtype=bool)
        new_group[1:] = first[1:] != first[:-1]
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        running = np.maximum.accumulate(second)
        before = np.where(group_start > 0, running[np.maximum(group_start - 1, 0)], -math.inf)
        keep = np.zeros(n, dtype=bool)
        keep[order] = (second > before) & (second >= second[group_start])
        return keep
    # any dominated row is dominated by a row of the front, and comes after it in descending lexicographic
    # order: so one pass in that order, checking each row against the front found so far
    order = np.lexsort(tuple(-gain[:, k] for k in reversed(range(d))))
    front = np.empty_like(gain)
    size = 0
    keep = np.zeros(n, dtype=bool)
    for i in order:
        row = gain[i]
        if size:
            head = front[:size]
            if ((head >= row).all(axis=1) & (head > row).any(axis=1)).any():
                continue
        front[size] = row
        size += 1
        keep[i] = True
    return keep
