"""``kind: command``: the placeholders of the argv and env templates, and checking a workload section.

See :mod:`tuner.workloads.command.job` for the placeholders and the safety rules they follow.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

from tuner.metrics import NUMERIC_METRICS
from tuner.workloads.command.parse import MEASURED_BY_TUNER, compile_expression, compile_rule

#: placeholders that are not axes
BUILTIN_PLACEHOLDERS = ("model", "python")

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
    if not problems:
        problems += check_host_threads(workload, axes)
    return problems


# ---------------------------------------------------------------------------------- host threads

HOST_THREADS_LOC = ("workload", "host_threads")
_EXAMPLE = "'{pool_size} * {threads}'"
#: at most this many combinations of the axes an expression names are evaluated when the file is loaded
_MAX_CHECKED = 4096


def check_host_threads(workload: Any, axes: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    """Problems of ``workload.host_threads``: a number >= 0, or an expression of numeric axes that evaluates.

    An expression is evaluated for every combination of the values its axes can take (each axis's grid, or
    its ends for a long or continuous range), so a division by zero or a negative count is a load error.
    """
    raw = workload.host_threads
    if raw is None:
        return []
    loc = HOST_THREADS_LOC
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        got = type(raw).__name__
        return [(loc, f"expected a number of host threads or an expression such as {_EXAMPLE}, got {got}")]
    if not isinstance(raw, str):
        if not math.isfinite(raw) or raw < 0:
            return [(loc, f"expected a number of host threads >= 0, or an expression such as {_EXAMPLE}")]
        return []
    try:
        names = placeholders(raw)
    except ValueError as err:
        return [(loc, str(err))]
    domains = _numeric_domains(workload, axes)
    for name in names:
        if name not in domains:
            return [(loc, f"unknown placeholder {{{name}}}{_near(name, domains)} (valid: {_list(domains)})")]
        bad = [v for v in domains[name] if isinstance(v, bool) or not isinstance(v, int | float)]
        if bad:
            return [(loc, f"{{{name}}} takes {bad[0]!r}, not a number; host_threads needs numeric axes")]
    used = sorted(set(names))
    candidates = [domains[n] for n in used]
    if math.prod(len(c) for c in candidates) > _MAX_CHECKED:
        candidates = [(min(c), max(c)) for c in candidates]
    for combo in itertools.product(*candidates):
        values = dict(zip(used, combo, strict=True))
        try:
            host_threads_value(raw, values)
        except ValueError as err:
            return [(loc, str(err))]
    return []


def host_threads_value(expression: str, values: Mapping[str, Any]) -> int:
    """``expression`` with every ``{axis}`` replaced by its value, evaluated; rounded up to whole threads.

    ``ValueError`` names what is wrong (a disallowed node, a division by zero, a negative or non-finite
    count) and the values it was evaluated with.
    """
    filled = substitute(expression, {name: f"({format_value(value)})" for name, value in values.items()})
    expr = compile_expression(filled, with_x=False)
    shown = ", ".join(f"{n} = {format_value(v)}" for n, v in values.items())
    with_values = f" with {shown}" if shown else ""
    try:
        count = expr()
    except (ArithmeticError, ValueError) as err:
        raise ValueError(f"{_describe(err)}{with_values}") from None
    if not math.isfinite(count) or count < 0:
        raise ValueError(f"gives {count:g}{with_values}; expected a number of host threads >= 0")
    return math.ceil(round(count, 9))


def _describe(err: BaseException) -> str:
    return "division by zero" if isinstance(err, ZeroDivisionError) else (str(err) or type(err).__name__)


def _numeric_domains(workload: Any, axes: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Every value each axis (and each fixed ``workload.options`` entry) can take, for the check."""
    domains: dict[str, tuple[Any, ...]] = {f"options.{k}": (v,) for k, v in workload.options.items()}
    for name, axis in axes.items():
        if name.startswith("stages."):
            continue
        if axis.kind != "range":
            domains[name] = tuple(axis.values)
            continue
        enumerable = axis.is_int or axis.step is not None
        values = axis.grid() if enumerable else (axis.low, axis.high)
        domains[name] = values if len(values) <= 64 else (values[0], values[-1])
    return domains


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
            problems.append((loc, f"{metric} is measured by tuner, not by the program; do not parse it"))
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
