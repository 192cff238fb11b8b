"""`Trials`: Hyperopt's documents and views over an asyncopt study."""

from __future__ import annotations

import datetime
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import asyncopt as ao
from asyncopt.hyperopt import (
    JOB_STATE_CANCEL,
    JOB_STATE_DONE,
    JOB_STATE_ERROR,
    JOB_STATE_NEW,
    JOB_STATE_RUNNING,
    STATUS_FAIL,
    STATUS_OK,
    Trials,
    fmin,
    hp,
    rand,
)
from asyncopt.storage import MemoryStorage

QUIET: dict[str, Any] = {"show_progressbar": False, "algo": rand.suggest}

SPACE = hp.choice(
    "model",
    [
        {"kind": "linear", "alpha": hp.loguniform("alpha", -5, 0)},
        {"kind": "tree", "depth": hp.randint("depth", 1, 8)},
    ],
)


def objective(params: dict[str, Any]) -> dict[str, Any]:
    if params["kind"] == "linear":
        return {"loss": params["alpha"], "status": STATUS_OK, "note": "linear"}
    if params["depth"] > 5:
        return {"status": STATUS_FAIL, "why": "too deep"}
    if params["depth"] == 1:
        raise ValueError("depth one")
    return {"loss": params["depth"] / 10, "status": STATUS_OK}


@pytest.fixture(scope="module")
def trials() -> Trials:
    filled = Trials()
    fmin(
        objective,
        SPACE,
        max_evals=60,
        trials=filled,
        catch_eval_exceptions=True,
        rstate=np.random.default_rng(11),
        **QUIET,
    )
    return filled


def test_documents_carry_hyperopts_keys(trials: Trials) -> None:
    doc = trials.trials[0]
    assert set(doc) >= {
        "tid",
        "spec",
        "result",
        "misc",
        "state",
        "owner",
        "book_time",
        "refresh_time",
        "exp_key",
        "version",
    }
    assert set(doc["misc"]) >= {"tid", "cmd", "idxs", "vals"}
    assert doc["misc"]["tid"] == doc["tid"]
    assert isinstance(doc["book_time"], datetime.datetime)
    assert doc["refresh_time"] >= doc["book_time"]


def test_vals_and_idxs_list_every_label_active_or_not(trials: Trials) -> None:
    for doc in trials.trials:
        misc = doc["misc"]
        assert set(misc["vals"]) == {"model", "alpha", "depth"}
        record = next(r for r in trials.records if r.tid == doc["tid"])
        for label, values in misc["vals"].items():
            if label in record.assignment:
                assert values == [record.assignment[label]]
                assert misc["idxs"][label] == [doc["tid"]]
            else:
                assert values == []
                assert misc["idxs"][label] == []
    idxs, vals = trials.idxs_vals
    assert len(idxs["model"]) == len(trials)
    assert len(idxs["alpha"]) + len(idxs["depth"]) == len(trials)
    assert vals["alpha"] == [
        doc["misc"]["vals"]["alpha"][0] for doc in trials.trials if doc["misc"]["vals"]["alpha"]
    ]


def test_states_statuses_and_losses(trials: Trials) -> None:
    records = trials.records
    errors = [r for r in records if r.state is ao.TrialState.FAIL and r.result is None]
    reported = [r for r in records if r.state is ao.TrialState.FAIL and r.result is not None]
    assert errors
    assert reported
    # Errors (exceptions) are hidden from the documents shown, as in Hyperopt.
    assert len(trials) == len(records) - len(errors)
    assert trials.count_by_state_unsynced(JOB_STATE_ERROR) == len(errors)
    assert trials.count_by_state_synced(JOB_STATE_ERROR) == 0
    assert trials.count_by_state_unsynced([JOB_STATE_DONE, JOB_STATE_ERROR]) == len(records)
    assert len(trials.losses()) == len(trials.statuses()) == len(trials.results) == len(trials)
    for loss, status, result in zip(trials.losses(), trials.statuses(), trials.results):
        assert status in (STATUS_OK, STATUS_FAIL)
        assert (loss is None) == (status == STATUS_FAIL)
        if status == STATUS_FAIL:
            assert result["why"] == "too deep"
    assert {r.get("note") for r in trials.results if r["status"] == STATUS_OK} <= {"linear", None}
    with pytest.raises(TypeError, match="JOB_STATE"):
        trials.count_by_state_unsynced(7)


def test_best_trial_argmin_and_average_best_error(trials: Trials) -> None:
    ok = [doc for doc in trials.trials if doc["result"]["status"] == STATUS_OK]
    best = min(ok, key=lambda doc: doc["result"]["loss"])
    assert trials.best_trial == best
    assert trials.argmin == {k: v[0] for k, v in best["misc"]["vals"].items() if v}
    assert trials.average_best_error() == best["result"]["loss"]
    value = ao.space_eval(SPACE, trials.argmin)
    assert value in (
        {"kind": "linear", "alpha": trials.argmin.get("alpha")},
        {"kind": "tree", "depth": trials.argmin.get("depth")},
    )


def test_average_best_error_weighs_noisy_losses() -> None:
    trials = Trials()
    results = iter(
        [
            {"loss": 1.0, "loss_variance": 0.25, "true_loss": 10.0, "status": STATUS_OK},
            {"loss": 1.1, "loss_variance": 0.25, "true_loss": 20.0, "status": STATUS_OK},
            {"loss": 9.0, "loss_variance": 0.25, "true_loss": 99.0, "status": STATUS_OK},
        ]
    )
    fmin(lambda x: next(results), hp.uniform("x", 0, 1), max_evals=3, trials=trials, **QUIET)
    error = trials.average_best_error()
    # Mostly the first two (near-equal losses), never the far third.
    assert 10.0 < error < 20.0
    with pytest.raises(ValueError, match="Empty loss vector"):
        Trials().average_best_error()


def test_iteration_len_and_indexing(trials: Trials) -> None:
    assert list(trials) == trials.trials
    assert trials.tids == sorted(trials.tids)
    assert trials.specs == [None] * len(trials)
    with pytest.raises(NotImplementedError):
        trials[0]


async def test_queued_running_and_cancelled_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'states.db'}"
    trials = Trials(storage=url, refresh=False)
    async with ao.open_study(url, "default", hp.uniform("x", 0, 1), seed=1) as study:
        await study.enqueue([{"x": 0.5}])
        running = await study.ask()  # the queued one
        assert running is not None
        await study.tell(running.tid, 0.25)
        running = await study.ask()
        assert running is not None
        await study.enqueue([{"x": 0.75}])
        await trials.read()
        states = [doc["state"] for doc in trials.trials]
        assert states == [JOB_STATE_DONE, JOB_STATE_RUNNING, JOB_STATE_NEW]
        assert [doc["result"]["status"] for doc in trials.trials] == ["ok", "running", "new"]
        assert trials.trials[0]["result"] == {"loss": 0.25, "status": STATUS_OK}
    # Closing the handle cancelled the trial it held: hidden, counted as cancelled.
    await trials.read()
    assert trials.count_by_state_unsynced(JOB_STATE_CANCEL) == 1
    assert len(trials) == 2


def test_unstorable_results_and_attachments_stay_in_the_trials_object() -> None:
    class Model:
        pass

    models: list[Model] = []

    def fn(x: float) -> dict[str, Any]:
        models.append(Model())
        return {
            "loss": x,
            "status": STATUS_OK,
            "model": models[-1],
            "attachments": {"raw": b"\x00"},
        }

    trials = Trials()
    fmin(fn, hp.uniform("x", 0, 1), max_evals=3, trials=trials, **QUIET)
    assert [doc["result"]["model"] for doc in trials.trials] == models
    assert "attachments" not in trials.trials[0]["result"]
    for doc in trials.trials:
        assert trials.trial_attachments(doc)["raw"] == b"\x00"
        assert "raw" in trials.trial_attachments(doc)
    # The storage holds what it can; the key tells where the rest went.
    assert "model" not in (trials.records[0].result or {})


def test_pickled_trials_resume() -> None:
    trials = Trials()
    fmin(lambda x: x, hp.uniform("x", 0, 1), max_evals=5, trials=trials, **QUIET)
    restored = pickle.loads(pickle.dumps(trials))
    assert restored.trials == trials.trials
    fmin(lambda x: x, hp.uniform("x", 0, 1), max_evals=8, trials=restored, **QUIET)
    assert len(restored) == 8
    assert len(trials) == 5


def test_delete_all_empties_the_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'delete.db'}"
    trials = Trials(exp_key="gone", storage=url)
    fmin(lambda x: x, hp.uniform("x", 0, 1), max_evals=3, trials=trials, **QUIET)
    assert len(Trials(exp_key="gone", storage=url)) == 3
    trials.delete_all()
    assert len(trials) == 0
    assert len(Trials(exp_key="gone", storage=url)) == 0
    fmin(lambda x: x, hp.uniform("x", 0, 1), max_evals=2, trials=trials, **QUIET)
    assert len(trials) == 2


def test_trials_need_our_trials_and_one_storage() -> None:
    class Foreign:
        pass

    with pytest.raises(TypeError, match=r"asyncopt\.hyperopt\.Trials"):
        fmin(lambda x: x, hp.uniform("x", 0, 1), max_evals=1, trials=Foreign(), **QUIET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Trials"):
        fmin(
            lambda x: x,
            hp.uniform("x", 0, 1),
            max_evals=1,
            trials=Trials(),
            storage="memory://",
            **QUIET,
        )
    with pytest.raises(ValueError, match="exp_key"):
        Trials(exp_key="")


async def test_a_storage_instance_other_than_memory_is_refused(tmp_path: Path) -> None:
    # Its connection belongs to the event loop that opened it; each fmin runs its own.
    async with ao.open_storage(f"sqlite:///{tmp_path / 'instance.db'}") as store:
        with pytest.raises(TypeError, match="storage URL"):
            Trials(storage=store, refresh=False)
    shared = MemoryStorage()
    first, second = Trials(storage=shared, refresh=False), Trials(storage=shared, refresh=False)
    async with ao.open_study(shared, "default", hp.uniform("x", 0, 1), seed=3) as study:
        trial = await study.ask()
        assert trial is not None
        await study.tell(trial.tid, 0.5)
    await first.read()
    await second.read()
    assert first.losses() == second.losses() == [0.5]
