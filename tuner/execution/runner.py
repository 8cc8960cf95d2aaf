"""Spec + params -> a trial job -> a measured (or failed) result, with repeats.

The workload kind (looked up by name, :mod:`tuner.workloads.registry`) builds the job. A kind that runs in
the worker child (``runs_in_worker``) is measured in a fresh ``python -m tuner.execution.worker`` started
by :func:`tuner.execution.child.run_job`; any other kind's own ``run`` launches and watches its program.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def resolve_model_path(spec: Spec) -> Path | None:
    """Build/locate the workload's model once, in the parent (so a zoo build never counts in a trial)."""
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
    return path


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
        model_path = resolve_model_path(spec)
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
