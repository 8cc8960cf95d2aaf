"""Classes registered by name under an entry-point group: the one lookup behind backends and workload kinds.

A *group* (:class:`PluginGroup`) is an entry-point group (``tuner.backends``, ``tuner.workloads``) whose
entries name classes as ``module:Class``; tuner's own built-ins are registered in its ``pyproject.toml``
exactly like a third-party package's. This module lists a group's names (:func:`names`), loads one class
by name (:func:`load`) and says what is wrong in one line, raising the group's error type:

* an unknown name lists the valid ones and the nearest one;
* two distributions claiming one name name both (the same target seen twice is fine);
* a target that cannot be imported, has no such attribute, or is not a subclass of the group's base
  class says so, naming the target and the README section on writing one.

It sits at the bottom of the layers and imports nothing of tuner but :mod:`tuner.errors`: the base class is
named as ``module:Class`` and imported like the targets, so the config layer can look a workload kind or a
backend up by name (and call its checks) without importing the workloads or backends packages.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from tuner.errors import BackendError, TunerError


class PluginError(TunerError):
    """A name is not registered in an entry-point group, or its registration is broken."""

    exit_code = 2


@dataclass(frozen=True)
class PluginGroup:
    """An entry-point group of classes: how its names are found and how its errors read."""

    #: the entry-point group, e.g. ``tuner.backends``
    group: str
    #: what one entry is called in messages: ``backend``, ``workload kind``
    noun: str
    #: the base every target must subclass, as ``module:Class``
    base: str
    #: the base as a reader writes it in an import, e.g. ``tuner.backends.Backend``
    base_shown: str
    #: the README section on writing one
    readme: str
    #: ``name -> module:Class`` used only when tuner runs from a source tree that was never installed
    #: (no entry-point metadata at all); an installed tuner registers the same names in its metadata
    builtins: tuple[tuple[str, str], ...] = ()
    #: the error type raised for this group
    error: type[TunerError] = PluginError


BACKENDS = PluginGroup(
    group="tuner.backends",
    noun="backend",
    base="tuner.backends.base:Backend",
    base_shown="tuner.backends.Backend",
    readme="Writing a backend",
    builtins=(
        ("onnxruntime", "tuner.backends.onnxruntime:OnnxRuntimeBackend"),
        ("openvino", "tuner.backends.openvino:OpenVinoBackend"),
        ("sim", "tuner.backends.sim:SimBackend"),
    ),
    error=BackendError,
)

WORKLOAD_KINDS = PluginGroup(
    group="tuner.workloads",
    noun="workload kind",
    base="tuner.workloads.base:WorkloadKind",
    base_shown="tuner.workloads.base.WorkloadKind",
    readme="Writing a workload kind",
    builtins=(
        ("command", "tuner.workloads.command.kind:CommandKind"),
        ("pipeline", "tuner.workloads.pipeline.kind:PipelineKind"),
        ("pool", "tuner.workloads.pool:PoolKind"),
    ),
)

_registered: dict[str, dict[str, str]] = {}


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    return f"{ep.value} (package {name})" if name else ep.value


def registered(group: PluginGroup) -> dict[str, str]:
    """``name -> module:Class`` of every entry of ``group`` (cached); two packages claiming one name raise."""
    cached = _registered.get(group.group)
    if cached is not None:
        return cached
    found: dict[str, str] = {}
    origin: dict[str, str] = {}
    for ep in entry_points(group=group.group):
        if ep.name in found and found[ep.name] != ep.value:
            raise group.error(
                f"{group.noun} name {ep.name!r} is registered twice in entry-point group {group.group!r}: "
                f"{origin[ep.name]} and {_origin(ep)}; uninstall one of them or rename its entry point"
            )
        found[ep.name] = ep.value  # the same target twice (one package seen twice on sys.path) is fine
        origin[ep.name] = _origin(ep)
    for name, target in group.builtins:
        found.setdefault(name, target)
    _registered[group.group] = found
    return found


def refresh() -> None:
    """Forget every cached group (after installing a plugin into the running interpreter)."""
    _registered.clear()


def names(group: PluginGroup) -> tuple[str, ...]:
    """Every registered name of ``group``, sorted."""
    return tuple(sorted(registered(group)))


def _unknown(group: PluginGroup, name: str, valid: Mapping[str, str] | tuple[str, ...]) -> str:
    """The one-line message for a name that is not registered: the valid names and the nearest one."""
    near = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown {group.noun} {name!r} (valid: {', '.join(sorted(valid))}){hint}"


def load(group: PluginGroup, name: str, *, entries: Mapping[str, str] | None = None) -> type[Any]:
    """The class registered as ``name`` in ``group`` (``entries``: the registrations to use, default all)."""
    entries = registered(group) if entries is None else entries
    if name not in entries:
        raise group.error(_unknown(group, name, entries))
    target = entries[name]
    cls = _import_target(group, name, target)
    base = _import_target(group, name, group.base, what="its base class")
    if not (isinstance(cls, type) and isinstance(base, type) and issubclass(cls, base)):
        raise group.error(
            f"{group.noun} {name!r}: {target} is not a subclass of {group.base_shown} (see the README: "
            f"{group.readme!r})"
        )
    return cls


def _import_target(group: PluginGroup, name: str, target: str, *, what: str = "") -> object:
    label = f"{group.noun} {name!r}" + (f" ({what})" if what else "")
    module_name, _, attr = target.partition(":")
    if not attr.strip():
        raise group.error(f"{label}: entry point {target!r} must name a class as 'module:Class'")
    try:
        module = importlib.import_module(module_name.strip())
    except Exception as err:  # noqa: BLE001 - a plugin may fail to import in any way
        raise group.error(f"{label} could not be imported ({target}): {type(err).__name__}: {err}") from None
    obj: object = module
    for part in attr.strip().split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise group.error(f"{label}: {module_name} has no attribute {attr!r} ({target})") from None
    return obj
