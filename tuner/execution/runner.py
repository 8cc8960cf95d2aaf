"""Spec + params -> a trial job -> a measured (or failed) result, with repeats.

The workload kind (looked up by name, :mod:`tuner.workloads.registry`) builds the job. A kind that runs in
the worker child (``runs_in_worker``) is measured in a fresh ``python -m tuner.execution.worker`` started
by :func:`tuner.execution.child.run_job`; any other kind's own ``run`` launches and watches its program.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tuner.config.spec import Spec
from tuner.errors import InputError, SpecError
from tuner.execution.child import run_job
from tuner.measurement.result import (
    EventSink,
    TrialResult,
    aggregate_repeats,
    current_interval,
    relative_half_width,
    wants_another_run,
)
from tuner.workloads.registry import get_kind


def resolve_model_path(
    spec: Spec, *, on_event: EventSink | None = None, params: Sequence[Mapping[str, Any]] | None = None
) -> Path | None:
    """Build/locate the workload's model once, in the parent (so a zoo build never counts in a trial), check the
    inputs against it and build what the backend opens besides it (:func:`prepare_backend`: precision variants)
    for every config the search reaches, or for ``params`` only. A GPU metric the file constrains or optimises
    where NVML cannot measure it is an error here (:func:`check_gpu_metrics`)."""
    check_gpu_metrics(spec)
    ref = spec.workload.model
    if not ref:
        return None
    from tuner.models.zoo import check_model_file, resolve_model

    path = resolve_model(ref, spec.base_dir)
    # an ONNX file is checked before any trial; other formats (OpenVINO IR, a vendor's file for a command)
    # are the runtime's to judge
    onnx_expected = path.suffix.lower() == ".onnx" or (
        spec.workload.backend == "onnxruntime" and get_kind(spec.workload.kind)().uses_backend(spec)
    )
    if not ref.startswith("zoo:") and onnx_expected:
        check_model_file(path)
    check_inputs(spec, path)
    prepare_backend(spec, path, params=params, on_event=on_event)
    return path


def check_gpu_metrics(spec: Spec) -> None:
    """Pre-flight: ``gpu_mem_peak_mb`` / ``gpu_util`` in objectives or constraints need NVML and a GPU here."""
    from tuner.measurement.gpu import nvml_unavailable, require_gpu_metrics
    from tuner.metrics import GPU_METRICS

    used = [(f"objectives[{i}]", m) for i, (m, _) in enumerate(spec.objectives)]
    used += [(f"constraints.{m}", m) for m in spec.constraints]
    if any(m in GPU_METRICS for _, m in used):
        require_gpu_metrics(used, where=str(spec.path) if spec.path else "<workload>", reason=nvml_unavailable())


def check_inputs(spec: Spec, model_path: Path) -> None:
    """Pre-flight, in the parent, before any study or trial: the file's ``inputs:`` against the model file.

    Only where a trial opens ``workload.backend`` instances that feed the plan (``Backend.uses_feeds``: ONNX
    Runtime, OpenVINO) and the model is an ``.onnx`` file (or an OpenVINO ``.xml`` with openvino installed).
    The model's signature is read (no session), the plan of the default params checked against it and any
    ``file`` / ``images`` data read once (:func:`tuner.models.feeds.check_feeds`): a wrong name, rank, dtype,
    an open dimension nobody declared or a missing data file is an :class:`~tuner.errors.InputError` that
    starts with the workload file's path.
    """
    from importlib.util import find_spec

    from tuner.backends.registry import get_backend
    from tuner.config.inputs import declared_inputs, plan_inputs
    from tuner.models.feeds import check_feeds
    from tuner.models.signature import read_signature

    if not spec.workload.backend or not get_kind(spec.workload.kind)().uses_backend(spec):
        return
    if not get_backend(spec.workload.backend).uses_feeds:
        return
    suffix = model_path.suffix.lower()
    if suffix not in (".onnx", ".xml") or (suffix == ".xml" and find_spec("openvino") is None):
        return
    params = spec.default_params()
    try:
        plan = plan_inputs(declared_inputs(spec.workload), params, spec.base_dir)
        check_feeds(read_signature(model_path), plan, int(params.get("batch_size", 1)))
    except InputError as err:
        where = str(spec.path) if spec.path else "<workload>"
        raise InputError(f"{where}: {err}") from None


#: above this many reachable (options, input shapes) combinations the pre-flight varies one axis at a time
MAX_PREPARED_COMBINATIONS = 1024


def prepare_backend(
    spec: Spec,
    model_path: Path | None,
    *,
    params: Sequence[Mapping[str, Any]] | None = None,
    on_event: EventSink | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """Pre-flight, in the parent before any trial: ``Backend.prepare`` for every config the search can reach.

    A backend builds there what its instances open besides the model file -- ONNX Runtime's and OpenVINO's
    ``precision`` variants (:mod:`tuner.models.precision`) -- so no build time lands in a trial. The configs:
    ``params`` when given (``tuner run``), else the fixed options with every searched ``options.*`` value and
    every value of the dimension axes the inputs' shapes name (the calibration feeds follow the shapes; the
    batch does not matter, variants are calibrated at batch 1), all combinations up to
    :data:`MAX_PREPARED_COMBINATIONS`, one axis at a time beyond. A range axis that cannot be enumerated stays
    at its default. Each file built is announced as a ``notice`` event with its build time. A bad option or a
    failed build is an error that starts with the workload file and names the options: before any trial.
    Returns the records of the files built or found.
    """
    from tuner.backends.base import Backend
    from tuner.backends.registry import get_backend
    from tuner.config.inputs import declared_inputs, plan_inputs
    from tuner.errors import TunerError
    from tuner.workloads.base import config_options

    if model_path is None or not spec.workload.backend or not get_kind(spec.workload.kind)().uses_backend(spec):
        return []
    backend_cls = get_backend(spec.workload.backend)
    if backend_cls.prepare is Backend.prepare:
        return []  # builds nothing: no configs to enumerate
    where = str(spec.path) if spec.path else "<workload>"
    decls = declared_inputs(spec.workload)
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for config in params if params is not None else _reachable(spec):
        options = config_options(spec, config)
        plan = plan_inputs(decls, config, spec.base_dir)
        key = json.dumps([options, plan], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        t0 = clock()
        try:
            made = backend_cls(model_path, options).prepare(plan)
        except TunerError as err:
            shown = {k: v for k, v in options.items() if k in ("precision", "quantization")} or options
            raise type(err)(f"{where}: {spec.workload.backend} options {shown}: {err}") from None
        for record in made:
            if record.get("built") and on_event:
                on_event(
                    {
                        "event": "notice",
                        "message": f"built the {record.get('precision')} variant of {model_path.name} in "
                        f"{clock() - t0:.1f} s (before any trial): {record.get('path')}",
                    }
                )
        records += made
    return records


def _reachable(spec: Spec) -> list[dict[str, Any]]:
    """The default params with every searched ``options.*`` and dimension-axis value (see prepare_backend)."""
    from tuner.config.inputs import declared_inputs, dimension_axes

    dims = set(dimension_axes(declared_inputs(spec.workload)))
    varied: dict[str, tuple[Any, ...]] = {}
    for name, axis in spec.searched_axes().items():
        if not (name.startswith("options.") or name in dims):
            continue
        try:
            varied[name] = tuple(axis.grid())
        except SpecError:  # a float range without a step: its default only
            continue
    base = spec.default_params()
    names = list(varied)
    count = 1
    for values in varied.values():
        count *= max(1, len(values))
    if count <= MAX_PREPARED_COMBINATIONS:
        return [{**base, **dict(zip(names, combo, strict=True))} for combo in itertools.product(*varied.values())]
    return [base] + [{**base, name: value} for name in names for value in varied[name]]


def build_job(spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
    """The JSON job a trial runs for ``params``: the workload kind's, with its ``kind`` added."""
    kind = get_kind(spec.workload.kind)()
    return {**kind.build_job(spec, params, model_path), "kind": spec.workload.kind}


def measure_config(
    spec: Spec,
    params: Mapping[str, Any],
    *,
    model_path: Path | None = None,
    repeats: int | Literal["auto"] | None = None,
    timeout_s: float | None = None,
    on_event: EventSink | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> TrialResult:
    """Measure ``params`` ``repeats`` times, each in a fresh child; the median repeat with its spread.

    ``repeats`` (default ``measure.repeats``) is a count, or ``"auto"``: measure once, then again while the
    qps interval is wider than ``measure.target_ci`` and fewer than ``measure.max_repeats`` runs were made
    (:func:`~tuner.measurement.result.wants_another_run`). An auto result always carries ``qps_runs``.
    A failed run is the result (the runs after it are not made). ``should_stop`` is handed to a worker-child
    run (:func:`~tuner.execution.child.run_job`): a reason stops it as a ``stopped`` failure; a kind that runs
    itself is not asked.
    """
    repeats = repeats or spec.measure.repeats
    auto = repeats == "auto"
    if not auto and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1):
        raise SpecError(f"repeats must be an integer >= 1 or 'auto', got {repeats!r}")
    most = spec.measure.max_repeats if auto else int(repeats)
    if model_path is None:
        model_path = resolve_model_path(spec, on_event=on_event, params=[params])
    job = build_job(spec, params, model_path)
    kind = get_kind(spec.workload.kind)()
    # a kind that runs in the worker child is started here (its run_in_child runs there); others run themselves
    if kind.runs_in_worker:
        run: Callable[..., TrialResult] = partial(run_job, should_stop=should_stop)
    else:
        run = kind.run
    results: list[TrialResult] = []
    while True:
        if on_event:
            event: dict[str, Any] = {"event": "repeat", "index": len(results) + 1, "of": most}
            if auto:
                event.update(auto=True, target_ci=spec.measure.target_ci)
                if results:
                    event["relative_half_width"] = relative_half_width(current_interval(results))
            on_event(event)
        result = run(
            job,
            timeout_s=timeout_s or spec.study.trial_timeout_s,
            memory_limit_mb=spec.study.memory_limit_mb,
            on_event=on_event,
        )
        results.append(result)
        if not result.ok:
            return result
        if auto:
            if not wants_another_run(results, target_ci=spec.measure.target_ci, max_runs=most):
                return aggregate_repeats(results)
        elif len(results) >= most:
            return aggregate_repeats(results) if most > 1 else results[0]
