"""``kind: command``: reading the metrics back from the program's output (``parse: json`` or regex rules).

See :mod:`tuner.workloads.command.job` for the rules; a rule's ``value`` is a tiny arithmetic expression of
``x``, checked node by node and evaluated in floats, never ``eval``ed.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tuner.measurement.result import INTERVAL_METRICS
from tuner.metrics import METRICS

#: measured (or, for the qps interval, computed) by tuner, never parsed from the program
MEASURED_BY_TUNER = ("peak_rss_mb", "cpu_util", *INTERVAL_METRICS)


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

    def __call__(self, x: float = 0.0) -> float:
        return _evaluate(self.tree, float(x))


def compile_expression(text: str, *, with_x: bool = True) -> Expression:
    """Parse ``text``; ``ValueError`` naming what is not allowed (only numbers, x, + - * / ** and ()).

    ``with_x=False``: numbers only, no ``x`` (an expression whose placeholders were substituted first).
    """
    if len(text) > 200:
        raise ValueError("expression longer than 200 characters")
    what = "an arithmetic expression of x" if with_x else "an arithmetic expression"
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not {what} ({err.msg})") from None
    _check_node(tree.body, with_x)
    return Expression(text, tree.body)


def _check_node(node: ast.AST, with_x: bool = True) -> None:
    names = "x, " if with_x else ""
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed (only + - * / **)")
        _check_node(node.left, with_x)
        _check_node(node.right, with_x)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed (only + - * / **)")
        _check_node(node.operand, with_x)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"constant {node.value!r} is not allowed (only numbers)")
    elif isinstance(node, ast.Name):
        if node.id != "x" or not with_x:
            only = "only x, the matched number" if with_x else "only numbers and {axis} placeholders"
            raise ValueError(f"name {node.id!r} is not allowed ({only})")
    else:
        raise ValueError(f"{type(node).__name__} is not allowed (only numbers, {names}+ - * / ** and parentheses)")


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
