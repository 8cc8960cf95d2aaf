"""Pipeline stage types: what each one consumes and produces, its options, validation, and its work.

A pipeline is an ordered list of stages joined by bounded queues (see :mod:`tuner.workloads.pipeline.engine`).
Every stage has a ``type``, an optional ``name`` (default: its type), ``workers`` (threads pulling from
its input queue; searchable as ``stages.<name>.workers``) and ``queue`` (the depth of its input queue;
searchable as ``stages.<name>.queue``). The built-in types:

==============  ============  ==========  ===========================================================
type            consumes      produces    work
==============  ============  ==========  ===========================================================
``read``        --            bytes       reads the next file of the image folder (cycling)
``decode``      bytes         image       JPEG -> HxWx3 uint8 RGB (simplejpeg / libjpeg-turbo)
``preprocess``  image         sample      resize short side, centre crop, normalise -> float32 CHW
``batch``       sample        batch       stacks ``batch_size`` samples into one array
``infer``       batch         outputs     runs the model through the workload's backend
``postprocess`` outputs       result      top-k of the first output, per sample
``delay``       anything      the same    sleeps ``ms`` (+ up to ``jitter_ms``) per item; for tests
==============  ============  ==========  ===========================================================

``infer`` takes no ``workers``: its workers are ``pool_size`` runtime instances, each keeping
``requests_per_sync`` batches in flight (the pool workload's axes apply to it unchanged). It takes
``inputs:``, the pool workload's declarations of what each model input is fed
(:class:`tuner.config.inputs.InputDecl`: ``shape`` with ``batch`` and dimension axes, ``dtype``,
``data``): the image input (the model's first 4-D float input, or its only input) gets the preprocessed
batches, and its declared height and width are the preprocess stage's default crop -- ``[batch, 3,
image_size, image_size]`` with ``image_size`` searched resizes the crops per configuration; every other
input is fed from its declaration (a scalar sample rate, a state tensor) alongside the images.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuner.config.inputs import InputDecl
from tuner.workloads.pipeline.stage_work import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["STAGE_TYPES", "StageConfig", "StageSpecError", "validate_stages"]

DEFAULT_QUEUE = 4
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


# ------------------------------------------------------------------------------------------ options


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadOptions(_Opts):
    preload: bool = Field(False, description="keep every file's bytes in memory instead of reading per item")


class DecodeOptions(_Opts):
    library: Literal["simplejpeg", "pillow", "opencv"] = Field(
        "simplejpeg", description="JPEG decoder; pillow and opencv only when installed (not dependencies)"
    )
    reduce: bool = Field(
        False,
        description="let the decoder downscale by 1/2, 1/4 or 1/8 in the DCT domain, never below the next "
        "preprocess stage's resize (much cheaper; the note's pipeline decoded at full size)",
    )
    fast: bool = Field(False, description="faster, slightly less exact IDCT and chroma upsampling (simplejpeg)")


class PreprocessOptions(_Opts):
    size: int | None = Field(
        None,
        ge=1,
        le=8192,
        description="square crop size; default: the image input's height and width (declared under the infer "
        "stage's inputs, else the model's)",
    )
    resize: int | None = Field(
        None, ge=1, le=16384, description="short side before the crop; default the crop's longer side * 256/224"
    )
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: Literal["nchw", "nhwc"] | None = Field(None, description="default: the model's input layout")


class NoOptions(_Opts):
    pass


class InferOptions(_Opts):
    inputs: dict[str, InputDecl] | None = Field(
        None, description="what each model input is fed: {name: {shape, dtype, data}} (as the pool's inputs:)"
    )


class PostprocessOptions(_Opts):
    top_k: int = Field(5, ge=1, le=1000)


class DelayOptions(_Opts):
    ms: float = Field(0.0, ge=0, le=60_000, description="sleep per item")
    jitter_ms: float = Field(0.0, ge=0, le=60_000, description="plus a uniform random 0..jitter_ms")
    fail_after: int | None = Field(None, ge=0, description="raise an error on the item after this many (tests)")
    seed: int = 0


@dataclass(frozen=True)
class StageType:
    name: str
    consumes: str  # "" (a source), "bytes", "image", "sample", "batch", "outputs", "*" (anything)
    produces: str  # "*" passes its input kind through
    options: type[BaseModel]
    doc: str
    has_workers: bool = True


STAGE_TYPES: dict[str, StageType] = {
    t.name: t
    for t in (
        StageType("read", "", "bytes", ReadOptions, "bytes from the image folder, cycling"),
        StageType("decode", "bytes", "image", DecodeOptions, "JPEG -> HxWx3 uint8 RGB"),
        StageType("preprocess", "image", "sample", PreprocessOptions, "resize, centre crop, normalise"),
        StageType("batch", "sample", "batch", NoOptions, "stacks batch_size samples"),
        StageType("infer", "batch", "outputs", InferOptions, "the model on the workload's backend", has_workers=False),
        StageType("postprocess", "outputs", "result", PostprocessOptions, "top-k per sample"),
        StageType("delay", "*", "*", DelayOptions, "sleeps per item (tests, what-if)"),
    )
}

_KIND_WORDS = {
    "bytes": "JPEG bytes",
    "image": "decoded images",
    "sample": "single samples",
    "batch": "batches",
    "outputs": "model outputs",
    "result": "results",
}
_COMMON = ("name", "type", "workers", "queue")


@dataclass(frozen=True)
class StageConfig:
    """One validated stage. ``options`` holds the type's options with defaults filled in."""

    name: str
    type: str
    workers: int = 1
    queue: int = DEFAULT_QUEUE
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "workers": self.workers,
            "queue": self.queue,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageConfig:
        return cls(
            name=data["name"],
            type=data["type"],
            workers=int(data["workers"]),
            queue=int(data["queue"]),
            options=dict(data.get("options", {})),
        )


class StageSpecError(ValueError):
    """A stage list is invalid. ``loc`` is the key path below ``workload.stages``; ``detail`` the rest.

    ``detail`` reads on from the key path: ``" = 'x': expected ..."`` or ``": unknown key ..."``.
    """

    def __init__(self, loc: tuple[Any, ...], detail: str) -> None:
        super().__init__(f"{loc}: {detail}")
        self.loc = loc
        self.detail = detail


def _nearest(key: str, valid: Sequence[str]) -> str:
    near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _positive_int(value: Any, loc: tuple[Any, ...], what: str, high: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise StageSpecError(loc, f" = {value!r}: expected {what}, an integer between 1 and {high}")
    return value


def validate_stages(raw: Any) -> list[StageConfig]:
    """Validate ``workload.stages`` (a list of mappings) into stage configs; raise :class:`StageSpecError`."""
    valid_types = ", ".join(STAGE_TYPES)
    if not isinstance(raw, list) or not raw:
        shown = "[]" if raw == [] else repr(raw) if not isinstance(raw, dict) else "a mapping"
        raise StageSpecError((), f" = {shown}: expected a non-empty list of stages ({{type, name?, workers?, queue?}})")
    stages: list[StageConfig] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise StageSpecError((i,), f" = {item!r}: expected a mapping with a 'type' (one of {valid_types})")
        if "type" not in item:
            raise StageSpecError((i,), f".type: missing required key (one of {valid_types})")
        kind = item["type"]
        if not isinstance(kind, str) or kind not in STAGE_TYPES:
            raise StageSpecError(
                (i, "type"),
                f" = {kind!r}: unknown stage type{_nearest(str(kind), list(STAGE_TYPES))} (valid: {valid_types})",
            )
        stype = STAGE_TYPES[kind]
        name = item.get("name", kind)
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 64:
            raise StageSpecError(
                (i, "name"), f" = {name!r}: expected a name of letters, digits, '_' or '-' starting with a letter"
            )
        if name in names:
            raise StageSpecError((i, "name"), f" = {name!r}: another stage has this name; give each stage its own name")
        names.add(name)
        if "workers" in item and not stype.has_workers:
            raise StageSpecError(
                (i, "workers"),
                f" = {item['workers']!r}: expected no workers on an infer stage (its workers are pool_size instances, "
                "each with requests_per_sync requests in flight; search those axes)",
            )
        workers = _positive_int(item.get("workers", 1), (i, "workers"), "the number of worker threads", 1024)
        queue = _positive_int(item.get("queue", DEFAULT_QUEUE), (i, "queue"), "the depth of the input queue")
        opts_raw = {k: v for k, v in item.items() if k not in _COMMON}
        try:
            opts = stype.options.model_validate(opts_raw)
        except ValidationError as err:
            e = next((x for x in err.errors() if x["type"] == "extra_forbidden"), err.errors()[0])
            key = ".".join(str(p) for p in e["loc"])
            top = str(e["loc"][0]) if e["loc"] else ""
            loc = (i, *e["loc"])
            if e["type"] == "extra_forbidden" and top == "inputs" and len(e["loc"]) > 2:
                bad = str(e["loc"][-1])
                valid = list(InputDecl.model_fields)
                raise StageSpecError(
                    loc, f": unknown key of an input{_nearest(bad, valid)} (an input takes {', '.join(valid)})"
                ) from None
            if e["type"] == "extra_forbidden":
                valid = [*_COMMON, *stype.options.model_fields]
                raise StageSpecError(
                    loc, f": unknown key of a {kind!r} stage{_nearest(top, valid)} (valid here: {', '.join(valid)})"
                ) from None
            msg = str(e["msg"]).removeprefix("Value error, ")
            if e["type"] == "literal_error":
                msg = "expected one of " + msg.removeprefix("Input should be ")
            raise StageSpecError(loc, f" = {e.get('input')!r}: {msg}" if key else f": {msg}") from None
        # an infer stage's inputs reach the trial as the job's plan (tuner.config.inputs.plan_inputs), not here
        options = opts.model_dump(mode="json", exclude={"inputs"})
        stages.append(StageConfig(name, kind, workers, queue, options))
    _check_flow(stages)
    return stages


def _check_flow(stages: Sequence[StageConfig]) -> None:
    first = stages[0]
    if first.type != "read":
        raise StageSpecError((0, "type"), f" = {first.type!r}: expected 'read' (the first stage is the source)")
    kind = STAGE_TYPES["read"].produces
    for i, stage in enumerate(stages[1:], start=1):
        stype = STAGE_TYPES[stage.type]
        if stage.type == "read":
            raise StageSpecError((i, "type"), " = 'read': expected read only as the first stage")
        if stype.consumes not in ("*", kind):
            hint = ""
            if stype.consumes == "batch" and kind == "sample":
                hint = "; add a 'batch' stage before it"
            elif stype.consumes == "image" and kind == "bytes":
                hint = "; add a 'decode' stage before it"
            elif stype.consumes == "sample" and kind == "image":
                hint = "; add a 'preprocess' stage before it"
            raise StageSpecError(
                (i, "type"),
                f" = {stage.type!r}: expected a stage that takes {_KIND_WORDS.get(kind, kind)} here (a "
                f"{stage.type!r} stage takes {_KIND_WORDS[stype.consumes]}){hint}",
            )
        if stype.produces != "*":
            kind = stype.produces
    infers = [i for i, s in enumerate(stages) if s.type == "infer"]
    if len(infers) > 1:
        raise StageSpecError((infers[1], "type"), " = 'infer': expected at most one infer stage")
