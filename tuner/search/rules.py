"""Validity rules as data: a config a rule rejects is skipped (PRUNED with the reason), never measured.

Each :class:`Rule` has a name, a description and a check; :func:`skip_reason` applies them in order.

The rules know the device through :class:`RuleContext`: the study loop (:mod:`tuner.study.run`) asks the
workload kind how many host threads a config computes on (``WorkloadKind.host_threads``, which asks the
backend: ``Backend.host_threads``) and hands that count to the rules as a function of the params. This
package imports neither the workloads nor the backends: it sees only the count and where it came from
(:class:`HostThreads`), or None for a config that waits on a device rather than on host cores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Params = Mapping[str, Any]


@dataclass(frozen=True)
class HostThreads:
    """How many host threads one config keeps computing at once, and where that count comes from.

    ``origin`` is written into the reason of a pruned config, e.g. ``"pool_size 2 x threads 2 on
    onnxruntime"``, so the message says why the count is what it is.
    """

    count: int
    origin: str


#: the host-thread demand of a config; None: it waits on a device, no host-core rule applies
HostDemand = Callable[[Params], HostThreads | None]


def no_host_threads(params: Params) -> HostThreads | None:
    """The demand of a workload that computes nothing on the host (the default of :class:`RuleContext`)."""
    return None


@dataclass(frozen=True)
class RuleContext:
    """What the rules know of this host and this workload."""

    usable_cores: int
    allow_oversubscription: bool
    #: params -> the config's host threads (None: device-bound); built by the study loop from the kind
    host_threads: HostDemand = no_host_threads


@dataclass(frozen=True)
class Rule:
    """A validity rule: ``check`` returns the reason a config is skipped, or None when it is valid."""

    name: str
    description: str
    check: Callable[[Params, RuleContext], str | None]


def _oversubscribed(params: Params, ctx: RuleContext) -> str | None:
    if ctx.allow_oversubscription:
        return None
    demand = ctx.host_threads(params)
    if demand is None or demand.count <= ctx.usable_cores:
        return None
    return (
        f"oversubscribed: {demand.count} host threads ({demand.origin}) > {ctx.usable_cores} usable cores; "
        "set study.allow_oversubscription: true to measure it anyway"
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "oversubscription",
        "the host threads a config computes on (as its workload kind and backend count them) must not exceed "
        "the usable cores; a device-bound config (sim, an NPU command) has no such limit",
        _oversubscribed,
    ),
)


def skip_reason(params: Params, ctx: RuleContext, rules: tuple[Rule, ...] = RULES) -> str | None:
    """The reason of the first rule a config breaks (it starts with the rule's word); None when every rule holds."""
    for rule in rules:
        reason = rule.check(params, ctx)
        if reason:
            return reason
    return None
