"""The Pareto front of a study over its objectives. Pure functions over plain frozen records; no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from tuner.analysis.knee import TrialRecord, merge_repeats

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
    value = record.metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


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
    keep = np.ones(len(records), dtype=bool)
    for i in range(len(records)):
        no_worse = (gain >= gain[i]).all(axis=1)
        better = (gain > gain[i]).any(axis=1)
        keep[i] = not bool((no_worse & better).any())
    order = sorted(np.flatnonzero(keep), key=lambda i: (*(-gain[i]).tolist(), records[i].number))
    return [records[i] for i in order]
