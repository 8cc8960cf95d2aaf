"""``kind: command``: an external program is the whole workload.

The program (a vendor benchmark such as OpenVINO's ``benchmark_app``, go-rknnlite's ``example/pool``,
``trtexec``, a team's own tool) runs once per trial and prints its own figures; tuner reads them back
with ``parse``. The orchestrator still measures what it can see from outside: the peak resident memory
and the CPU time of the program's whole process tree, and its wall time; it applies the trial timeout
and kills whatever the program forked that outlives it (:func:`tuner.measurement.process.run_process`).

Safety: the program is never run through a shell. ``command`` is an argv list; each ``{placeholder}``
is replaced inside its own list element, so a substituted value is always exactly one argument (spaces,
``;``, quotes and ``$(...)`` reach the program verbatim, as data). Every substituted axis value is checked
against the axis (type, range, and the values the workload file allows) before it is used.

Placeholders: ``{<axis>}`` (``{pool_size}``, ``{threads}``, ``{requests_per_sync}``, ``{batch_size}``,
``{options.<name>}`` searched or fixed in ``workload.options``), ``{model}`` (the resolved path of
``workload.model``: a ``zoo:`` reference is built first), ``{python}`` (the interpreter running tuner).
``{{`` and ``}}`` are literal braces.

Parsing the output (stdout and stderr merged, in the order written; the last match wins):

* ``parse: json``: the last output line that is a JSON object gives the metrics by name
  (``qps``, ``latency_p50_ms``, ...); other keys are kept under ``applied.reported``;
* ``parse: {metric: regex}``: the regex's one group is the number; or
  ``{metric: {regex: ..., value: '1000 / x'}}``: the number ``x`` goes through a small arithmetic
  expression (numbers, ``x``, ``+ - * / **`` and parentheses; nothing else is allowed or evaluated).

A non-zero exit, a missing metric, an unparsable number or a missing ``qps`` fail the trial with the
program's last output lines.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from tuner.measurement.process import Failure, exit_failure, run_process, signal_name
from tuner.measurement.result import EventSink, TrialResult, with_run_interval
from tuner.workloads.command.parse import ParseFailure, _is_number, compile_rule, parse_json, parse_regex
from tuner.workloads.command.template import format_value, placeholders, substitute

# ---------------------------------------------------------------------------------------- jobs


def build_command_job(spec: Any, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
    """Substitute validated values into the argv and env (in the parent); the JSON job of one trial."""
    from tuner.config.axes import check_axis_value
    from tuner.errors import SpecError

    workload = spec.workload
    where = f"{spec.path or '<workload>'}"
    values: dict[str, str] = {"python": sys.executable}
    if model_path is not None:
        values["model"] = str(model_path)
    for key, value in workload.options.items():
        values[f"options.{key}"] = format_value(
            check_axis_value(f"options.{key}", value, where=f"{where}: options.{key}")
        )
    for name, axis in spec.axes.items():
        if name not in params:
            continue
        value = check_axis_value(name, params[name], where=f"{where}: {name}")
        if not axis.contains(value):
            raise SpecError(f"{where}: {name} = {value!r}: not a value of search.{name} ({_domain(axis)})")
        if value is None:
            raise SpecError(f"{where}: {name} has no value to substitute")
        values[name] = format_value(value)

    def fill(template: Any) -> str:
        text = str(template)
        missing = [n for n in placeholders(text) if n not in values]
        if missing:
            raise SpecError(f"{where}: {text!r}: no value for {{{missing[0]}}}")
        return substitute(text, values)

    argv = [fill(a) for a in workload.command]
    env = {str(k): fill(v) for k, v in workload.env.items()}
    cwd = Path(workload.cwd).expanduser() if workload.cwd else Path(".")
    if not cwd.is_absolute():
        cwd = spec.base_dir / cwd
    parse = workload.parse if workload.parse is not None else "json"
    if not isinstance(parse, str):
        parse = {m: (r if isinstance(r, str) else dict(r)) for m, r in parse.items()}
    return {
        "kind": "command",
        "argv": argv,
        "env": env,
        "cwd": str(cwd),
        "parse": parse,
        "params": dict(params),
        "model": str(model_path) if model_path else None,
        "spec_path": str(spec.path) if spec.path else None,
    }


def _domain(axis: Any) -> str:
    if axis.kind == "range":
        return f"{axis.low}..{axis.high}"
    return "one of " + ", ".join(repr(v) for v in axis.values)


def resolve_program(program: str, cwd: Path, path_env: str | None) -> str | None:
    """Where ``program`` is: a path (relative to ``cwd``), on ``PATH``, or beside this interpreter."""
    if os.sep in program or (os.altsep and os.altsep in program):
        candidate = Path(program).expanduser()
        if not candidate.is_absolute():
            candidate = cwd / candidate
        return str(candidate) if os.access(candidate, os.X_OK) and candidate.is_file() else None
    found = shutil.which(program, path=path_env)
    if found:
        return found
    # console scripts of the environment tuner runs in (a venv that was never activated)
    beside = Path(sys.executable).parent / program
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def run_command_job(
    job: Mapping[str, Any],
    *,
    timeout_s: float,
    memory_limit_mb: float | None = None,
    on_event: EventSink | None = None,
    poll_s: float = 0.05,
) -> TrialResult:
    """Run the program of ``job`` once; always returns a :class:`TrialResult`."""
    params = dict(job.get("params", {}))
    argv = list(job["argv"])
    cwd = Path(job.get("cwd") or ".")
    env = dict(os.environ)
    env.update(job.get("env") or {})
    applied: dict[str, Any] = {"argv": argv, "env": dict(job.get("env") or {}), "cwd": str(cwd)}
    if not cwd.is_dir():
        return TrialResult(params, failure=Failure("error", f"cwd {cwd} is not a directory"), applied=applied)
    program = resolve_program(argv[0], cwd, env.get("PATH"))
    if program is None:
        return TrialResult(
            params,
            failure=Failure(
                "error",
                f"program {argv[0]!r} not found (relative to {cwd}, on PATH, or beside {sys.executable})",
            ),
            applied=applied,
        )
    argv[0] = program
    applied["program"] = program
    if on_event:
        on_event({"event": "command", "argv": argv})
    outcome = run_process(
        argv,
        timeout_s=timeout_s,
        memory_limit_mb=memory_limit_mb,
        poll_s=poll_s,
        env=env,
        cwd=cwd,
        merge_output=True,
    )
    tail = outcome.tail()
    partial = {"peak_rss_mb": outcome.peak_rss_mb} if outcome.peak_rss_mb else {}
    code = outcome.returncode
    if outcome.failure is not None:
        f = outcome.failure
        failure = Failure(f.kind, f.message, code, signal_name(code), tail)
        return TrialResult(params, metrics=partial, applied=applied, failure=failure, wall_s=outcome.wall_s)
    if code != 0:
        failure = exit_failure(code, tail, who="the program", silent="no output")
        return TrialResult(params, metrics=partial, applied=applied, failure=failure, wall_s=outcome.wall_s)
    parse = job.get("parse", "json")
    try:
        if parse == "json":
            metrics, other = parse_json(outcome.output)
            if other:
                applied["reported"] = other
        else:
            rules = {m: compile_rule(m, r) for m, r in parse.items()}
            metrics = dict(parse_regex(outcome.output, rules))
        if not _is_number(metrics.get("qps")):
            raise ParseFailure("no-result", "the program's output gave no qps")
    except ParseFailure as err:
        failure = Failure(err.kind, str(err), code, None, tail)  # type: ignore[arg-type]
        return TrialResult(params, metrics=partial, applied=applied, failure=failure, wall_s=outcome.wall_s)
    cores = psutil.cpu_count() or 1
    metrics["peak_rss_mb"] = outcome.peak_rss_mb
    metrics["cpu_util"] = max(0.0, min(1.0, outcome.cpu_s / max(outcome.wall_s, 1e-9) / cores))
    # the qps interval from the program's window_qps when it reports them; unknown (NaN) otherwise
    metrics = with_run_interval(metrics)
    return TrialResult(params, metrics=metrics, applied=applied, wall_s=outcome.wall_s)
