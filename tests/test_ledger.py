"""The worker ledger (:mod:`tuner.study.ledger`) on hand-made trials in an in-memory Optuna storage.

Each trial carries the user attributes tuner stores (see ``tuner/study/objective.py``): ``config`` (every
axis), ``worker`` (``{"host", "pid", ...}``), ``claimed`` (True once the trial decided to measure),
``duplicate_of`` (it reused that trial's measurement), ``yielded`` (it stood back for another worker),
``skip_reason`` (why it was pruned), ``failure`` (``{"kind", "message", ...}``) and the metrics (``qps``).
The expected numbers are counted by hand from the trials each test writes.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.search.space import config_key
from tuner.study import ledger
from tuner.study.ledger import Claim, claim, claimed_running, known_configs, study_progress
from tuner.trial_attrs import is_measured

DISTS = {"pool_size": IntDistribution(1, 16)}
HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def _fresh_give_ups(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # claim() remembers (study id, trial number) pairs it gave up waiting for; every in-memory storage
    # numbers its studies from 0, so each test starts with an empty memory
    monkeypatch.setattr(ledger, "_GAVE_UP", set())
    yield


def cfg(pool: int) -> dict[str, int]:
    return {"pool_size": pool, "threads": 1, "requests_per_sync": 1, "batch_size": 1}


def key(pool: int) -> Any:
    return config_key(cfg(pool))


def new_study() -> optuna.Study:
    return optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")


def add(study: optuna.Study, state: TrialState, pool: int, **attrs: Any) -> int:
    """A finished trial of config ``pool`` with ``attrs``; COMPLETE ones get their qps as the value."""
    user_attrs = {"config": cfg(pool), "worker": {"host": HOST, "pid": 1}, **attrs}
    value = None
    if state == TrialState.COMPLETE:
        user_attrs.setdefault("qps", 100.0 * pool)
        value = user_attrs["qps"]
    study.add_trial(
        optuna.trial.create_trial(
            state=state, params={"pool_size": pool}, distributions=DISTS, user_attrs=user_attrs, value=value
        )
    )
    return len(study.trials) - 1


def failed(study: optuna.Study, pool: int, kind: str | None = "crash") -> int:
    attrs = {"failure": {"kind": kind, "message": f"{kind} in the child"}} if kind else {}
    return add(study, TrialState.FAIL, pool, **attrs)


def running(study: optuna.Study, pool: int, *, claimed: bool | None = True, host: str = HOST) -> optuna.trial.Trial:
    """A RUNNING trial as a worker leaves it while it measures (``claimed``) or before it decided."""
    trial = study.ask()
    trial.set_user_attr("config", cfg(pool))
    trial.set_user_attr("worker", {"host": host, "pid": 4242})
    if claimed is not None:
        trial.set_user_attr("claimed", claimed)
    return trial


def running_since(study: optuna.Study, pool: int, hours: float, host: str) -> int:
    """A claimed RUNNING trial started ``hours`` ago by a worker on ``host`` (its worker may be long dead)."""
    number = len(study.trials)
    study.add_trial(
        FrozenTrial(
            number=number,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=dt.datetime.now() - dt.timedelta(hours=hours),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={"config": cfg(pool), "worker": {"host": host, "pid": 7}, "claimed": True},
            system_attrs={},
            intermediate_values={},
            trial_id=number,
        )
    )
    return number


# --------------------------------------------------------------------------------- known_configs


def test_a_complete_measurement_settles_a_config_over_an_earlier_failure() -> None:
    study = new_study()
    failed(study, 2)  # 0
    add(study, TrialState.COMPLETE, 2)  # 1
    add(study, TrialState.COMPLETE, 2)  # 2 (a second measurement: the first one stays the one)
    failed(study, 3)  # 3
    assert known_configs(study.trials) == {key(2): 1, key(3): 3}


def test_a_failure_after_a_complete_measurement_does_not_replace_it() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, 4)  # 0
    failed(study, 4, "timeout")  # 1
    assert known_configs(study.trials) == {key(4): 0}


def test_the_first_failure_or_skip_settles_a_config_that_never_completed() -> None:
    study = new_study()
    add(study, TrialState.PRUNED, 5, skip_reason="pool_size x threads > usable cores")  # 0
    failed(study, 5, "oom")  # 1
    failed(study, 6, "timeout")  # 2
    failed(study, 6, "crash")  # 3
    assert known_configs(study.trials) == {key(5): 0, key(6): 2}


@pytest.mark.parametrize(
    ("what", "make"),
    [
        ("duplicate", lambda s: add(s, TrialState.COMPLETE, 1, duplicate_of=0)),
        ("yield", lambda s: add(s, TrialState.PRUNED, 1, yielded={"to": 0, "reason": "trial 0 measures it"})),
        ("interrupted", lambda s: failed(s, 1, "interrupted")),
        ("spooled", lambda s: failed(s, 1, "storage")),
        ("died", lambda s: failed(s, 1, None)),  # FAIL without a failure: the worker was killed (heartbeat)
    ],
)
def test_trials_that_did_not_measure_settle_nothing(what: str, make: Any) -> None:
    study = new_study()
    make(study)
    assert known_configs(study.trials) == {}, what
    running(study, 1)  # running trials settle nothing either
    assert known_configs(study.trials) == {}


def test_a_duplicate_or_yield_before_the_measurement_does_not_hide_it() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, 1, duplicate_of=9)  # 0 (its original is not in this list)
    add(study, TrialState.PRUNED, 1, yielded={"to": None, "reason": "budget taken"})  # 1
    failed(study, 1, "interrupted")  # 2
    add(study, TrialState.COMPLETE, 1)  # 3
    assert known_configs(study.trials) == {key(1): 3}


def test_known_configs_reads_trials_in_number_order() -> None:
    study = new_study()
    failed(study, 2)  # 0
    add(study, TrialState.COMPLETE, 2)  # 1
    shuffled = list(reversed(study.trials))
    assert known_configs(shuffled) == {key(2): 1}


# ------------------------------------------------------------------------------------ is_measured


@pytest.mark.parametrize(
    ("make", "measured"),
    [
        (lambda s: add(s, TrialState.COMPLETE, 1), True),
        (lambda s: add(s, TrialState.COMPLETE, 1, duplicate_of=0), False),
        (lambda s: failed(s, 1, "crash"), True),
        (lambda s: failed(s, 1, "timeout"), True),
        (lambda s: failed(s, 1, "interrupted"), False),
        (lambda s: failed(s, 1, "storage"), False),
        (lambda s: failed(s, 1, None), False),
        (lambda s: add(s, TrialState.PRUNED, 1, skip_reason="rule"), False),
        (lambda s: add(s, TrialState.PRUNED, 1, yielded={"to": 0, "reason": "r"}), False),
    ],
)
def test_is_measured(make: Any, measured: bool) -> None:
    study = new_study()
    make(study)
    assert is_measured(study.trials[-1]) is measured


# -------------------------------------------------------------------------------- claimed_running


def test_claimed_running_lists_other_trials_being_measured() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, 1)  # 0
    a = running(study, 2)  # 1 claimed
    running(study, 3, claimed=None)  # 2 not decided yet
    running(study, 4, claimed=False)  # 3 decided not to
    me = running(study, 5)  # 4
    assert [t.number for t in claimed_running(study.trials)] == [a.number, me.number]
    assert [t.number for t in claimed_running(study.trials, me=me.number)] == [a.number]


def test_a_long_running_trial_of_this_host_is_dead_one_of_another_host_is_left_to_its_heartbeat() -> None:
    study = new_study()
    here = running_since(study, 1, hours=2, host=HOST)
    there = running_since(study, 2, hours=2, host="some-other-board")
    fresh = running(study, 3).number
    everyone = [t.number for t in claimed_running(study.trials)]
    assert everyone == [here, there, fresh]
    within_an_hour = [t.number for t in claimed_running(study.trials, max_age_s=3600)]
    assert within_an_hour == [there, fresh]


# ------------------------------------------------------------------------------------------ claim


def test_claim_measures_an_open_config_and_marks_the_trial_claimed() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, 1)
    trial = running(study, 2, claimed=None)
    assert claim(study, trial, key(2), target=5) == Claim(measure=True)
    assert study.trials[trial.number].user_attrs["claimed"] is True


def test_claim_reuses_a_measured_config() -> None:
    study = new_study()
    failed(study, 2)  # 0
    first = add(study, TrialState.COMPLETE, 2)  # 1
    trial = running(study, 2, claimed=None)
    decision = claim(study, trial, key(2), target=10)
    assert decision == Claim(reuse=first)
    assert "claimed" not in study.trials[trial.number].user_attrs


def test_claim_reuses_a_settled_failure_too() -> None:
    study = new_study()
    bad = failed(study, 7, "oom")
    trial = running(study, 7, claimed=None)
    assert claim(study, trial, key(7), target=10) == Claim(reuse=bad)


def test_remeasure_measures_a_measured_config_again() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, 2)
    trial = running(study, 2, claimed=None)
    assert claim(study, trial, key(2), target=10, remeasure=True) == Claim(measure=True)
    assert study.trials[trial.number].user_attrs["claimed"] is True


def test_claim_yields_to_a_running_claimed_trial_of_the_same_config() -> None:
    study = new_study()
    other = running(study, 3)  # another worker measures pool_size=3 right now
    trial = running(study, 3, claimed=None)
    decision = claim(study, trial, key(3), target=10)
    assert decision.measure is False and decision.reuse is None
    assert decision.yielded_to == other.number
    assert f"trial {other.number}" in decision.reason
    assert "claimed" not in study.trials[trial.number].user_attrs


def test_claim_does_not_yield_to_a_running_trial_of_another_config() -> None:
    study = new_study()
    running(study, 3)
    trial = running(study, 4, claimed=None)
    assert claim(study, trial, key(4), target=10) == Claim(measure=True)


def test_claim_stands_back_when_measured_and_claimed_trials_fill_the_budget() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, 1)  # measured
    failed(study, 2, "crash")  # measured (a failure spends the budget too)
    failed(study, 3, "interrupted")  # not measured
    add(study, TrialState.COMPLETE, 1, duplicate_of=0)  # not measured
    running(study, 4)  # being measured by another worker
    trial = running(study, 5, claimed=None)
    decision = claim(study, trial, key(5), target=3)  # 2 measured + 1 busy = 3
    assert decision.measure is False and decision.reuse is None and decision.yielded_to is None
    assert decision.reason == "the budget is taken: 2 measured and 1 being measured by other workers of 3"
    assert "claimed" not in study.trials[trial.number].user_attrs
    # one more in the budget and the same trial may measure
    assert claim(study, trial, key(5), target=4) == Claim(measure=True)


def test_a_dead_local_trial_does_not_hold_the_budget_with_max_age() -> None:
    study = new_study()
    running_since(study, 4, hours=2, host=HOST)
    trial = running(study, 5, claimed=None)
    assert claim(study, trial, key(5), target=1).measure is False
    assert claim(study, trial, key(5), target=1, max_age_s=3600) == Claim(measure=True)


def test_claim_waits_for_a_lower_trial_to_decide_then_yields_to_it() -> None:
    study = new_study()
    lower = running(study, 6, claimed=None)  # another worker's trial, not decided yet
    mine = running(study, 6, claimed=None)
    out: list[Claim] = []
    thread = threading.Thread(target=lambda: out.append(claim(study, mine, key(6), target=10)))
    thread.start()
    time.sleep(0.3)  # let it see the undecided lower trial; deciding earlier would give the same answer
    lower.set_user_attr("claimed", True)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert out == [
        Claim(yielded_to=lower.number, reason=f"trial {lower.number} (another worker) is measuring this config")
    ]


def test_claim_does_not_wait_for_higher_trials() -> None:
    study = new_study()
    mine = running(study, 6, claimed=None)
    running(study, 6, claimed=None)  # a later trial: it waits for us, not we for it
    assert claim(study, mine, key(6), target=10) == Claim(measure=True)


def test_claim_gives_up_on_a_lower_trial_that_never_decides_once(monkeypatch: pytest.MonkeyPatch) -> None:
    study = new_study()
    stuck = running(study, 1, claimed=None)  # its worker died between starting the trial and deciding
    monkeypatch.setattr(ledger, "CLAIM_WAIT_S", 0.2)
    first = running(study, 2, claimed=None)
    assert claim(study, first, key(2), target=10) == Claim(measure=True)
    # the next trial does not wait for the stuck one again: it never sleeps
    slept: list[float] = []
    monkeypatch.setattr(ledger.time, "sleep", slept.append)
    second = running(study, 3, claimed=None)
    assert claim(study, second, key(3), target=10) == Claim(measure=True)
    assert slept == []
    assert stuck.number < first.number < second.number


# ---------------------------------------------------------------------------------- study_progress


def test_study_progress_counts_the_study_as_every_worker_sees_it() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, 1)  # measured, settles 1
    add(study, TrialState.COMPLETE, 1, duplicate_of=0)  # -
    failed(study, 2, "crash")  # measured, settles 2
    failed(study, 3, "interrupted")  # -
    failed(study, 4, None)  # died: -
    add(study, TrialState.PRUNED, 5, skip_reason="pool_size x threads > usable cores")  # settles 5
    add(study, TrialState.PRUNED, 6, yielded={"to": None, "reason": "budget taken"})  # -
    add(study, TrialState.COMPLETE, 7)  # measured, settles 7
    running(study, 8)  # in flight
    running(study, 9, claimed=None)  # running, not measuring (yet)
    study.enqueue_trial({"pool_size": 10})  # waiting
    study.enqueue_trial({"pool_size": 11})  # waiting
    assert study_progress(study) == ledger.Progress(measured=3, distinct=4, in_flight=1, waiting=2)


def test_study_progress_of_an_empty_study() -> None:
    assert study_progress(new_study()) == ledger.Progress(measured=0, distinct=0, in_flight=0, waiting=0)


def test_study_progress_leaves_out_dead_local_trials_with_max_age() -> None:
    study = new_study()
    running_since(study, 1, hours=2, host=HOST)
    running(study, 2)
    assert study_progress(study).in_flight == 2
    assert study_progress(study, max_age_s=3600).in_flight == 1
