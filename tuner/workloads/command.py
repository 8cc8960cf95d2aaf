"""``kind: command``: an external program is the whole workload.

The program (a vendor benchmark such as OpenVINO's ``benchmark_app``, go-rknnlite's ``example/pool``,
``trtexec``, a team's own tool) runs once per trial and prints its own figures; tuner reads them back
with ``parse``. The orchestrator still measures what it can see from outside: the peak resident memory
and the CPU time of the program's whole process tree, and its wall time; it applies the trial timeout
and kills whatever the program forked that outlives it (:func:`tuner.trial.run_process`).

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

import ast
import json
import math
import operator
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tuner.metrics import METRICS, NUMERIC_METRICS
from tuner.trial import EventSink, Failure, TrialResult, exit_failure, run_process

#: placeholders that are not axes
BUILTIN_PLACEHOLDERS = ("model", "python")
#: measured by tuner from outside, never parsed from the program
MEASURED_BY_TUNER = ("peak_rss_mb", "cpu_util")

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


# --------------------------------------------------------------------------------- placeholders


def placeholders(template: str) -> list[str]:
    """The placeholder names in ``template``; ``ValueError`` on an unbalanced or empty brace."""
    names: list[str] = []
    for m in _TOKEN.finditer(template):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise ValueError(f"unbalanced {token!r} (write {token * 2!r} for a literal brace)")
        name = m.group(1).strip()
        if not name:
            raise ValueError("empty placeholder {}")
        names.append(name)
    return names


def substitute(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``{name}`` replaced by ``values[name]`` (one string in, one string out)."""

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[m.group(1).strip()]

    return _TOKEN.sub(repl, template)


def format_value(value: Any) -> str:
    """How an axis value is written into an argument (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------------------- expressions

_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


@dataclass(frozen=True)
class Expression:
    """A tiny arithmetic expression of ``x``, checked node by node; evaluated in floats, never ``eval``ed."""

    text: str
    tree: ast.expr

    def __call__(self, x: float) -> float:
        return _evaluate(self.tree, float(x))


def compile_expression(text: str) -> Expression:
    """Parse ``text``; ``ValueError`` naming what is not allowed (only numbers, x, + - * / ** and ())."""
    if len(text) > 200:
        raise ValueError("expression longer than 200 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an arithmetic expression of x ({err.msg})") from None
    _check_node(tree.body)
    return Expression(text, tree.body)


def _check_node(node: ast.AST) -> None:
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed (only + - * / **)")
        _check_node(node.left)
        _check_node(node.right)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed (only + - * / **)")
        _check_node(node.operand)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"constant {node.value!r} is not allowed (only numbers)")
    elif isinstance(node, ast.Name):
        if node.id != "x":
            raise ValueError(f"name {node.id!r} is not allowed (only x, the matched number)")
    else:
        raise ValueError(f"{type(node).__name__} is not allowed (only numbers, x, + - * / ** and parentheses)")


def _evaluate(node: ast.expr, x: float) -> float:
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_evaluate(node.left, x), _evaluate(node.right, x))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, x))
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return x
    raise ValueError(f"{type(node).__name__} is not allowed")  # pragma: no cover - rejected at compile


# ------------------------------------------------------------------------------------ parse rules


@dataclass(frozen=True)
class Rule:
    """One metric read from the output: the last match of ``pattern``, its one group through ``value``."""

    metric: str
    pattern: re.Pattern[str]
    value: Expression | None = None


def compile_rule(metric: str, raw: Any) -> Rule:
    """A ``parse`` entry (a regex string or ``{regex, value}``) -> :class:`Rule`; ``ValueError`` if bad."""
    if isinstance(raw, str):
        regex, expr = raw, None
    elif isinstance(raw, Mapping):
        regex, expr = raw.get("regex"), raw.get("value")
    else:
        regex, expr = None, None
    if not isinstance(regex, str) or not regex:
        raise ValueError("expected a regular expression with one group, or {regex, value}")
    try:
        pattern = re.compile(regex, re.MULTILINE)
    except re.error as err:
        raise ValueError(f"bad regular expression: {err}") from None
    if pattern.groups != 1:
        raise ValueError(
            f"the regular expression has {pattern.groups} groups; it needs exactly one, around the number "
            "(use (?:...) for the others)"
        )
    return Rule(metric, pattern, compile_expression(expr) if expr is not None else None)


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _number(text: str) -> float:
    """A plain decimal number (no 'inf', 'nan', '1_000' or '1,000')."""
    if not _NUMBER.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a number")
    return float(text)


class ParseFailure(Exception):
    """The output did not give a metric (``kind`` is the trial failure kind)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_regex(output: str, rules: Mapping[str, Rule]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for metric, rule in rules.items():
        matches = list(rule.pattern.finditer(output))
        if not matches:
            raise ParseFailure(
                "no-result", f"no {metric} in the program's output (no match for {rule.pattern.pattern!r})"
            )
        text = matches[-1].group(1)
        if text is None:
            raise ParseFailure(
                "error", f"{metric}: the group of {rule.pattern.pattern!r} did not take part in the match"
            )
        try:
            x = _number(text)
        except ValueError:
            raise ParseFailure("error", f"{metric}: cannot read a number from {text[:80]!r}") from None
        if rule.value is not None:
            try:
                x = rule.value(x)
            except (ArithmeticError, ValueError) as err:
                raise ParseFailure("error", f"{metric}: {rule.value.text!r} with x = {x:g}: {err}") from None
            if not math.isfinite(x):
                raise ParseFailure("error", f"{metric}: {rule.value.text!r} with x = {text} is not finite")
        metrics[metric] = x
    return metrics


def parse_json(output: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, other keys) of the last output line that is a JSON object."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            break
    else:
        raise ParseFailure("no-result", "no JSON object line in the program's output (parse: json)")
    metrics: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in METRICS or key in MEASURED_BY_TUNER:
            other[key] = value
        elif key == "stable":
            if not isinstance(value, bool):
                raise ParseFailure("error", f"stable: expected true or false, got {value!r}")
            metrics[key] = value
        elif key == "window_qps":
            if not isinstance(value, list) or not all(_is_number(v) for v in value):
                raise ParseFailure("error", f"window_qps: expected a list of numbers, got {value!r:.80}")
            metrics[key] = [float(v) for v in value]
        else:
            if not _is_number(value):
                raise ParseFailure("error", f"{key}: expected a finite number, got {value!r:.80}")
            metrics[key] = float(value)
    return metrics, other


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------- spec validation


def check_workload(workload: Any, axes: Mapping[str, Any], searched: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    """Problems of a ``kind: command`` workload section as ``(key path, message)``; empty when valid.

    ``axes`` are every axis name (core axes and ``options.*``); fixed ``workload.options`` count too.
    """
    problems: list[tuple[tuple, str]] = []
    known = set(axes) | {f"options.{k}" for k in workload.options} | set(BUILTIN_PLACEHOLDERS)
    if not workload.command:
        problems.append((("workload", "command"), "missing: kind command needs command: [program, arg, ...]"))
        return problems
    scalars = [(("workload", "command", i), a) for i, a in enumerate(workload.command)]
    scalars += [(("workload", "env", k), v) for k, v in workload.env.items()]
    for loc, value in scalars:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append((loc, f"expected a string (or a number), got {type(value).__name__}"))
        elif "\0" in str(value):
            problems.append((loc, "a NUL byte cannot be passed to a program"))
    if problems:
        return problems
    used: set[str] = set()
    templates: list[tuple[tuple, str]] = [(("workload", "command", i), str(a)) for i, a in enumerate(workload.command)]
    templates += [(("workload", "env", k), str(v)) for k, v in workload.env.items()]
    for loc, template in templates:
        try:
            names = placeholders(template)
        except ValueError as err:
            problems.append((loc, str(err)))
            continue
        for name in names:
            if name not in known:
                problems.append((loc, f"unknown placeholder {{{name}}}{_near(name, known)} (valid: {_list(known)})"))
            elif name == "model" and not workload.model:
                problems.append((loc, "{model} needs workload.model (zoo:<name> or a file path)"))
            used.add(name)
    for key in workload.env:
        if not key or "=" in key or "\0" in key:
            problems.append((("workload", "env", key), "expected an environment variable name"))
    for name in searched:
        if name not in used:
            problems.append(
                (("search", name), f"searched, but the command never uses {{{name}}}; add it to command or env")
            )
    if not problems:
        problems += _check_parse(workload.parse)
    return problems


RULE_KEYS = ("regex", "value")


def _check_parse(parse: Any) -> list[tuple[tuple, str]]:
    if parse is None or parse == "json":
        return []
    if not isinstance(parse, Mapping) or not parse:
        return [(("workload", "parse"), "expected 'json' or a mapping metric: regex (or {regex, value})")]
    problems: list[tuple[tuple, str]] = []
    for metric, raw in parse.items():
        loc = ("workload", "parse", metric)
        if isinstance(raw, Mapping):
            for key in raw:
                if key not in RULE_KEYS:
                    problems.append(
                        (loc + (key,), f"unknown key{_near(str(key), RULE_KEYS)} (a rule is {{regex, value?}})")
                    )
            if "regex" not in raw:
                problems.append((loc, "missing regex (a rule is {regex, value?})"))
            if not isinstance(raw.get("value", ""), str):
                problems.append((loc + ("value",), "expected an expression of x as a string, e.g. '1000 / x'"))
            if problems:
                continue
        elif not isinstance(raw, str):
            problems.append((loc, "expected a regular expression with one group, or {regex, value}"))
            continue
        if metric in MEASURED_BY_TUNER:
            problems.append((loc, f"{metric} is measured by tuner from outside the program; do not parse it"))
            continue
        if metric not in NUMERIC_METRICS:
            problems.append(
                (loc, f"unknown metric{_near(metric, NUMERIC_METRICS)} (valid: {', '.join(NUMERIC_METRICS)})")
            )
            continue
        try:
            compile_rule(metric, raw)
        except ValueError as err:
            bad_value = isinstance(raw, Mapping) and not str(err).startswith(("bad regular", "the regular"))
            problems.append((loc if isinstance(raw, str) else loc + ("value" if bad_value else "regex",), str(err)))
    if not problems and "qps" not in parse:
        problems.append((("workload", "parse"), "must give qps (the throughput every study optimises)"))
    return problems


def _near(name: str, valid: Any) -> str:
    import difflib

    near = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _list(names: Any) -> str:
    return ", ".join("{" + n + "}" for n in sorted(names))


def parse_metrics_declared(parse: Any) -> tuple[str, ...] | None:
    """The metrics a regex ``parse`` gives (None for json: only the program knows)."""
    if parse is None or isinstance(parse, str):
        return None
    return tuple(parse)


# ---------------------------------------------------------------------------------------- jobs


def build_command_job(spec: Any, params: Mapping[str, Any], model_path: Path | None) -> dict[str, Any]:
    """Substitute validated values into the argv and env (in the parent); the JSON job of one trial."""
    from tuner.errors import SpecError
    from tuner.spec import check_axis_value

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
        failure = Failure(f.kind, f.message, code, _signame(code), tail)
        return TrialResult(params, metrics=partial, applied=applied, failure=failure, wall_s=outcome.wall_s)
    if code != 0:
        failure = exit_failure(code, tail, True, who="the program", silent="no output")
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
    return TrialResult(params, metrics=metrics, applied=applied, wall_s=outcome.wall_s)


def _signame(code: int | None) -> str | None:
    from tuner.trial import _signame as signame

    return signame(code)
