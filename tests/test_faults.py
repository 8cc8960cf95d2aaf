"""Faults around ``tuner optimize`` (issue 7), each with its figure: trials lost must be 0.

Ctrl-C, the database unreachable at start and lost mid-trial (with a usable spool, and without one),
trials whose child process hangs or outgrows the memory cap inside a study, a full disk and a read-only
``studies/``. (A child that
crashes or dies from a signal is covered at the trial level in test_trial.py.) Real ``tuner``
processes on the sim backend; ``pytest -s`` shows the figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from _pg import (
    Cable,
    claimed_trial,
    load_study,
    one_line_error,
    run,
    sim_workload,
    start,
    tuner_cmd,
    wait_for,
)
from optuna.trial import TrialState

from tuner.search.space import config_key
from tuner.trial_attrs import config_of, is_measured

QUICK_SLOW = {"warmup_s": 0.1, "window_s": 0.2, "stable_windows": 3, "stability": 0.000001, "max_s": 1.5}


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_measured(t) and t.state == TrialState.COMPLETE]


def test_sigint_stops_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    n = 3
    db = tmp_path / "studies" / "sigint.db"
    workload = sim_workload(tmp_path, "sigint", measure=QUICK_SLOW, study={"trials": n})
    url = f"sqlite:///{db}"
    proc = start("optimize", workload, "--storage", db, cwd=tmp_path)
    victim = wait_for(
        lambda: db.exists() and (t := claimed_trial(url, "sigint", proc.pid)) is not None and t.number >= 1 and t,
        90,
        "the second trial to start measuring",
        proc=proc,
    )
    assert proc.poll() is None, "optimize ended before the signal could be sent"
    proc.send_signal(signal.SIGINT)  # at once: reading the study first would let the victim finish meanwhile
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    first = _complete(load_study(url, "sigint"))  # what finished before Ctrl-C (nothing finishes after it)
    assert "Traceback" not in err
    assert "interrupted" in err and "resume" in err

    study = load_study(url, "sigint")
    stopped = study.get_trials(deepcopy=False)[victim.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["failure"]["kind"] == "interrupted"

    again = run("optimize", workload, "--storage", db, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = load_study(url, "sigint")
    complete = _complete(study)
    kept = {t.number: t.values for t in complete}
    assert all(kept.get(t.number) == t.values for t in first), "a trial finished before Ctrl-C changed or vanished"
    lost = n - len(complete)
    print(
        f"\nFIGURE SIGINT during trial {victim.number}: exit 130, {len(first)} finished trial(s) kept, the interrupted "
        f"one not counted; resume -> {len(complete)}/{n} measured, trials lost: {lost}"
    )
    assert lost == 0 and len({config_key(config_of(t)) for t in complete}) == n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_unreachable_at_start_is_one_clear_error(tmp_path: Path) -> None:
    secret = "pw-s3cret-4711"
    url = f"postgresql+psycopg://tuner:{secret}@127.0.0.1:{_free_port()}/tuner"
    workload = sim_workload(tmp_path, "nodb")
    result = run("optimize", workload, "--storage", url, cwd=tmp_path, timeout=90)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert "cannot open study storage" in line and "127.0.0.1" in line and "tuner:***@" in line
    assert secret not in result.stderr + result.stdout
    assert not (tmp_path / "studies" / ".spool").exists()
    print(f"\nFIGURE database unreachable at start: exit 2, one line, trials lost: 0 ({line[:100]}...)")


def test_database_lost_mid_trial_keeps_the_result_and_the_next_run_writes_it(tmp_path: Path, pg_url: str) -> None:
    n = 2
    host, port = re.search(r"@([^:/]+):(\d+)/", pg_url).groups()  # type: ignore[union-attr]
    cable = Cable(host, int(port))
    cable.plug()
    via = pg_url.replace(f"@{host}:{port}/", f"@127.0.0.1:{cable.port}/")
    workload = sim_workload(tmp_path, "cable", measure=QUICK_SLOW, study={"trials": n})
    try:
        proc = start("optimize", workload, "--storage", via, cwd=tmp_path)
        victim = wait_for(lambda: claimed_trial(pg_url, "cable", proc.pid), 90, "a trial to start measuring", proc=proc)
        cable.pull()  # the database is gone while the trial measures
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 2, err
        line = one_line_error(err)
        assert "lost the study storage" in line and "is kept in" in line, line
        spooled = list((tmp_path / "studies" / ".spool").glob("*.jsonl"))
        assert len(spooled) == 1 and len(spooled[0].read_text().splitlines()) == 1
        item = json.loads(spooled[0].read_text())
        assert item["trial_number"] == victim.number and item["user_attrs"]["qps"] > 0

        cable.plug()  # the database is back: the same command writes the spooled result, then goes on
        again = run("optimize", workload, "--storage", via, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "from the local spool" in again.stderr
    finally:
        cable.pull()
    study = load_study(pg_url, "cable")
    trials = study.get_trials(deepcopy=False)
    written = [t for t in trials if t.user_attrs.get("spooled_from") == victim.number]
    assert len(written) == 1 and written[0].state == TrialState.COMPLETE
    assert written[0].user_attrs["qps"] == item["user_attrs"]["qps"]
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[victim.number].user_attrs["failure"]["kind"] == "storage"
    assert not spooled[0].exists()
    complete = _complete(study)
    lost = n - len(complete)
    print(
        f"\nFIGURE database lost mid-trial: trial {victim.number}'s result kept in the spool (exit 2), written as "
        f"trial {written[0].number} by the next run; {len(complete)}/{n} measured, trials lost: {lost}"
    )
    assert lost == 0


def test_database_lost_and_the_spool_unwritable_says_what_was_not_saved(tmp_path: Path, pg_url: str) -> None:
    """The last resort: the storage is gone and the spool folder can't be made; the message names the lost trial."""
    host, port = re.search(r"@([^:/]+):(\d+)/", pg_url).groups()  # type: ignore[union-attr]
    cable = Cable(host, int(port))
    cable.plug()
    via = pg_url.replace(f"@{host}:{port}/", f"@127.0.0.1:{cable.port}/")
    blocker = tmp_path / "not-a-folder"
    spool_dir = blocker / "spool"  # absent at start (nothing spooled); unusable once `blocker` is a file
    workload = sim_workload(tmp_path, "nospool", measure=QUICK_SLOW, study={"trials": 2})
    try:
        proc = start("optimize", workload, "--storage", via, cwd=tmp_path, env={"TUNER_SPOOL_DIR": str(spool_dir)})
        victim = wait_for(
            lambda: claimed_trial(pg_url, "nospool", proc.pid), 90, "a trial to start measuring", proc=proc
        )
        # the disk turns on us as well: the spool's folder can't be made now, even by root (its parent is a file)
        blocker.write_text("a file where the spool's parent folder should be\n")
        cable.pull()
        _, err = proc.communicate(timeout=90)
    finally:
        cable.pull()
    assert proc.returncode == 2, err
    line = one_line_error(err)
    assert "could not keep the result locally either" in line, line
    assert f"trial {victim.number} (" in line and "was NOT saved" in line and "pool_size=" in line, line
    assert str(spool_dir) in line and "Earlier trials are in the study" in line, line
    assert blocker.read_text().startswith("a file where"), "the blocking file was touched"
    study = load_study(pg_url, "nospool")
    kept = [t for t in _complete(study) if t.number < victim.number]
    print(
        f"\nFIGURE database lost and spool unwritable: exit 2, one line naming trial {victim.number} as NOT saved; "
        f"{len(kept)} earlier trial(s) still in the study"
    )


def test_children_that_hang_or_outgrow_the_memory_cap_fail_their_trials_and_the_study_goes_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "studies" / "bad.db"
    workload = sim_workload(
        tmp_path,
        "bad",
        # pool 1 uses ~100 MiB; 400 MiB per runtime breaks the 300 MiB cap; a 60 s load outlives the 3 s timeout
        search={"options.memory_mb_per_runtime": [1, 400], "options.load_ms": [1, 60000]},
        study={
            "trials": 4,
            "sampler": "grid",
            "trial_timeout_s": 3,
            "memory_limit_mb": 300,
            "max_consecutive_failures": 10,
        },
    )
    result = run("optimize", workload, "--storage", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    study = load_study(f"sqlite:///{db}", "bad")
    measured = [t for t in study.get_trials(deepcopy=False) if is_measured(t)]
    kinds = {}
    for t in measured:
        cfg = config_of(t)
        kinds[(cfg["options.memory_mb_per_runtime"], cfg["options.load_ms"])] = (
            "ok" if t.state == TrialState.COMPLETE else t.user_attrs["failure"]["kind"]
        )
    assert kinds[(1, 1)] == "ok"
    assert kinds[(400, 1)] == "oom"
    assert kinds[(1, 60000)] == "timeout"
    # the sim allocates (and touches) a runtime's memory before it sleeps out its load time, so the cap
    # is crossed within the first second, long before the 3 s timeout (as for (400, 1) above)
    assert kinds[(400, 60000)] == "oom"
    lost = 4 - len(kinds)
    print(f"\nFIGURE trial children that hang / outgrow the cap: {kinds}; 4/4 configs recorded, trials lost: {lost}")
    assert lost == 0
    for line in ("timed out after 3 s", "out of memory"):
        assert line in result.stderr


# ------------------------------------------------------------------------------------- disk


def _mount_namespace_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def _run_on_mount(tmp_path: Path, mount: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``tuner ARGS`` with ``tmp_path/studies`` replaced by ``mount`` (a shell snippet), in a private
    mount namespace: the mount vanishes with the process, whatever happens."""
    studies = tmp_path / "studies"
    studies.mkdir(exist_ok=True)
    cmd = " ".join(f"'{a}'" for a in tuner_cmd(*args))
    script = f"set -e; {mount.format(dir=studies)}; exec {cmd}"
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def _run_non_root(tmp_path: Path, *args: str | Path, fsize: int | None = None) -> subprocess.CompletedProcess[str]:
    """Fallback without root: RLIMIT_FSIZE plays the full disk (Python ignores SIGXFSZ, writes get EFBIG)."""

    def limit() -> None:
        import resource

        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(tuner_cmd(*args), cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=limit)


def test_disk_full_is_a_clear_error(tmp_path: Path) -> None:
    workload = sim_workload(tmp_path, "full")
    if _mount_namespace_available():
        # a 32 KiB filesystem: too small for the study's tables (SQLite: "database or disk is full")
        result = _run_on_mount(tmp_path, "mount -t tmpfs -o size=32k tmpfs {dir}", "optimize", workload)
        cause = "database or disk is full"
    else:
        (tmp_path / "studies").mkdir(exist_ok=True)
        result = _run_non_root(tmp_path, "optimize", workload, fsize=16_384)
        cause = "disk i/o error"  # SQLite's word for a write refused with EFBIG
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    # the cause is read after the file name (which itself holds the word "full")
    assert "full.db: " in line and cause in line.split("full.db: ", 1)[1].lower(), line
    print(f"\nFIGURE disk full: exit 2, one line, trials lost: 0 ({line})")


def test_read_only_studies_folder_is_a_clear_error(tmp_path: Path) -> None:
    workload = sim_workload(tmp_path, "ro")
    if _mount_namespace_available():
        result = _run_on_mount(
            tmp_path, "mount --bind {dir} {dir}; mount -o remount,bind,ro {dir}", "optimize", workload
        )
    elif os.geteuid() != 0:
        (tmp_path / "studies").mkdir(exist_ok=True)
        (tmp_path / "studies").chmod(0o555)
        result = _run_non_root(tmp_path, "optimize", workload)
    else:
        pytest.skip("root without mount namespaces: no way to make a folder read-only for root")
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert "studies" in line and "read-only" in line.lower(), line
    print(f"\nFIGURE read-only studies/: exit 2, one line, trials lost: 0 ({line})")


def test_spool_is_written_and_flushed_in_process(tmp_path: Path) -> None:
    """The spool round trip without a database outage: what a lost trial leaves, the next run writes once."""
    from tuner.config.spec import load_spec
    from tuner.study import spool
    from tuner.study.storage import open_storage
    from tuner.study.studies import open_study

    workload = sim_workload(tmp_path, "spool", search={"pool_size": [1, 2]})
    spec = load_spec(workload)
    url = f"sqlite:///{tmp_path / 'studies' / 'spool.db'}"
    study = open_study(spec, open_storage(url, heartbeat=False))
    trial = study.ask({"pool_size": optuna.distributions.CategoricalDistribution([1, 2])})
    item = spool.entry(
        study,
        trial,
        state=TrialState.COMPLETE,
        values=[123.0],
        user_attrs={"qps": 123.0, "config": {"pool_size": trial.params["pool_size"]}, "feasible": True},
        constraints={},
    )
    path = spool.spool_path(spec, url)
    spool.append(path, item)
    spool.append(path, {**item, "study": "another@study", "id": "x"})  # another study's line stays
    assert spool.flush(study, path) == [(trial.number, 1)]
    assert spool.flush(study, path) == []  # idempotent
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["failure"]["kind"] == "storage"
    assert trials[1].state == TrialState.COMPLETE and trials[1].values == [123.0]
    assert [i["study"] for i in spool.pending(path)] == ["another@study"]


@pytest.mark.skipif(sys.platform != "linux", reason="mount namespaces are Linux")
def test_mount_helpers_leave_no_mount_behind(tmp_path: Path) -> None:
    if not _mount_namespace_available():
        pytest.skip("no mount namespaces here (not root)")
    _run_on_mount(tmp_path, "mount -t tmpfs -o size=32k tmpfs {dir}", "--help")
    mounts = Path("/proc/self/mounts").read_text()
    assert str(tmp_path) not in mounts


def test_an_interrupt_python_dropped_still_stops_the_running_child() -> None:
    """A Ctrl-C raised inside an at-fork hook is printed and dropped by Python; the flag the handler set makes
    the watcher stop the trial at its next poll, killing the child."""
    import sys

    from tuner.measurement.process import INTERRUPTED, run_process

    INTERRUPTED.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_process([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=120)
    finally:
        INTERRUPTED.clear()
