"""Launch one child process, watch its whole process tree, kill it and whatever it forked.

:func:`run_process` runs any argv (never through a shell) in a new session (its own process group) and
meanwhile watches the child's whole process tree with psutil: peak resident memory (summed over the
tree) and CPU time. Past its timeout or memory limit the tree is killed, and after the child exits so is
whatever it forked that outlives it. A program that cannot be started, a timeout or running out of
memory comes back as a :class:`Failure`; :func:`exit_failure` says how a child that exited without its
result died. :mod:`tuner.execution.child` gives it the worker, :mod:`tuner.workloads.command.job` the user's program.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psutil

FailureKind = Literal["crash", "signal", "timeout", "oom", "error", "no-result", "interrupted", "stopped"]

STDERR_TAIL_LINES = 20
#: how often the watcher looks for new descendants (seconds)
RESCAN_S = 1.0


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


class TreeWatcher:
    """Samples RSS and CPU time of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self._known: dict[int, psutil.Process] = {pid: self.root}
        self._cpu_dead = 0.0
        self._cpu_last: dict[int, float] = {}
        # sampled from the poll loop and from the event reader thread (at measure_start/measure_end)
        self._lock = threading.Lock()
        self._last_scan = -math.inf

    def pids(self) -> frozenset[int]:
        """The processes of the tree seen so far (the root and the descendants found by the last scan)."""
        with self._lock:
            return frozenset(self._known)

    def sample(self) -> tuple[int, float]:
        """Return (tree RSS bytes, tree CPU seconds so far), updating the peak."""
        with self._lock:
            return self._sample()

    def _sample(self) -> tuple[int, float]:
        # Listing descendants reads every process on the box (~2 ms with 100 processes): on a 2-core
        # machine doing that 20 times a second stalls the measured runtime, so it is done at most every
        # RESCAN_S; the known processes themselves are cheap to sample (~0.06 ms each).
        now = time.monotonic()
        if now - self._last_scan >= RESCAN_S:
            self._last_scan = now
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


@dataclass(frozen=True)
class ProcessOutcome:
    """What :func:`run_process` saw of one child process and its tree."""

    returncode: int | None
    #: a limit the watcher enforced (``timeout`` or ``oom``) or a start failure (``error``), without the tail
    failure: Failure | None
    peak_rss_mb: float
    #: CPU seconds of the whole tree over the run (user + system)
    cpu_s: float
    wall_s: float
    #: the captured stderr (or the merged stdout + stderr with ``merge_output``), its last 1 MiB
    output: str

    def tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


LineSink = Callable[[bytes, "TreeWatcher"], None]

#: set by a SIGINT/SIGTERM handler that raised KeyboardInterrupt (the CLI's, :func:`interrupt`): Python prints
#: and drops an exception raised inside an at-fork hook (logging's runs in every fork, so a Ctrl-C landing
#: while a trial child is launched was lost); :func:`run_process` raises it again at its next poll
INTERRUPTED = threading.Event()


def interrupt(signum: int, frame: Any) -> None:
    """A signal handler: remember the interrupt (:data:`INTERRUPTED`) and raise KeyboardInterrupt."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


OUTPUT_KEEP_BYTES = 1 << 20


def run_process(
    argv: Sequence[str],
    *,
    timeout_s: float,
    memory_limit_mb: float | None = None,
    poll_s: float = 0.1,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin_data: bytes | None = None,
    on_stdout_line: LineSink | None = None,
    merge_output: bool = False,
    should_stop: Callable[[], str | None] | None = None,
    on_poll: Callable[[TreeWatcher], None] | None = None,
) -> ProcessOutcome:
    """Run ``argv`` (never through a shell) in a new session and watch its whole process tree.

    The tree's peak RSS and CPU time are sampled every ``poll_s``; past ``timeout_s`` or
    ``memory_limit_mb`` the process group and every descendant seen are killed. After the child exits,
    whatever it forked that is still alive is killed too. With ``on_stdout_line`` stdout is a pipe read
    line by line on a thread (``on_stdout_line(line, watcher)``) and stderr is captured; with
    ``merge_output`` stdout and stderr go to one capture, in the order the program wrote them. Never
    raises for the child's behaviour: a program that cannot be started comes back as an ``error``.
    ``should_stop`` is asked at every poll: a reason (not None) kills the tree and comes back as a
    ``stopped`` failure carrying that reason (a trial stopped early because it cannot win). ``on_poll`` is
    called at every poll with the watcher, after its sample (the GPU telemetry samples there).
    """
    env_map = dict(os.environ if env is None else env)
    env_map.setdefault("PYTHONUNBUFFERED", "1")
    capture = tempfile.TemporaryFile(mode="w+b")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_stdout_line is not None else capture,
            stderr=subprocess.STDOUT if merge_output and on_stdout_line is None else capture,
            start_new_session=True,
            env=env_map,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL byte
        capture.close()
        reason = getattr(err, "strerror", None) or str(err)
        return ProcessOutcome(
            None,
            Failure("error", f"cannot start {list(argv)[:1]} (cwd {cwd or os.getcwd()}): {reason}"),
            0.0,
            0.0,
            0.0,
            "",
        )
    watcher = TreeWatcher(proc.pid)
    thread: threading.Thread | None = None
    if on_stdout_line is not None:
        sink = on_stdout_line

        def reader() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                sink(raw, watcher)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
    if stdin_data is not None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(stdin_data)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    failure: Failure | None = None
    usage: Any = None
    cpu_seen = 0.0
    try:
        while True:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            usage = _reap(proc, block=False)
            if proc.returncode is not None:
                break
            rss, cpu_seen = watcher.sample()
            if on_poll is not None:
                on_poll(watcher)
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
            reason = should_stop() if should_stop is not None else None
            if reason:
                _kill_tree(proc, watcher)
                failure = Failure("stopped", reason)
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _kill_tree(proc, watcher)
        raise
    finally:
        if proc.returncode is None:
            usage = _reap(proc, block=True)
        _kill_tree(proc, watcher)  # leftovers a program forked
        if thread is not None:
            thread.join(timeout=5)
    wall_s = time.monotonic() - start
    _, cpu_last = watcher.sample()  # the CPU of descendants that died meanwhile is kept
    cpu_s = max(cpu_seen, cpu_last)
    peak = watcher.peak_rss
    if usage is not None:
        # the child and the descendants it waited for, to the last tick (the sampler may miss the end)
        cpu_s = max(cpu_s, usage.ru_utime + usage.ru_stime)
        peak = max(peak, usage.ru_maxrss * 1024)
    capture.seek(0, os.SEEK_END)
    size = capture.tell()
    capture.seek(max(0, size - OUTPUT_KEEP_BYTES))
    output = capture.read().decode("utf-8", "replace")
    capture.close()
    return ProcessOutcome(proc.returncode, failure, peak / 2**20, cpu_s, wall_s, output)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when the tuner process dies (even by kill -9),
    so a trial never outlives a dead worker. A no-op where prctl is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _reap(proc: subprocess.Popen[bytes], *, block: bool) -> Any:
    """Reap ``proc`` with ``wait4`` (for its resource usage); set ``proc.returncode``; return the usage."""
    if proc.returncode is not None:
        return None
    try:
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere
        proc.wait()
        return None
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def exit_failure(
    code: int | None, stderr_tail: str, who: str = "the trial process", silent: str = "no stderr"
) -> Failure:
    """The failure of a child that exited (``code``) without the result it owed."""
    if code is not None and code < 0:
        name = signal_name(code)
        hint = " (killed: likely out of memory)" if code == -signal.SIGKILL else ""
        return Failure("signal", f"{who} died from {name}{hint}", code, name, stderr_tail)
    if code:
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else silent
        return Failure("crash", f"{who} exited with code {code}: {last[:300]}", code, None, stderr_tail)
    return Failure("no-result", f"{who} exited without a result", code, None, stderr_tail)


def signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _kill_tree(proc: subprocess.Popen[bytes], watcher: TreeWatcher) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in list(watcher._known.values()):  # children that escaped into their own session
        try:
            p.kill()
        except psutil.Error:
            pass
