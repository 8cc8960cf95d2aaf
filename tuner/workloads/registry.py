"""Workload-kind registry: built-ins and third-party kinds, all through the ``tuner.workloads`` entry-point group.

The lookup itself (names, the duplicate-name and not-a-subclass errors) is :mod:`tuner.plugins`'; this
module gives it the kind types. The config layer, below the workloads, looks kinds up through
:mod:`tuner.plugins` directly.
"""

from __future__ import annotations

from typing import cast

from tuner import plugins
from tuner.workloads.base import WorkloadKind

GROUP = plugins.WORKLOAD_KINDS.group


def available_kinds() -> tuple[str, ...]:
    """Names of every registered workload kind (built-in and plugins)."""
    return plugins.names(plugins.WORKLOAD_KINDS)


def get_kind(name: str) -> type[WorkloadKind]:
    """The workload-kind class registered as ``name``; a one-line :class:`tuner.plugins.PluginError` otherwise."""
    return cast("type[WorkloadKind]", plugins.load(plugins.WORKLOAD_KINDS, name))
