"""Backend registry: built-ins and third-party plugins, all through the ``tuner.backends`` entry-point group."""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from importlib.metadata import entry_points

from tuner.backends.base import Backend
from tuner.errors import BackendError

GROUP = "tuner.backends"

# Used only when tuner runs from a source tree that was never installed (no entry-point metadata).
_BUILTIN_FALLBACK = {
    "onnxruntime": "tuner.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "tuner.backends.openvino:OpenVinoBackend",
    "sim": "tuner.backends.sim:SimBackend",
}


def _origin(ep: object) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    return f"{getattr(ep, 'value', '?')} (package {name})" if name else str(getattr(ep, "value", "?"))


@cache
def _entry_points() -> dict[str, str]:
    found: dict[str, str] = {}
    origin: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            raise BackendError(
                f"backend name {ep.name!r} is registered twice in entry-point group {GROUP!r}: "
                f"{origin[ep.name]} and {_origin(ep)}; uninstall one of them or rename its entry point"
            )
        found[ep.name] = ep.value  # the same target twice (one package seen twice on sys.path) is fine
        origin[ep.name] = _origin(ep)
    for name, target in _BUILTIN_FALLBACK.items():
        found.setdefault(name, target)
    return found


def refresh() -> None:
    """Forget the cached entry points (after installing a plugin into the running interpreter)."""
    _entry_points.cache_clear()


def available_backends() -> tuple[str, ...]:
    """Names of every registered backend (built-in and plugins)."""
    return tuple(sorted(_entry_points()))


def get_backend(name: str) -> type[Backend]:
    """Return the backend class registered as ``name``; a clear ``BackendError`` otherwise."""
    registry = _entry_points()
    if name not in registry:
        near = difflib.get_close_matches(name, registry, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise BackendError(f"unknown backend {name!r} (valid: {', '.join(sorted(registry))}){hint}")
    target = registry[name]
    module_name, _, attr = target.partition(":")
    if not attr.strip():
        raise BackendError(f"backend {name!r}: entry point {target!r} must name a class as 'module:Class'")
    try:
        module = importlib.import_module(module_name.strip())
    except Exception as err:  # noqa: BLE001 - a plugin may fail to import in any way
        raise BackendError(f"backend {name!r} could not be imported ({target}): {type(err).__name__}: {err}") from None
    obj: object = module
    for part in attr.strip().split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BackendError(f"backend {name!r}: {module_name} has no attribute {attr!r} ({target})") from None
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise BackendError(
            f"backend {name!r}: {target} is not a subclass of tuner.backends.Backend (see the README: "
            "'Writing a backend')"
        )
    return obj
