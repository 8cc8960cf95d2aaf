"""Drift: how a reference configuration's throughput moved over a study, and the factor to undo it.

The study re-measures one reference configuration now and then; its qps against the trial number is the
machine's drift (thermals, clocks, background load). :class:`DriftSeries` holds those points and

* ``drift`` = ``max / min - 1`` of the reference's qps: the largest relative difference between two
  moments of the study -- what drift can do to a comparison of two trials measured at different times
  (a series that rises 10 % and falls back drifted 10 %, though it ends where it began);
* :meth:`DriftSeries.factor_at`: the reference's qps linearly interpolated at a trial number, over its
  first value (constant beyond the ends), so a trial normalises as ``qps / factor_at(number)``.
* :func:`normalise_records`: every record's qps figures divided by that factor
  (``measure.drift_correction: true``), the measured qps kept beside as ``qps_raw``.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from tuner.analysis.knee import TrialRecord

__all__ = ["DriftSeries", "drift_series", "drifted", "normalise_records"]


@dataclass(frozen=True)
class DriftSeries:
    """The reference's ``(trial_number, qps)`` points in trial order (repeats of a number averaged) and
    ``drift`` = ``max(qps) / min(qps) - 1``."""

    points: tuple[tuple[int, float], ...]
    drift: float

    @property
    def first(self) -> float:
        """The reference's first qps: the base every factor is relative to."""
        return self.points[0][1]

    def factor_at(self, number: float) -> float:
        """The reference's qps linearly interpolated at trial ``number``, over its first value.

        Before the first point it is 1, after the last the last point's factor.
        """
        xs = [float(n) for n, _ in self.points]
        ys = [q for _, q in self.points]
        return float(np.interp(float(number), xs, ys)) / self.first

    def normalised(self, number: float, qps: float) -> float:
        """``qps`` measured at trial ``number`` as if measured when the reference was first measured."""
        return qps / self.factor_at(number)


def drift_series(points: Iterable[tuple[int, float]]) -> DriftSeries:
    """A :class:`DriftSeries` from the reference's ``(trial_number, qps)`` measurements, in any order.

    Non-finite qps are left out (a failed measurement); several at one trial number are averaged.
    Raises ``ValueError`` when no finite qps is left or one is not positive.
    """
    by_number: dict[int, list[float]] = {}
    for number, qps in points:
        q = float(qps)
        if not math.isfinite(q):
            continue
        if q <= 0.0:
            raise ValueError(f"the reference's qps must be positive, got {qps!r} at trial {number}")
        by_number.setdefault(int(number), []).append(q)
    if not by_number:
        raise ValueError("no finite measurement of the reference configuration")
    series = tuple((n, math.fsum(qs) / len(qs)) for n, qs in sorted(by_number.items()))
    values = [q for _, q in series]
    return DriftSeries(points=series, drift=max(values) / min(values) - 1.0)


def drifted(series: DriftSeries, tolerance: float) -> bool:
    """Whether the reference moved by more than ``tolerance`` (relative) over the study."""
    return series.drift > tolerance


#: the per-trial throughput figures that drift scales (everything measured in samples per second)
_QPS_METRICS = ("qps", "qps_ci_low", "qps_ci_high")


def normalise_records(records: Sequence[TrialRecord], series: DriftSeries) -> list[TrialRecord]:
    """``records`` with every qps figure divided by the drift factor at its trial number.

    ``qps``, its interval ends and its windows (``window_qps``) are scaled; the measured qps stays as
    ``qps_raw`` and the factor as ``drift_factor``, so a table shows both. ``qps_cv`` is a ratio and does not
    move. A record without a qps is returned as it is.
    """
    out = []
    for record in records:
        qps = record.metrics.get("qps")
        if not isinstance(qps, int | float) or isinstance(qps, bool):
            out.append(record)
            continue
        factor = series.factor_at(record.number)
        metrics = dict(record.metrics)
        for name in _QPS_METRICS:
            value = metrics.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                metrics[name] = float(value) / factor
        windows = metrics.get("window_qps")
        if isinstance(windows, list):
            metrics["window_qps"] = [w / factor if isinstance(w, int | float) else w for w in windows]
        metrics["qps_raw"] = float(qps)
        metrics["drift_factor"] = factor
        out.append(replace(record, metrics=metrics))
    return out
