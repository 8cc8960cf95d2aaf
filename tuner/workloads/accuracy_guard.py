"""The accuracy guard of a pool trial: each config's outputs against the fp32 reference, on a fixed reference set.

On when the workload declares ``accuracy:``, an objective or constraint names an ``accuracy_*`` metric, or
the backend options (fixed or searched) set ``precision``
(:meth:`tuner.config.models.WorkloadFile.accuracy_on`). Then:

* in the parent, :func:`guard_job` (called by the pool's ``build_job``, never timed) makes or reuses the
  reference set and the fp32 reference outputs on it (:mod:`tuner.models.reference_set`: plain ONNX Runtime
  CPU fp32 on the original model file, OpenVINO f32 for an ``.xml``; cached on disk per model sha256 and
  reference-set key) and puts their files and the guard's cache key in the job as ``job["accuracy"]``.
  Computing them in the parent keeps the trial's own process (its ``peak_rss_mb``) free of a second runtime.
* in the trial child, AFTER the measured part (so the measurement is unperturbed), :func:`run_guard` runs
  the set through the trial's own instance 0 at the config's batch size -- the set split into requests of
  ``batch_size`` samples, the last one padded by repeating its last sample and the padding's outputs
  dropped -- and compares the kept output with the reference (:func:`tuner.analysis.accuracy.accuracy_metrics`).
  The result is cached per (model sha256, backend, canonical JSON of the config's backend options -- fixed and
  searched --, reference set, output, runtime versions, the sha256 of the precision variant the instance
  reports in ``applied_options()["variant"]``): a study computes it once per precision variant and
  every trial records the metrics. ``applied["accuracy"]`` says what was compared and whether the result and
  the reference were ``computed`` or ``cached``.

The instance is fed through its own request format: :meth:`~tuner.backends.base.Instance.prepare_inputs`
gives one request with an entry per feed in ``Instance.feeds`` order (a name for ONNX Runtime, a port index
for OpenVINO); each entry is replaced by the set's samples for that feed, cast to the feed's dtype. The
output is read by name where the runtime returns a mapping (OpenVINO), else by its position (ONNX Runtime).

Metrics: ``accuracy_sqnr_db`` and ``accuracy_nmse`` always; ``accuracy_top1_agreement`` for a classifier
output (``[batch, classes > 1]``); ``accuracy_top1`` and ``accuracy_top1_drop`` with ``accuracy.labels``
(the fp32 top-1 from the cached reference outputs). The pipeline kind does not run the guard (its infer stage
is fed by the stages before it, not by a reference set); its files refuse ``accuracy:``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner.analysis.accuracy import accuracy_metrics, top1
from tuner.backends.base import Instance
from tuner.backends.registry import get_backend
from tuner.config.inputs import declared_inputs, plan_inputs
from tuner.errors import InputError, ModelError, SpecError, TunerError
from tuner.metrics import ACCURACY_METRICS
from tuner.models.precision import file_sha256
from tuner.models.reference_set import (
    ReferenceSet,
    batch_slice,
    build_reference_set,
    guard_result_path,
    load_reference_set,
    read_json,
    reference_outputs,
    write_json,
)
from tuner.models.signature import read_signature
from tuner.models.zoo import parse_data_ref, resolve_data
from tuner.workloads.base import config_options

if TYPE_CHECKING:
    from tuner.config.checks import CheckContext
    from tuner.config.spec import Spec


def check_accuracy(ctx: CheckContext) -> None:
    """The guard's part of a pool workload file: a backend that feeds a model, data references that exist."""
    if not ctx.model.accuracy_on():
        return
    if ctx.validate_backend:
        backend = get_backend(ctx.workload.backend)
        if not backend.needs_model or not backend.uses_feeds:
            loc = ("accuracy",) if "accuracy" in ctx.model.model_fields_set else ("workload", "backend")
            raise ctx.error(
                loc,
                f"the accuracy guard runs a reference set through the model; backend {ctx.workload.backend!r} "
                "feeds no model inputs (it needs a backend with uses_feeds, e.g. onnxruntime or openvino)",
            )
    accuracy = ctx.model.accuracy
    for key in ("data", "labels"):
        ref = getattr(accuracy, key)
        if ref is None:
            continue
        try:
            if parse_data_ref(ref) is None:
                path = Path(ref).expanduser()
                path = path if path.is_absolute() else ctx.base_dir / path
                if not path.is_file():
                    raise ModelError(f"file not found (looked for {path})")
        except ModelError as err:
            raise ctx.error(("accuracy", key), str(err), show_value=True) from None


def guard_job(spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any] | None:
    """The job's ``accuracy`` entry for ``params`` (None when the guard is off); makes or reuses the reference
    set and the fp32 reference outputs. A bad reference set raises a :class:`TunerError` naming the file."""
    if not spec.model.accuracy_on():
        return None
    where = str(spec.path) if spec.path else "<workload>"
    if model_path is None:
        raise SpecError(f"{where}: the accuracy guard needs a model file (workload.model)")
    accuracy = spec.model.accuracy
    try:
        data = resolve_data(accuracy.data, spec.base_dir) if accuracy.data else None
        labels = resolve_data(accuracy.labels, spec.base_dir) if accuracy.labels else None
        plan = plan_inputs(declared_inputs(spec.workload), {**params, "batch_size": 1}, spec.base_dir)
        reference = build_reference_set(
            read_signature(model_path),
            plan,
            data=data,
            labels=labels,
            samples=accuracy.samples,
            seed=accuracy.seed,
        )
        outputs = reference_outputs(model_path, reference, output=accuracy.output)
    except TunerError as err:
        raise type(err)(f"{where}: {err}") from None
    options = config_options(spec, params)
    key = {
        "model": file_sha256(model_path),
        "backend": spec.workload.backend,
        "options": json.dumps(options, sort_keys=True, default=str),
        "set": reference.key,
        "reference": outputs.key,
    }
    return {
        "key": key,
        "set": {
            "key": reference.key,
            "inputs_file": str(reference.inputs_file),
            "labels_file": str(reference.labels_file) if reference.labels_file else None,
            "batch_axes": dict(reference.batch_axes),
            "samples": reference.samples,
        },
        "reference": outputs.to_json(),
        "made": {"set": "computed" if reference.computed else "cached", "reference": _made(outputs.computed)},
    }


def _made(computed: bool) -> str:
    return "computed" if computed else "cached"


def run_guard(
    plan: Mapping[str, Any], instance: Instance, versions: Mapping[str, Any]
) -> tuple[dict[str, float], dict[str, Any]]:
    """The guard's metrics for the trial's ``instance`` (its config's batch size) and what ``applied`` records."""
    reference = plan["reference"]
    # the precision variant the instance opened (its file's sha256, where the backend reports it) is part of the key
    variant = instance.applied_options().get("variant")
    built = variant.get("sha256") if isinstance(variant, Mapping) else None
    cache = guard_result_path(plan["key"], {**versions, "variant": built})
    applied: dict[str, Any] = {
        "output": reference["output"],
        "samples": plan["set"]["samples"],
        "reference_runtime": reference["runtime"],
        "reference_set": plan["made"]["set"],
        "reference": plan["made"]["reference"],
    }
    cached = read_json(cache)
    if cached is not None and isinstance(cached.get("metrics"), dict):
        known = cached["metrics"]
        return {m: float(known[m]) for m in ACCURACY_METRICS if m in known}, {**applied, "result": "cached"}
    stored = plan["set"]
    reference_set = ReferenceSet(
        stored["key"],
        Path(stored["inputs_file"]),
        stored["batch_axes"],
        int(stored["samples"]),
        Path(stored["labels_file"]) if stored["labels_file"] else None,
    )
    arrays, labels = load_reference_set(reference_set)
    axis = int(reference["batch_axis"])
    variant = np.moveaxis(_run_set(instance, arrays, reference_set, reference, axis), axis, 0)
    expected = np.moveaxis(np.load(reference["file"], allow_pickle=False), axis, 0)
    if variant.shape != expected.shape:
        raise InputError(
            f"accuracy guard: output {reference['output']!r} of this config is {list(variant.shape)} over the set, "
            f"the fp32 reference's {list(expected.shape)}"
        )
    metrics = accuracy_metrics(expected, variant, classifier=bool(reference["classifier"]), labels=labels)
    if labels is not None:
        applied["reference_top1"] = top1(expected, labels)
    write_json(cache, {"metrics": metrics, "applied": applied})
    return metrics, {**applied, "result": "computed"}


def _run_set(
    instance: Instance,
    arrays: Mapping[str, np.ndarray],
    reference_set: ReferenceSet,
    reference: Mapping[str, Any],
    axis: int,
) -> np.ndarray:
    """The kept output of the whole set through ``instance``, in requests of its batch size."""
    batch = instance.config.batch_size
    feeds = instance.feeds
    template = instance.prepare_inputs()
    if not feeds or not isinstance(template, Mapping) or len(template) != len(feeds):
        raise InputError(
            "accuracy guard: the instance does not feed its model inputs one entry per feed (Instance.feeds); the "
            "guard cannot give it the reference set"
        )
    missing = [f.name for f in feeds if f.name not in arrays]
    if missing:
        raise InputError(f"accuracy guard: the reference set has no samples for input(s) {', '.join(missing)}")
    parts = []
    for start in range(0, reference_set.samples, batch):
        size = min(batch, reference_set.samples - start)
        request = {}
        for key, feed in zip(template, feeds, strict=True):
            chunk = batch_slice(arrays[feed.name], reference_set.batch_axes.get(feed.name), start, size, batch)
            if chunk.shape != tuple(feed.shape):
                raise InputError(
                    f"accuracy guard: input {feed.name!r} takes {list(feed.shape)} in this config, the reference set "
                    f"gives {list(chunk.shape)}"
                )
            request[key] = np.ascontiguousarray(chunk, dtype=np.dtype(feed.dtype))
        out = _output_of(instance.infer(request), reference)
        parts.append(np.take(np.asarray(out, dtype=np.float64), np.arange(size), axis=axis))
    return np.concatenate(parts, axis=axis)


def _output_of(result: Any, reference: Mapping[str, Any]) -> Any:
    """The kept output of one request's result: by name from a mapping (OpenVINO), else by position."""
    if isinstance(result, Mapping):
        try:
            return result[reference["output"]]
        except Exception:  # noqa: BLE001 - a runtime's mapping keyed otherwise: the model's order
            return list(result.values())[int(reference["output_index"])]
    return result[int(reference["output_index"])]
