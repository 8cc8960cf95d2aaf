"""Error text: the YAML key-path -> line map, pydantic error formatting and nearest-key hints."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuner.config.models import WorkloadFile
from tuner.errors import SpecError


def _nearest(key: str, valid: Sequence[str] | Mapping[str, Any]) -> str:
    near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


class _DictOf:
    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model


_EXPECT = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "list_type": "expected a list",
    "literal_error": None,
    "finite_number": "expected a finite number",
}


def _first_error(err: ValidationError) -> Any:
    """The error to report: an unknown key first (a misspelt key also makes the real one 'missing')."""
    errors = err.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _format_validation(err: ValidationError, where: str, lines: _LineMap) -> str:
    e = _first_error(err)
    loc = tuple(e["loc"])
    # pydantic puts the dict key of dict[str, Model] in loc; keep it
    dotted = _dotted(loc)
    line = lines.line(loc)
    if e["type"] == "extra_forbidden":
        parent = _resolve_parent(loc[:-1])
        valid = list(parent.model_fields) if parent else []
        return f"{where}:{line}: {dotted}: unknown key{_nearest(str(loc[-1]), valid)}" + (
            f" (valid here: {', '.join(valid)})" if valid else ""
        )
    if e["type"] == "missing":
        return f"{where}:{lines.line(loc[:-1])}: {dotted}: missing required key"
    expected = _EXPECT.get(e["type"]) or _clean_msg(e["msg"])
    if e["type"] == "literal_error":
        expected = "expected one of " + e["msg"].removeprefix("Input should be ")
    value = e.get("input")
    shown = repr(value) if not isinstance(value, dict | list) or len(repr(value)) < 80 else type(value).__name__
    return f"{where}:{line}: {dotted} = {shown}: {expected}"


def _resolve_parent(loc: Sequence[Any]) -> type[BaseModel] | None:
    current: Any = WorkloadFile
    for part in loc:
        if isinstance(current, _DictOf):
            current = current.model
            continue
        current = _model_at_one(current, part)
        if current is None:
            return None
    if isinstance(current, _DictOf):
        return current.model
    return current


def _model_at_one(model: type[BaseModel], part: Any) -> Any:
    info = model.model_fields.get(str(part))
    if info is None:
        return None
    ann = info.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    args = getattr(ann, "__args__", ())
    # dict[str, Model] first: its key is the next part of the path, not a field of Model
    if getattr(ann, "__origin__", None) is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return _DictOf(args[1])
    for a in args:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top>"


#: a workload file is a few levels deep and a few hundred values; far past that is refused before it is
#: expanded (deep nesting overflows the stack; a few YAML aliases can expand to billions of values)
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000


def _yaml_error(err: yaml.YAMLError, where: str) -> str:
    """One line: file, line, what PyYAML found (its messages span several lines)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or (str(err).strip().splitlines() or ["error"])[0]
    return f"{where}{line}: YAML error: {problem}"


def _check_shape(root: yaml.Node, where: str) -> None:
    """Refuse a node tree deeper than MAX_YAML_DEPTH or larger than MAX_YAML_NODES with aliases expanded."""
    stack = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_YAML_DEPTH:
            raise SpecError(
                f"{where}:{node.start_mark.line + 1}: YAML nested too deeply (more than {MAX_YAML_DEPTH} levels)"
            )
        if count > MAX_YAML_NODES:
            raise SpecError(
                f"{where}: too many values (more than {MAX_YAML_NODES} with YAML aliases expanded); a workload file "
                "is small"
            )
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.append((key_node, depth + 1))
                stack.append((value_node, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


class _LineMap:
    """Key path -> 1-based line number, from PyYAML's composed node tree."""

    def __init__(self, lines: dict[tuple[Any, ...], int]) -> None:
        self._lines = lines

    @classmethod
    def build(cls, text: str, where: str) -> _LineMap:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = f":{mark.line + 1}" if mark else ""
            problem = err.problem or "syntax error"
            raise SpecError(f"{where}{line}: YAML syntax error: {problem}") from None
        except yaml.YAMLError as err:
            raise SpecError(_yaml_error(err, where)) from None
        except RecursionError:
            raise SpecError(f"{where}: YAML nested too deeply (more than {MAX_YAML_DEPTH} levels)") from None
        found: dict[tuple[Any, ...], int] = {}
        if node is not None:
            _check_shape(node, where)
            cls._walk(node, (), found)
        return cls(found)

    @classmethod
    def _walk(cls, node: yaml.Node, path: tuple[Any, ...], found: dict[tuple[Any, ...], int]) -> None:
        found.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                found[path + (key,)] = key_node.start_mark.line + 1
                cls._walk(value_node, path + (key,), found)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found[path + (i,)] = item.start_mark.line + 1
                cls._walk(item, path + (i,), found)

    def line(self, loc: Sequence[Any]) -> int:
        loc = tuple(loc)
        while loc and loc not in self._lines:
            loc = loc[:-1]
        return self._lines.get(loc, 1)
