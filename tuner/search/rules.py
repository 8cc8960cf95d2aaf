"""Validity rules as data: a config a rule rejects is skipped (PRUNED with the reason), never measured.

Each :class:`Rule` has a name, a description and a check; :func:`skip_reason` applies them in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Params = Mapping[str, Any]


@dataclass(frozen=True)
class RuleContext:
    usable_cores: int
    allow_oversubscription: bool
    cpu_bound: bool


@dataclass(frozen=True)
class Rule:
    """A validity rule: ``check`` returns the reason a config is skipped, or None when it is valid."""

    name: str
    description: str
    check: Callable[[Params, RuleContext], str | None]


def _oversubscribed(params: Params, ctx: RuleContext) -> str | None:
    if ctx.allow_oversubscription or not ctx.cpu_bound:
        return None
    used = int(params.get("pool_size", 1)) * int(params.get("threads", 1))
    if used > ctx.usable_cores:
        return (
            f"oversubscribed: pool_size x threads = {used} > {ctx.usable_cores} usable cores "
            "(set study.allow_oversubscription: true to measure it anyway)"
        )
    return None


RULES: tuple[Rule, ...] = (
    Rule(
        "oversubscription",
        "pool_size x threads must not exceed the usable cores of a CPU-bound backend",
        _oversubscribed,
    ),
)


def skip_reason(params: Params, ctx: RuleContext, rules: tuple[Rule, ...] = RULES) -> str | None:
    """The first rule a config breaks, as ``"<rule>: <reason>"``; None when every rule holds."""
    for rule in rules:
        reason = rule.check(params, ctx)
        if reason:
            return reason
    return None
