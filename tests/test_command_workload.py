"""``kind: command`` workloads: the program is the workload; tuner substitutes, runs, watches and parses.

Every program here is a small Python script written into ``tmp_path`` and started as
``["{python}", "prog.py", ...]``, so the tests need nothing but the interpreter running them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _procs import gone

from tuner.config.spec import load_spec
from tuner.errors import SpecError
from tuner.execution.runner import build_job, measure_config
from tuner.workloads.command.job import run_command_job
from tuner.workloads.command.parse import compile_expression
from tuner.workloads.command.template import placeholders, substitute

FAST_STUDY = "study: {trials: 4, trial_timeout_s: 30}\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def workload(tmp_path: Path, body: str, name: str = "w.yaml") -> Path:
    return write(tmp_path, name, body)


def spec_error(tmp_path: Path, body: str) -> str:
    path = workload(tmp_path, body)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


def run(tmp_path: Path, body: str, program: str, **overrides: Any) -> Any:
    write(tmp_path, "prog.py", program)
    spec = load_spec(workload(tmp_path, body))
    return measure_config(spec, spec.resolve_params(overrides))


REGEX_WORKLOAD = """\
workload:
  kind: command
  command: ["{python}", prog.py, -s, "{pool_size}", -b, "{batch_size}"]
  parse:
    qps: {regex: 'Processed \\d+ images in \\S+, average inference per image is ([\\d.]+)ms', value: '1000 / x'}
    latency_mean_ms: 'average inference per image is ([\\d.]+)ms'
search:
  pool_size: [1, 2, 4]
  batch_size: [1, 8]
"""


# ------------------------------------------------------------------------------------ parsing


def test_regex_with_expression_gives_qps(tmp_path: Path) -> None:
    program = """\
    import sys
    s = int(sys.argv[sys.argv.index("-s") + 1])
    print("Running...")
    print("Processed 100 images in 1.2s, average inference per image is 9.99ms")   # an earlier line
    print(f"Processed 4000 images in 1m2.5s, average inference per image is {8.0 / s:.2f}ms", file=sys.stderr)
    """
    result = run(tmp_path, REGEX_WORKLOAD, program, pool_size=4)
    assert result.ok, result.failure and result.failure.describe()
    # the last match wins, stderr counts (Go's log.Printf writes there)
    assert result.metrics["qps"] == pytest.approx(1000 / 2.0)
    assert result.metrics["latency_mean_ms"] == pytest.approx(2.0)
    assert "latency_p99_ms" not in result.metrics  # not printed: absent
    assert result.metrics["peak_rss_mb"] > 1
    assert 0.0 <= result.metrics["cpu_util"] <= 1.0
    assert result.applied["argv"][1:] == ["prog.py", "-s", "4", "-b", "1"]
    assert result.wall_s > 0


def test_json_parse_takes_the_last_object_line(tmp_path: Path) -> None:
    body = """\
    workload:
      kind: command
      command: ["{python}", prog.py]
      parse: json
    """
    program = """\
    import json
    print(json.dumps({"qps": 1.0}))
    print("{not json at all}")
    print(json.dumps({"qps": 123.5, "latency_p99_ms": 7, "stable": True, "window_qps": [120, 127], "frames": 9,
                      "peak_rss_mb": 1e9}))
    print("done")
    """
    result = run(tmp_path, body, program)
    assert result.ok, result.failure and result.failure.describe()
    m = result.metrics
    assert m["qps"] == 123.5 and m["latency_p99_ms"] == 7.0 and m["stable"] is True
    assert m["window_qps"] == [120.0, 127.0]
    assert m["peak_rss_mb"] < 1e6  # measured by tuner, never taken from the program
    assert result.applied["reported"] == {"frames": 9, "peak_rss_mb": 1e9}


def test_repeats_work_as_for_other_kinds(tmp_path: Path) -> None:
    body = """\
    workload:
      kind: command
      command: ["{python}", prog.py]
      parse: {qps: 'qps=([\\d.]+)'}
    measure: {repeats: 3}
    """
    program = """\
    import os, pathlib
    counter = pathlib.Path("count.txt")
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    print(f"qps={[10, 30, 20][n - 1]}")
    """
    result = run(tmp_path, body, program)
    assert result.ok
    assert sorted(result.metrics["qps_runs"]) == [10.0, 20.0, 30.0]
    assert result.metrics["qps"] == 20.0
    assert result.metrics["qps_spread"] == pytest.approx(1.0)


def test_env_and_cwd_are_substituted_and_relative_to_the_workload(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(
        tmp_path / "sub",
        "prog.py",
        'import os, json\nprint(json.dumps({"qps": 1, "cwd": os.getcwd(), '
        '"omp": os.environ["OMP_NUM_THREADS"], "path": os.environ.get("PATH")}))\n',
    )
    body = """\
    workload:
      kind: command
      command: ["{python}", prog.py]
      env: {OMP_NUM_THREADS: "{threads}"}
      cwd: sub
    search:
      threads: [1, 3]
    """
    spec = load_spec(workload(tmp_path, body))
    result = measure_config(spec, spec.resolve_params({"threads": 3}))
    assert result.ok, result.failure and result.failure.describe()
    reported = result.applied["reported"]
    assert reported["omp"] == "3"
    assert Path(reported["cwd"]).resolve() == (tmp_path / "sub").resolve()
    assert reported["path"]  # the rest of the environment is inherited


# ------------------------------------------------------------------------------------ safety


INJECT_WORKLOAD = """\
workload:
  kind: command
  command: ["{python}", prog.py, "--mode={options.mode}", "{options.mode}", "{pool_size}"]
  env: {MODE: "{options.mode}"}
  parse: json
search:
  pool_size: [1, 2]
  options.mode: ["a b", "x; touch pwned", "$(touch pwned2)", "--evil", "`touch pwned3`", "'q' \\"q\\" | cat"]
"""

ARGV_PROGRAM = """\
import json, os, sys
print(json.dumps({"qps": 1, "argv": sys.argv[1:], "mode": os.environ["MODE"]}))
"""


@pytest.mark.parametrize(
    "mode", ["a b", "x; touch pwned", "$(touch pwned2)", "--evil", "`touch pwned3`", "'q' \"q\" | cat"]
)
def test_substitution_is_one_argument_never_shell(tmp_path: Path, mode: str) -> None:
    result = run(tmp_path, INJECT_WORKLOAD, ARGV_PROGRAM, **{"options.mode": mode, "pool_size": 2})
    assert result.ok, result.failure and result.failure.describe()
    reported = result.applied["reported"]
    assert reported["argv"] == [f"--mode={mode}", mode, "2"]  # each placeholder stays inside its own element
    assert reported["mode"] == mode
    assert not list(tmp_path.glob("pwned*")), "a shell ran"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"options.mode": "rm -rf /"}, "not a value of search.options.mode"),
        ({"pool_size": 3}, "not a value of search.pool_size"),
        ({"pool_size": "2; rm -rf /"}, "expected a positive integer"),
        ({"pool_size": 0}, "expected an integer between 1 and"),
        ({"pool_size": True}, "expected a positive integer"),
    ],
)
def test_values_outside_the_axis_never_reach_the_program(tmp_path: Path, override: dict[str, Any], needle: str) -> None:
    write(tmp_path, "prog.py", ARGV_PROGRAM)
    spec = load_spec(workload(tmp_path, INJECT_WORKLOAD))
    params = {**spec.default_params(), **override}
    with pytest.raises(SpecError, match=needle):
        build_job(spec, params, None)


def test_cli_set_is_checked_against_the_axis(tmp_path: Path) -> None:
    write(tmp_path, "prog.py", ARGV_PROGRAM)
    path = workload(tmp_path, INJECT_WORKLOAD)
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(path), "--set", "options.mode=--delete-everything"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "not a value of search.options.mode" in proc.stderr


def test_placeholder_helpers() -> None:
    assert placeholders("-s{pool_size}x{options.a}") == ["pool_size", "options.a"]
    assert placeholders("{{literal}}") == []
    assert substitute("{{{pool_size}}}", {"pool_size": "3"}) == "{3}"
    for bad in ("{pool_size", "pool_size}", "{}", "a{b{c}}"):
        with pytest.raises(ValueError):
            placeholders(bad)


# ------------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("text", "x", "value"),
    [("1000 / x", 4, 250.0), ("x", 2.5, 2.5), ("(x + 1) * 2 - 3", 1, 1.0), ("-x ** 2", 3, -9.0), ("2 ** -1", 0, 0.5)],
)
def test_expressions_evaluate(text: str, x: float, value: float) -> None:
    assert compile_expression(text)(x) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch pwned')",
        "x.real",
        "abs(x)",
        "x if x else 1",
        "'a'",
        "[x]",
        "lambda: 1",
        "x // 2",
        "x % 2",
        "y * 2",
        "True + x",
        "x; 1",
        "",
    ],
)
def test_expressions_allow_only_arithmetic(text: str) -> None:
    with pytest.raises(ValueError):
        compile_expression(text)


def test_expression_overflow_is_a_failed_trial_not_a_hang(tmp_path: Path) -> None:
    body = """\
    workload:
      kind: command
      command: ["{python}", prog.py]
      parse: {qps: {regex: 'v=(\\d+)', value: '9 ** 9 ** 9 ** x'}}
    """
    # a hang would be killed at the trial timeout (kind "timeout") or stop the test at pytest's own timeout
    result = run(tmp_path, body, "print('v=2')\n")
    assert result.failure is not None and result.failure.kind == "error"
    assert "9 ** 9 ** 9 ** x" in result.failure.message


# ---------------------------------------------------------------------------------- failures

PLAIN = """\
workload:
  kind: command
  command: ["{python}", prog.py]
  parse: {qps: 'Throughput: (\\S+) FPS'}
study: {trial_timeout_s: 1.5}
"""


def test_non_zero_exit_is_crash_with_last_output_lines(tmp_path: Path) -> None:
    program = """\
    import sys
    for i in range(30):
        print(f"step {i}")
    print("Throughput: 5.0 FPS")
    print("fatal: device lost", file=sys.stderr)
    sys.exit(4)
    """
    result = run(tmp_path, PLAIN, program)
    failure = result.failure
    assert failure is not None and failure.kind == "crash" and failure.exit_code == 4
    assert "the program exited with code 4: fatal: device lost" in failure.message
    assert failure.stderr_tail.splitlines()[-1] == "fatal: device lost"
    assert "step 29" in failure.stderr_tail and "step 0" not in failure.stderr_tail


def test_garbage_output_is_a_missing_metric(tmp_path: Path) -> None:
    result = run(tmp_path, PLAIN, "import os\nprint(os.urandom(200).hex())\nprint('\\x00\\xff garbage')\n")
    failure = result.failure
    assert failure is not None and failure.kind == "no-result"
    assert "no qps in the program's output" in failure.message
    assert "garbage" in failure.stderr_tail


@pytest.mark.parametrize("printed", ["Throughput: n/a FPS", "Throughput: 1,234 FPS", "Throughput: inf FPS"])
def test_unparsable_number_is_an_error(tmp_path: Path, printed: str) -> None:
    result = run(tmp_path, PLAIN, f"print({printed!r})\n")
    failure = result.failure
    assert failure is not None and failure.kind == "error"
    assert "cannot read a number" in failure.message


def test_json_without_qps_fails(tmp_path: Path) -> None:
    body = PLAIN.replace("parse: {qps: 'Throughput: (\\S+) FPS'}", "parse: json")
    result = run(tmp_path, body, "print('{\"latency_p50_ms\": 3}')\n")
    assert result.failure is not None and result.failure.kind == "no-result"
    assert "no qps" in result.failure.message
    result = run(tmp_path, body, 'print(\'{"qps": "fast"}\')\n')
    assert result.failure is not None and result.failure.kind == "error"
    assert "qps: expected a finite number" in result.failure.message


@pytest.mark.slow
def test_hang_is_killed_at_the_trial_timeout(tmp_path: Path) -> None:
    """Coarse real-time check: a program that never ends is killed once its real trial timeout has passed."""
    t0 = time.monotonic()
    result = run(tmp_path, PLAIN, "import time\nprint('Throughput: 1 FPS', flush=True)\ntime.sleep(600)\n")
    took_s = time.monotonic() - t0
    assert 1.5 <= took_s < 1.5 + 60, took_s  # slow: not before the timeout; the upper bound only catches a hang
    failure = result.failure
    assert failure is not None and failure.kind == "timeout" and failure.signal == "SIGKILL"
    assert "Throughput: 1 FPS" in failure.stderr_tail


@pytest.mark.parametrize("own_session", [False, True])
def test_forked_child_is_killed_and_its_memory_counted(tmp_path: Path, own_session: bool) -> None:
    program = f"""\
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
                              "import pathlib, time; block = bytearray(200 * 2**20); "
                              "pathlib.Path('child.ready').touch(); time.sleep(600)"],
                             start_new_session={own_session})
    open("child.pid", "w").write(str(child.pid))
    while not os.path.exists("child.ready"):  # the child holds its 200 MiB from here on
        time.sleep(0.01)
    time.sleep(2.5)  # the parent rescans the tree every second and samples it every 0.1 s
    print("Throughput: 42.5 FPS")
    """
    result = run(tmp_path, PLAIN.replace("1.5}", "30}"), program)
    assert result.ok, result.failure and result.failure.describe()
    assert result.metrics["qps"] == 42.5
    assert result.metrics["peak_rss_mb"] > 200  # the child's memory is the program's tree's
    pid = int((tmp_path / "child.pid").read_text())
    assert gone(pid), f"child {pid} outlived the program"


def test_missing_program_and_missing_cwd_are_errors(tmp_path: Path) -> None:
    body = PLAIN.replace('["{python}", prog.py]', "[./no-such-program, -x]")
    result = run(tmp_path, body, "")
    assert result.failure is not None and result.failure.kind == "error"
    assert "'./no-such-program' not found" in result.failure.message
    body = PLAIN.replace('["{python}", prog.py]', "[no-such-program-xyz]")
    result = run(tmp_path, body, "")
    assert result.failure is not None and "not found" in result.failure.message
    job = {"argv": [sys.executable], "cwd": str(tmp_path / "nowhere"), "parse": "json", "params": {}}
    result = run_command_job(job, timeout_s=5)
    assert result.failure is not None and "is not a directory" in result.failure.message


def test_no_leftover_processes() -> None:
    import os

    assert [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.status() != "zombie"] == []


# ------------------------------------------------------------------------------ spec errors

BASE = """\
workload:
  kind: command
  command: ["{python}", prog.py, -s, "{pool_size}"]
  parse: {qps: 'qps=([\\d.]+)'}
search:
  pool_size: [1, 2]
"""


@pytest.mark.parametrize(
    ("body", "line", "needles"),
    [
        (BASE.replace("qps=([\\d.]+)", "qps=([\\d.]+"), 4, ["workload.parse.qps", "bad regular expression"]),
        (BASE.replace("qps=([\\d.]+)", "qps=[\\d.]+"), 4, ["has 0 groups; it needs exactly one"]),
        (BASE.replace("qps=([\\d.]+)", "(q)ps=([\\d.]+)"), 4, ["has 2 groups"]),
        (
            BASE.replace("{pool_size}", "{pool_sise}"),
            3,
            ["workload.command[3] = '{pool_sise}'", "unknown placeholder {pool_sise}", "did you mean 'pool_size'"],
        ),
        (BASE.replace("{pool_size}", "{model}"), 3, ["{model} needs workload.model"]),
        (BASE.replace("{pool_size}", "{pool_size"), 3, ["unbalanced '{'"]),
        (BASE.replace('"{pool_size}"', '"4"'), 6, ["search.pool_size", "the command never uses {pool_size}"]),
        (BASE + "  options.mode: [a, b]\n", 7, ["search.options.mode", "never uses {options.mode}"]),
        (
            BASE.replace("'qps=([\\d.]+)'", "{regex: 'qps=([\\d.]+)', value: 'open(x)'}"),
            4,
            ["workload.parse.qps.value", "Call is not allowed"],
        ),
        (BASE.replace("qps: 'qps", "latency_p50_ms: 'qps"), 4, ["workload.parse", "must give qps"]),
        (BASE.replace("{qps: 'qps=([\\d.]+)'}", "{qps: 'a(\\d)', peak_rss_mb: 'm=(\\d+)'}"), 4, ["measured by tuner"]),
        (
            BASE.replace("{qps: 'qps=([\\d.]+)'}", "{qps: 'a(\\d)', fps: 'm=(\\d+)'}"),
            4,
            ["workload.parse.fps", "unknown metric"],
        ),
        (BASE.replace("parse: {qps: 'qps=([\\d.]+)'}", "parse: yaml"), 4, ["expected 'json' or a mapping"]),
        (BASE + "objectives:\n  - latency_p99_ms: minimize\n", 8, ["objectives[0]", "neither parsed"]),
        (BASE + "constraints:\n  latency_p99_ms: {max: 3}\n", 8, ["constraints.latency_p99_ms", "neither parsed"]),
        ("workload:\n  kind: command\n  parse: json\n", 1, ["workload.command", "missing"]),
        (
            "workload:\n  kind: pool\n  model: zoo:tiny\n  command: [ls]\n",
            4,
            ["workload.command: only for kind: command"],
        ),
        (
            "workload:\n  kind: pool\n  model: zoo:tiny\n  env: {A: b}\n",
            4,
            ["workload.env: only for kind: command"],
        ),
        (BASE + "  stages.decode.workers: [1, 2]\n", 7, ["stages are for kind: pipeline"]),
        (
            BASE.replace("'qps=([\\d.]+)'", "{regx: 'qps=([\\d.]+)'}"),
            4,
            ["workload.parse.qps.regx", "unknown key (did you mean 'regex'?)"],
        ),
        (BASE.replace("'qps=([\\d.]+)'", "5"), 4, ["workload.parse.qps = 5", "expected a regular expression"]),
        (BASE.replace("prog.py, -s", "prog.py, {a: 1}, -s"), 3, ["workload.command[2]", "got dict"]),
        (BASE.replace("  parse:", "  env: {A: [1]}\n  parse:"), 4, ["workload.env.A", "got list"]),
        (BASE.replace('["{python}", prog.py, -s, "{pool_size}"]', '"prog.py -s {pool_size}"'), 3, ["expected a list"]),
    ],
)
def test_spec_errors_name_file_line_key(tmp_path: Path, body: str, line: int, needles: list[str]) -> None:
    message = spec_error(tmp_path, body)
    assert f"w.yaml:{line}:" in message, message
    for needle in needles:
        assert needle in message, message


def test_objectives_measured_by_tuner_are_fine(tmp_path: Path) -> None:
    spec = load_spec(workload(tmp_path, BASE + "objectives:\n  - qps: maximize\n  - peak_rss_mb: minimize\n"))
    assert spec.objectives == (("qps", "maximize"), ("peak_rss_mb", "minimize"))


def test_model_placeholder_resolves_the_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "zoo"))
    body = """\
    workload:
      kind: command
      model: zoo:tiny
      command: ["{python}", prog.py, -m, "{model}"]
      parse: json
    """
    program = "import json, sys, os\nprint(json.dumps({'qps': os.path.getsize(sys.argv[2])}))\n"
    result = run(tmp_path, body, program)
    assert result.ok, result.failure and result.failure.describe()
    assert result.applied["argv"][3].endswith(".onnx") and str(tmp_path / "zoo") in result.applied["argv"][3]
    assert result.metrics["qps"] > 1000


# ---------------------------------------------------------------------------- optimize, CLI


def test_tuner_run_json_on_a_command_workload(tmp_path: Path) -> None:
    write(
        tmp_path,
        "prog.py",
        "import sys\nprint(f'Processed 10 images in 1s, average inference per image is "
        "{4.0 / int(sys.argv[2]):.2f}ms')\n",
    )
    path = workload(tmp_path, REGEX_WORKLOAD)
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(path), "--json", "--set", "pool_size=2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["metrics"]["qps"] == pytest.approx(500.0)
    assert doc["params"]["pool_size"] == 2


def test_optimize_searches_a_command_workload(tmp_path: Path) -> None:
    from tuner.study.run import optimize

    write(tmp_path, "prog.py", "import sys\ns = int(sys.argv[2])\nprint(f'qps={100 * min(s, 2)}')\n")
    body = BASE + "  threads: [1]\nstudy: {sampler: grid, trials: 2, storage: s.db, trial_timeout_s: 30}\n"
    result = optimize(load_spec(workload(tmp_path, body)))
    assert result.measured == 2
    assert result.knee is not None and result.knee.plateau_qps == pytest.approx(200.0)
    assert not math.isnan(result.knee.plateau_qps)


def test_nul_byte_is_refused_not_raised(tmp_path: Path) -> None:
    body = INJECT_WORKLOAD.replace('"a b", ', '"a\\0b", "a b", ')
    result = run(tmp_path, body, ARGV_PROGRAM, **{"options.mode": "a\0b"})
    assert result.failure is not None and result.failure.kind == "error"
    assert "null byte" in result.failure.message
    message = spec_error(tmp_path, BASE.replace("-s,", '"-\\0s",'))
    assert "NUL byte" in message
