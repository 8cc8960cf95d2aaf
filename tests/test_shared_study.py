"""Several workers on one study (issue 7): a real PostgreSQL, real ``tuner optimize`` processes, sim trials.

Each test prints its figure (``pytest -s`` shows them) and asserts that no trial is lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import psutil
import pytest
from _pg import (
    SLOW_MEASURE,
    claimed_trial,
    load_study,
    password_of,
    run,
    sim_workload,
    start,
    wait_for,
)
from optuna.trial import TrialState

from tuner.search.space import config_key
from tuner.trial_attrs import config_of, is_measured


def _measured(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_measured(t)]


def test_three_workers_one_study_measure_n_distinct_configs(tmp_path: Path, pg_url: str) -> None:
    n = 6
    # the storage URL (with its password) comes from the workload file: it must not be stored or printed
    workload = sim_workload(tmp_path, "three", study={"trials": n, "storage": pg_url})
    workers = [start("optimize", workload, "--json", cwd=tmp_path) for _ in range(3)]
    outputs = [w.communicate(timeout=150) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "Traceback" not in err

    study = load_study(pg_url, "three")
    measured = _measured(study)
    complete = [t for t in measured if t.state == TrialState.COMPLETE]
    keys = [config_key(config_of(t)) for t in measured]
    pids = {t.user_attrs["worker"]["pid"] for t in measured}
    twice = len(keys) - len(set(keys))
    lost = n - len(complete)
    print(
        f"\nFIGURE 3 workers x 1 study x {n} trials: {len(complete)} measured by {len(pids)} workers, "
        f"{len(set(keys))} distinct configs, {twice} measured twice, trials lost: {lost}"
    )
    assert len(complete) == n and len(measured) == n
    assert twice == 0
    assert lost == 0
    assert len(pids) >= 2, "the workers did not share the study"

    # the knee and the report see every worker's trials
    from tuner.report.summary import study_report

    report = study_report(study, top=20)
    assert report["trials"]["complete"] >= n
    numbers = {t.number for t in complete}
    assert report["knee"]["number"] in numbers and report["best"]["number"] in numbers
    last = json.loads(outputs[-1][0])
    assert last["study"] == study.study_name

    # credentials: never printed, never stored
    secret = password_of(pg_url)
    for out, err in outputs:
        assert secret not in out and secret not in err
        assert "tuner:***@" in err  # the storage line is shown, redacted
    stored = json.dumps(
        [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
        + [[t.params, t.user_attrs, t.system_attrs] for t in study.get_trials(deepcopy=False)],
        default=str,
    )
    assert secret not in stored
    assert "tuner:***@" in study.user_attrs["workload_text"]


def test_kill_9_of_a_worker_mid_trial_fails_and_retries_its_trial(tmp_path: Path, pg_url: str) -> None:
    n = 3
    workload = sim_workload(tmp_path, "kill", measure=SLOW_MEASURE, study={"trials": n})
    a = start("optimize", workload, "--storage", pg_url, cwd=tmp_path)
    victim = wait_for(lambda: claimed_trial(pg_url, "kill", a.pid), 60, "worker A to start measuring", proc=a)
    b = start("optimize", workload, "--storage", pg_url, cwd=tmp_path)
    # the board dies: the worker and its trial process go at once
    tree = psutil.Process(a.pid).children(recursive=True)
    a.kill()
    for child in tree:
        try:
            child.kill()
        except psutil.Error:
            pass
    a.communicate(timeout=30)
    out, err = b.communicate(timeout=150)
    assert b.returncode == 0, err

    study = load_study(pg_url, "kill")
    trials = study.get_trials(deepcopy=False)
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and not dead.user_attrs.get("failure"), "heartbeat did not fail the trial"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retries, "the dead worker's trial was not re-queued"
    retry = retries[-1]
    assert retry.state == TrialState.COMPLETE
    assert config_of(retry) == config_of(dead)
    assert retry.user_attrs["worker"]["pid"] == b.pid
    measured = _measured(study)
    complete = [t for t in measured if t.state == TrialState.COMPLETE]
    keys = {config_key(config_of(t)) for t in measured}
    lost = n - len(complete)
    print(
        f"\nFIGURE kill -9 of a worker mid-trial: trial {dead.number} failed by heartbeat, retried as trial "
        f"{retry.number} by the surviving worker; {len(complete)}/{n} measured, {len(keys)} distinct, "
        f"trials lost: {lost}"
    )
    assert len(complete) == n and len(keys) == n and lost == 0


def test_journal_file_storage_shared_by_two_workers(tmp_path: Path) -> None:
    n = 4
    url = f"journal:{tmp_path / 'nfs' / 'study.log'}"
    workload = sim_workload(tmp_path, "jour", study={"trials": n})
    workers = [start("optimize", workload, "--storage", url, cwd=tmp_path) for _ in range(2)]
    outputs = [w.communicate(timeout=150) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
    study = load_study(url, "jour")
    measured = _measured(study)
    keys = {config_key(config_of(t)) for t in measured}
    lost = n - sum(t.state == TrialState.COMPLETE for t in measured)
    print(
        f"\nFIGURE journal storage, 2 workers x {n} trials: {len(measured)} measured, {len(keys)} distinct, "
        f"trials lost: {lost}"
    )
    assert len(measured) == n and len(keys) == n and lost == 0
    # heartbeats are on for journal storage too (tuner adds them: Optuna's journal storage has none)
    assert all("tuner:heartbeat" in t.system_attrs for t in measured)


# ----------------------------------------------------------------------------------- platforms


def _foreign_study(monkeypatch: pytest.MonkeyPatch, workload: Path, url: str, *, same_tag: bool) -> str:
    """A study of ``workload`` made on another machine (another CPU), as that machine would make it."""
    import tuner.study.studies as study_mod
    from tuner.config.spec import load_spec
    from tuner.platform import fingerprint, platform_tag
    from tuner.study.storage import open_storage

    fp = {**fingerprint(), "cpu_model": "Rockchip RK3588 (pretend)", "machine": "aarch64", "host": "board-7"}
    tag = platform_tag() if same_tag else platform_tag(fp)
    with monkeypatch.context() as m:
        m.setattr(study_mod, "fingerprint", lambda: fp)
        m.setattr(study_mod, "platform_tag", lambda fp=None: tag)
        study = study_mod.open_study(load_spec(workload), open_storage(url, heartbeat=False))
    return study.study_name


def test_platform_mix_is_refused_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "studies" / "mix.db"
    workload = sim_workload(tmp_path, "mix", study={"trials": 1})
    url = f"sqlite:///{db}"

    # same study name, different hardware in its fingerprint: refused, then allowed with the flag
    name = _foreign_study(monkeypatch, workload, url, same_tag=True)
    refused = run("optimize", workload, "--storage", db, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "different platform" in refused.stderr and "--allow-platform-mix" in refused.stderr
    allowed = run("optimize", workload, "--storage", db, "--allow-platform-mix", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert len(_measured(optuna.load_study(study_name=name, storage=url))) == 1


def test_a_study_from_another_platform_is_joined_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.platform import platform_tag

    db = tmp_path / "studies" / "mix2.db"
    workload = sim_workload(tmp_path, "mix2", study={"trials": 1})
    url = f"sqlite:///{db}"
    theirs = _foreign_study(monkeypatch, workload, url, same_tag=False)

    joined = run("optimize", workload, "--storage", db, "--allow-platform-mix", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    assert f"joining study {theirs!r}" in joined.stderr
    study = optuna.load_study(study_name=theirs, storage=url)
    [trial] = _measured(study)
    assert trial.user_attrs["worker"]["platform_tag"] == platform_tag()
    assert platform_tag() in study.user_attrs["platform_tags"]

    own = run("optimize", workload, "--storage", db, cwd=tmp_path)
    assert own.returncode == 0, own.stderr
    assert "--allow-platform-mix to join" in own.stderr.replace("\n", " ")
    names = {s.study_name for s in optuna.study.get_all_study_summaries(url)}
    assert names == {theirs, f"mix2@{platform_tag()}"}
    assert len(_measured(optuna.load_study(study_name=theirs, storage=url))) == 1  # nothing mixed in
