"""A real PostgreSQL for the tests, and helpers to run ``tuner`` as a user would (subprocess, sim backend).

``.ci/run`` starts a server with ``.ci/postgres.sh`` and exports ``TUNER_TEST_POSTGRES_URL``. Without it,
the ``postgres_server`` fixture starts one itself with the same script (``--no-install``: binaries
already on the machine). Only when neither works do the PostgreSQL tests skip, and never in CI
(``CI=true``): there a missing server fails them.
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

#: a sim workload that measures one config in about a second (child start included)
FAST_MEASURE = {"warmup_s": 0.05, "window_s": 0.05, "stable_windows": 2, "stability": 0.5, "max_s": 1.0}
#: never stable, so a trial lasts max_s: long enough to kill or cut the cable in the middle of it
SLOW_MEASURE = {"warmup_s": 0.1, "window_s": 0.2, "stable_windows": 3, "stability": 0.000001, "max_s": 2.5}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _no_server(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"CI must test against a real PostgreSQL, but {reason} (.ci/run starts one with .ci/postgres.sh)")
    pytest.skip(f"no PostgreSQL server: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The base URL of a running PostgreSQL (database ``postgres``; the URL carries a password)."""
    url = os.environ.get("TUNER_TEST_POSTGRES_URL")
    data_dir = None
    if not url:
        try:
            proc = subprocess.run(
                ["bash", str(ROOT / ".ci" / "postgres.sh"), "--no-install"],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            _no_server(f"TUNER_TEST_POSTGRES_URL is not set and .ci/postgres.sh could not run ({err})")
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            _no_server(f"TUNER_TEST_POSTGRES_URL is not set and .ci/postgres.sh --no-install failed: {last}")
        exports = dict(re.findall(r"export (\w+)='([^']*)'", proc.stdout))
        url, data_dir = exports["TUNER_TEST_POSTGRES_URL"], exports.get("TUNER_TEST_POSTGRES_DIR")
    try:
        import psycopg
    except ImportError:
        _no_server("the psycopg driver is not installed (pip install -e '.[test]')")
    try:
        with psycopg.connect(_plain(url), connect_timeout=10):
            pass
    except psycopg.Error as err:
        _no_server(f"cannot connect to TUNER_TEST_POSTGRES_URL: {str(err).strip().splitlines()[0]}")
    yield url
    if data_dir:
        subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), "--stop", data_dir], capture_output=True)


def _plain(url: str) -> str:
    """SQLAlchemy URL -> libpq URL."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def with_database(url: str, name: str) -> str:
    return re.sub(r"/[^/]*$", f"/{name}", url)


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server (dropped afterwards)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_plain(postgres_server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(postgres_server, name)
    with psycopg.connect(_plain(postgres_server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def password_of(url: str) -> str:
    m = re.search(r"://[^:/@]+:([^@]*)@", url)
    assert m and m.group(1), f"the test URL has no password: {url!r}"
    return m.group(1)


# --------------------------------------------------------------------------------- workloads / CLI


def sim_workload(
    folder: Path,
    name: str,
    *,
    search: Mapping[str, Any] | None = None,
    measure: Mapping[str, Any] | None = None,
    study: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Path:
    """A sim workload file (fast trials, short heartbeats) in ``folder``/workloads."""
    doc = {
        "name": name,
        "workload": {
            "kind": "pool",
            "backend": "sim",
            "options": {"units": 3, "service_ms": 1.0, "host_overhead_ms": 1.0, "noise": 0.0, **(options or {})},
        },
        "search": dict(search or {"pool_size": [1, 2, 3, 4, 5, 6], "requests_per_sync": [1, 2]}),
        "measure": dict(measure or FAST_MEASURE),
        "study": {
            "sampler": "random",
            "trials": 4,
            "trial_timeout_s": 30,
            "heartbeat_s": 1,
            "heartbeat_grace_s": 3,
            # shared-study and fault tests count the search's trials: no confirmation round, no drift references
            "confirm": {"rounds": 0},
            "drift": {"every": 0},
            "early_stop": False,  # these tests count complete trials; a stopped one is PRUNED
            **(study or {}),
        },
    }
    path = folder / "workloads" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tuner_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tuner", *map(str, args)]


def start(*args: str | Path, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        tuner_cmd(*args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def run(*args: str | Path, cwd: Path, timeout: float = 120, env: Mapping[str, str] | None = None) -> Any:
    return subprocess.run(
        tuner_cmd(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def one_line_error(stderr: str) -> str:
    """The error line of a failed command; asserts there is exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def load_study(url: str, name_prefix: str) -> Any:
    """The one study whose name starts with ``name_prefix@`` in ``url`` (read-only, no heartbeats)."""
    import optuna

    from tuner.study.storage import open_storage

    storage = open_storage(url, heartbeat=False, create=False)
    summaries = optuna.study.get_all_study_summaries(storage)
    names = [s.study_name for s in summaries if s.study_name.startswith(name_prefix + "@")]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage)


def wait_for(
    predicate: Any, timeout: float, what: str, poll: float = 0.1, proc: subprocess.Popen[str] | None = None
) -> Any:
    """Poll ``predicate`` until it is truthy; fail early (with its output) if ``proc`` ends meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(poll)
    if proc is not None:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; its stderr:\n{err[-3000:]}")
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def claimed_trial(url: str, name: str, pid: int | None = None) -> Any:
    """A RUNNING trial that is being measured (by process ``pid`` when given), or None."""
    from optuna.trial import TrialState

    try:
        study = load_study(url, name)
    except Exception:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("claimed") and (pid is None or t.user_attrs.get("worker", {}).get("pid") == pid):
            return t
    return None


# ------------------------------------------------------------------------------- a pullable cable


class Cable:
    """A TCP proxy on loopback between the workers and the database: ``pull()`` cuts every connection
    and refuses new ones (a pulled cable / a dead server); ``plug()`` serves again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def plug(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def pull(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
