"""Workload files: every class of mistake is one SpecError line naming file, line, key, value, expectation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tuner.config.axes import Axis
from tuner.config.spec import load_spec, parse_spec
from tuner.errors import ModelError, SpecError
from tuner.execution.runner import resolve_model_path
from tuner.metrics import CORE_AXES

BASE = "workload:\n  backend: onnxruntime\n  model: zoo:tiny\n"


def write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def spec_error(tmp_path: Path, text: str, name: str = "w.yaml") -> str:
    """Load ``text`` as a workload file; return the SpecError's message (and check it is one line)."""
    path = write(tmp_path, text, name)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message  # names the file first
    return message


# ------------------------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    ("text", "line", "path", "suggestion"),
    [
        # top level
        (BASE + "measur:\n  warmup_s: 1\n", 4, "measur", "measure"),
        # a misspelt required key is reported as unknown (with the suggestion), not as 'missing'
        ("workoad:\n  model: zoo:tiny\n", 1, "workoad", "workload"),
        # in measure
        (BASE + "measure:\n  warmup_s: 1\n  windw_s: 2\n", 6, "measure.windw_s", "window_s"),
        # in study
        (BASE + "study:\n  trials: 3\n  samplr: tpe\n", 6, "study.samplr", "sampler"),
        # in workload
        ("workload:\n  model: zoo:tiny\n  modle: x\n", 3, "workload.modle", "model"),
        # in a constraint bound (dict of models)
        (BASE + "constraints:\n  qps: {mn: 3}\n", 5, "constraints.qps.mn", "min"),
        # in a range axis (flow and block style); a misspelt 'high' is unknown, not 'missing'
        (BASE + "search:\n  pool_size: {low: 1, hihg: 4}\n", 5, "search.pool_size.hihg", "high"),
        (BASE + "search:\n  threads:\n    low: 1\n    high: 4\n    stpe: 1\n", 5, "search.threads.stpe", "step"),
        # in search axis names
        (
            BASE + "search:\n  pool_size: [1, 2]\n  request_per_sync: [1, 2]\n",
            6,
            "search.request_per_sync",
            "requests_per_sync",
        ),
        (BASE + "search:\n  batchsize: [1, 2]\n", 5, "search.batchsize", "batch_size"),
        # backend option names, fixed and searched
        (BASE + "  options:\n    alow_spinning: true\n", 5, "workload.options.alow_spinning", "allow_spinning"),
        (
            BASE + "search:\n  options.alow_spinning: [true, false]\n",
            5,
            "search.options.alow_spinning",
            "allow_spinning",
        ),
        (BASE + "  options:\n    inter_op_thread: 2\n", 5, "workload.options.inter_op_thread", "inter_op_threads"),
    ],
)
def test_unknown_key_names_line_path_and_nearest_key(
    tmp_path: Path, text: str, line: int, path: str, suggestion: str
) -> None:
    message = spec_error(tmp_path, text)
    assert f"w.yaml:{line}:" in message, message
    assert path in message, message
    assert f"did you mean {suggestion!r}?" in message, message


def test_unknown_top_level_key_lists_valid_keys(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "serach:\n  threads: [1, 2]\n")
    assert "did you mean 'search'?" in message
    for key in ("workload", "search", "objectives", "constraints", "measure", "study"):
        assert key in message


def test_unknown_axis_lists_valid_axes(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "search:\n  gpus: [1, 2]\n")
    assert "search.gpus: unknown axis" in message
    for axis in CORE_AXES:
        assert axis in message


def test_unknown_option_lists_valid_options(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "  options:\n    alow_spinning: true\n")
    assert "'onnxruntime'" in message
    for option in ("allow_spinning", "inter_op_threads", "execution_mode", "graph_optimization_level"):
        assert option in message


def test_far_off_unknown_key_makes_no_wild_guess(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "zzzzzz: 1\n")
    assert "zzzzzz: unknown key" in message
    assert "did you mean" not in message


# ------------------------------------------------------------------------------ wrong types/values


@pytest.mark.parametrize(
    ("text", "line", "fragment", "expected"),
    [
        (BASE + "measure:\n  warmup_s: fast\n", 5, "measure.warmup_s = 'fast'", "expected a number"),
        (BASE + "study:\n  trials: 2.5\n", 5, "study.trials = 2.5", "expected an integer"),
        (BASE + "study:\n  trials: many\n", 5, "study.trials = 'many'", "expected an integer"),
        (
            BASE + "study:\n  allow_oversubscription: perhaps\n",
            5,
            "study.allow_oversubscription = 'perhaps'",
            "expected true or false",
        ),
        (BASE + "measure: 5\n", 4, "measure = 5", "expected a mapping"),
        (BASE + "search: [1, 2]\n", 4, "search = [1, 2]", "expected a mapping"),
        (BASE + "objectives: {qps: maximize}\n", 4, "objectives", "expected a list"),
        (BASE + "measure:\n  warmup_s: -1\n", 5, "measure.warmup_s = -1", "greater than or equal to 0"),
        (BASE + "measure:\n  stability: 1.5\n", 5, "measure.stability = 1.5", "less than 1"),
        (BASE + "search:\n  threads: [1, two]\n", 5, "search.threads[1] = 'two'", "expected a positive integer"),
        (BASE + "search:\n  batch_size: 1.5\n", 5, "search.batch_size = 1.5", "expected a positive integer"),
        (BASE + "search:\n  threads: true\n", 5, "search.threads = True", "expected a positive integer"),
        (BASE + "search:\n  threads: []\n", 5, "search.threads = []", "expected at least one choice"),
        (BASE + "search:\n  threads: [1, 2, 1]\n", 5, "search.threads = [1, 2, 1]", "choices repeat a value"),
        (
            BASE + "search:\n  threads: {low: 1, high: 8, log: yes please}\n",
            5,
            "search.threads.log",
            "expected true or false",
        ),
        (BASE + "  options:\n    allow_spinning: maybe\n", 4, "allow_spinning", "valid boolean"),
        (
            "workload:\n  kind: batch\n  model: zoo:tiny\n",
            2,
            "workload.kind: unknown workload kind 'batch'",
            "(valid: command, pipeline, pool)",
        ),
        ("name: my workload\n" + BASE, 1, "name = 'my workload'", "should match pattern"),
    ],
)
def test_wrong_type_or_value_names_line_value_and_expectation(
    tmp_path: Path, text: str, line: int, fragment: str, expected: str
) -> None:
    message = spec_error(tmp_path, text)
    assert f"w.yaml:{line}:" in message, message
    assert fragment in message, message
    assert expected in message, message


@pytest.mark.parametrize(
    ("axis_text", "fragment"),
    [
        ("pool_size: 0", "search.pool_size = 0"),
        ("pool_size: -2", "search.pool_size = -2"),
        ("pool_size: [1, -2]", "search.pool_size[1] = -2"),
        ("pool_size: [0, 1]", "search.pool_size[0] = 0"),
        ("pool_size: {low: 0, high: 4}", "search.pool_size.low = 0"),
        ("pool_size: {low: -1, high: 2}", "search.pool_size.low = -1"),
        ("pool_size: {low: 1, high: 4, step: 0}", "step must be > 0"),
    ],
)
def test_zero_or_negative_pool_size(tmp_path: Path, axis_text: str, fragment: str) -> None:
    message = spec_error(tmp_path, BASE + "search:\n  " + axis_text + "\n")
    assert "w.yaml:5:" in message
    assert fragment in message, message


def test_low_above_high(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "search:\n  threads: {low: 8, high: 2}\n")
    assert "w.yaml:5:" in message
    assert "search.threads" in message
    assert "low (8) > high (2)" in message


def test_range_missing_bound(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "search:\n  threads: {low: 2}\n")
    assert "w.yaml:5: search.threads: missing 'high'" in message
    assert "{low, high, step?, log?}" in message


def test_log_range_needs_positive_low(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "search:\n  options.inter_op_threads: {low: 0, high: 8, log: true}\n")
    assert "log ranges need low > 0" in message


def test_max_s_must_leave_room_for_warmup_and_a_window(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "measure:\n  warmup_s: 5\n  window_s: 1\n  max_s: 4\n")
    assert "measure" in message
    assert "max_s (4.0) must leave room" in message


@pytest.mark.parametrize(
    ("measure", "line", "fragment", "expected"),
    [
        ("  repeats: often\n", 5, "measure.repeats = 'often'", "expected a whole number of runs from 1 to 100"),
        ("  repeats: 0\n", 5, "measure.repeats = 0", "or auto"),
        ("  repeats: 2.5\n", 5, "measure.repeats = 2.5", "or auto"),
        ("  repeats: true\n", 5, "measure.repeats = True", "or auto"),
        ("  repeats: Auto\n", 5, "measure.repeats = 'Auto'", "or auto"),
        ("  repeats: auto\n  max_repeats: 1\n", 6, "measure.max_repeats = 1", "greater than or equal to 2"),
        ("  repeats: auto\n  max_repeats: many\n", 6, "measure.max_repeats = 'many'", "expected an integer"),
        ("  repeats: auto\n  target_ci: 0\n", 6, "measure.target_ci = 0", "greater than 0"),
        ("  repeats: auto\n  target_ci: 1.5\n", 6, "measure.target_ci = 1.5", "less than 1"),
        ("  repeats: auto\n  target_ci: tight\n", 6, "measure.target_ci = 'tight'", "expected a number"),
        ("  repeats: auto\n  target_cl: 0.05\n", 6, "measure.target_cl: unknown key", "did you mean 'target_ci'?"),
    ],
)
def test_bad_repeats_values_name_line_key_and_expectation(
    tmp_path: Path, measure: str, line: int, fragment: str, expected: str
) -> None:
    message = spec_error(tmp_path, BASE + "measure:\n" + measure)
    assert f"w.yaml:{line}:" in message, message
    assert fragment in message, message
    assert expected in message, message


def test_repeats_auto_and_its_defaults() -> None:
    auto = parse_spec(BASE + "measure:\n  repeats: auto\n").measure
    assert auto.repeats == "auto" and auto.max_repeats == 5 and auto.target_ci == 0.03
    assert auto.max_runs == 5  # what a trial's time budget is sized for
    counted = parse_spec(BASE + "measure:\n  repeats: 3\n  max_repeats: 9\n").measure
    assert counted.repeats == 3 and counted.max_runs == 3
    # the child measures with the steady-state settings only
    steady = {"warmup_s", "window_s", "stable_windows", "stability", "max_s", "min_window_requests"}
    assert set(auto.child_settings()) == steady


def test_auto_keys_change_the_hash_only_with_repeats_auto() -> None:
    h = parse_spec(BASE).spec_hash
    # without auto they change nothing measured: studies made before these keys existed keep their hash
    assert parse_spec(BASE + "measure:\n  max_repeats: 9\n  target_ci: 0.5\n").spec_hash == h
    auto = parse_spec(BASE + "measure:\n  repeats: auto\n").spec_hash
    assert auto != h
    assert parse_spec(BASE + "measure:\n  repeats: auto\n  target_ci: 0.01\n").spec_hash != auto
    assert parse_spec(BASE + "measure:\n  repeats: auto\n  max_repeats: 3\n").spec_hash != auto


# ------------------------------------------------------------------------------- file-level faults


def test_empty_file(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "")
    assert "empty" in message
    assert "'workload'" in message


def test_comment_only_file_is_empty(tmp_path: Path) -> None:
    assert "empty" in spec_error(tmp_path, "# nothing here\n")


def test_top_level_list(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "- workload\n- search\n")
    assert "w.yaml:1:" in message
    assert "expected a mapping at the top level, got list" in message


def test_top_level_scalar(tmp_path: Path) -> None:
    assert "expected a mapping at the top level, got str" in spec_error(tmp_path, "just words\n")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "  options: {inter_op_threads: 1\nsearch:\n  threads: [1, 2]\n")
    assert "YAML syntax error" in message
    assert "w.yaml:5:" in message, message


def test_yaml_bad_indentation_names_line(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "workload:\n  model: zoo:tiny\n   backend: onnxruntime\n")
    assert "YAML syntax error" in message
    assert "w.yaml:3:" in message, message


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"workload:\n  model: zoo:tiny\nname: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3:"), message
    assert "not UTF-8" in message
    assert "0xe9" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="workload file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_missing_workload_section(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "name: x\n")
    assert "workload: missing required key" in message


# ------------------------------------------------------------------------- metrics, sampler, backend


def test_unknown_metric_in_objectives(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "objectives:\n  - qps: maximize\n  - latency_p99: minimize\n")
    assert "w.yaml:6:" in message
    assert "objectives[1]: unknown metric 'latency_p99'" in message
    assert "did you mean 'latency_p99_ms'?" in message
    assert "valid: qps, rps" in message


def test_objective_direction(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "objectives:\n  - qps: maximise\n")
    assert "objectives[0].qps = 'maximise'" in message
    assert "'maximize' or 'minimize'" in message


def test_empty_objectives(tmp_path: Path) -> None:
    assert "at least one objective" in spec_error(tmp_path, BASE + "objectives: []\n")


def test_unknown_metric_in_constraints(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "constraints:\n  peak_rss: {max: 800}\n")
    assert "w.yaml:5:" in message
    assert "constraints.peak_rss: unknown metric" in message
    assert "did you mean 'peak_rss_mb'?" in message


def test_constraint_bounds(tmp_path: Path) -> None:
    assert "give min, max or both" in spec_error(tmp_path, BASE + "constraints:\n  qps: {}\n")
    assert "min (5.0) > max (1.0)" in spec_error(tmp_path, BASE + "constraints:\n  qps: {min: 5, max: 1}\n")


def test_unknown_sampler(tmp_path: Path) -> None:
    message = spec_error(tmp_path, BASE + "study:\n  sampler: bayes\n")
    assert "w.yaml:5:" in message
    assert "study.sampler = 'bayes'" in message
    assert "expected one of 'tpe', 'grid', 'random', 'gp', 'nsga2' or 'knee'" in message


def test_unknown_backend_lists_valid_ones(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "workload:\n  backend: tensorrt\n  model: zoo:tiny\n")
    assert "w.yaml:2:" in message
    assert "workload.backend: unknown backend 'tensorrt'" in message
    assert "onnxruntime" in message


def test_near_miss_backend_suggests(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "workload:\n  backend: onnxruntim\n  model: zoo:tiny\n")
    assert "did you mean 'onnxruntime'?" in message


def test_missing_model(tmp_path: Path) -> None:
    message = spec_error(tmp_path, "workload:\n  backend: onnxruntime\n")
    assert "workload.model: missing" in message
    assert "'onnxruntime' needs a model" in message


def test_option_both_fixed_and_searched(tmp_path: Path) -> None:
    text = BASE + "  options:\n    allow_spinning: true\nsearch:\n  options.allow_spinning: [true, false]\n"
    assert "also fixed in workload.options" in spec_error(tmp_path, text)


# ------------------------------------------------------------------------------------- model paths


def test_relative_model_path_resolves_against_workload_dir(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "project" / "workloads"
    (workdir / "models").mkdir(parents=True)
    shutil.copy(tiny_model, workdir / "models" / "net.onnx")
    path = write(workdir, BASE.replace("zoo:tiny", "models/net.onnx"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the cwd must not matter
    spec = load_spec(Path("..") / "project" / "workloads" / path.name)
    resolved = resolve_model_path(spec)
    assert resolved is not None
    assert resolved.resolve() == (workdir / "models" / "net.onnx").resolve()


def test_missing_relative_model_names_the_path_it_tried(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE.replace("zoo:tiny", "models/missing.onnx")))
    with pytest.raises(ModelError) as info:
        resolve_model_path(spec)
    assert "models/missing.onnx" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_corrupt_model_file_is_model_error(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"\x00\x01 definitely not a protobuf \xff" * 10)
    spec = load_spec(write(tmp_path, BASE.replace("zoo:tiny", "bad.onnx")))
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        resolve_model_path(spec)


def test_no_model_resolves_to_none(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "workload:\n  backend: onnxruntime\n"), validate_backend=False)
    assert resolve_model_path(spec) is None


# ------------------------------------------------------------------------------------------- axes


def test_axis_forms_map_to_axis_objects(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            BASE
            + textwrap.dedent(
                """\
                search:
                  pool_size: {low: 1, high: 4}
                  threads: [1, 2, 4]
                  requests_per_sync: 2
                  batch_size: {low: 1, high: 16, log: true}
                  options.inter_op_threads: {low: 1, high: 4, step: 1}
                  options.execution_mode: [sequential]
                  options.allow_spinning: [true, false]
                """
            ),
        )
    )
    axes = spec.axes
    assert axes["pool_size"] == Axis("pool_size", "range", low=1, high=4, step=None, log=False)
    assert axes["pool_size"].is_int and axes["pool_size"].default == 1
    assert axes["pool_size"].grid() == (1, 2, 3, 4)
    assert axes["threads"] == Axis("threads", "choices", values=(1, 2, 4))
    assert axes["threads"].default == 1
    assert axes["requests_per_sync"] == Axis("requests_per_sync", "fixed", values=(2,))
    assert axes["requests_per_sync"].default == 2
    assert axes["batch_size"] == Axis("batch_size", "range", low=1, high=16, log=True)
    assert axes["batch_size"].grid() == (1, 2, 4, 8, 16)
    assert axes["options.inter_op_threads"].step == 1
    # a one-element list is a fixed value
    assert axes["options.execution_mode"] == Axis("options.execution_mode", "fixed", values=("sequential",))
    assert axes["options.allow_spinning"].kind == "choices"
    assert not axes["options.allow_spinning"].is_int  # booleans are not integers
    assert set(spec.searched_axes()) == {
        "pool_size",
        "threads",
        "batch_size",
        "options.inter_op_threads",
        "options.allow_spinning",
    }


def test_missing_core_axes_are_fixed_at_one(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE + "search:\n  threads: [2, 4]\n"))
    assert set(CORE_AXES) <= set(spec.axes)
    for name in ("pool_size", "requests_per_sync", "batch_size"):
        assert spec.axes[name] == Axis(name, "fixed", values=(1,))
    assert spec.default_params() == {"threads": 2, "pool_size": 1, "requests_per_sync": 1, "batch_size": 1}
    assert spec.searched_axes() == {"threads": spec.axes["threads"]}


def test_range_with_equal_bounds_is_fixed(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE + "search:\n  threads: {low: 3, high: 3}\n"))
    assert spec.axes["threads"] == Axis("threads", "fixed", values=(3,))


def test_float_range_axis(tmp_path: Path) -> None:
    # a float option axis (no such ORT option is float, so skip backend validation)
    spec = load_spec(
        write(tmp_path, BASE + "search:\n  options.scale: {low: 0.5, high: 1.5, step: 0.25}\n"),
        validate_backend=False,
    )
    axis = spec.axes["options.scale"]
    assert axis.kind == "range" and not axis.is_int
    assert axis.grid() == (0.5, 0.75, 1.0, 1.25, 1.5)
    assert axis.contains(0.6) and not axis.contains(2.0)


def test_defaults_of_sections(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE, name="resnet-ish.yaml"))
    assert spec.name == "resnet-ish"
    assert spec.objectives == (("qps", "maximize"),)
    assert spec.measure.warmup_s == 2.0 and spec.measure.window_s == 1.0
    assert spec.measure.stable_windows == 3 and spec.measure.stability == 0.05 and spec.measure.max_s == 20.0
    assert spec.study.sampler == "tpe" and spec.study.trials == 30 and spec.study.seed == 0
    assert spec.knee.tolerance == 0.10
    assert spec.workload.kind == "pool" and spec.workload.backend == "onnxruntime"
    assert spec.base_dir == tmp_path.resolve()


# ------------------------------------------------------------------------------- resolve_params


@pytest.fixture
def searched_spec(tmp_path: Path):
    return load_spec(
        write(
            tmp_path,
            BASE + "search:\n  pool_size: {low: 1, high: 4}\n  threads: [2, 4]\n"
            "  options.allow_spinning: [true, false]\n",
        )
    )


def test_resolve_params_defaults_and_overrides(searched_spec) -> None:
    assert searched_spec.resolve_params({}) == {
        "pool_size": 1,
        "threads": 2,
        "requests_per_sync": 1,
        "batch_size": 1,
        "options.allow_spinning": True,
    }
    params = searched_spec.resolve_params({"pool_size": 3, "batch_size": 8, "options.allow_spinning": False})
    assert params["pool_size"] == 3 and params["batch_size"] == 8
    assert params["options.allow_spinning"] is False
    assert params["threads"] == 2


def test_resolve_params_unknown_axis(searched_spec) -> None:
    with pytest.raises(SpecError) as info:
        searched_spec.resolve_params({"pool_sise": 2})
    message = str(info.value)
    assert message.startswith(str(searched_spec.path))
    assert "--set pool_sise: unknown axis" in message
    assert "did you mean 'pool_size'?" in message


@pytest.mark.parametrize("value", ["two", 0, -1, 2.5, True, None])
def test_resolve_params_ill_typed_value(searched_spec, value) -> None:
    with pytest.raises(SpecError) as info:
        searched_spec.resolve_params({"pool_size": value})
    message = str(info.value)
    assert f"--set pool_size = {value!r}" in message
    assert "expected" in message and "integer" in message


def test_resolve_params_non_finite_option(searched_spec) -> None:
    with pytest.raises(SpecError, match="expected a finite number"):
        searched_spec.resolve_params({"options.allow_spinning": float("nan")})


# ------------------------------------------------------------------------------------------- hash


def test_spec_hash_ignores_study_but_not_search() -> None:
    base = BASE + "search:\n  threads: [1, 2]\n"
    h = parse_spec(base).spec_hash
    assert len(h) == 16
    # deterministic across interpreters: the same text hashed in fresh processes with other hash seeds
    code = "import sys; from tuner.config.spec import parse_spec; print(parse_spec(sys.stdin.read()).spec_hash)"
    for seed in ("1", "2"):
        other = subprocess.run(
            [sys.executable, "-c", code],
            input=base,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == h
    assert parse_spec(base + "study:\n  trials: 99\n  sampler: random\n  seed: 7\n").spec_hash == h
    assert parse_spec("# a comment\n" + base).spec_hash == h  # formatting does not matter
    assert parse_spec(BASE + "search:\n  threads: [1, 2, 4]\n").spec_hash != h
    assert parse_spec(BASE + "search:\n  threads: [1, 2]\n  pool_size: [1, 2]\n").spec_hash != h
    assert parse_spec(base + "measure:\n  window_s: 2\n").spec_hash != h
    assert parse_spec(base + "objectives:\n  - latency_p99_ms: minimize\n").spec_hash != h


# -------------------------------------------------------------------------------------------- CLI


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("text", "extra", "needle"),
    [
        (BASE + "search:\n  request_per_sync: [1, 2]\n", [], "did you mean 'requests_per_sync'?"),
        ("workload:\n  backend: tensorrt\n  model: zoo:tiny\n", [], "unknown backend 'tensorrt'"),
        (BASE, ["--set", "pool_sise=2"], "did you mean 'pool_size'?"),
        (BASE, ["--set", "pool_size=0"], "--set pool_size = 0"),
    ],
)
def test_cli_run_bad_workload_exits_2_with_one_line(tmp_path: Path, text: str, extra: list[str], needle: str) -> None:
    path = write(tmp_path, text, name="bad.yaml")
    proc = run_cli("run", str(path), *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "bad.yaml" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_run_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run_cli("run", "absent.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: absent.yaml: workload file not found"
