"""``kind: command``: the workload kind that runs an external program (see :mod:`tuner.workloads.command.job`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.config.axes import check_axis_value
from tuner.errors import SpecError
from tuner.measurement.result import EventSink, TrialResult
from tuner.search.rules import HostThreads
from tuner.workloads.base import WorkloadKind
from tuner.workloads.command.job import build_command_job, run_command_job
from tuner.workloads.command.parse import MEASURED_BY_TUNER
from tuner.workloads.command.template import (
    check_workload,
    format_value,
    host_threads_value,
    parse_metrics_declared,
    placeholders,
)

if TYPE_CHECKING:
    from tuner.config.checks import CheckContext
    from tuner.config.spec import Spec


class CommandKind(WorkloadKind):
    """The program is the whole workload: tuner launches it once per trial and measures it from outside."""

    name = "command"
    runs_in_worker = False

    def check(self, ctx: CheckContext) -> None:
        """Placeholders name known axes, searched axes are used, regexes and expressions compile."""
        workload = ctx.workload
        for key, value in workload.options.items():
            check_axis_value(f"options.{key}", value, where=ctx.at(("workload", "options", key)))
        problems = check_workload(workload, ctx.axes, ctx.searched())
        if problems:
            loc, message = problems[0]
            raise ctx.error(loc, message, show_value=True)
        declared = parse_metrics_declared(workload.parse)
        if declared is None:
            return
        given = set(declared) | set(MEASURED_BY_TUNER)
        gives = f"(workload.parse gives {', '.join(declared)}) nor measured by tuner"
        for i, (metric, _direction) in enumerate(ctx.objectives):
            if metric not in given:
                raise ctx.error(("objectives", i), f"{metric!r} is neither parsed from the program's output {gives}")
        for metric in ctx.model.constraints:
            if metric not in given:
                raise ctx.error(("constraints", metric), f"neither parsed from the program's output {gives}")

    def host_threads(self, spec: Spec, params: Mapping[str, Any], *, usable_cores: int) -> HostThreads | None:
        """``workload.host_threads`` of ``params``; None when the file declares none (the program is a black box:
        an NPU pool such as go-rknnlite's waits on its device with more runtimes than the board has cores).
        """
        raw = spec.workload.host_threads
        if raw is None:
            return None
        if not isinstance(raw, str):
            return HostThreads(math.ceil(raw), f"workload.host_threads {format_value(raw)}")
        values = {
            name: params.get(name, spec.workload.options.get(name[len("options.") :]))
            for name in dict.fromkeys(placeholders(raw))
        }
        try:
            count = host_threads_value(raw, values)
        except ValueError as err:
            raise SpecError(f"{spec.path or '<workload>'}: workload.host_threads = {raw!r}: {err}") from None
        shown = ", ".join(f"{n} {format_value(v)}" for n, v in values.items())
        return HostThreads(count, f"workload.host_threads {raw!r}" + (f" with {shown}" if shown else ""))

    def build_job(self, spec: Spec, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
        return build_command_job(spec, params, model_path)

    def run(
        self,
        job: Mapping[str, Any],
        *,
        timeout_s: float,
        memory_limit_mb: float | None = None,
        on_event: EventSink | None = None,
    ) -> TrialResult:
        return run_command_job(job, timeout_s=timeout_s, memory_limit_mb=memory_limit_mb, on_event=on_event)
