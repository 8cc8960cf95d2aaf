"""Workload file -> validated, frozen spec.

The YAML is read with ``yaml.safe_load`` semantics, validated by pydantic v2 models with
``extra="forbid"``, and every error is turned into one line that names the file, the line, the key
path, the bad value, what was expected and, for an unknown key, the nearest valid key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuner.errors import SpecError
from tuner.metrics import CORE_AXES, NUMERIC_METRICS

SAMPLERS = ("tpe", "grid", "random", "gp", "nsga2", "knee")
KINDS = ("pool", "pipeline", "command")
#: axes that must be positive integers
INT_AXES = frozenset(CORE_AXES)
MAX_AXIS_VALUE = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: keys of ``workload`` that only ``kind: command`` takes
COMMAND_KEYS = ("command", "env", "cwd", "parse")


#: keys of ``workload`` that only ``kind: pipeline`` takes
PIPELINE_KEYS = ("stages", "images", "synthetic")


class SyntheticImages(_Strict):
    """``workload.synthetic``: a JPEG set generated once and cached (default: the Ascend note's 1536 x 1024)."""

    count: int = Field(64, ge=1, le=100_000)
    width: int = Field(1536, ge=8, le=16384)
    height: int = Field(1024, ge=8, le=16384)
    quality: int = Field(90, ge=1, le=100)
    seed: int = Field(0, ge=0, le=2**32 - 1)


class WorkloadSection(_Strict):
    kind: Literal["pool", "pipeline", "command"] = "pool"
    backend: str = "onnxruntime"
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # kind: command only; element types are checked with their line by tuner.workloads.command
    command: list[Any] | None = None
    env: dict[str, Any] = Field(default_factory=dict)
    cwd: str | None = None
    parse: Any = None  # 'json' | {metric: regex | {regex, value}}
    # kind: pipeline only (see tuner.workloads.pipeline and tuner.workloads.stages)
    stages: list[Any] | None = None
    images: str | None = None
    synthetic: SyntheticImages | None = None


class MeasureSection(_Strict):
    warmup_s: float = Field(2.0, ge=0, le=3600)
    window_s: float = Field(1.0, gt=0, le=3600)
    stable_windows: int = Field(3, ge=1, le=1000)
    stability: float = Field(0.05, gt=0, lt=1)
    max_s: float = Field(20.0, gt=0, le=86400)
    repeats: int = Field(1, ge=1, le=100)
    min_window_requests: int = Field(4, ge=1, le=100000)

    @model_validator(mode="after")
    def _fits(self) -> MeasureSection:
        if self.max_s < self.warmup_s + self.window_s:
            raise ValueError(
                f"max_s ({self.max_s}) must leave room for warmup_s + one window ({self.warmup_s} + {self.window_s})"
            )
        return self


class KneeSection(_Strict):
    tolerance: float = Field(0.10, gt=0, lt=1)


class StudySection(_Strict):
    storage: str | None = None
    sampler: Literal["tpe", "grid", "random", "gp", "nsga2", "knee"] = "tpe"
    trials: int = Field(30, ge=1, le=1_000_000)
    timeout_s: float | None = Field(None, gt=0)
    trial_timeout_s: float = Field(120.0, gt=0, le=86400)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    patience: int | None = Field(None, ge=1)
    allow_oversubscription: bool = False
    max_consecutive_failures: int = Field(3, ge=1)
    memory_limit_mb: float | None = Field(None, gt=0)
    heartbeat_s: int = Field(10, ge=1, le=3600)
    heartbeat_grace_s: int = Field(60, ge=2, le=86400)

    @model_validator(mode="after")
    def _grace(self) -> StudySection:
        if self.heartbeat_grace_s <= self.heartbeat_s:
            raise ValueError(
                f"heartbeat_grace_s ({self.heartbeat_grace_s}) must be longer than heartbeat_s ({self.heartbeat_s})"
            )
        return self


class Bound(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self


class RangeAxisModel(_Strict):
    low: int | float
    high: int | float
    step: int | float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _order(self) -> RangeAxisModel:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.log and self.low <= 0:
            raise ValueError("log ranges need low > 0")
        if self.log and self.step is not None and self.step != 1:
            raise ValueError("log ranges cannot have a step other than 1")
        return self


class WorkloadFile(_Strict):
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    workload: WorkloadSection
    search: dict[str, Any] = Field(default_factory=dict)
    objectives: list[dict[str, Literal["maximize", "minimize"]]] = Field(default_factory=lambda: [{"qps": "maximize"}])
    constraints: dict[str, Bound] = Field(default_factory=dict)
    knee: KneeSection = Field(default_factory=KneeSection)
    measure: MeasureSection = Field(default_factory=MeasureSection)
    study: StudySection = Field(default_factory=StudySection)

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if not value:
            raise ValueError("give at least one objective, e.g. '- qps: maximize'")
        for item in value:
            if len(item) != 1:
                raise ValueError("each objective is one 'metric: maximize|minimize' pair")
        return value


@dataclass(frozen=True)
class Axis:
    """One search axis: a fixed value, a list of choices, or a numeric range."""

    name: str
    kind: Literal["fixed", "choices", "range"]
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        if self.kind == "range":
            return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) and (
                self.step is None or isinstance(self.step, int)
            )
        return all(isinstance(v, int) and not isinstance(v, bool) for v in self.values)

    @property
    def default(self) -> Any:
        """The value a config takes when nothing sets this axis: its first choice or its low bound."""
        return self.values[0] if self.kind != "range" else self.low

    def grid(self) -> tuple[Any, ...]:
        """Every value of the axis (ranges enumerated by step, or by 1 / powers of two for ints)."""
        if self.kind != "range":
            return self.values
        assert self.low is not None and self.high is not None
        if self.log and self.is_int:
            out, v = [], int(self.low)
            while v <= self.high:
                out.append(v)
                v *= 2
            return tuple(out)
        if self.is_int:
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise SpecError(f"search.{self.name}: a float range needs a step to be enumerated")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return tuple(round(self.low + i * self.step, 12) for i in range(n + 1))

    def contains(self, value: Any) -> bool:
        if self.kind != "range":
            return value in self.values
        return isinstance(value, int | float) and self.low <= value <= self.high  # type: ignore[operator]


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
        """The study storage as a SQLAlchemy URL (default ``studies/<name>.db`` beside the workloads dir)."""
        return storage_url(self.study.storage, self.base_dir, default=f"studies/{self.name}.db", root=self.base_dir)


def storage_url(storage: str | None, base_dir: Path, *, default: str | None = None, root: Path | None = None) -> str:
    """A path or URL -> SQLAlchemy/Optuna storage URL. Relative paths resolve against ``base_dir``."""
    if storage is None:
        if default is None:
            raise SpecError("no storage given")
        # the default lives in the project's studies/ folder: the workload dir's parent when it is workloads/
        anchor = root or base_dir
        if anchor.name == "workloads":
            anchor = anchor.parent
        return "sqlite:///" + str((anchor / default).resolve())
    journal = storage.startswith("journal:")
    if "://" in storage and not journal:
        return storage
    path = Path(storage.removeprefix("journal:")).expanduser()
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    return ("journal:" if journal else "sqlite:///") + str(path)


def check_axis_value(name: str, value: Any, *, where: str) -> Any:
    """Validate one concrete axis value (type and range) and return it."""
    if name in INT_AXES or (name.startswith("stages.") and name.endswith((".workers", ".queue"))):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} = {value!r}: expected a positive integer")
        if not 1 <= value <= MAX_AXIS_VALUE:
            raise SpecError(f"{where} = {value!r}: expected an integer between 1 and {MAX_AXIS_VALUE}")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where} = {value!r}: expected a finite number")
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise SpecError(f"{where} = {value!r}: expected a number, string or boolean")
    return value


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
    if model.workload.kind == "pool" and validate_backend:
        _check_backend(model, where, lines)
    if model.workload.kind == "pipeline":
        _check_pipeline(model, axes, where, lines, base_dir, validate_backend=validate_backend)
    else:
        for key in PIPELINE_KEYS:
            if key in model.workload.model_fields_set:
                raise SpecError(
                    f"{where}:{lines.line(('workload', key))}: workload.{key}: only for kind: pipeline "
                    f"(this workload is kind: {model.workload.kind})"
                )
        for key in axes:
            if key.startswith("stages.") and model.workload.kind == "pool":
                raise SpecError(f"{where}:{lines.line(('search', key))}: search.{key}: stages are for kind: pipeline")
    if model.workload.kind == "command":
        _check_command(model, axes, objectives, where, lines)
    else:
        for key in COMMAND_KEYS:
            if key in model.workload.model_fields_set:
                raise SpecError(
                    f"{where}:{lines.line(('workload', key))}: workload.{key}: only for kind: command "
                    f"(this workload is kind: {model.workload.kind})"
                )
    spec = Spec(name=name, path=path, text=text, model=model, axes=axes, objectives=objectives, base_dir=base_dir)
    return _with_hash(spec)


def _with_hash(spec: Spec) -> Spec:
    """Hash what changes measurements (workload, search, objectives, constraints, knee, measure)."""
    content = spec.model.model_dump(mode="json", exclude={"study"})
    # keys of other kinds, left unset, do not change the hash (studies made before they existed resume)
    kind_keys = set(COMMAND_KEYS) | set(PIPELINE_KEYS)
    for key in kind_keys - spec.model.workload.model_fields_set:
        content["workload"].pop(key, None)
    content["name"] = spec.name
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return Spec(**{**spec.__dict__, "spec_hash": digest})


def _check_backend(model: WorkloadFile, where: str, lines: _LineMap) -> None:
    from tuner.backends.registry import get_backend
    from tuner.errors import BackendError

    try:
        backend_cls = get_backend(model.workload.backend)
    except BackendError as err:
        raise SpecError(f"{where}:{lines.line(('workload', 'backend'))}: workload.backend: {err}") from None
    if backend_cls.needs_model and not model.workload.model:
        raise SpecError(
            f"{where}:{lines.line(('workload',))}: workload.model: missing; backend "
            f"{model.workload.backend!r} needs a model (zoo:<name> or a .onnx path)"
        )
    valid = backend_cls.option_names()
    for key in model.workload.options:
        if key not in valid:
            raise SpecError(
                f"{where}:{lines.line(('workload', 'options', key))}: workload.options.{key}: unknown option of "
                f"backend {model.workload.backend!r}{_nearest(key, valid)} (valid: {', '.join(valid) or 'none'})"
            )
    for key in model.search:
        if key.startswith("options.") and key[len("options.") :] not in valid:
            opt = key[len("options.") :]
            raise SpecError(
                f"{where}:{lines.line(('search', key))}: search.{key}: unknown option of backend "
                f"{model.workload.backend!r}{_nearest(opt, valid)} (valid: {', '.join(valid) or 'none'})"
            )
    # the fixed options must validate as a whole (types, ranges)
    try:
        backend_cls.validate_options(model.workload.options)
    except BackendError as err:
        raise SpecError(f"{where}:{lines.line(('workload', 'options'))}: workload.options: {err}") from None


def _check_pipeline(
    model: WorkloadFile,
    axes: Mapping[str, Axis],
    where: str,
    lines: _LineMap,
    base_dir: Path,
    *,
    validate_backend: bool,
) -> None:
    """The stage list, the ``stages.<name>.workers|queue`` axes, the image folder, and the infer backend."""
    from tuner.workloads.stages import STAGE_TYPES, StageSpecError, validate_stages

    workload = model.workload
    if workload.stages is None:
        raise SpecError(
            f"{where}:{lines.line(('workload',))}: workload.stages: missing; kind: pipeline needs an ordered list "
            f"of stages (types: {', '.join(STAGE_TYPES)})"
        )
    try:
        stages = validate_stages(workload.stages)
    except StageSpecError as err:
        loc = ("workload", "stages", *err.loc)
        raise SpecError(f"{where}:{lines.line(loc)}: {_dotted(loc)}{err.detail}") from None
    by_name = {s.name: s for s in stages}
    for key in axes:
        if not key.startswith("stages."):
            continue
        at = f"{where}:{lines.line(('search', key))}: search.{key}"
        parts = key.split(".")
        if len(parts) != 3 or parts[2] not in ("workers", "queue"):
            raise SpecError(f"{at}: unknown axis; expected stages.<stage name>.workers or stages.<stage name>.queue")
        stage = by_name.get(parts[1])
        if stage is None:
            raise SpecError(
                f"{at}: unknown stage {parts[1]!r}{_nearest(parts[1], by_name)} (stages: {', '.join(by_name)})"
            )
        if stage.type == "infer" and parts[2] == "workers":
            raise SpecError(
                f"{at}: the infer stage's workers are its pool_size instances (each with requests_per_sync "
                "requests in flight); search pool_size and requests_per_sync"
            )
        if stage.type == "read" and parts[2] == "queue":
            raise SpecError(f"{at}: the read stage is the source; it has no input queue")
    if workload.images is not None and workload.synthetic is not None:
        raise SpecError(
            f"{where}:{lines.line(('workload', 'synthetic'))}: workload.synthetic: give images (a folder) or "
            "synthetic (a generated set), not both"
        )
    if workload.images is not None:
        from tuner.workloads.images import ImagesError, list_images

        folder = Path(workload.images).expanduser()
        try:
            list_images(folder if folder.is_absolute() else base_dir / folder)
        except ImagesError as err:
            raise SpecError(
                f"{where}:{lines.line(('workload', 'images'))}: workload.images = {workload.images!r}: {err}"
            ) from None
    if any(s.type == "infer" for s in stages) and validate_backend:
        _check_backend(model, where, lines)


def _check_command(
    model: WorkloadFile, axes: Mapping[str, Axis], objectives: Sequence[tuple[str, str]], where: str, lines: _LineMap
) -> None:
    """Placeholders name known axes, searched axes are used, regexes and expressions compile."""
    from tuner.workloads.command import MEASURED_BY_TUNER, check_workload, parse_metrics_declared

    workload = model.workload
    for key in axes:
        if key.startswith("stages."):
            raise SpecError(f"{where}:{lines.line(('search', key))}: search.{key}: stages are for kind: pipeline")
    for key, value in workload.options.items():
        check_axis_value(
            f"options.{key}", value, where=f"{where}:{lines.line(('workload', 'options', key))}: workload.options.{key}"
        )
    searched = {n: a for n, a in axes.items() if a.kind != "fixed"}
    problems = check_workload(workload, axes, searched)
    if problems:
        loc, message = problems[0]
        raw = _value_at(model, loc)
        shown = f" = {raw!r}" if isinstance(raw, str | int | float) and not isinstance(raw, bool) else ""
        raise SpecError(f"{where}:{lines.line(loc)}: {_dotted(loc)}{shown}: {message}")
    declared = parse_metrics_declared(workload.parse)
    if declared is None:
        return
    given = set(declared) | set(MEASURED_BY_TUNER)
    for i, (metric, _direction) in enumerate(objectives):
        if metric not in given:
            raise SpecError(
                f"{where}:{lines.line(('objectives', i))}: objectives[{i}]: {metric!r} is neither parsed from the "
                f"program's output (workload.parse gives {', '.join(declared)}) nor measured by tuner"
            )
    for metric in model.constraints:
        if metric not in given:
            raise SpecError(
                f"{where}:{lines.line(('constraints', metric))}: constraints.{metric}: neither parsed from the "
                f"program's output (workload.parse gives {', '.join(declared)}) nor measured by tuner"
            )


def _value_at(model: WorkloadFile, loc: Sequence[Any]) -> Any:
    current: Any = model.model_dump()
    for part in loc:
        try:
            current = current[part]
        except (KeyError, IndexError, TypeError):
            return None
    return current


def _build_axes(model: WorkloadFile, where: str, lines: _LineMap, *, validate_backend: bool) -> dict[str, Axis]:
    axes: dict[str, Axis] = {}
    for key, raw in model.search.items():
        loc = ("search", key)
        at = f"{where}:{lines.line(loc)}: search.{key}"
        if not isinstance(key, str) or not key:
            raise SpecError(f"{at}: expected a non-empty axis name")
        if key not in CORE_AXES and not key.startswith(("options.", "stages.")):
            raise SpecError(
                f"{at}: unknown axis{_nearest(key, CORE_AXES)} (valid: {', '.join(CORE_AXES)}, "
                "options.<backend option>, stages.<stage>.workers)"
            )
        axes[key] = _parse_axis(key, raw, at)
    for key in CORE_AXES:
        axes.setdefault(key, Axis(name=key, kind="fixed", values=(1,)))
    # the four core axes first, in their usual order, then options and stages as written
    axes = {**{k: axes[k] for k in CORE_AXES}, **{k: v for k, v in axes.items() if k not in CORE_AXES}}
    for key in model.workload.options:
        if f"options.{key}" in axes:
            raise SpecError(
                f"{where}:{lines.line(('search', 'options.' + key))}: search.options.{key}: also fixed in "
                "workload.options; keep one"
            )
    return axes


def _parse_axis(name: str, raw: Any, at: str) -> Axis:
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{at} = []: expected at least one choice")
        values = tuple(check_axis_value(name, v, where=f"{at}[{i}]") for i, v in enumerate(raw))
        if len(set(map(repr, values))) != len(values):
            raise SpecError(f"{at} = {raw!r}: choices repeat a value")
        return Axis(name=name, kind="choices" if len(values) > 1 else "fixed", values=values)
    if isinstance(raw, dict):
        try:
            rng = RangeAxisModel.model_validate(raw)
        except ValidationError as err:
            e = _first_error(err)
            # pydantic names the member of ``int | float`` it tried ('low.int'): not a key of the file
            key = ".".join(str(p) for p in e["loc"] if p not in ("int", "float"))
            if e["type"] == "extra_forbidden":
                raise SpecError(
                    f"{at}.{key}: unknown key{_nearest(key, RangeAxisModel.model_fields)} "
                    "(a range is {low, high, step?, log?})"
                ) from None
            if e["type"] == "missing":
                raise SpecError(f"{at}: missing {key!r} (a range is {{low, high, step?, log?}})") from None
            suffix = f".{key}" if key else ""
            expected = _EXPECT.get(e["type"]) or _clean_msg(e["msg"])
            raise SpecError(f"{at}{suffix} = {e.get('input')!r}: {expected}") from None
        for bound in ("low", "high"):
            value = getattr(rng, bound)
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(f"{at}.{bound} = {value!r}: expected a finite number")
        if name in INT_AXES or (name.startswith("stages.") and name.endswith((".workers", ".queue"))):
            for bound in ("low", "high", "step"):
                value = getattr(rng, bound)
                if value is not None:
                    check_axis_value(name, value, where=f"{at}.{bound}")
        if rng.low == rng.high:
            return Axis(name=name, kind="fixed", values=(rng.low,))
        return Axis(name=name, kind="range", low=rng.low, high=rng.high, step=rng.step, log=rng.log)
    return Axis(name=name, kind="fixed", values=(check_axis_value(name, raw, where=at),))


# ------------------------------------------------------------------------------------- error text


def _nearest(key: str, valid: Sequence[str] | Mapping[str, Any]) -> str:
    near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


class _DictOf:
    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model


_EXPECT = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "list_type": "expected a list",
    "literal_error": None,
    "finite_number": "expected a finite number",
}


def _first_error(err: ValidationError) -> Any:
    """The error to report: an unknown key first (a misspelt key also makes the real one 'missing')."""
    errors = err.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _format_validation(err: ValidationError, where: str, lines: _LineMap) -> str:
    e = _first_error(err)
    loc = tuple(e["loc"])
    # pydantic puts the dict key of dict[str, Model] in loc; keep it
    dotted = _dotted(loc)
    line = lines.line(loc)
    if e["type"] == "extra_forbidden":
        parent = _resolve_parent(loc[:-1])
        valid = list(parent.model_fields) if parent else []
        return f"{where}:{line}: {dotted}: unknown key{_nearest(str(loc[-1]), valid)}" + (
            f" (valid here: {', '.join(valid)})" if valid else ""
        )
    if e["type"] == "missing":
        return f"{where}:{lines.line(loc[:-1])}: {dotted}: missing required key"
    expected = _EXPECT.get(e["type"]) or _clean_msg(e["msg"])
    if e["type"] == "literal_error":
        expected = "expected one of " + e["msg"].removeprefix("Input should be ")
    value = e.get("input")
    shown = repr(value) if not isinstance(value, dict | list) or len(repr(value)) < 80 else type(value).__name__
    return f"{where}:{line}: {dotted} = {shown}: {expected}"


def _resolve_parent(loc: Sequence[Any]) -> type[BaseModel] | None:
    current: Any = WorkloadFile
    for part in loc:
        if isinstance(current, _DictOf):
            current = current.model
            continue
        current = _model_at_one(current, part)
        if current is None:
            return None
    if isinstance(current, _DictOf):
        return current.model
    return current


def _model_at_one(model: type[BaseModel], part: Any) -> Any:
    info = model.model_fields.get(str(part))
    if info is None:
        return None
    ann = info.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    args = getattr(ann, "__args__", ())
    # dict[str, Model] first: its key is the next part of the path, not a field of Model
    if getattr(ann, "__origin__", None) is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return _DictOf(args[1])
    for a in args:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top>"


#: a workload file is a few levels deep and a few hundred values; far past that is refused before it is
#: expanded (deep nesting overflows the stack; a few YAML aliases can expand to billions of values)
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000


def _yaml_error(err: yaml.YAMLError, where: str) -> str:
    """One line: file, line, what PyYAML found (its messages span several lines)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or (str(err).strip().splitlines() or ["error"])[0]
    return f"{where}{line}: YAML error: {problem}"


def _check_shape(root: yaml.Node, where: str) -> None:
    """Refuse a node tree deeper than MAX_YAML_DEPTH or larger than MAX_YAML_NODES with aliases expanded."""
    stack = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_YAML_DEPTH:
            raise SpecError(
                f"{where}:{node.start_mark.line + 1}: YAML nested too deeply (more than {MAX_YAML_DEPTH} levels)"
            )
        if count > MAX_YAML_NODES:
            raise SpecError(
                f"{where}: too many values (more than {MAX_YAML_NODES} with YAML aliases expanded); a workload file "
                "is small"
            )
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.append((key_node, depth + 1))
                stack.append((value_node, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


class _LineMap:
    """Key path -> 1-based line number, from PyYAML's composed node tree."""

    def __init__(self, lines: dict[tuple[Any, ...], int]) -> None:
        self._lines = lines

    @classmethod
    def build(cls, text: str, where: str) -> _LineMap:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = f":{mark.line + 1}" if mark else ""
            problem = err.problem or "syntax error"
            raise SpecError(f"{where}{line}: YAML syntax error: {problem}") from None
        except yaml.YAMLError as err:
            raise SpecError(_yaml_error(err, where)) from None
        except RecursionError:
            raise SpecError(f"{where}: YAML nested too deeply (more than {MAX_YAML_DEPTH} levels)") from None
        found: dict[tuple[Any, ...], int] = {}
        if node is not None:
            _check_shape(node, where)
            cls._walk(node, (), found)
        return cls(found)

    @classmethod
    def _walk(cls, node: yaml.Node, path: tuple[Any, ...], found: dict[tuple[Any, ...], int]) -> None:
        found.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                found[path + (key,)] = key_node.start_mark.line + 1
                cls._walk(value_node, path + (key,), found)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found[path + (i,)] = item.start_mark.line + 1
                cls._walk(item, path + (i,), found)

    def line(self, loc: Sequence[Any]) -> int:
        loc = tuple(loc)
        while loc and loc not in self._lines:
            loc = loc[:-1]
        return self._lines.get(loc, 1)
