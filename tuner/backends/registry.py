"""Backend registry: built-ins and third-party plugins, all through the ``tuner.backends`` entry-point group.

The lookup itself (names, the duplicate-name and not-a-subclass errors) is :mod:`tuner.plugins`'; this
module gives it the backend types.
"""

from __future__ import annotations

from typing import cast

from tuner import plugins
from tuner.backends.base import Backend

GROUP = plugins.BACKENDS.group

# Used only when tuner runs from a source tree that was never installed (no entry-point metadata).
_BUILTIN_FALLBACK = dict(plugins.BACKENDS.builtins)


def _entry_points() -> dict[str, str]:
    return plugins.registered(plugins.BACKENDS)


def refresh() -> None:
    """Forget the cached entry points (after installing a plugin into the running interpreter)."""
    plugins.refresh()


def available_backends() -> tuple[str, ...]:
    """Names of every registered backend (built-in and plugins)."""
    return tuple(sorted(_entry_points()))


def get_backend(name: str) -> type[Backend]:
    """Return the backend class registered as ``name``; a clear ``BackendError`` otherwise."""
    return cast("type[Backend]", plugins.load(plugins.BACKENDS, name, entries=_entry_points()))
