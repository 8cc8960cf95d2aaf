"""The pydantic models of a workload file's sections (``extra="forbid"``, frozen)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tuner.config.inputs import InputDecl
from tuner.metrics import ACCURACY_METRICS

SAMPLERS = ("tpe", "grid", "random", "gp", "nsga2", "knee")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: keys of ``workload`` that only ``kind: command`` takes
COMMAND_KEYS = ("command", "env", "cwd", "parse", "host_threads")


#: keys of ``workload`` that only ``kind: pipeline`` takes
PIPELINE_KEYS = ("stages", "images", "synthetic")

#: keys of ``workload`` that only ``kind: pool`` takes (a pipeline declares its inputs on its infer stage)
POOL_KEYS = ("inputs",)

#: the built-in kinds' own keys of ``workload``: any other kind giving one is an error naming its kind. The
#: kinds themselves are registered by name (entry-point group ``tuner.workloads``), not listed here; a
#: third-party kind keeps its settings in ``workload.options``
KIND_KEYS: dict[str, tuple[str, ...]] = {"pipeline": PIPELINE_KEYS, "command": COMMAND_KEYS, "pool": POOL_KEYS}


class SyntheticImages(_Strict):
    """``workload.synthetic``: a JPEG set generated once and cached (default: the Ascend note's 1536 x 1024)."""

    count: int = Field(64, ge=1, le=100_000)
    width: int = Field(1536, ge=8, le=16384)
    height: int = Field(1024, ge=8, le=16384)
    quality: int = Field(90, ge=1, le=100)
    seed: int = Field(0, ge=0, le=2**32 - 1)


class WorkloadSection(_Strict):
    # a registered workload kind (tuner.workloads entry points), checked by name with its line after validation
    kind: str = "pool"
    backend: str = "onnxruntime"
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # kind: pool only: what each model input is fed (tuner.config.inputs)
    inputs: dict[str, InputDecl] = Field(default_factory=dict)
    # kind: command only; element types are checked with their line by tuner.workloads.command.job
    command: list[Any] | None = None
    env: dict[str, Any] = Field(default_factory=dict)
    cwd: str | None = None
    parse: Any = None  # 'json' | {metric: regex | {regex, value}}
    # host threads the program computes on: a number or an expression of the axes ("{pool_size} * {threads}");
    # unset: it waits on a device, no oversubscription rule (checked with its line by the command kind)
    host_threads: Any = None
    # kind: pipeline only (see tuner.workloads.pipeline.engine and tuner.workloads.pipeline.stages)
    stages: list[Any] | None = None
    images: str | None = None
    synthetic: SyntheticImages | None = None


class MeasureSection(_Strict):
    warmup_s: float = Field(2.0, ge=0, le=3600)
    window_s: float = Field(1.0, gt=0, le=3600)
    stable_windows: int = Field(3, ge=1, le=1000)
    stability: float = Field(0.05, gt=0, lt=1)
    max_s: float = Field(20.0, gt=0, le=86400)
    # a count of fresh processes, or "auto": measure again until the qps interval is within target_ci
    repeats: int | Literal["auto"] = 1
    max_repeats: int = Field(5, ge=2, le=100)  # repeats: auto measures at most this many times
    target_ci: float = Field(0.03, gt=0, lt=1)  # repeats: auto stops once the half-width / qps is at most this
    min_window_requests: int = Field(4, ge=1, le=100000)
    # the analysis divides each trial's qps by the drift reference's interpolated factor (study.drift)
    drift_correction: bool = False

    @field_validator("repeats", mode="before")
    @classmethod
    def _repeats(cls, value: Any) -> Any:
        if value == "auto" and isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected a whole number of runs from 1 to 100, or auto")
        if not 1 <= value <= 100:
            raise ValueError("expected a whole number of runs from 1 to 100, or auto")
        return value

    @property
    def auto_repeats(self) -> bool:
        return self.repeats == "auto"

    def child_settings(self) -> dict[str, Any]:
        """The steady-state settings one run measures with (the repeat keys are the parent's)."""
        return self.model_dump(exclude={"repeats", "max_repeats", "target_ci", "drift_correction"})

    @property
    def max_runs(self) -> int:
        """The most runs one configuration can take: ``max_repeats`` with auto, else ``repeats``."""
        return self.max_repeats if self.repeats == "auto" else int(self.repeats)

    @model_validator(mode="after")
    def _fits(self) -> MeasureSection:
        if self.max_s < self.warmup_s + self.window_s:
            raise ValueError(
                f"max_s ({self.max_s}) must leave room for warmup_s + one window ({self.warmup_s} + {self.window_s})"
            )
        return self


#: the latency percentiles LoadGen reports (its detail log's ``result_<p>_percentile_latency_ns``); a
#: ``load.percentile`` must be one of them, or the bound could not be read back from LoadGen's own figures
LOADGEN_PERCENTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.97, 0.99, 0.999)


class LoadSection(_Strict):
    """``load``: how a trial loads the system -- closed loop (default) or MLPerf LoadGen's Server / Offline.

    ``server``: per trial, the highest Poisson arrival rate whose ``percentile`` latency stays within
    ``latency_ms`` (a bisection over LoadGen PerformanceOnly runs, seeded from the closed-loop qps of the
    same config, at most ``max_runs`` runs of ``min_duration_s`` each) -> ``server_qps``. ``offline``: one
    LoadGen Offline run -> ``offline_qps``. Both need the ``serving`` extra (``mlcommons-loadgen``).
    """

    scenario: Literal["closed", "server", "offline"] = "closed"
    latency_ms: float | None = Field(None, gt=0, le=3_600_000)
    percentile: float = Field(0.99, gt=0, lt=1)
    min_duration_s: float = Field(20.0, gt=0, le=86_400)
    min_queries: int = Field(64, ge=1, le=100_000_000)
    max_runs: int = Field(6, ge=2, le=50)
    precision: float = Field(0.05, gt=0, lt=1)
    samples: int = Field(1024, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _bound(self) -> LoadSection:
        if self.scenario == "server" and self.latency_ms is None:
            raise ValueError("scenario: server needs latency_ms (the bound the percentile latency must meet)")
        if self.scenario != "closed" and self.percentile not in LOADGEN_PERCENTILES:
            raise ValueError(
                f"percentile {self.percentile!r}: LoadGen reports the latency at "
                f"{', '.join(f'{p:g}' for p in LOADGEN_PERCENTILES)} only; expected one of them"
            )
        return self

    @property
    def rate_metric(self) -> str:
        """The metric a trial's rate is: ``qps`` (closed), ``server_qps`` or ``offline_qps``."""
        return {"closed": "qps", "server": "server_qps", "offline": "offline_qps"}[self.scenario]


#: the backend option that selects a precision variant: giving it (fixed or searched) turns the accuracy guard on
PRECISION_OPTION = "precision"


class AccuracySection(_Strict):
    """``accuracy``: the guard that compares each config's outputs with the fp32 reference on a reference set.

    ``data``: a ``.npy`` (one model input) or ``.npz`` (an array per input name) file, or ``zoo:<name>/<array>``
    (an array the zoo ships, e.g. ``zoo:digits/test_x``); default: the workload's own inputs (``inputs:``,
    generated with ``seed``). ``labels``: a ``.npy`` of integer class labels, one per sample of ``data`` (or
    ``zoo:digits/test_y``): adds ``accuracy_top1`` and ``accuracy_top1_drop``. ``samples``: how many samples
    (default: all of ``data``, else 64). ``output``: the model output compared (default: the first).
    """

    data: str | None = Field(None, min_length=1)
    labels: str | None = Field(None, min_length=1)
    samples: int | None = Field(None, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    output: str | None = Field(None, min_length=1)

    @field_validator("data")
    @classmethod
    def _data(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("zoo:") and not value.lower().endswith((".npy", ".npz")):
            raise ValueError("expected a .npy or .npz file, or zoo:<name>/<array> (e.g. zoo:digits/test_x)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.startswith("zoo:") and not value.lower().endswith(".npy"):
            raise ValueError("expected a .npy file of integer labels, or zoo:<name>/<array> (e.g. zoo:digits/test_y)")
        if value is not None and info.data.get("data") is None and "data" in info.data:
            raise ValueError("labels need data: the samples they label (accuracy: {data: FILE, labels: FILE})")
        return value


class KneeSection(_Strict):
    tolerance: float = Field(0.10, gt=0, lt=1)


class ConfirmSection(_Strict):
    """``study.confirm``: the paired confirmation round after the search (``rounds: 0`` skips it)."""

    rounds: int = Field(3, ge=0, le=100)
    # more rounds, one at a time, while the knee is undecided (not proven within the tolerance, it stands by
    # the tie set; or a cheaper config could be the best): a noisy run pays for them, a calm one does not
    # (default: rounds, none extra)
    max_rounds: int | None = Field(None, ge=1, le=100)
    max_configs: int = Field(4, ge=2, le=20)
    # the window length of the rounds' measurements (default measure.window_s): the rounds compare a config
    # with the reference measured minutes apart in another process, so more short rounds beat fewer long ones
    window_s: float | None = Field(None, gt=0, le=3600)

    @model_validator(mode="after")
    def _most(self) -> ConfirmSection:
        if self.max_rounds is not None and self.max_rounds < self.rounds:
            raise ValueError(
                f"max_rounds ({self.max_rounds}) must be >= rounds ({self.rounds}): the rounds after `rounds` are "
                "measured only while the knee is undecided"
            )
        return self


class DriftSection(_Strict):
    """``study.drift``: re-measure a reference config every ``every`` measured trials (0: never)."""

    every: int = Field(8, ge=0, le=100_000)


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
    confirm: ConfirmSection = Field(default_factory=ConfirmSection)
    drift: DriftSection = Field(default_factory=DriftSection)
    #: stop a trial early once its windows show it can be neither the knee nor the best
    early_stop: bool = True

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
    load: LoadSection = Field(default_factory=LoadSection)
    measure: MeasureSection = Field(default_factory=MeasureSection)
    accuracy: AccuracySection = Field(default_factory=AccuracySection)
    study: StudySection = Field(default_factory=StudySection)

    def accuracy_on(self) -> bool:
        """Whether trials run the accuracy guard: the file declares ``accuracy:``, an objective or a constraint
        names an ``accuracy_*`` metric, or the backend options (fixed or searched) set ``precision``."""
        named = [m for o in self.objectives for m in o] + list(self.constraints)
        return (
            "accuracy" in self.model_fields_set
            or any(m in ACCURACY_METRICS for m in named)
            or PRECISION_OPTION in self.workload.options
            or f"options.{PRECISION_OPTION}" in self.search
        )

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if not value:
            raise ValueError("give at least one objective, e.g. '- qps: maximize'")
        for item in value:
            if len(item) != 1:
                raise ValueError("each objective is one 'metric: maximize|minimize' pair")
        return value
