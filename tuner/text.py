"""Small text and value helpers shared by every layer: one definition each.

Imports nothing from tuner: any package may use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error (or text), at most ``limit`` characters; the type name if empty."""
    lines = str(error).strip().splitlines()
    if lines:
        return lines[0][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def format_params(params: Mapping[str, Any], *, hide_ones: bool = False, sort: bool = False) -> str:
    """``pool_size=2, threads=1``: a configuration as people read it.

    ``hide_ones`` leaves out axes at 1 (an axis not searched is fixed at 1), keeping all when every axis is;
    ``sort`` orders by name (for messages that must not depend on the file's order).
    """
    items = list(params.items())
    if hide_ones:
        items = [(k, v) for k, v in items if v != 1] or items
    if sort:
        items.sort(key=lambda kv: str(kv[0]))
    return ", ".join(f"{k}={v}" for k, v in items)


def finite_or_none(value: Any) -> float | None:
    """A finite real number as ``float``; ``None`` for NaN, infinities, booleans and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth of dicts and lists) replaced by ``None``.

    JSON has no NaN: Optuna's storages, ``--json`` output and export files all go through this.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def json_digest(content: Any) -> str:
    """The sha256 hex digest of ``content``'s canonical JSON (sorted keys; other types by ``str``): the one way
    a cache key is made from settings."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
