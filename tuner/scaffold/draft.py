"""A commented workload file drafted from a model file: what ``tuner init`` writes.

:func:`draft_workload` reads the model's inputs (:func:`tuner.models.signature.read_signature`) and
declares every one of them under ``workload.inputs`` (:mod:`tuner.config.inputs`):

* **the batch.** Where a model leaves dimension 0 open, it is ``batch`` (the ``batch_size`` axis,
  searched over 1, 2, 4, 8). A state tensor whose batch is not dimension 0 is found by name: an open
  dimension named like another input's open dimension 0 (``state [2, batch, 64]`` beside ``audio
  [batch, samples]``) is ``batch`` at that position. A model that leaves no batch open keeps ``batch_size``
  fixed (at the dimension 0 every input shares, else 1);
* **the other open dimensions** take the numbers of ``--shape NAME=D1,D2,...`` (checked against the
  model: the rank and every fixed dimension), or of another input's flag when they share the model's
  name for that dimension (``attention_mask`` follows ``--shape input_ids=1,128``: both say
  ``seq_len``). One that nothing settles becomes a *placeholder* (``HEIGHT``): the file is still written,
  :attr:`Draft.unresolved` names it and :attr:`Draft.hints` gives the flag to add; loading that file fails
  with the config layer's error (the dimension is not an axis) until a number replaces it;
* **data.** ``--value NAME=X`` feeds a constant (``data: {value: X}``: a sample rate); other integer inputs
  get ``data: {int: {low: 0, high: 1}}`` and a comment asking for the id range; floats keep the default
  (``normal``).

The search is sized to this machine: ``pool_size`` 1 .. the usable cores (at least 1 .. 2), ``threads``
powers of two up to the cores, ``requests_per_sync`` 1 and 2, ``batch_size`` 1, 2, 4, 8 only when the
batch is open. ``sampler: knee`` with the measure settings of ``workloads/resnet50.yaml`` (about
:data:`TRIAL_S` seconds a trial) and as many trials as fit :data:`SEARCH_S` seconds, capped by the configs
that fit the cores; ``timeout_s`` ten minutes; the default confirmation round after the search.

The text is checked before it is returned: it must read back (YAML) as the data it was rendered from, and
:func:`tuner.config.spec.parse_spec` must take it (with the placeholders, if any, replaced by 1). A text
that fails either is a bug here, never the user's. :func:`spec_from_model` is the same draft in memory for
``tuner run|optimize MODEL``: the :class:`~tuner.config.spec.Spec` of the text ``tuner init`` would write in
the current directory, or a :class:`~tuner.errors.SpecError` naming the flag to add.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.config.inputs import BATCH, DTYPES
from tuner.errors import InputError, ModelError, SpecError
from tuner.models.graphs import ZOO_PREFIX
from tuner.models.signature import ModelInput

if TYPE_CHECKING:
    from tuner.config.spec import Spec

#: seconds one trial takes with :data:`MEASURE` (load, 2 s warm-up, three or more 2 s windows)
TRIAL_S = 15
#: seconds of the ten minutes the search is planned for; the confirmation round takes most of the rest
SEARCH_S = 420
#: ``study.timeout_s``: the search stops after ten minutes whatever budget is left
TIMEOUT_S = 600
BATCH_SIZES = (1, 2, 4, 8)
REQUESTS_PER_SYNC = (1, 2)
#: ``measure:`` as in ``workloads/resnet50.yaml`` (a trial of about :data:`TRIAL_S` seconds)
MEASURE: dict[str, int | float] = {"warmup_s": 2, "window_s": 2, "stable_windows": 3, "stability": 0.05, "max_s": 20}
#: the suffixes of a model file ``tuner run|optimize`` take in place of a workload file
MODEL_SUFFIXES = (".onnx", ".xml")
#: a relative ``model:`` path may climb at most this many folders (``../models/x.onnx``); else it is absolute
_MAX_UPS = 2
_COMMENT_COLUMN = 36


# ------------------------------------------------------------------------------------------- flags


def parse_shape_flags(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """``--shape NAME=D1,D2,...`` (``[D1,D2,...]`` too; ``NAME=`` for a scalar) -> name -> dimensions."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, sep, raw = item.rpartition("=")
        name = name.strip()
        if not sep or not name:
            raise SpecError(
                f"--shape {item!r}: expected NAME=D1,D2,... (e.g. --shape images=1,3,640,640; NAME= for a scalar)"
            )
        text = raw.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1].strip()
        dims: list[int] = []
        for i, part in enumerate(p.strip() for p in text.split(",")) if text else ():
            if not part.isdigit() or int(part) < 1:
                raise SpecError(f"--shape {item!r}: dimension {i} = {part!r}: expected a positive integer")
            dims.append(int(part))
        if name in out:
            raise SpecError(f"--shape {item!r}: input {name!r} is given twice")
        out[name] = tuple(dims)
    return out


def parse_value_flags(items: Sequence[str] | None) -> dict[str, int | float | bool]:
    """``--value NAME=X`` -> name -> a number (or true/false), read as a YAML scalar (``16000`` is an int)."""
    out: dict[str, int | float | bool] = {}
    for item in items or ():
        name, sep, raw = item.rpartition("=")
        name = name.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = None
        if not sep or not name or not isinstance(value, int | float) or not math.isfinite(value):
            raise SpecError(f"--value {item!r}: expected NAME=X with a number X (e.g. --value sr=16000)")
        if name in out:
            raise SpecError(f"--value {item!r}: input {name!r} is given twice")
        out[name] = value
    return out


def is_model_argument(argument: str | Path) -> bool:
    """Whether a command's positional argument names a model (``.onnx``, ``.xml``, ``zoo:<name>``), not a YAML file."""
    text = str(argument)
    return text.startswith(ZOO_PREFIX) or Path(text).suffix.lower() in MODEL_SUFFIXES


# ------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class OpenDim:
    """An open dimension of a model input that no flag settles: the file holds ``placeholder`` there."""

    input: str
    index: int
    #: the model's name for it (ONNX ``dim_param``); None when the model leaves it unnamed
    name: str | None
    placeholder: str


@dataclass(frozen=True)
class Draft:
    """A drafted workload file: its ``text`` and what the user should know about it."""

    text: str
    #: the workload's ``name:`` (from the model file's stem)
    name: str
    #: one line each: what was decided and what to check (the int ranges, the placeholders)
    notes: tuple[str, ...]
    #: the open dimensions left as placeholders (empty: the file runs as is)
    unresolved: tuple[OpenDim, ...]
    #: the flags that settle ``unresolved``, e.g. ``--shape images=1,3,HEIGHT,WIDTH``
    hints: tuple[str, ...]
    #: the model as the command named it (messages say this)
    model: str
    #: the ``tuner init`` command line that drafts this text again, from the file's folder
    command: str

    @property
    def complete(self) -> bool:
        """The file runs as is: no placeholder left."""
        return not self.unresolved

    def unresolved_message(self) -> str:
        """One line: which inputs leave which dimensions open, and exactly the flags to add."""
        per_input: dict[str, list[OpenDim]] = {}
        for dim in self.unresolved:
            per_input.setdefault(dim.input, []).append(dim)
        parts = []
        for name, dims in per_input.items():
            shown = ", ".join(f"{d.index} ({d.name or '?'})" if d.placeholder != "DIMS" else "(its rank)" for d in dims)
            parts.append(f"input {name!r} leaves dimension(s) {shown} open")
        placeholders = sorted({d.placeholder for d in self.unresolved})
        return (
            f"{self.model}: {'; '.join(parts)} and no --shape settles them: add {' '.join(self.hints)} "
            f"(numbers for {', '.join(placeholders)})"
        )


# ------------------------------------------------------------------------------------------- drafting


@dataclass
class _Planned:
    """One model input as the file will declare it."""

    model_input: ModelInput
    shape: list[int | str]
    batch_axis: int | None
    data: dict[str, Any] | None
    comments: list[str]
    open_dims: list[OpenDim]


def draft_workload(
    model: str | Path,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    values: Mapping[str, int | float | bool] | None = None,
    backend: str | None = None,
    usable_cores: int | None = None,
    out_dir: Path | None = None,
) -> Draft:
    """Draft the workload file of ``model`` (a path, or ``zoo:<name>``); see the module docstring.

    ``out_dir`` is the folder the file will live in (default: the current directory): the ``model:`` path
    is written relative to it when it can be. ``usable_cores`` defaults to this machine's
    (:func:`tuner.platform.usable_cores`, the figure the oversubscription rule uses). Raises
    :class:`~tuner.errors.ModelError` for a model that cannot be read and
    :class:`~tuner.errors.SpecError` for a flag that does not fit it.
    """
    from tuner.models.signature import read_signature

    shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
    values = dict(values or {})
    out_dir = Path(out_dir if out_dir is not None else Path.cwd()).expanduser().resolve()
    path, written, stem = _model_ref(model, out_dir)
    backend = backend or ("openvino" if path.suffix.lower() == ".xml" else "onnxruntime")
    option_names = _backend_options(backend)
    if path.suffix.lower() == ".xml" and backend == "onnxruntime":
        raise SpecError(
            f"--backend onnxruntime: {model} is an OpenVINO IR, which ONNX Runtime cannot read: use openvino"
        )
    if usable_cores is None:
        from tuner.platform import usable_cores as _cores

        usable_cores = _cores()
    cores = max(1, int(usable_cores))
    signature = read_signature(path)
    if not signature:
        raise ModelError(f"{model}: the model has no inputs to feed")
    notes: list[str] = []
    planned = _plan_inputs(signature, shapes, values, notes)
    batch_open = any(p.batch_axis is not None for p in planned)
    fixed_batch = 1 if batch_open else _fixed_batch(signature)

    name = _workload_name(stem)
    threads = [t for t in (2**i for i in range(32)) if t <= cores]
    high = max(2, cores)
    batch_choices: tuple[int, ...] = BATCH_SIZES if batch_open else (fixed_batch,)
    fitting = sum(1 for p in range(1, high + 1) for t in threads if p * t <= cores) or 1
    grid = fitting * len(REQUESTS_PER_SYNC) * len(batch_choices)
    trials = max(1, min(SEARCH_S // TRIAL_S, grid))
    options = {"allow_spinning": False} if "allow_spinning" in option_names and high > 1 else {}

    data: dict[str, Any] = {
        "name": name,
        "workload": {
            "kind": "pool",
            "backend": backend,
            "model": written,
            "options": options,
            "inputs": {p.model_input.name: _declaration(p) for p in planned},
        },
        "search": {
            "pool_size": {"low": 1, "high": high},
            "threads": threads,
            "requests_per_sync": list(REQUESTS_PER_SYNC),
            "batch_size": list(batch_choices) if batch_open else fixed_batch,
        },
        "objectives": [{"qps": "maximize"}, {"latency_p99_ms": "minimize"}],
        "knee": {"tolerance": 0.10},
        "measure": dict(MEASURE),
        "study": {"sampler": "knee", "trials": trials, "timeout_s": TIMEOUT_S, "trial_timeout_s": 120, "seed": 0},
    }
    batch_where = next(
        (f"{p.model_input.name} dimension {p.batch_axis}" for p in planned if p.batch_axis is not None), ""
    )
    facts = _Facts(
        cores=cores,
        trials=trials,
        grid=grid,
        batch_where=batch_where,
        fixed_batch=fixed_batch,
        command=_command(written, shapes, values, backend if backend != _default_backend(path) else None),
        planned=planned,
    )
    unresolved = tuple(d for p in planned for d in p.open_dims)
    hints = _hints(planned)
    text = _render(data, facts)
    if unresolved:
        notes.append(
            "the file holds placeholder(s) "
            + ", ".join(sorted({d.placeholder for d in unresolved}))
            + f": replace them with numbers in workload.inputs, or draft again with {' '.join(hints)}"
        )
    _check(text, data, facts, signature, out_dir / f"{name}.yaml", unresolved, batch_choices)
    return Draft(
        text=text,
        name=name,
        notes=tuple(notes),
        unresolved=unresolved,
        hints=hints,
        model=str(model),
        command=facts.command,
    )


def spec_from_model(
    model: str | Path,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    values: Mapping[str, int | float | bool] | None = None,
    backend: str | None = None,
    usable_cores: int | None = None,
    cwd: Path | None = None,
) -> tuple[Spec, Draft]:
    """The spec ``tuner run|optimize MODEL`` measures: the draft ``tuner init MODEL -o <name>.yaml`` would
    write in ``cwd`` (default: the current directory), parsed as that file.

    So the study lands where that file's would (``studies/<name>.db`` under ``cwd``), its stored workload
    text is the draft's, and ``tuner init`` then ``tuner optimize <name>.yaml`` resumes the same study. A
    draft with placeholders raises :class:`~tuner.errors.SpecError` naming the flag to add.
    """
    from tuner.config.spec import parse_spec

    folder = Path(cwd if cwd is not None else Path.cwd()).resolve()
    draft = draft_workload(
        model, shapes=shapes, values=values, backend=backend, usable_cores=usable_cores, out_dir=folder
    )
    if not draft.complete:
        raise SpecError(draft.unresolved_message())
    return parse_spec(draft.text, path=folder / f"{draft.name}.yaml"), draft


# ------------------------------------------------------------------------------------------- the model


def _model_ref(model: str | Path, out_dir: Path) -> tuple[Path, str, str]:
    """(the file on disk, how ``model:`` names it, the stem the workload is named after)."""
    text = str(model).strip()
    if text.startswith(ZOO_PREFIX):
        from tuner.models.zoo import resolve_model

        zoo_name = text[len(ZOO_PREFIX) :].strip()
        return resolve_model(text, out_dir), f"{ZOO_PREFIX}{zoo_name}", zoo_name
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelError(f"model file not found: {text!r} (looked for {path.resolve()})")
    if not path.is_file():
        raise ModelError(f"{text!r} is not a model file (an .onnx file, an OpenVINO .xml or zoo:<name>)")
    absolute = path.resolve()
    return absolute, _relative(absolute, out_dir), absolute.stem


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when that climbs at most :data:`_MAX_UPS` folders; else absolute."""
    try:
        rel = Path(os.path.relpath(path, folder))
    except ValueError:  # another drive (Windows)
        return str(path)
    if sum(1 for part in rel.parts if part == "..") > _MAX_UPS:
        return str(path)
    return rel.as_posix()


def _default_backend(path: Path) -> str:
    return "openvino" if path.suffix.lower() == ".xml" else "onnxruntime"


def _backend_options(backend: str) -> tuple[str, ...]:
    """The option names of ``backend`` (registered under ``tuner.backends``); a SpecError naming the flag."""
    from tuner import plugins
    from tuner.errors import TunerError

    try:
        return tuple(plugins.load(plugins.BACKENDS, backend).option_names())
    except TunerError as err:
        raise SpecError(f"--backend {backend}: {err}") from None


def _workload_name(stem: str) -> str:
    """The model's stem as a workload ``name:`` (``[A-Za-z0-9_.-]``, at most 100 characters)."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", stem).strip("._-")[:100]
    return name or "model"


def _nearest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------------------------- inputs


def _batch_names(signature: Sequence[ModelInput]) -> dict[str, str]:
    """The model's names of open batch dimensions (every named open dimension 0) -> the first input naming it."""
    out: dict[str, str] = {}
    for m in signature:
        if m.dims and isinstance(m.dims[0], str):
            out.setdefault(m.dims[0], m.name)
    return out


def _batch_axis(model_input: ModelInput, batch_names: Mapping[str, str], rank: int) -> int | None:
    """Where ``model_input``'s open batch dimension is: 0 when open there, else the first open dimension
    named like another input's open dimension 0 (a state tensor ``[2, batch, 64]``); None: no open batch."""
    dims = model_input.dims
    if dims is None:
        return 0 if rank > 0 else None  # a dynamic rank: the batch first, as the flag gives it
    if not dims:
        return None
    if not isinstance(dims[0], int):
        return 0
    for i, dim in enumerate(dims):
        if isinstance(dim, str) and dim in batch_names:
            return i
    return None


def _placeholder(dim: str | None, index: int) -> str:
    if isinstance(dim, str) and dim.isidentifier() and dim.upper() != dim.lower():
        return dim.upper()
    return f"DIM{index}"


def _check_flag(model_input: ModelInput, dims: tuple[int, ...]) -> None:
    """``--shape`` against the model: its rank, and every dimension the model fixes."""
    name, flag = model_input.name, f"--shape {model_input.name}={','.join(map(str, dims))}"
    mismatch = model_input.first_mismatch(dims)
    if mismatch is None:
        return
    i, want = mismatch
    if i < 0:
        raise SpecError(
            f"{flag}: input {name!r} has rank {want} {model_input.shown()}, the flag gives {len(dims)} dimension(s)"
        )
    raise SpecError(
        f"{flag}: dimension {i} of input {name!r} is fixed at {want} by the model {model_input.shown()}, "
        f"the flag gives {dims[i]}"
    )


def _plan_inputs(
    signature: Sequence[ModelInput],
    shapes: Mapping[str, tuple[int, ...]],
    values: Mapping[str, int | float | bool],
    notes: list[str],
) -> list[_Planned]:
    names = [m.name for m in signature]
    for flag, given in (("--shape", shapes), ("--value", values)):
        for name in given:
            if name not in names:
                raise SpecError(
                    f"{flag} {name}=...: the model has no input {name!r}{_nearest(name, names)} "
                    f"(its inputs: {', '.join(names)})"
                )
    batch_names = _batch_names(signature)
    # the model's names of open dimensions that a flag gives a number: other inputs naming them follow
    settled: dict[str, tuple[int, str]] = {}
    for m in signature:
        if m.name in shapes:
            _check_flag(m, shapes[m.name])
            axis = _batch_axis(m, batch_names, len(shapes[m.name]))
            for i, dim in enumerate(m.dims or ()):
                if isinstance(dim, str) and i != axis:
                    settled.setdefault(dim, (shapes[m.name][i], m.name))
    return [_plan_input(m, shapes.get(m.name), values, batch_names, settled, notes) for m in signature]


def _plan_input(
    m: ModelInput,
    flag: tuple[int, ...] | None,
    values: Mapping[str, int | float | bool],
    batch_names: Mapping[str, str],
    settled: Mapping[str, tuple[int, str]],
    notes: list[str],
) -> _Planned:
    if m.dtype not in DTYPES:
        raise InputError(f"input {m.name!r} has type {m.dtype}, which tuner cannot feed (it feeds {', '.join(DTYPES)})")
    shown = "scalar" if m.dims == () else m.shown()
    comments = [f"{m.name}: {m.dtype} {shown} in the model"]
    open_dims: list[OpenDim] = []
    shape: list[int | str] = []
    if m.dims is None and flag is None:
        axis: int | None = 0
        shape = [BATCH, "DIMS"]
        open_dims.append(OpenDim(m.name, 1, None, "DIMS"))
        comments.append("the model does not say its rank: replace DIMS with the dimensions after the batch")
    else:
        dims = m.dims if m.dims is not None else (None,) * len(flag or ())
        axis = _batch_axis(m, batch_names, len(dims))
        for i, dim in enumerate(dims):
            if i == axis:
                shape.append(BATCH)
                if flag is not None and flag[i] != 1:
                    notes.append(
                        f"--shape {m.name}: dimension {i} is the batch, which the batch_size axis sets (searched "
                        f"over {', '.join(map(str, BATCH_SIZES))}); the {flag[i]} given there is not used"
                    )
            elif isinstance(dim, int):
                shape.append(dim)
            elif flag is not None:
                shape.append(flag[i])
            elif isinstance(dim, str) and dim in settled:
                number, source = settled[dim]
                shape.append(number)
                comments.append(f"{dim} = {number}, as --shape {source} gives it (the model names both {dim!r})")
            else:
                placeholder = _placeholder(dim, i)
                shape.append(placeholder)
                open_dims.append(OpenDim(m.name, i, dim, placeholder))
        if axis is not None and axis > 0 and m.dims is not None:
            named = str(m.dims[axis])
            comments[0] += f"; the batch is dimension {axis}: named {named!r} like {batch_names[named]}'s dimension 0"
        elif axis is not None:
            comments[0] += f"; the batch is dimension {axis}"
    data: dict[str, Any] | None = None
    integer = m.dtype.startswith(("int", "uint"))
    if m.name in values:
        value = values[m.name]
        if integer and (isinstance(value, bool) or not float(value).is_integer()):
            raise SpecError(f"--value {m.name}={value}: input {m.name!r} is {m.dtype}; give a whole number")
        data = {"value": int(value) if integer else value}
        comments.append(f"a constant: --value {m.name}={value}")
    elif integer:
        data = {"int": {"low": 0, "high": 1}}
        if m.dims == ():
            comments.append(f"set the value it takes: data: {{value: X}} (or draft again with --value {m.name}=X)")
            notes.append(
                f"input {m.name!r} is an {m.dtype} scalar fed 0 or 1: if it is a setting (a sample rate, a "
                f"count), set inputs.{m.name}.data to {{value: X}} or draft again with --value {m.name}=X"
            )
        else:
            comments.append("ids 0..1: for token ids set high to the vocabulary size - 1")
            notes.append(
                f"input {m.name!r} ({m.dtype}) is fed ids 0..1: set inputs.{m.name}.data.int.high to the id range "
                "(the vocabulary size - 1 for token ids)"
            )
    return _Planned(m, shape, axis, data, comments, open_dims)


def _declaration(planned: _Planned) -> dict[str, Any]:
    out: dict[str, Any] = {"shape": list(planned.shape)}
    if planned.data is not None:
        out["data"] = planned.data
    return out


def _fixed_batch(signature: Sequence[ModelInput]) -> int:
    """A model with no open batch: the dimension 0 every input of rank >= 1 fixes alike, else 1."""
    firsts = {m.dims[0] for m in signature if m.dims}
    if len(firsts) == 1 and all(m.dims for m in signature):
        (first,) = firsts
        if isinstance(first, int):
            return first
    return 1


def _hint(name: str, shape: Sequence[int | str], open_dims: Sequence[OpenDim]) -> str:
    """The ``--shape`` flag that settles ``open_dims`` (1 for the batch, the placeholders named)."""
    if any(d.placeholder == "DIMS" for d in open_dims):
        return "--shape " + shlex.quote(f"{name}=D0,D1,...")
    dims = ",".join("1" if d == BATCH else str(d) for d in shape)
    return "--shape " + shlex.quote(f"{name}={dims}")


def _hints(planned: Sequence[_Planned]) -> tuple[str, ...]:
    """One flag per input that leaves a dimension open, but none for one whose open dimensions an earlier
    hint already settles (the model names them alike: attention_mask follows input_ids). Each such input's
    comments say which."""
    covered: dict[str, str] = {}  # the model's name of an open dimension -> the input whose hint settles it
    out: list[str] = []
    for p in planned:
        if not p.open_dims:
            continue
        placeholders = ", ".join(d.placeholder for d in p.open_dims)
        names = {d.name for d in p.open_dims}
        if None not in names and all(n in covered for n in names):
            sources = sorted({covered[n] for n in names if n is not None})
            p.comments.append(f"{placeholders}: open in the model, the same dimension(s) as in {', '.join(sources)}")
            continue
        hint = _hint(p.model_input.name, p.shape, p.open_dims)
        out.append(hint)
        p.comments.append(f"{placeholders}: open in the model; replace with numbers, or draft again with {hint}")
        for d in p.open_dims:
            if d.name is not None:
                covered.setdefault(d.name, p.model_input.name)
    return tuple(out)


def _command(
    written: str, shapes: Mapping[str, tuple[int, ...]], values: Mapping[str, Any], backend: str | None
) -> str:
    parts = ["tuner", "init", shlex.quote(written)]
    for name, dims in shapes.items():
        parts += ["--shape", shlex.quote(f"{name}={','.join(map(str, dims))}")]
    for name, value in values.items():
        parts += ["--value", shlex.quote(f"{name}={value}")]
    if backend:
        parts += ["--backend", backend]
    return " ".join(parts)


# ------------------------------------------------------------------------------------------- text


@dataclass(frozen=True)
class _Facts:
    """What the comments of the text say besides the data."""

    cores: int
    trials: int
    grid: int
    batch_where: str
    fixed_batch: int
    command: str
    planned: Sequence[_Planned]


def _flow(value: Any) -> str:
    """``value`` as one line of YAML flow style (strings quoted only where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _line(indent: int, key: str, value: str | None, comment: str = "") -> str:
    head = "  " * indent + (f"{key}: {value}" if value is not None else f"{key}:")
    if not comment:
        return head
    return f"{head.ljust(_COMMENT_COLUMN - 1)} # {comment}"


def _render(data: Mapping[str, Any], facts: _Facts) -> str:
    w, s, st = data["workload"], data["search"], data["study"]
    batch_comment = (
        f"samples per request: the model leaves the batch open ({facts.batch_where})"
        if facts.batch_where
        else f"the model fixes the batch at {facts.fixed_batch}"
        if facts.fixed_batch > 1
        else "no input leaves a batch dimension open: one sample per request"
    )
    out = [
        f"# Drafted by `tuner init` on this machine ({facts.cores} usable cores):",
        f"#   {facts.command}",
        f"# Sized to about ten minutes: {facts.trials} trials of ~{TRIAL_S} s ({facts.grid} configs fit the "
        "cores), then the",
        "# paired confirmation round. `tuner optimize THIS_FILE` runs the study; `tuner run THIS_FILE --set",
        '# pool_size=2` measures one configuration. Every key: README.md ("Tuning your own model").',
        _line(0, "name", _flow(data["name"])),
        "workload:",
        _line(1, "kind", w["kind"], "pool_size instances of the backend, each driven by its own worker"),
        _line(1, "backend", _flow(w["backend"])),
        _line(1, "model", _flow(w["model"]), "relative paths: from this file's folder"),
    ]
    if w["options"]:
        out.append("  options:")
        for key, value in w["options"].items():
            if key == "allow_spinning":
                out.append("    # ONNX Runtime's idle threads spin on their core: instances sharing the cores would")
                out.append("    # steal each other's time")
            out.append(_line(2, key, _flow(value)))
    else:
        out.append(_line(1, "options", "{}", "fixed backend options"))
    out.append(_line(1, "inputs", None, "per model input: shape (numbers, batch, axis names), dtype, data"))
    for planned in facts.planned:
        name = planned.model_input.name
        for comment in planned.comments:
            out.append(f"    # {comment}")
        out.append(_line(2, _flow(name), _flow(w["inputs"][name])))
    out += [
        "search:",
        _line(1, "pool_size", _flow(s["pool_size"]), f"runtime instances: 1 .. the {facts.cores} usable cores"),
        _line(1, "threads", _flow(s["threads"]), "compute threads per instance: powers of two up to the cores"),
        _line(1, "requests_per_sync", _flow(s["requests_per_sync"]), "requests in flight before a worker waits"),
        _line(1, "batch_size", _flow(s["batch_size"]), batch_comment),
        "objectives:",
        "  - qps: maximize",
        "  - latency_p99_ms: minimize",
        "# constraints:                     # a config that breaks one is infeasible, never the best or the knee",
        "#   latency_p99_ms: {max: 100}",
        "#   peak_rss_mb: {max: 8000}",
        "knee:",
        _line(1, "tolerance", _flow(data["knee"]["tolerance"]), "the knee: the cheapest config within 10 % of the top"),
        _line(0, "measure", None, f"about {TRIAL_S} s a trial, as workloads/resnet50.yaml"),
        *(_line(1, key, _flow(value)) for key, value in data["measure"].items()),
        _line(0, "study", None, "storage: studies/<name>.db (the default; study.storage sets another)"),
        _line(1, "sampler", st["sampler"], "ramps each axis along 1, 2, 4, ... then pins the knee down"),
        _line(1, "trials", _flow(st["trials"]), f"as many as fit {SEARCH_S // 60} minutes"),
        _line(1, "timeout_s", _flow(st["timeout_s"]), "the search stops after ten minutes whatever is left"),
        _line(1, "trial_timeout_s", _flow(st["trial_timeout_s"])),
        _line(1, "seed", _flow(st["seed"])),
    ]
    return "\n".join(out) + "\n"


def _check(
    text: str,
    data: dict[str, Any],
    facts: _Facts,
    signature: Sequence[ModelInput],
    path: Path,
    unresolved: Sequence[OpenDim],
    batch_choices: Sequence[int],
) -> None:
    """The text reads back as ``data`` and the config layer takes it (placeholders as 1); the shapes fit
    the model for every batch size. A failure is a bug in this module, said as such."""
    from tuner.config.inputs import InputDecl, plan_inputs
    from tuner.config.spec import parse_spec
    from tuner.models.feeds import resolve_feeds

    if yaml.safe_load(text) != data:
        raise SpecError(f"tuner init drafted a file that does not read back as drafted (a bug): {path.name}")
    probe_data, probe_text = data, text
    if unresolved:
        placeholders = {d.placeholder for d in unresolved}
        probe_data = copy.deepcopy(data)
        for decl in probe_data["workload"]["inputs"].values():
            decl["shape"] = [1 if d in placeholders else d for d in decl["shape"]]
        probe_text = _render(probe_data, facts)
    try:
        parse_spec(probe_text, path=path)
    except SpecError as err:
        raise SpecError(f"tuner init drafted a workload the config layer refuses (a bug): {err}") from None
    if unresolved:
        return
    decls = {name: InputDecl.model_validate(decl) for name, decl in probe_data["workload"]["inputs"].items()}
    for batch in batch_choices:
        resolve_feeds(signature, plan_inputs(decls, {"batch_size": batch}, path.parent), batch)
