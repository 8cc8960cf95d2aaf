"""Analysis of measured trials: the saturation knee, the Pareto front, paired decisions over interleaved
rounds and drift of a reference configuration, as plain frozen records.

Pure functions, no I/O: report, compare and export read these records only. The package's face lists
the public names; inside tuner they are imported from their modules (:mod:`.knee`, :mod:`.pareto`,
:mod:`.intervals`, :mod:`.paired`, :mod:`.drift`).

May import: :mod:`tuner.text`, numpy and scipy only.
"""

from __future__ import annotations

from tuner.analysis.drift import DriftSeries, drift_series, drifted
from tuner.analysis.knee import (
    DEFAULT_TOLERANCE,
    EDGE_AXES,
    PLATEAU_STDERR,
    KneeResult,
    TrialRecord,
    cost_key,
    find_knee,
    in_flight,
    merge_repeats,
    threads_of,
)
from tuner.analysis.paired import Interference, PairedDecision, paired_decision
from tuner.analysis.pareto import pareto_front

__all__ = [
    "DEFAULT_TOLERANCE",
    "EDGE_AXES",
    "PLATEAU_STDERR",
    "DriftSeries",
    "Interference",
    "KneeResult",
    "PairedDecision",
    "TrialRecord",
    "cost_key",
    "drift_series",
    "drifted",
    "find_knee",
    "in_flight",
    "merge_repeats",
    "paired_decision",
    "pareto_front",
    "threads_of",
]
