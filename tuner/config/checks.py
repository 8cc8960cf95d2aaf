"""Checks of a validated workload file that depend on its kind and its backend.

The config layer sits below the workloads and the backends and imports neither: it looks the kind
(entry-point group ``tuner.workloads``) and the backend (``tuner.backends``) up by name through
:mod:`tuner.plugins` and asks them. A kind validates its own part of the file in its ``check`` with a
:class:`CheckContext`: the validated file, its axes and objectives, where it lives, the one-line
``file:line: key: message`` errors every bad workload file gets, and :meth:`CheckContext.check_backend`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner import plugins
from tuner.config.axes import Axis
from tuner.config.lines import _dotted, _LineMap, _nearest
from tuner.config.models import KIND_KEYS, WorkloadFile, WorkloadSection
from tuner.errors import BackendError, SpecError, TunerError
from tuner.metrics import ACCURACY_METRICS

#: workload-section key -> the built-in kind that alone takes it
_KEY_OWNER = {key: kind for kind, keys in KIND_KEYS.items() for key in keys}


@dataclass(frozen=True)
class CheckContext:
    """What a workload kind's ``check`` sees of a loaded workload file, and how it reports a problem."""

    model: WorkloadFile
    axes: Mapping[str, Axis]
    objectives: tuple[tuple[str, str], ...]
    #: the file as messages name it
    where: str
    #: relative paths in the file resolve against this folder
    base_dir: Path
    lines: _LineMap
    #: False: leave ``workload.backend`` and its options unchecked (``load_spec(validate_backend=False)``)
    validate_backend: bool = True

    @property
    def workload(self) -> WorkloadSection:
        return self.model.workload

    def searched(self) -> dict[str, Axis]:
        """Axes with more than one possible value."""
        return {n: a for n, a in self.axes.items() if a.kind != "fixed"}

    def line(self, loc: Sequence[Any]) -> int:
        """The line of key path ``loc`` (or of its nearest parent written in the file)."""
        return self.lines.line(loc)

    def at(self, loc: Sequence[Any]) -> str:
        """``file:line: dotted.key`` of key path ``loc``, e.g. ``("workload", "stages", 2, "type")``."""
        return f"{self.where}:{self.line(loc)}: {_dotted(loc)}"

    def value_at(self, loc: Sequence[Any]) -> Any:
        """The validated value at key path ``loc``; None when there is none."""
        current: Any = self.model.model_dump()
        for part in loc:
            try:
                current = current[part]
            except (KeyError, IndexError, TypeError):
                return None
        return current

    def error(self, loc: Sequence[Any], message: str, *, show_value: bool = False) -> SpecError:
        """``file:line: key: message`` (``key = value: message`` with ``show_value`` and a scalar value)."""
        shown = ""
        if show_value:
            raw = self.value_at(loc)
            if isinstance(raw, str | int | float) and not isinstance(raw, bool):
                shown = f" = {raw!r}"
        return SpecError(f"{self.at(loc)}{shown}: {message}")

    @staticmethod
    def nearest(name: str, valid: Sequence[str] | Mapping[str, Any]) -> str:
        """`` (did you mean 'x'?)`` for the valid name nearest ``name``; empty when none is near."""
        return _nearest(name, valid)

    def check_backend(self) -> None:
        """``workload.backend`` is registered; its model is given when it needs one; its options are its own."""
        if not self.validate_backend:
            return
        workload = self.workload
        try:
            backend = plugins.load(plugins.BACKENDS, workload.backend)
        except TunerError as err:
            raise SpecError(f"{self.at(('workload', 'backend'))}: {err}") from None
        if backend.needs_model and not workload.model:
            raise self.error(
                ("workload", "model"),
                f"missing; backend {workload.backend!r} needs a model (zoo:<name> or a .onnx path)",
            )
        valid: tuple[str, ...] = backend.option_names()
        of = f"unknown option of backend {workload.backend!r}"
        for key in workload.options:
            if key not in valid:
                raise self.error(
                    ("workload", "options", key), f"{of}{_nearest(key, valid)} (valid: {', '.join(valid) or 'none'})"
                )
        for key in self.model.search:
            opt = key[len("options.") :]
            if key.startswith("options.") and opt not in valid:
                raise self.error(("search", key), f"{of}{_nearest(opt, valid)} (valid: {', '.join(valid) or 'none'})")
        # the fixed options must validate as a whole (types, ranges)
        try:
            backend.validate_options(workload.options)
        except BackendError as err:
            raise self.error(("workload", "options"), str(err)) from None


def workload_kind(model: WorkloadFile, where: str, lines: _LineMap) -> type[Any]:
    """The class registered as ``workload.kind`` (entry-point group ``tuner.workloads``); a SpecError if none."""
    try:
        return plugins.load(plugins.WORKLOAD_KINDS, model.workload.kind)
    except TunerError as err:
        raise SpecError(f"{where}:{lines.line(('workload', 'kind'))}: workload.kind: {err}") from None


def _no_guard(ctx: CheckContext, name: str, *, runs_in_worker: bool) -> None:
    """A kind without the accuracy guard takes no ``accuracy:``; a worker-child kind measures no ``accuracy_*``
    (a kind that runs its own program may report them; its own check says whether it does)."""
    if "accuracy" in ctx.model.model_fields_set:
        raise ctx.error(
            ("accuracy",), f"the accuracy guard runs in kind: pool only (this workload is kind: {name}); remove it"
        )
    if not runs_in_worker:
        return
    used = [(("objectives", i), m) for i, (m, _) in enumerate(ctx.objectives)]
    used += [(("constraints", m), m) for m in ctx.model.constraints]
    for loc, metric in used:
        if metric in ACCURACY_METRICS:
            raise ctx.error(
                loc,
                f"{metric} is measured by the accuracy guard, which runs in kind: pool only "
                f"(this workload is kind: {name})",
            )


def check_workload(ctx: CheckContext, kind: type[Any]) -> None:
    """No key of another kind, no ``stages.*`` axis outside a pipeline; then the kind's own ``check``."""
    name = ctx.workload.kind
    given = ctx.workload.model_fields_set
    for key, owner in _KEY_OWNER.items():
        if key in given and owner != name:
            raise ctx.error(("workload", key), f"only for kind: {owner} (this workload is kind: {name})")
    scenario = ctx.model.load.scenario
    if scenario != "closed" and not getattr(kind, "serves_loadgen", False):
        raise ctx.error(
            ("load", "scenario"),
            f"{scenario} runs MLPerf LoadGen against a pool of instances: only kind: pool serves it (this workload "
            f"is kind: {name}); use scenario: closed",
        )
    if not getattr(kind, "guards_accuracy", False):
        _no_guard(ctx, name, runs_in_worker=getattr(kind, "runs_in_worker", True))
    stages_owner = _KEY_OWNER["stages"]
    for key in ctx.axes:
        if key.startswith("stages.") and name != stages_owner:
            raise ctx.error(("search", key), f"stages are for kind: {stages_owner}")
    kind().check(ctx)
