"""Analysis of measured trials: the saturation knee and the Pareto front, as plain frozen records.

Pure functions, no I/O: report, compare and export read these records only. The package's face lists
the public names; inside tuner they are imported from their modules (:mod:`.knee`, :mod:`.pareto`).

May import: :mod:`tuner.text` only.
"""

from __future__ import annotations

from tuner.analysis.knee import (
    DEFAULT_TOLERANCE,
    PLATEAU_STDERR,
    KneeResult,
    TrialRecord,
    cost_key,
    find_knee,
    in_flight,
    merge_repeats,
    threads_of,
)
from tuner.analysis.pareto import pareto_front

__all__ = [
    "DEFAULT_TOLERANCE",
    "PLATEAU_STDERR",
    "KneeResult",
    "TrialRecord",
    "cost_key",
    "find_knee",
    "in_flight",
    "merge_repeats",
    "pareto_front",
    "threads_of",
]
