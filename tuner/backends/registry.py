"""Backend registry: built-ins and third-party plugins, all through the ``tuner.backends`` entry-point group."""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from importlib.metadata import entry_points

from tuner.errors import BackendError

GROUP = "tuner.backends"

# Used only when tuner runs from a source tree that was never installed (no entry-point metadata).
_BUILTIN_FALLBACK = {
    "onnxruntime": "tuner.backends.onnxruntime:OnnxRuntimeBackend",
    "sim": "tuner.backends.sim:SimBackend",
}


@cache
def _entry_points() -> dict[str, str]:
    found: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            raise BackendError(
                f"backend name {ep.name!r} is registered twice in entry-point group {GROUP!r}: "
                f"{found[ep.name]} and {ep.value}"
            )
        found[ep.name] = ep.value
    for name, target in _BUILTIN_FALLBACK.items():
        found.setdefault(name, target)
    return found


def available_backends() -> tuple[str, ...]:
    """Names of every registered backend (built-in and plugins)."""
    return tuple(sorted(_entry_points()))


def get_backend(name: str) -> type:
    """Return the backend class registered as ``name``; a clear ``BackendError`` otherwise."""
    registry = _entry_points()
    if name not in registry:
        near = difflib.get_close_matches(name, registry, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise BackendError(f"unknown backend {name!r} (valid: {', '.join(sorted(registry))}){hint}")
    module_name, _, attr = registry[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendError(f"backend {name!r} could not be imported ({registry[name]}): {err}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BackendError(f"backend {name!r}: {module_name} has no attribute {attr!r}") from None
