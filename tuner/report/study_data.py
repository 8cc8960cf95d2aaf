"""The plain rows a report reads: :class:`TrialRow` (duck-types Optuna's ``FrozenTrial``) and
:class:`StudyData` (duck-types the parts of ``optuna.Study`` that reports use). See :mod:`tuner.report.load`."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialRow:
    """One trial as stored: what reports read. Duck-types :class:`optuna.trial.FrozenTrial`."""

    number: int
    state: Any  # optuna.trial.TrialState
    params: dict[str, Any]
    user_attrs: dict[str, Any]
    values: list[float] | None = None
    datetime_start: _dt.datetime | None = None
    datetime_complete: _dt.datetime | None = None
    distributions: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None


@dataclass
class StudyData:
    """One study: name, user attributes, directions and its trials (number order)."""

    study_name: str
    user_attrs: dict[str, Any]
    directions: list[str]
    trials: list[TrialRow]
    storage: str = ""

    def get_trials(self, deepcopy: bool = False, states: Iterable[Any] | None = None) -> list[TrialRow]:
        if states is None:
            return list(self.trials)
        wanted = set(states)
        return [t for t in self.trials if t.state in wanted]
