"""Child-process trials: real children that crash, hang, die from a signal, run out of memory or fork.

A misbehaving trial is played by a small script given to ``run_job`` as its ``python``: run_job starts
``<python> -m tuner.execution.worker`` in a new session, so the script runs in exactly the place a runtime that
goes wrong would.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _procs import gone

from tuner.analysis.intervals import t_interval, windows_interval
from tuner.execution.child import run_job
from tuner.measurement.process import RESCAN_S, Failure
from tuner.measurement.result import TrialResult, aggregate_repeats

FAST_MEASURE = {
    "warmup_s": 0.2,
    "window_s": 0.2,
    "stable_windows": 2,
    "stability": 0.5,
    "max_s": 3.0,
    "min_window_requests": 4,
}


def pool_job(model: Path | str | None, **params: Any) -> dict[str, Any]:
    return {
        "kind": "pool",
        "backend": "onnxruntime",
        "model": str(model) if model else None,
        "options": {},
        "params": {"pool_size": 1, "threads": 1, "requests_per_sync": 1, "batch_size": 1, **params},
        "measure": dict(FAST_MEASURE),
    }


def fake_python(tmp_path: Path, body: str, name: str = "fake_python") -> str:
    """An executable that stands in for the interpreter; it ignores ``-m tuner.execution.worker``."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


# ------------------------------------------------------------------------------------- failures


def test_exit_code_is_crash_with_stderr_tail(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """\
        import os, sys
        for i in range(30):
            sys.stderr.write(f"log line {i}\\n")
        sys.stderr.write("fatal: the runtime gave up\\n")
        sys.stderr.flush()
        os._exit(7)
        """,
    )
    result = run_job(pool_job(None), timeout_s=30, python=python)
    assert not result.ok
    failure = result.failure
    assert failure is not None
    assert failure.kind == "crash"
    assert failure.exit_code == 7
    assert failure.signal is None
    assert "exited with code 7" in failure.message
    assert "fatal: the runtime gave up" in failure.message
    tail = failure.stderr_tail.splitlines()
    assert tail[-1] == "fatal: the runtime gave up"
    assert len(tail) == 20  # only the last lines are kept
    assert "log line 0" not in failure.stderr_tail
    assert failure.describe().startswith("crash: the trial process exited with code 7")
    assert failure.to_dict()["exit_code"] == 7
    assert result.params["pool_size"] == 1


@pytest.mark.slow
def test_hang_is_timeout_within_the_limit(tmp_path: Path) -> None:
    """Coarse real-time check: a child that never ends is killed once its real timeout has passed."""
    python = fake_python(tmp_path, "import time\nwhile True:\n    time.sleep(1)\n")
    t0 = time.monotonic()
    result = run_job(pool_job(None), timeout_s=1.5, python=python)
    took_s = time.monotonic() - t0
    assert 1.5 <= took_s < 1.5 + 60, took_s  # slow: not before the timeout; the upper bound only catches a hang
    assert result.failure is not None
    assert result.failure.kind == "timeout"
    assert "timed out after 1.5 s" in result.failure.message
    assert result.failure.signal == "SIGKILL"


def test_self_inflicted_sigsegv_is_signal(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """\
        import os, signal, sys
        sys.stderr.write("about to fault\\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
        """,
    )
    result = run_job(pool_job(None), timeout_s=30, python=python)
    failure = result.failure
    assert failure is not None
    assert failure.kind == "signal"
    assert failure.signal == "SIGSEGV"
    assert failure.exit_code == -signal.SIGSEGV
    assert "SIGSEGV" in failure.message
    assert "about to fault" in failure.stderr_tail


def test_memory_past_the_limit_is_oom(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """\
        import time
        blocks = []
        for _ in range(40):                       # up to 400 MiB, every page touched
            blocks.append(bytearray(b"x" * (10 * 2**20)))
            time.sleep(0.02)
        time.sleep(60)
        """,
    )
    result = run_job(pool_job(None), timeout_s=60, memory_limit_mb=150, python=python)
    failure = result.failure
    assert failure is not None
    assert failure.kind == "oom"  # killed on the limit: a child left to its timeout would come back as "timeout"
    assert failure.signal == "SIGKILL"
    assert "over the limit of 150 MiB" in failure.message
    assert result.metrics["peak_rss_mb"] > 150  # the partial record keeps what was seen


def test_exit_zero_without_result_is_no_result(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "print('hello, not json')\n")
    result = run_job(pool_job(None), timeout_s=30, python=python)
    assert result.failure is not None
    assert result.failure.kind == "no-result"
    assert result.failure.exit_code == 0


def test_forked_grandchild_is_killed_after_the_trial(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        f"""\
        import subprocess, sys
        child = subprocess.Popen([{sys.executable!r}, "-c", "import time; time.sleep(600)"])
        sys.stderr.write(f"grandchild {{child.pid}}\\n")
        sys.stderr.flush()
        sys.exit(0)
        """,
    )
    result = run_job(pool_job(None), timeout_s=30, python=python)
    assert result.failure is not None
    assert result.failure.kind == "no-result"
    pid = int(result.failure.stderr_tail.split("grandchild ")[1].split()[0])
    assert gone(pid), f"grandchild {pid} outlived its trial"


def test_grandchild_in_its_own_session_is_killed_too(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        f"""\
        import subprocess, sys, time
        child = subprocess.Popen([{sys.executable!r}, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
        sys.stderr.write(f"grandchild {{child.pid}}\\n")
        sys.stderr.flush()
        time.sleep({2.5 * RESCAN_S!r})  # long enough for the parent's watcher to rescan the tree and see it
        sys.exit(5)
        """,
    )
    result = run_job(pool_job(None), timeout_s=30, python=python)
    assert result.failure is not None
    assert result.failure.kind == "crash"
    pid = int(result.failure.stderr_tail.split("grandchild ")[1].split()[0])
    assert gone(pid), f"grandchild {pid} (own session) outlived its trial"


def test_hanging_trial_with_children_leaves_nothing_behind(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        f"""\
        import subprocess, sys, time
        child = subprocess.Popen([{sys.executable!r}, "-c", "import time; time.sleep(600)"])
        sys.stderr.write(f"grandchild {{child.pid}}\\n")
        sys.stderr.flush()
        time.sleep(600)
        """,
    )
    result = run_job(pool_job(None), timeout_s=1.0, python=python)
    assert result.failure is not None and result.failure.kind == "timeout"
    pid = int(result.failure.stderr_tail.split("grandchild ")[1].split()[0])
    assert gone(pid)


def test_corrupt_model_is_error_from_the_real_worker(tmp_path: Path) -> None:
    model = tmp_path / "corrupt.onnx"
    model.write_bytes(b"\x08\x07 this is not an onnx graph \xff\xfe" * 20)
    events: list[dict[str, Any]] = []
    result = run_job(pool_job(model), timeout_s=60, on_event=events.append)
    failure = result.failure
    assert failure is not None
    assert failure.kind == "error"
    assert "could not load" in failure.message
    assert str(model) in failure.message
    assert failure.exit_code == 3
    assert [e["event"] for e in events][-1] == "error"


def test_unknown_backend_in_job_is_error(tmp_path: Path) -> None:
    job = pool_job(None)
    job["backend"] = "no-such-backend"
    result = run_job(job, timeout_s=60)
    assert result.failure is not None
    assert result.failure.kind == "error"
    assert "unknown backend 'no-such-backend'" in result.failure.message


def test_failure_describe_adds_last_stderr_line() -> None:
    failure = Failure("signal", "the trial process died from SIGKILL", -9, "SIGKILL", "a\nlast words")
    assert failure.describe() == "signal: the trial process died from SIGKILL | stderr: last words"
    assert Failure("timeout", "timed out").describe() == "timeout: timed out"


# ------------------------------------------------------------------------------------- success


@pytest.fixture(scope="module")
def real_results(tiny_model: Path) -> list[TrialResult]:
    """Three real measurements of the tiny model, each in its own child process."""
    return [run_job(pool_job(tiny_model, batch_size=2), timeout_s=60) for _ in range(3)]


def test_real_trial_measures_in_a_child(real_results: list[TrialResult]) -> None:
    for result in real_results:
        assert result.ok, result.failure and result.failure.describe()
        m = result.metrics
        assert m["qps"] > 0
        assert m["qps"] == pytest.approx(m["requests"] * 2 / m["measured_s"], rel=1e-9)
        assert m["peak_rss_mb"] > 10  # python + numpy + onnxruntime, whole tree
        assert 0.0 <= m["cpu_util"] <= 1.0
        assert "child_maxrss_mb" not in m
        assert m["load_s"] > 0 and m["first_request_ms"] > 0
        assert result.applied["intra_op_num_threads"] == 1
        assert "onnxruntime" in result.versions
        assert result.params["batch_size"] == 2
        assert result.wall_s > m["measured_s"]


def test_real_trial_streams_events(tiny_model: Path) -> None:
    events: list[dict[str, Any]] = []
    result = run_job(pool_job(tiny_model), timeout_s=60, on_event=events.append)
    assert result.ok
    names = [e["event"] for e in events]
    assert names[0] == "load"
    assert names.index("warmup") < names.index("measure_start") < names.index("window")
    assert names.index("measure_end") < names.index("result") == len(names) - 1


def test_aggregate_repeats_picks_the_median(real_results: list[TrialResult]) -> None:
    agg = aggregate_repeats(real_results)
    runs = [r.metrics["qps"] for r in real_results]
    median = sorted(runs)[1]
    assert agg.ok
    assert agg.metrics["qps"] == median
    assert sorted(agg.metrics["qps_runs"]) == sorted(runs)
    assert agg.metrics["qps_spread"] == pytest.approx((max(runs) - min(runs)) / median)
    assert agg.metrics["peak_rss_mb"] == max(r.metrics["peak_rss_mb"] for r in real_results)
    assert agg.wall_s == pytest.approx(sum(r.wall_s for r in real_results))
    # the other metrics are the median run's own, not a mix
    chosen = next(r for r in real_results if r.metrics["qps"] == median)
    assert agg.metrics["requests"] == chosen.metrics["requests"]
    assert agg.metrics["latency_p99_ms"] == chosen.metrics["latency_p99_ms"]


def test_real_results_carry_their_windows_interval(real_results: list[TrialResult]) -> None:
    # each run's interval comes from its own windows (computed in the child), centred on its qps
    for result in real_results:
        m = result.metrics
        windows = windows_interval(m["window_qps"])
        if len(m["window_qps"]) >= 2:
            assert m["qps_ci_high"] - m["qps"] == pytest.approx(windows.half_width, rel=1e-9, abs=1e-12)
            assert m["qps"] - m["qps_ci_low"] == pytest.approx(windows.half_width, rel=1e-9, abs=1e-12)
            assert m["qps_cv"] == pytest.approx(windows.cv, rel=1e-9, abs=1e-12)
        else:
            assert math.isnan(m["qps_ci_low"]) and math.isnan(m["qps_ci_high"])


def test_aggregate_repeats_interval_is_over_the_runs(real_results: list[TrialResult]) -> None:
    m = aggregate_repeats(real_results).metrics
    runs = t_interval([r.metrics["qps"] for r in real_results])
    assert (m["qps_ci_low"], m["qps_ci_high"]) == pytest.approx((runs.low, runs.high), rel=1e-12)
    assert m["qps_cv"] == pytest.approx(runs.cv, rel=1e-12)
    assert (m["qps_ci_low"] + m["qps_ci_high"]) / 2 == pytest.approx(sum(m["qps_runs"]) / 3, rel=1e-12)


def test_aggregate_repeats_skips_failures(real_results: list[TrialResult], tmp_path: Path) -> None:
    crashed = run_job(pool_job(None), timeout_s=30, python=fake_python(tmp_path, "import os\nos._exit(9)\n"))
    assert crashed.failure is not None
    agg = aggregate_repeats([real_results[0], crashed, real_results[1]])
    assert agg.ok
    assert len(agg.metrics["qps_runs"]) == 2
    assert agg.metrics["qps"] == min(real_results[0].metrics["qps"], real_results[1].metrics["qps"])
    # all failed: the last failure is the answer
    assert aggregate_repeats([crashed]) is crashed
    assert aggregate_repeats([real_results[2]]).metrics["qps_spread"] == 0.0


def test_no_leftover_children(real_results: list[TrialResult]) -> None:
    # every trial above waited for its child; none is left running under this process
    assert [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.status() != "zombie"] == []
