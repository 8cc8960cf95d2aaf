"""Read and parse a workload file into a frozen :class:`Spec` with its hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuner.config.axes import Axis, _build_axes, check_axis_value
from tuner.config.checks import CheckContext, check_workload, workload_kind
from tuner.config.lines import _format_validation, _LineMap, _nearest, _yaml_error
from tuner.config.models import (
    COMMAND_KEYS,
    PIPELINE_KEYS,
    POOL_KEYS,
    Bound,
    KneeSection,
    MeasureSection,
    StudySection,
    WorkloadFile,
    WorkloadSection,
)
from tuner.config.storage_url import resolve_storage_url
from tuner.errors import SpecError
from tuner.metrics import NUMERIC_METRICS


@dataclass(frozen=True)
class Spec:
    """A validated workload file. ``axes`` holds every searchable name, the four core axes always."""

    name: str
    path: Path | None
    text: str
    model: WorkloadFile
    axes: Mapping[str, Axis]
    objectives: tuple[tuple[str, str], ...]
    base_dir: Path
    spec_hash: str = field(default="")

    @property
    def workload(self) -> WorkloadSection:
        return self.model.workload

    @property
    def measure(self) -> MeasureSection:
        return self.model.measure

    @property
    def study(self) -> StudySection:
        return self.model.study

    @property
    def knee(self) -> KneeSection:
        return self.model.knee

    @property
    def constraints(self) -> Mapping[str, Bound]:
        return self.model.constraints

    def searched_axes(self) -> dict[str, Axis]:
        """Axes with more than one possible value."""
        return {n: a for n, a in self.axes.items() if a.kind != "fixed"}

    def default_params(self) -> dict[str, Any]:
        return {n: a.default for n, a in self.axes.items()}

    def resolve_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Default params with ``overrides`` applied; unknown names and ill-typed values raise SpecError."""
        params = self.default_params()
        for key, value in overrides.items():
            if key not in self.axes:
                raise SpecError(f"{self._where()}: --set {key}: unknown axis{_nearest(key, self.axes)}")
            params[key] = check_axis_value(key, value, where=f"{self._where()}: --set {key}")
        return params

    def _where(self) -> str:
        return str(self.path) if self.path else "<workload>"

    def storage_url(self) -> str:
        """``study.storage`` as a storage URL (relative to the file; default ``studies/<name>.db``).

        See :func:`tuner.config.storage_url.resolve_storage_url` for the rule.
        """
        return resolve_storage_url(self.study.storage, base_dir=self.base_dir, default=f"studies/{self.name}.db")


# ----------------------------------------------------------------------------------------- loading


def load_spec(path: str | Path, *, validate_backend: bool = True) -> Spec:
    """Read and validate a workload file. Raises :class:`SpecError` with a one-line message."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: workload file not found") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read workload file: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SpecError(f"{path}:{line}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})") from None
    return parse_spec(text, path=path, validate_backend=validate_backend)


def parse_spec(text: str, *, path: Path | None = None, validate_backend: bool = True) -> Spec:
    where = str(path) if path else "<workload>"
    lines = _LineMap.build(text, where)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:  # a tag compose accepts but no safe constructor knows (!!python/...)
        raise SpecError(_yaml_error(err, where)) from None
    if data is None:
        raise SpecError(f"{where}: the file is empty; expected a mapping with at least a 'workload' key")
    if not isinstance(data, dict):
        raise SpecError(f"{where}:1: expected a mapping at the top level, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise SpecError(f"{where}:{lines.line(())}: key {key!r}: expected a string key")
    try:
        model = WorkloadFile.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation(err, where, lines)) from None
    kind = workload_kind(model, where, lines)  # a registered kind, looked up by name (tuner.plugins)

    base_dir = (path.parent if path else Path.cwd()).resolve()
    name = model.name or (path.stem if path else "workload")
    axes = _build_axes(model, where, lines, validate_backend=validate_backend)
    objectives = tuple(next(iter(o.items())) for o in model.objectives)
    for i, (metric, _direction) in enumerate(objectives):
        if metric not in NUMERIC_METRICS:
            raise SpecError(
                f"{where}:{lines.line(('objectives', i))}: objectives[{i}]: unknown metric {metric!r}"
                f"{_nearest(metric, NUMERIC_METRICS)} (valid: {', '.join(NUMERIC_METRICS)})"
            )
    for metric in model.constraints:
        if metric not in NUMERIC_METRICS:
            raise SpecError(
                f"{where}:{lines.line(('constraints', metric))}: constraints.{metric}: unknown metric"
                f"{_nearest(metric, NUMERIC_METRICS)} (valid: {', '.join(NUMERIC_METRICS)})"
            )
    _check_scenario_metrics(model, objectives, where, lines)
    _check_labelled_metrics(model, objectives, where, lines)
    ctx = CheckContext(
        model=model,
        axes=axes,
        objectives=objectives,
        where=where,
        base_dir=base_dir,
        lines=lines,
        validate_backend=validate_backend,
    )
    check_workload(ctx, kind)
    spec = Spec(name=name, path=path, text=text, model=model, axes=axes, objectives=objectives, base_dir=base_dir)
    return _with_hash(spec)


#: metrics only a LoadGen scenario measures -> the ``load.scenario`` values that measure them
SCENARIO_METRICS: dict[str, tuple[str, ...]] = {
    "server_qps": ("server",),
    "server_latency_ms": ("server",),
    "server_latency_p50_ms": ("server",),
    "server_runs": ("server",),
    "offline_qps": ("offline",),
    "loadgen_valid": ("server", "offline"),
}


def _check_scenario_metrics(
    model: WorkloadFile, objectives: tuple[tuple[str, str], ...], where: str, lines: _LineMap
) -> None:
    """An objective or constraint on a LoadGen metric needs the ``load.scenario`` that measures it."""
    scenario = model.load.scenario
    used = [(("objectives", i), f"objectives[{i}]", m) for i, (m, _) in enumerate(objectives)]
    used += [(("constraints", m), f"constraints.{m}", m) for m in model.constraints]
    for loc, key, metric in used:
        needs = SCENARIO_METRICS.get(metric)
        if needs is None or scenario in needs:
            continue
        wanted = " or ".join(needs)
        hint = "latency_ms: <the bound>, " if "server" in needs else ""
        raise SpecError(
            f"{where}:{lines.line(loc)}: {key}: {metric} is measured only with load.scenario: {wanted} (this file's "
            f"scenario is {scenario}); add load: {{scenario: {needs[0]}, {hint}...}} or use a closed-loop metric"
        )


#: accuracy metrics only a labelled reference set measures (``accuracy.labels``)
LABELLED_METRICS: tuple[str, ...] = ("accuracy_top1", "accuracy_top1_drop")


def _check_labelled_metrics(
    model: WorkloadFile, objectives: tuple[tuple[str, str], ...], where: str, lines: _LineMap
) -> None:
    """An objective or constraint on a top-1 accuracy needs ``accuracy.labels`` (what the classes should be)."""
    if model.accuracy.labels is not None:
        return
    used = [(("objectives", i), f"objectives[{i}]", m) for i, (m, _) in enumerate(objectives)]
    used += [(("constraints", m), f"constraints.{m}", m) for m in model.constraints]
    for loc, key, metric in used:
        if metric in LABELLED_METRICS:
            raise SpecError(
                f"{where}:{lines.line(loc)}: {key}: {metric} is measured only with labelled reference data; add "
                "accuracy: {data: FILE, labels: FILE} (e.g. zoo:digits/test_x and zoo:digits/test_y) or use "
                "accuracy_top1_agreement (agreement with the fp32 reference's classes)"
            )


def _with_hash(spec: Spec) -> Spec:
    """Hash what changes measurements (workload, search, objectives, constraints, knee, measure)."""
    content = spec.model.model_dump(mode="json", exclude={"study"})
    # keys of other kinds, left unset, do not change the hash (studies made before they existed resume)
    kind_keys = set(COMMAND_KEYS) | set(PIPELINE_KEYS) | set(POOL_KEYS)
    for key in kind_keys - spec.model.workload.model_fields_set:
        content["workload"].pop(key, None)
    # workload.host_threads decides which configs the rules prune (like study.allow_oversubscription), not
    # what a trial measures: declaring it resumes the same study
    content["workload"].pop("host_threads", None)
    # the keys of repeats: auto change nothing otherwise (studies made before they existed resume)
    if not spec.model.measure.auto_repeats:
        for key in ("max_repeats", "target_ci"):
            content["measure"].pop(key, None)
    # drift correction changes the analysis, not a measurement; off, it is as if the key did not exist
    if not spec.model.measure.drift_correction:
        content["measure"].pop("drift_correction", None)
    # closed loop without a load section is what every study made before load: existed measured
    if "load" not in spec.model.model_fields_set:
        content.pop("load", None)
    # the accuracy guard's reference set changes what a trial records; undeclared, it is as if it did not exist
    if "accuracy" not in spec.model.model_fields_set:
        content.pop("accuracy", None)
    content["name"] = spec.name
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return Spec(**{**spec.__dict__, "spec_hash": digest})
