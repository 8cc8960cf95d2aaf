"""``tuner optimize`` end to end: real SQLite studies in tmp_path, real trial children on the sim backend."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from tuner.config.spec import Spec, load_spec
from tuner.config.storage_url import resolve_storage_url
from tuner.errors import StudyError
from tuner.metrics import CLOSED_LOOP_METRICS
from tuner.models.zoo import zoo_path
from tuner.platform import platform_tag, tuner_version
from tuner.report.summary import study_report
from tuner.search.space import config_key
from tuner.study.run import OptimizeResult, optimize
from tuner.study.storage import open_storage
from tuner.trial_attrs import config_of, is_measured

ROOT = Path(__file__).resolve().parents[1]
#: as short as a trial can be and still measure something (a trial takes about a second)
FAST = {"warmup_s": 0.2, "window_s": 0.2, "stable_windows": 2, "stability": 0.2, "max_s": 3}
SPACE = {"pool_size": [1, 2, 3, 4], "batch_size": [1, 2]}


def write_workload(
    tmp_path: Path,
    name: str,
    *,
    search: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    study: Mapping[str, Any] | None = None,
    measure: Mapping[str, Any] | None = None,
    objectives: list[dict[str, str]] | None = None,
    constraints: Mapping[str, Any] | None = None,
    workload: Mapping[str, Any] | None = None,
) -> Path:
    """A workload file in ``tmp_path`` whose study lives in ``tmp_path/studies/<name>.db``."""
    doc: dict[str, Any] = {
        "name": name,
        "workload": dict(workload or {"kind": "pool", "backend": "sim", "options": dict(options or {})}),
        "search": dict(search if search is not None else SPACE),
        "objectives": objectives or [{"qps": "maximize"}],
    }
    if constraints:
        doc["constraints"] = dict(constraints)
    doc["measure"] = {**FAST, **(measure or {})}
    # the search loop's own tests: no confirmation round or drift references unless a test asks for them
    doc["study"] = {
        "storage": f"studies/{name}.db",
        "trials": 3,
        "trial_timeout_s": 30,
        "seed": 0,
        "confirm": {"rounds": 0},
        "drift": {"every": 0},
        **(study or {}),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def os_cpu_model() -> str:
    """The CPU model as ``lscpu`` reports it (else the first ``model name`` of /proc/cpuinfo)."""
    lscpu = shutil.which("lscpu")
    if lscpu:
        out = subprocess.run([lscpu], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    pytest.skip("neither lscpu nor /proc/cpuinfo names the CPU model here")


def os_memory_mb() -> float:
    """MemTotal of /proc/meminfo in MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/meminfo here")


def load_study(spec: Spec, name: str, storage: str | None = None) -> optuna.Study:
    url = resolve_storage_url(storage, base_dir=Path.cwd()) if storage else spec.storage_url()
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))


def trials_of(spec: Spec, name: str) -> list[FrozenTrial]:
    return load_study(spec, name).get_trials(deepcopy=False)


def measured_keys(trials: list[FrozenTrial]) -> list[Any]:
    return [config_key(config_of(t)) for t in trials if is_measured(t)]


def snapshot(t: FrozenTrial) -> tuple[Any, ...]:
    return (t.number, t.state, dict(t.params), dict(t.user_attrs), t.values, t.datetime_start, t.datetime_complete)


# ------------------------------------------------------------------------------ create and resume


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Spec, OptimizeResult]:
    """A 2-trial study with two objectives (qps up, p99 latency down)."""
    tmp_path = tmp_path_factory.mktemp("first")
    path = write_workload(
        tmp_path,
        "attrs",
        objectives=[{"qps": "maximize"}, {"latency_p99_ms": "minimize"}],
        study={"trials": 2, "sampler": "tpe"},
    )
    spec = load_spec(path)
    return spec, optimize(spec)


def test_study_is_created_with_name_and_attributes(first_run: tuple[Spec, OptimizeResult]) -> None:
    spec, result = first_run
    assert result.study_name == f"attrs@{platform_tag()}"
    assert result.measured == 2
    assert result.stop_reason.startswith("budget reached")
    study = load_study(spec, result.study_name)
    attrs = study.user_attrs
    assert attrs["workload_text"] == spec.text == Path(spec.path).read_text()  # type: ignore[arg-type]
    assert attrs["spec_hash"] == spec.spec_hash and len(spec.spec_hash) == 16
    assert attrs["tuner_version"] == tuner_version()
    platform = attrs["platform"]
    for key in ("cpu_model", "cpu_logical", "memory_mb", "os", "runtimes"):
        assert platform[key], key
    # what the OS says, read here without tuner.platform
    assert platform["cpu_logical"] == os.cpu_count()
    assert platform["cpu_model"] == os_cpu_model()
    assert abs(platform["memory_mb"] - os_memory_mb()) < 2
    assert "optuna" in platform["runtimes"] and "python" in platform["runtimes"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_every_complete_trial_carries_the_contract_metrics(first_run: tuple[Spec, OptimizeResult]) -> None:
    spec, result = first_run
    complete = [t for t in trials_of(spec, result.study_name) if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    for t in complete:
        missing = set(CLOSED_LOOP_METRICS) - set(t.user_attrs)
        assert not missing, f"trial {t.number} lacks {missing}"
        assert t.values == [t.user_attrs["qps"], t.user_attrs["latency_p99_ms"]]
        assert t.user_attrs["qps"] > 0 and t.user_attrs["requests"] > 0
        assert isinstance(t.user_attrs["stable"], bool)
        assert isinstance(t.user_attrs["window_qps"], list) and t.user_attrs["window_qps"]
        assert t.user_attrs["peak_rss_mb"] > 10
        assert t.user_attrs["config"] == {**t.params, "threads": 1, "requests_per_sync": 1}
        assert t.user_attrs["feasible"] is True


def test_resume_continues_the_same_study(first_run: tuple[Spec, OptimizeResult], tmp_path: Path) -> None:
    spec, first = first_run
    db = tmp_path / "copy.db"
    shutil.copy(spec.storage_url().removeprefix("sqlite:///"), db)
    before = [snapshot(t) for t in load_study(spec, first.study_name, str(db)).get_trials(deepcopy=False)]

    again = optimize(spec, storage=str(db), trials=4)
    assert again.study_name == first.study_name
    assert again.measured == 4
    assert len(again.new_trials) >= 2 and min(again.new_trials) == len(before)
    url = resolve_storage_url(str(db), base_dir=tmp_path)
    summaries = optuna.study.get_all_study_summaries(open_storage(url, heartbeat=False))
    assert [s.study_name for s in summaries] == [first.study_name]
    trials = load_study(spec, first.study_name, str(db)).get_trials(deepcopy=False)
    keys = measured_keys(trials)
    assert len(keys) == 4
    assert len(set(keys)) == 4, "a config was measured twice"
    assert [snapshot(t) for t in trials[: len(before)]] == before
    # the resumed sampler does not replay the seed's sequence from the start (all duplicates)
    replay = [t.params for t in trials[: len(before)]]
    assert [trials[n].params for n in again.new_trials[: len(before)]] != replay
    # the same budget again: nothing left to do, nothing measured
    third = optimize(spec, storage=str(db), trials=4)
    assert third.measured == 4 and third.new_trials == []


def test_changed_spec_is_refused_and_new_makes_a_second_study(tmp_path: Path) -> None:
    path = write_workload(tmp_path, "edit", search={"pool_size": [1, 2]}, study={"trials": 1, "sampler": "grid"})
    old_spec = load_spec(path)
    first = optimize(old_spec)
    assert first.measured == 1

    path = write_workload(tmp_path, "edit", search={"pool_size": [1, 2, 3]}, study={"trials": 1, "sampler": "grid"})
    new_spec = load_spec(path)
    assert new_spec.spec_hash != old_spec.spec_hash
    with pytest.raises(StudyError) as err:
        optimize(new_spec)
    assert old_spec.spec_hash in str(err.value) and new_spec.spec_hash in str(err.value)
    assert first.study_name in str(err.value)

    second = optimize(new_spec, new=True)
    assert second.study_name == f"{first.study_name}~2"
    assert second.measured == 1
    storage = open_storage(new_spec.storage_url(), heartbeat=False)
    names = sorted(s.study_name for s in optuna.study.get_all_study_summaries(storage))
    assert names == [first.study_name, second.study_name]
    old = load_study(old_spec, first.study_name)
    assert old.user_attrs["spec_hash"] == old_spec.spec_hash
    assert len(old.trials) == 1 and old.trials[0].state == TrialState.COMPLETE
    assert load_study(new_spec, second.study_name).user_attrs["spec_hash"] == new_spec.spec_hash
    # later runs resume the study whose hash matches: nothing new to measure for either file
    assert optimize(new_spec).study_name == second.study_name
    assert optimize(old_spec).study_name == first.study_name


# ------------------------------------------------------------------------------------- constraints


def test_constraint_breakers_are_infeasible_and_never_best_or_knee(tmp_path: Path) -> None:
    # each runtime holds 100 MiB: pool 1 ~ 145, 2 ~ 245, 4 ~ 445 MiB (the child itself ~ 45)
    path = write_workload(
        tmp_path,
        "constrained",
        search={"pool_size": [1, 2, 4]},
        options={"memory_mb_per_runtime": 100},
        constraints={"peak_rss_mb": {"max": 330}},
        study={"trials": 3, "sampler": "grid"},
    )
    spec = load_spec(path)
    result = optimize(spec)
    assert result.measured == 3
    study = load_study(spec, result.study_name)
    by_pool = {t.params["pool_size"]: t for t in study.trials}
    assert set(by_pool) == {1, 2, 4}
    assert all(t.state == TrialState.COMPLETE for t in by_pool.values())
    assert by_pool[4].user_attrs["feasible"] is False
    assert by_pool[4].user_attrs["constraints"][0] > 0
    for pool in (1, 2):
        assert by_pool[pool].user_attrs["feasible"] is True
        assert by_pool[pool].user_attrs["constraints"] == [-1.0]
    # pool 4 is the fastest, and still not best
    assert by_pool[4].user_attrs["qps"] > by_pool[2].user_attrs["qps"]
    report = study_report(study)
    assert report["best"]["params"]["pool_size"] == 2
    # pool 1 (one runtime: 129 qps) is half of pool 2 (two units busy: 259 qps), far below 90 % of it
    assert report["knee"]["params"]["pool_size"] == 2
    assert all(r["params"]["pool_size"] != 4 for r in report["top"] + report["pareto"])
    assert result.knee is not None and result.knee.knee is not None
    assert result.knee.knee.params["pool_size"] != 4


# ---------------------------------------------------------------------------------------- failures


def test_failed_trials_keep_their_reason_and_the_study_goes_on(tmp_path: Path) -> None:
    # runtimes of 300 MiB break the 250 MiB memory limit: those trials die, the others are measured
    path = write_workload(
        tmp_path,
        "oom",
        search={"pool_size": [1, 2], "options.memory_mb_per_runtime": [8, 300]},
        study={"trials": 4, "sampler": "grid", "memory_limit_mb": 250, "max_consecutive_failures": 3},
    )
    spec = load_spec(path)
    result = optimize(spec)
    assert result.measured == 4
    trials = trials_of(spec, result.study_name)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {t.params["options.memory_mb_per_runtime"] for t in failed} == {300}
    assert len(failed) == 2 and len(complete) == 2
    for t in failed:
        failure = t.user_attrs["failure"]
        assert failure["kind"] == "oom"
        assert "out of memory" in failure["message"] and "250 MiB" in failure["message"]
        assert t.user_attrs["feasible"] is False
    assert all(t.params["options.memory_mb_per_runtime"] == 8 for t in complete)
    report = study_report(load_study(spec, result.study_name))
    assert report["trials"]["failed"] == 2 and report["trials"]["complete"] == 2
    assert {f["kind"] for f in report["failed"]} == {"oom"}


def test_repeated_timeouts_stop_the_study_and_keep_earlier_trials(tmp_path: Path) -> None:
    path = write_workload(tmp_path, "hang", study={"trials": 1, "sampler": "knee"})
    spec = load_spec(path)
    first = optimize(spec)
    assert first.measured == 1
    before = [snapshot(t) for t in trials_of(spec, first.study_name)]

    # the same workload (same hash: study settings do not change measurements) with a timeout shorter
    # than the warm-up: every trial is killed
    path = write_workload(
        tmp_path,
        "hang",
        study={"trials": 6, "sampler": "knee", "trial_timeout_s": 0.3, "max_consecutive_failures": 2},
    )
    short = load_spec(path)
    assert short.spec_hash == spec.spec_hash
    with pytest.raises(StudyError) as err:
        optimize(short)
    message = str(err.value)
    assert "2 consecutive trials failed the same way" in message
    assert "timed out after 0.3 s" in message and "earlier trials are kept" in message
    trials = trials_of(spec, first.study_name)
    assert [snapshot(t) for t in trials[:1]] == before
    later = trials[1:]
    assert [t.state for t in later] == [TrialState.FAIL, TrialState.FAIL]
    for t in later:
        assert t.user_attrs["failure"]["kind"] == "timeout"
        assert "trial_timeout_s" in t.user_attrs["failure"]["message"]


def test_failures_differing_only_in_numbers_are_the_same_cause(tmp_path: Path) -> None:
    """Two OOMs at different sizes are one cause: the study stops instead of burning its budget."""
    base = {
        "search": {"pool_size": [1, 2, 3, 4]},
        "options": {"memory_mb_per_runtime": 100},
    }
    path = write_workload(tmp_path, "grow", **base, study={"trials": 2, "sampler": "knee"})
    spec = load_spec(path)
    first = optimize(spec)  # the knee plan starts with pools 1 and 2 (~145 and ~245 MiB)
    assert first.measured == 2
    path = write_workload(
        tmp_path,
        "grow",
        **base,
        study={"trials": 6, "sampler": "knee", "memory_limit_mb": 280, "max_consecutive_failures": 2},
    )
    with pytest.raises(StudyError, match="2 consecutive trials failed the same way"):
        optimize(load_spec(path))
    trials = trials_of(spec, first.study_name)
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.COMPLETE]
    failed = trials[2:]
    assert len(failed) == 2 and {t.params["pool_size"] for t in failed} == {3, 4}
    assert {t.user_attrs["failure"]["kind"] for t in failed} == {"oom"}


# ---------------------------------------------------------------------------------- skipped configs


def test_oversubscribed_configs_are_pruned_not_measured(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    model = zoo_path("tiny", cache_dir=tmp_path / "zoo")
    path = write_workload(
        tmp_path,
        "ort",
        workload={"kind": "pool", "backend": "onnxruntime", "model": str(model)},
        search={"pool_size": [1, cores + 1]},
        study={"trials": 2, "sampler": "grid"},
    )
    spec = load_spec(path)
    result = optimize(spec)
    assert result.measured == 1
    assert result.stop_reason.startswith("search space exhausted")
    trials = trials_of(spec, result.study_name)
    by_pool = {t.params["pool_size"]: t for t in trials}
    assert set(by_pool) == {1, cores + 1}
    assert by_pool[1].state == TrialState.COMPLETE and by_pool[1].user_attrs["qps"] > 0
    skipped = by_pool[cores + 1]
    assert skipped.state == TrialState.PRUNED
    reason = skipped.user_attrs["skip_reason"]
    assert reason == (
        f"oversubscribed: {cores + 1} host threads (pool_size {cores + 1} x threads 1 on onnxruntime) > {cores} "
        "usable cores; set study.allow_oversubscription: true to measure it anyway"
    )
    assert not {"qps", "applied", "wall_s"} & set(skipped.user_attrs)
    report = study_report(load_study(spec, result.study_name))
    assert report["trials"]["pruned"] == 1
    assert report["skipped"] == [{"number": skipped.number, "params": config_of(skipped), "reason": reason}]


# ---------------------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("sampler", ["tpe", "grid", "random", "nsga2", "knee"])
def test_each_sampler_runs_a_study(tmp_path: Path, sampler: str) -> None:
    path = write_workload(tmp_path, f"s-{sampler}", study={"trials": 3, "sampler": sampler})
    spec = load_spec(path)
    result = optimize(spec)
    assert result.measured == 3, result.stop_reason
    trials = trials_of(spec, result.study_name)
    keys = measured_keys(trials)
    assert len(keys) == 3 and len(set(keys)) == 3
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert t.params["pool_size"] in SPACE["pool_size"] and t.params["batch_size"] in SPACE["batch_size"]
    if sampler == "knee":  # the plan starts at the cheapest config and ramps pool_size by doubling
        assert [(t.params["pool_size"], t.params["batch_size"]) for t in trials] == [(1, 1), (2, 1), (4, 1)]


def test_gp_sampler_runs_or_says_what_to_install(tmp_path: Path) -> None:
    spec = load_spec(write_workload(tmp_path, "gp", study={"trials": 2, "sampler": "gp"}))
    try:
        import scipy  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(StudyError, match="torch and scipy"):
            optimize(spec)
        return
    assert optimize(spec).measured == 2


# ------------------------------------------------------------------------------------ stop rules


def test_patience_stops_the_study_early(tmp_path: Path) -> None:
    # one runtime; a slower device at each step: after the first config nothing improves the plateau
    # (500 qps) or the knee, and the knee plan tries the option values in order
    path = write_workload(
        tmp_path,
        "patient",
        search={"options.service_ms": [2.0, 3.0, 4.0, 5.0, 6.0]},
        options={"host_overhead_ms": 0.0},
        study={"trials": 5, "sampler": "knee", "patience": 2},
    )
    spec = load_spec(path)
    events: list[dict[str, Any]] = []
    result = optimize(spec, on_event=events.append)
    assert result.stop_reason == "patience: 2 trials without improving the plateau or the knee"
    assert result.measured == 3
    trials = trials_of(spec, result.study_name)
    assert [t.params["options.service_ms"] for t in trials] == [2.0, 3.0, 4.0]
    assert [e["event"] for e in events if e["event"] in ("study", "trial_end")] == ["study"] + ["trial_end"] * 3


# ---------------------------------------------------------------------------------------- the CLI


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_cli_finds_the_rk3588_knee_at_pool_9(tmp_path: Path) -> None:
    db = tmp_path / "rk3588.db"
    proc = run_cli("optimize", "workloads/sim-rk3588.yaml", "--storage", str(db), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    for key in ("study", "platform", "trials", "best", "knee", "pareto"):
        assert key in report, key
    assert report["study"] == f"sim-rk3588@{platform_tag()}"
    assert report["platform"]["cpu_model"] == os_cpu_model()
    assert report["trials"]["failed"] == 0 and report["trials"]["complete"] >= 7
    for key in ("number", "params", "metrics"):
        assert key in report["best"]
    assert report["best"]["params"]["pool_size"] >= 9
    knee = report["knee"]
    for key in ("number", "params", "metrics", "confirmed", "confidence"):
        assert key in knee, key
    assert knee["params"] == {"pool_size": 9, "threads": 1, "requests_per_sync": 1, "batch_size": 1}
    assert knee["confirmed"] is True
    assert 0.0 <= knee["confidence"] <= 1.0
    assert set(CLOSED_LOOP_METRICS) <= set(knee["metrics"])
    assert report["pareto"] and all({"number", "params", "metrics"} <= set(r) for r in report["pareto"])
    assert db.exists()


def test_ctrl_c_marks_the_trial_interrupted_and_the_run_resumes(tmp_path: Path) -> None:
    path = write_workload(
        tmp_path,
        "sigint",
        search={"pool_size": [1, 2, 3]},
        measure={"warmup_s": 1.0, "window_s": 0.5, "max_s": 5},
        study={"trials": 3, "sampler": "knee"},
    )
    db = tmp_path / "interrupted.db"
    url = f"sqlite:///{db}"
    command = [sys.executable, "-m", "tuner", "optimize", str(path), "--storage", str(db)]
    log = (tmp_path / "run1.log").open("w")
    proc = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=False,
        # a shell may start background jobs with SIGINT ignored; Python keeps an ignored SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial completed in time"
            states = _states(url)
            if states.count(TrialState.COMPLETE) >= 1 and states[-1] == TrialState.RUNNING:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # into the running trial's measurement
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert code == 130, (tmp_path / "run1.log").read_text()[-3000:]  # the README's exit code for Ctrl-C

    storage = open_storage(url, heartbeat=False)
    (summary,) = optuna.study.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert all(t.state != TrialState.RUNNING for t in trials)
    interrupted = trials[-1]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["failure"]["kind"] == "interrupted"
    assert not is_measured(interrupted)
    done_before = [snapshot(t) for t in trials]

    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    storage = open_storage(url, heartbeat=False)
    assert [s.study_name for s in optuna.study.get_all_study_summaries(storage)] == [summary.study_name]
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    assert [snapshot(t) for t in trials[: len(done_before)]] == done_before
    assert all(t.state != TrialState.RUNNING for t in trials)
    keys = measured_keys(trials)
    assert len(keys) == 3 and len(set(keys)) == 3
    # the interrupted config was measured for real on resume
    assert config_key(config_of(interrupted)) in keys
    assert {config_of(t)["pool_size"] for t in trials if is_measured(t)} == {1, 2, 3}


def _states(url: str) -> list[TrialState]:
    """Trial states of the only study in ``url`` (a fresh storage object each time); [] before it exists."""
    path = Path(url.removeprefix("sqlite:///"))
    if not path.exists():
        return []
    # let the optimizer finish creating the schema before opening the file with Optuna
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            if not conn.execute("SELECT name FROM sqlite_master WHERE name = 'alembic_version'").fetchall():
                return []
            if not conn.execute("SELECT * FROM alembic_version").fetchall():
                return []
    except sqlite3.Error:
        return []
    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)
    try:
        summaries = optuna.study.get_all_study_summaries(storage)
        if not summaries:
            return []
        study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
        return [t.state for t in study.get_trials(deepcopy=False)]
    finally:
        storage.engine.dispose()
