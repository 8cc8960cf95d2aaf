"""Run one measurement in a fresh child process and read one JSON result back.

The parent never measures in its own process. It starts ``python -m tuner._worker`` in a new session
(its own process group), feeds it the job, reads JSON-line events from its stdout, and meanwhile
watches the child's whole process tree with psutil: peak resident memory (summed over the tree) and
CPU time during the measured part. A crash, a signal, a timeout or running out of memory comes back as
a :class:`Failure` carrying the exit code / signal and the last lines of stderr; it never raises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil

FailureKind = Literal["crash", "signal", "timeout", "oom", "error", "no-result", "interrupted"]
EventSink = Callable[[dict[str, Any]], None]

STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    exit_code: int | None = None
    signal: str | None = None
    stderr_tail: str = ""

    def describe(self) -> str:
        """One line: the reason, with the last stderr line when it adds something."""
        last = self.stderr_tail.strip().splitlines()[-1:] if self.stderr_tail.strip() else []
        extra = f" | stderr: {last[0][:200]}" if last and last[0] not in self.message else ""
        return f"{self.kind}: {self.message}{extra}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "stderr_tail": self.stderr_tail,
        }


@dataclass(frozen=True)
class TrialResult:
    """What one child run produced: metrics on success, a failure otherwise."""

    params: Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    applied: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    failure: Failure | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


class _TreeWatcher:
    """Samples RSS and CPU time of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self._known: dict[int, psutil.Process] = {pid: self.root}
        self._cpu_dead = 0.0
        self._cpu_last: dict[int, float] = {}

    def sample(self) -> tuple[int, float]:
        """Return (tree RSS bytes, tree CPU seconds so far), updating the peak."""
        try:
            for child in self.root.children(recursive=True):
                self._known.setdefault(child.pid, child)
        except psutil.Error:
            pass
        rss = 0
        cpu = 0.0
        for pid, proc in list(self._known.items()):
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    t = proc.cpu_times()
                    c = t.user + t.system
                self._cpu_last[pid] = c
                cpu += c
            except psutil.Error:
                # gone: keep the CPU it had used
                self._cpu_dead += self._cpu_last.pop(pid, 0.0)
                del self._known[pid]
        self.peak_rss = max(self.peak_rss, rss)
        return rss, cpu + self._cpu_dead


def run_job(
    job: Mapping[str, Any],
    *,
    timeout_s: float,
    memory_limit_mb: float | None = None,
    on_event: EventSink | None = None,
    poll_s: float = 0.05,
    python: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> TrialResult:
    """Run ``job`` in a child process; always returns a :class:`TrialResult` (KeyboardInterrupt aside)."""
    on_event = on_event or (lambda _e: None)
    params = dict(job.get("params", {}))
    env = dict(os.environ)
    env.update(extra_env or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    stderr_file = tempfile.TemporaryFile(mode="w+b")
    start = time.monotonic()
    proc = subprocess.Popen(
        [python or sys.executable, "-m", "tuner._worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        start_new_session=True,
        env=env,
    )
    events: list[dict[str, Any]] = []
    watcher = _TreeWatcher(proc.pid)
    cpu_marks: dict[str, tuple[float, float]] = {}

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            name = event.get("event")
            if name in ("measure_start", "measure_end"):
                _, cpu = watcher.sample()
                cpu_marks[name] = (time.monotonic(), cpu)
            events.append(event)
            on_event(event)

    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()

    failure: Failure | None = None
    try:
        while proc.poll() is None:
            rss, _ = watcher.sample()
            elapsed = time.monotonic() - start
            if memory_limit_mb is not None and rss > memory_limit_mb * 2**20:
                _kill_tree(proc, watcher)
                failure = Failure(
                    "oom",
                    f"out of memory: the trial's process tree used {rss / 2**20:.0f} MiB, over the limit of "
                    f"{memory_limit_mb:.0f} MiB",
                )
                break
            if elapsed > timeout_s:
                _kill_tree(proc, watcher)
                failure = Failure("timeout", f"timed out after {timeout_s:g} s (trial_timeout_s)")
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _kill_tree(proc, watcher)
        raise
    finally:
        proc.wait()
        _kill_tree(proc, watcher)  # leftovers a program forked
        thread.join(timeout=5)
    wall_s = time.monotonic() - start
    stderr_tail = _tail(stderr_file)
    stderr_file.close()

    result_event = next((e for e in reversed(events) if e.get("event") == "result"), None)
    error_event = next((e for e in reversed(events) if e.get("event") == "error"), None)
    if failure is not None:
        failure = Failure(failure.kind, failure.message, proc.returncode, _signame(proc.returncode), stderr_tail)
    elif error_event is not None:
        kind: FailureKind = "oom" if error_event.get("type") == "MemoryError" else "error"
        failure = Failure(kind, str(error_event.get("message")), proc.returncode, None, stderr_tail)
    elif proc.returncode != 0 or result_event is None:
        failure = _exit_failure(proc.returncode, stderr_tail, result_event is None)
    if failure is not None:
        return TrialResult(params=params, failure=failure, wall_s=wall_s, metrics=_partial(watcher))

    assert result_event is not None
    metrics = dict(result_event.get("metrics", {}))
    own_peak = float(metrics.pop("child_maxrss_mb", 0.0))
    metrics["peak_rss_mb"] = max(watcher.peak_rss / 2**20, own_peak)
    if "measure_start" in cpu_marks and "measure_end" in cpu_marks:
        (t0, c0), (t1, c1) = cpu_marks["measure_start"], cpu_marks["measure_end"]
        cores = psutil.cpu_count() or 1
        metrics["cpu_util"] = max(0.0, min(1.0, (c1 - c0) / max(t1 - t0, 1e-9) / cores))
    else:
        metrics["cpu_util"] = float("nan")
    return TrialResult(
        params=params,
        metrics=metrics,
        applied=result_event.get("applied", {}),
        versions=result_event.get("versions", {}),
        wall_s=wall_s,
    )


def _partial(watcher: _TreeWatcher) -> dict[str, Any]:
    return {"peak_rss_mb": watcher.peak_rss / 2**20} if watcher.peak_rss else {}


def _exit_failure(code: int | None, stderr_tail: str, no_result: bool) -> Failure:
    if code is not None and code < 0:
        name = _signame(code)
        hint = " (killed: likely out of memory)" if code == -signal.SIGKILL else ""
        return Failure("signal", f"the trial process died from {name}{hint}", code, name, stderr_tail)
    if code:
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no stderr"
        return Failure("crash", f"the trial process exited with code {code}: {last[:300]}", code, None, stderr_tail)
    return Failure("no-result", "the trial process exited without a result", code, None, stderr_tail)


def _signame(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _kill_tree(proc: subprocess.Popen[bytes], watcher: _TreeWatcher) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in list(watcher._known.values()):  # children that escaped into their own session
        try:
            p.kill()
        except psutil.Error:
            pass


def _tail(file: Any, lines: int = STDERR_TAIL_LINES) -> str:
    file.seek(0)
    data = file.read()[-64_000:].decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])


def aggregate_repeats(results: Sequence[TrialResult]) -> TrialResult:
    """The repeat with the median qps, plus ``qps_runs`` and ``qps_spread`` ((max-min)/median)."""
    ok = [r for r in results if r.ok]
    if not ok:
        return results[-1]
    ordered = sorted(ok, key=lambda r: float(r.metrics["qps"]))
    median = ordered[(len(ordered) - 1) // 2]
    runs = [float(r.metrics["qps"]) for r in ok]
    metrics = dict(median.metrics)
    mid = float(median.metrics["qps"])
    metrics["qps_runs"] = runs
    metrics["qps_spread"] = (max(runs) - min(runs)) / mid if mid > 0 else float("nan")
    metrics["peak_rss_mb"] = max(float(r.metrics.get("peak_rss_mb", 0.0)) for r in ok)
    return TrialResult(
        params=median.params,
        metrics=metrics,
        applied=median.applied,
        versions=median.versions,
        wall_s=sum(r.wall_s for r in results),
    )
