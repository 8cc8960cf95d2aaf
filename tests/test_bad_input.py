"""Bad input never gives a traceback (issue 7).

A matrix of malformed workload files, each run through the real CLI (``python -m tuner run`` and
``python -m tuner optimize`` in subprocesses, all of them at once up front, 4 at a time): each must exit
with code 2 and print exactly one ``error:`` line that names the file and the key or value at fault.
Then a property test: random edits of a valid file, parsed in-process, only ever raise ``TunerError``
with a one-line message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.config.spec import parse_spec
from tuner.errors import TunerError

HEAD = "name: bad\nworkload:\n  kind: pool\n  backend: sim\n"
SEARCH = "search:\n  pool_size: [1, 2]\n"

#: case id -> (file content, substrings the error line must hold besides the file name)
CASES: dict[str, tuple[str | bytes, list[str]]] = {
    # wrong types
    "axis-string": (HEAD + "search:\n  pool_size: four\n", ["search.pool_size", "'four'", "integer"]),
    "axis-bool": (HEAD + "search:\n  threads: true\n", ["search.threads", "True"]),
    "trials-string": (HEAD + SEARCH + "study:\n  trials: many\n", ["study.trials", "'many'"]),
    "measure-list": (HEAD + SEARCH + "measure: [1, 2]\n", ["measure", "mapping"]),
    "workload-scalar": ("name: bad\nworkload: sim\n", ["workload", "'sim'", "mapping"]),
    "objectives-map": (HEAD + SEARCH + "objectives: {qps: maximize}\n", ["objectives", "list"]),
    "range-low-string": (HEAD + "search:\n  pool_size: {low: a, high: 4}\n", ["search.pool_size.low", "'a'"]),
    "command-string": (
        "name: bad\nworkload:\n  kind: command\n  command: 'bench --n 4; rm -rf /'\n",
        ["workload.command", "list"],
    ),
    "name-with-slash": ("name: a/b\nworkload: {kind: pool, backend: sim}\n", ["name", "'a/b'"]),
    "key-not-string": (HEAD + "search:\n  1: [1, 2]\n", ["search"]),
    # unknown keys
    "unknown-top-key": (HEAD + "serach:\n  pool_size: [1, 2]\n", ["serach", "did you mean 'search'"]),
    "unknown-measure-key": (HEAD + SEARCH + "measure:\n  warmup: 2\n", ["measure.warmup", "warmup_s"]),
    "unknown-workload-key": ("name: bad\nworkload:\n  kind: pool\n  backnd: sim\n", ["workload.backnd", "backend"]),
    "unknown-axis": (HEAD + "search:\n  pool_sizes: [1, 2]\n", ["search.pool_sizes", "pool_size"]),
    "unknown-option": (HEAD + "  options: {unitz: 3}\n" + SEARCH, ["options.unitz", "units"]),
    "unknown-range-key": (HEAD + "search:\n  pool_size: {low: 1, hi: 4}\n", ["search.pool_size.hi"]),
    # empty / inverted / negative / out of range
    "empty-search-axis": (HEAD + "search:\n  pool_size: []\n", ["search.pool_size", "at least one"]),
    "low-above-high": (HEAD + "search:\n  pool_size: {low: 8, high: 2}\n", ["search.pool_size", "low (8) > high (2)"]),
    "negative-axis": (HEAD + "search:\n  pool_size: [-1, 2]\n", ["search.pool_size[0]", "-1"]),
    "zero-threads": (HEAD + "search:\n  threads: 0\n", ["search.threads", "0"]),
    "negative-warmup": (HEAD + SEARCH + "measure:\n  warmup_s: -1\n", ["measure.warmup_s", "-1"]),
    "negative-option": (HEAD + "  options: {service_ms: -3}\n" + SEARCH, ["service_ms", "-3"]),
    "tolerance-above-one": (HEAD + SEARCH + "knee:\n  tolerance: 1.5\n", ["knee.tolerance", "1.5"]),
    "constraint-min-above-max": (
        HEAD + SEARCH + "constraints:\n  qps: {min: 10, max: 5}\n",
        ["constraints.qps", "min (10.0) > max (5.0)"],
    ),
    "max-s-too-short": (HEAD + SEARCH + "measure:\n  warmup_s: 5\n  max_s: 2\n", ["max_s", "warmup_s"]),
    "grace-not-longer": (
        HEAD + SEARCH + "study:\n  heartbeat_s: 10\n  heartbeat_grace_s: 5\n",
        ["heartbeat_grace_s (5)", "heartbeat_s (10)"],
    ),
    "repeated-choice": (HEAD + "search:\n  pool_size: [2, 2]\n", ["search.pool_size", "repeat"]),
    "log-range-from-zero": (
        HEAD + "search:\n  options.service_ms: {low: 0, high: 4, log: true}\n",
        ["search.options.service_ms", "log"],
    ),
    # huge numbers
    "huge-int-axis": (HEAD + "search:\n  pool_size: [1, 99999999999999999999999]\n", ["search.pool_size[1]"]),
    "huge-float-trials": (HEAD + SEARCH + "study:\n  trials: 1e400\n", ["study.trials"]),
    "infinite-range": (HEAD + "search:\n  options.service_ms: {low: 1, high: .inf}\n", ["high", "inf"]),
    "nan-axis": (HEAD + "search:\n  pool_size: .nan\n", ["search.pool_size", "nan"]),
    # names that must exist
    "unknown-backend": ("name: bad\nworkload:\n  kind: pool\n  backend: tensorflow-magic\n", ["tensorflow-magic"]),
    "unknown-sampler": (HEAD + SEARCH + "study:\n  sampler: annealing\n", ["study.sampler", "'annealing'"]),
    "unknown-metric": (HEAD + SEARCH + "objectives:\n  - qpss: maximize\n", ["qpss", "did you mean 'qps'"]),
    "bad-direction": (HEAD + SEARCH + "objectives:\n  - qps: maximise\n", ["objectives[0].qps", "'maximise'"]),
    "missing-model": ("name: bad\nworkload:\n  kind: pool\n  backend: onnxruntime\n", ["workload.model", "missing"]),
    "missing-workload": ("name: bad\n" + SEARCH, ["workload", "missing"]),
    "unknown-stage": (
        "name: bad\nworkload:\n  kind: pipeline\n  stages:\n    - {type: teleport}\n",
        ["workload.stages[0].type", "'teleport'"],
    ),
    "bad-regex": (
        "name: bad\nworkload:\n  kind: command\n  command: [echo, '1']\n  parse: {qps: '([0-9'}\n",
        ["workload.parse.qps", "'([0-9'", "regular expression"],
    ),
    # YAML itself
    "yaml-unclosed-bracket": (HEAD + "search:\n  pool_size: [1, 2\n", ["YAML"]),
    "yaml-tab-indent": ("name: bad\nworkload:\n\tbackend: sim\n", ["YAML", "\\t"]),
    "yaml-python-tag": ("name: bad\nworkload: !!python/object/apply:os.system ['echo pwned']\n", ["YAML", "python"]),
    "yaml-top-level-list": ("- pool_size\n- threads\n", ["mapping", "list"]),
    "yaml-empty-file": ("", ["empty"]),
    "yaml-nested-too-deep": (HEAD + "search:\n  pool_size: " + "[" * 200 + "1" + "]" * 200 + "\n", ["deep"]),
    "yaml-alias-bomb": (
        HEAD
        + "x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(f"x-{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)),
        ["too many values"],
    ),
    "yaml-nul-byte": (HEAD.encode() + b"search: {pool_size: [1, 2]}\x00\n", ["YAML", "#x0000"]),
    "not-utf8": (HEAD.encode() + b"search:\n  pool_size: [1, 2]  # caf\xe9\n", ["not UTF-8", "0xe9"]),
    "utf16-file": ("name: bad\nworkload: {kind: pool, backend: sim}\n".encode("utf-16"), ["not UTF-8"]),
}

#: cases whose file is fine but whose model is not (the error names the model file)
MODEL_CASES: dict[str, tuple[str, bytes | None, list[str]]] = {
    "corrupt-onnx": (
        "corrupt.onnx",
        b"\x08\x07garbage that is not a protobuf" * 10,
        ["corrupt.onnx", "not a valid ONNX"],
    ),
    "empty-onnx": ("empty.onnx", b"", ["empty.onnx", "empty"]),
    "model-not-found": ("nothere.onnx", None, ["nothere.onnx", "not found"]),
}


def _write_all(folder: Path) -> dict[str, Path]:
    files = {}
    for case, (content, _) in CASES.items():
        path = folder / f"{case}.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[case] = path
    for case, (model, data, _) in MODEL_CASES.items():
        if data is not None:
            (folder / model).write_bytes(data)
        path = folder / f"{case}.yaml"
        path.write_text(f"name: bad\nworkload:\n  kind: pool\n  backend: onnxruntime\n  model: {model}\n")
        files[case] = path
    return files


#: runs the real CLI (``tuner.cli.app``, the ``tuner`` entry point) once per argv inside one child
#: process, capturing each run's exit code, stdout and stderr; anything but SystemExit is a traceback
DRIVER = r"""
import contextlib, io, json, sys, traceback
from tuner.cli import app
results = []
for argv in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app(argv, prog_name="tuner")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = -1
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def _argv(command: str, path: Path, folder: Path) -> list[str]:
    argv = [command, str(path)]
    if command == "optimize":
        argv += ["--storage", str(folder / "studies" / f"{path.stem}.db")]
    return argv


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Outcome]:
    """Every case through ``tuner run`` and ``tuner optimize``, batched in one child process."""
    folder = tmp_path_factory.mktemp("bad-input")
    files = _write_all(folder)
    jobs = [(case, command) for case in files for command in ("run", "optimize")]
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps([_argv(command, files[case], folder) for case, command in jobs]),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert proc.returncode == 0, proc.stderr
    done = {
        job: Outcome(r["code"], r["stdout"], r["stderr"]) for job, r in zip(jobs, json.loads(proc.stdout), strict=True)
    }
    assert not any(folder.glob("studies/*.db")), "a bad workload created a study"
    return done


ALL = [*CASES, *MODEL_CASES]


def test_the_matrix_has_at_least_30_files() -> None:
    assert len(ALL) >= 30


#: a few cases also as separate ``python -m tuner`` processes: the exit code the shell sees, nothing else
PROCESS_CASES = [
    ("not-utf8", "run"),
    ("yaml-python-tag", "optimize"),
    ("unknown-top-key", "run"),
    ("corrupt-onnx", "optimize"),
    ("yaml-alias-bomb", "optimize"),
]


def test_separate_processes_exit_2_with_one_line(tmp_path: Path) -> None:
    files = _write_all(tmp_path)

    def one(job: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        case, command = job
        return subprocess.run(
            [sys.executable, "-m", "tuner", *_argv(command, files[case], tmp_path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "400"},
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(one, PROCESS_CASES))
    for (case, command), result in zip(PROCESS_CASES, done, strict=True):
        assert result.returncode == 2, (case, command, result.stderr)
        assert result.stdout == "", (case, command, result.stdout)
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, command, result.stderr)


@pytest.mark.parametrize("command", ["run", "optimize"])
@pytest.mark.parametrize("case", ALL)
def test_bad_file_gives_one_line_naming_file_and_key_and_exit_2(
    results: dict[tuple[str, str], Outcome], case: str, command: str
) -> None:
    result = results[(case, command)]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    needles = CASES[case][1] if case in CASES else MODEL_CASES[case][2]
    if case in CASES:
        assert f"{case}.yaml" in line, line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"


# ---------------------------------------------------------------------------------- property test

VALID = """\
name: prop
workload:
  kind: pool
  backend: sim
  options:
    units: 3
    service_ms: 1.5
search:
  pool_size: {low: 1, high: 8}
  threads: [1, 2]
  requests_per_sync: [1, 2, 4]
  options.noise: [0.0, 0.02]
objectives:
  - qps: maximize
  - latency_p99_ms: minimize
constraints:
  latency_p99_ms: {max: 500}
knee:
  tolerance: 0.1
measure:
  warmup_s: 0.5
  window_s: 0.5
  max_s: 10
study:
  sampler: knee
  trials: 12
  seed: 3
"""

_SCALARS = [
    "-1",
    "0",
    "1e400",
    ".nan",
    ".inf",
    "[]",
    "{}",
    "~",
    "true",
    "'x'",
    "99999999999999999999",
    "[1, 1]",
    "{low: 5, high: 1}",
    "!!binary aGk=",
    "&a 1",
    "*a",
    "'\\u00e9'",
    "- 1",
    ": :",
    '"',
    "{",
    "[",
    "#",
]
_KEYS = [
    "name",
    "workload",
    "kind",
    "backend",
    "model",
    "options",
    "search",
    "pool_size",
    "threads",
    "batch_size",
    "options.units",
    "stages.x.workers",
    "objectives",
    "constraints",
    "qps",
    "knee",
    "tolerance",
    "measure",
    "max_s",
    "study",
    "trials",
    "sampler",
    "storage",
    "heartbeat_s",
    "command",
    "parse",
    "stages",
    "units",
    "1",
    "~",
    "'a b'",
    "options.nope",
    "pool_siz",
]
_CHARS = st.sampled_from(list(":{}[],-#&*!|>'\"%@` \n\t0123456789abcxyz._~") + ["\u00e9", "\x85", "\ufeff"])


@st.composite
def _edited(draw: Any) -> str:
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        # mostly edits that keep the YAML well-formed (values, keys), so the validation is exercised too
        kind = draw(st.sampled_from(["value"] * 5 + ["key"] * 2 + ["delete", "insert", "line", "dup"]))
        lines = text.splitlines(keepends=True)
        if kind == "delete" and text:
            i = draw(st.integers(0, len(text) - 1))
            text = text[:i] + text[i + draw(st.integers(1, 20)) :]
        elif kind == "insert":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.text(_CHARS, min_size=1, max_size=8)) + text[i:]
        elif kind == "line" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i] = indent + draw(st.text(_CHARS, max_size=20)) + "\n"
            text = "".join(lines)
        elif kind == "value" and lines:
            candidates = [j for j, ln in enumerate(lines) if ":" in ln]
            j = draw(st.sampled_from(candidates))
            key = lines[j].split(":", 1)[0]
            lines[j] = f"{key}: {draw(st.sampled_from(_SCALARS))}\n"
            text = "".join(lines)
        elif kind == "key" and lines:
            candidates = [j for j, ln in enumerate(lines) if ":" in ln and not ln.lstrip().startswith("-")]
            j = draw(st.sampled_from(candidates))
            indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
            rest = lines[j].split(":", 1)[1]
            lines[j] = f"{indent}{draw(st.sampled_from(_KEYS))}:{rest}"
            text = "".join(lines)
        elif kind == "dup" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "".join(lines)
    return text


def test_the_valid_file_is_valid() -> None:
    parse_spec(VALID, path=Path("prop.yaml"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_edited())
def test_random_edits_of_a_valid_file_never_give_a_traceback(text: str) -> None:
    try:
        parse_spec(text, path=Path("prop.yaml"))
    except TunerError as err:
        message = str(err)
        assert message.startswith("prop.yaml"), message
        assert "\n" not in message, message


# ------------------------------------------------------------------------ command: hostile values

HOSTILE = ["a b", "x; touch pwned", "$(touch pwned2) `touch pwned3` | cat"]


def test_hostile_command_values_stay_one_argument_through_optimize(tmp_path: Path) -> None:
    """Through the whole path (the file, the Optuna study and back, the trial child): a value with spaces,
    ``;``, ``$(...)`` or backticks is one argument of the program and never reaches a shell."""
    import optuna
    import yaml

    (tmp_path / "prog.py").write_text('import json, sys\nprint(json.dumps({"qps": 1.0, "argv": sys.argv[1:]}))\n')
    doc = {
        "name": "hostile",
        "workload": {
            "kind": "command",
            "command": ["{python}", "prog.py", "{options.mode}", "--n={pool_size}"],
            "parse": "json",
        },
        "search": {"options.mode": HOSTILE},
        "study": {"sampler": "grid", "trials": len(HOSTILE)},
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(doc))
    db = tmp_path / "hostile.db"
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "optimize", str(path), "--storage", str(db)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    [summary] = optuna.study.get_all_study_summaries(f"sqlite:///{db}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}")
    seen = {}
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            seen[t.user_attrs["config"]["options.mode"]] = t.user_attrs["applied"]["reported"]["argv"]
    assert seen == {mode: [mode, "--n=1"] for mode in HOSTILE}
    assert not list(tmp_path.glob("pwned*")), "a shell ran"
