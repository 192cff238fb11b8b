"""The ask/tell handle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt.errors import LeaseLostError, TrialNotFoundError, TrialStateError
from asyncopt.outcome import Outcome
from asyncopt.storage.memory import MemoryStorage
from asyncopt.storage.sqlite import SQLiteStorage

SPACE = {"x": hp.uniform("x", -1, 1), "n": hp.uniformint("n", 1, 3)}


async def test_ask_tell_roundtrip() -> None:
    async with ao.open_study(MemoryStorage(), "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        trial = await study.ask()
        assert trial is not None
        assert trial.state is ao.TrialState.RUNNING
        assert trial.params == {"x": trial.assignment["x"], "n": trial.assignment["n"]}
        told = await study.tell(trial.tid, trial.params["x"] ** 2)
        assert told.state is ao.TrialState.OK
        assert told.loss == pytest.approx(trial.params["x"] ** 2)
        best = await study.best_trial()
        assert best.tid == trial.tid
        assert best.params == trial.params
        assert [t.tid for t in await study.trials()] == [0]


async def test_tell_unknown_twice_and_cancelled() -> None:
    storage = MemoryStorage()
    async with ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        with pytest.raises(TrialNotFoundError, match="no trial 7"):
            await study.tell(7, 1.0)
        trial = await study.ask()
        assert trial is not None
        await study.tell(trial.tid, 1.0)
        with pytest.raises(TrialStateError, match="OK, not RUNNING"):
            await study.tell(trial.tid, 2.0)
        second = await study.ask()
        assert second is not None
        await study.finish(second.tid, ao_cancelled())
        with pytest.raises(TrialStateError, match="CANCELLED"):
            await study.tell(second.tid, 1.0)
        assert (await study.best_trial()).loss == 1.0
    for error in (TrialNotFoundError, TrialStateError, LeaseLostError):
        assert issubclass(error, ao.TrialError)


def ao_cancelled() -> object:
    from asyncopt.outcome import Outcome

    return Outcome(ao.TrialState.CANCELLED, error="test")


async def test_tell_by_other_worker_is_refused() -> None:
    storage = MemoryStorage()
    async with ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest, seed=1) as mine:
        trial = await mine.ask()
        assert trial is not None
        async with ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest) as theirs:
            with pytest.raises(LeaseLostError):
                await theirs.tell(trial.tid, 0.0)
        await mine.tell(trial.tid, 0.5)


async def test_tell_bad_value_records_failure() -> None:
    async with ao.open_study(MemoryStorage(), "s", SPACE, algo=ao.rand.suggest) as study:
        trial = await study.ask()
        assert trial is not None
        told = await study.tell(trial.tid, float("nan"))
        assert told.state is ao.TrialState.FAIL
        with pytest.raises(ao.AllTrialsFailed):
            await study.best_trial()


async def test_budget_on_ask() -> None:
    async with ao.open_study(MemoryStorage(), "s", SPACE, algo=ao.rand.suggest) as study:
        asked = [await study.ask(budget=3) for _ in range(5)]
        assert [t.tid if t else None for t in asked] == [0, 1, 2, None, None]


async def test_closing_the_handle_cancels_untold_trials() -> None:
    storage = MemoryStorage()
    async with ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest) as study:
        trial = await study.ask()
        assert trial is not None
    stored = await storage.get_trial("s", trial.tid)
    assert stored.state is ao.TrialState.CANCELLED


async def test_leases_are_renewed_while_open() -> None:
    storage = MemoryStorage()
    async with ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest, lease=0.3) as study:
        trial = await study.ask()
        assert trial is not None
        await anyio.sleep(0.8)
        await storage.reap_expired("s")
        assert (await storage.get_trial("s", trial.tid)).state is ao.TrialState.RUNNING
        await study.tell(trial.tid, 1.0)


async def test_dead_workers_trials_are_reaped_and_retried_once() -> None:
    storage = MemoryStorage()
    await storage.create_study(
        "s", fingerprint=ao.compile_space(SPACE).fingerprint, space={}, seed=1
    )
    dead = await storage.create_trial(
        "s", {"x": 0.25, "n": 2}, budget=None, worker="dead:1:x", lease=0.05, seed=7
    )
    assert dead is not None
    await anyio.sleep(0.1)
    seen: list[dict[str, float]] = []

    async def objective(params: dict[str, float]) -> float:
        seen.append(params)
        return params["x"]

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=3, storage=storage, study="s"
    )
    states = [t.state for t in result.trials]
    assert states[0] is ao.TrialState.CANCELLED
    retry = result.trials[1]
    assert retry.retry_of == 0
    assert retry.assignment == {"x": 0.25, "n": 2}
    assert retry.seed == 7
    assert retry.state is ao.TrialState.OK
    assert sum(s is not ao.TrialState.CANCELLED for s in states) == 3
    assert seen[0] == {"x": 0.25, "n": 2}


async def test_waits_for_other_workers_then_reaps_them() -> None:
    storage = MemoryStorage()
    fingerprint = ao.compile_space(SPACE).fingerprint
    await storage.create_study("s", fingerprint=fingerprint, space={}, seed=1)
    await storage.create_trial(
        "s", {"x": 0.5, "n": 1}, budget=None, worker="dead:2:y", lease=0.4, seed=3
    )

    async def objective(params: dict[str, float]) -> float:
        return params["x"]

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=2, storage=storage, study="s"
    )
    assert all(t.state is not ao.TrialState.RUNNING for t in result.trials)
    assert sum(t.state is ao.TrialState.OK for t in result.trials) == 2
    assert result.trials[0].state is ao.TrialState.CANCELLED


async def test_open_existing_study_without_space() -> None:
    storage = MemoryStorage()
    async with ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest, seed=4) as study:
        trial = await study.ask()
        assert trial is not None
        await study.tell(trial.tid, 0.0)
    async with ao.open_study(storage, "s", algo=ao.rand.suggest) as again:
        assert again.seed == 4
        assert again.space == ao.compile_space(SPACE)
        assert len(await again.trials()) == 1


async def test_open_missing_study_without_space() -> None:
    with pytest.raises(ao.StorageError, match="no study named 'nope'"):
        async with ao.open_study(MemoryStorage(), "nope"):
            pass


async def test_history_is_incremental_and_immutable() -> None:
    async with ao.open_study(MemoryStorage(), "s", SPACE, algo=ao.rand.suggest) as study:
        first = await study.ask()
        assert first is not None
        before = study.history()
        await study.tell(first.tid, 3.0)
        await study.refresh()
        after = study.history()
        assert before.states[0] == ao.TrialState.RUNNING
        assert after.states[0] == ao.TrialState.OK
        assert after.losses[0] == 3.0
        assert not after.losses.flags.writeable


def test_trial_seed_salt_only_changes_shared_runs() -> None:
    from asyncopt.study import trial_seed

    assert trial_seed(1, 5) == trial_seed(1, 5, "")
    assert trial_seed(1, 5) != trial_seed(1, 6)
    assert trial_seed(1, 5, "host:1:a") != trial_seed(1, 5, "host:2:b")


async def test_two_workers_interleaved_propose_distinct_points() -> None:
    storage = MemoryStorage()
    async with (
        ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest, seed=3) as first,
        ao.open_study(storage, "s", SPACE, algo=ao.rand.suggest, seed=3) as second,
    ):
        asked = []
        for _ in range(5):
            for handle in (first, second):
                trial = await handle.ask()
                assert trial is not None
                asked.append(trial)
        assignments = [tuple(sorted(t.assignment.items())) for t in asked]
        assert len(set(assignments)) == len(assignments)
        for handle in (first, second):
            for trial in asked:
                if trial.tid in handle.held:
                    await handle.tell(trial.tid, 0.0)


class _OneAtATime(MemoryStorage):
    """A storage whose batches are not one round trip and whose calls may yield."""

    never_yields = False
    one_round_trip = False


async def test_a_storage_without_one_round_trip_batches_gives_the_same_search() -> None:
    results = [
        await ao.minimize(
            lambda p: p["x"] ** 2, SPACE, algo=ao.tpe.suggest, max_evals=15, storage=s, seed=3
        )
        for s in (_OneAtATime(), MemoryStorage())
    ]
    assert [t.assignment for t in results[0].trials] == [t.assignment for t in results[1].trials]
    assert [t.loss for t in results[0].trials] == [t.loss for t in results[1].trials]


async def test_a_refused_finish_and_ask_runs_nothing_and_keeps_the_stored_record(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    async with ao.open_study(url, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        trial = await study.ask()
        assert trial is not None
        # Behind the handle's back (as a reaper would after a lost lease), the trial ends.
        await study.storage.finish_trial(
            "s", trial.tid, worker=study.worker, state=ao.TrialState.CANCELLED
        )
        with pytest.raises(TrialStateError):
            await study.finish_and_ask(trial.tid, Outcome(ao.TrialState.OK, loss=0.1))
        # The outcome applied locally for the next suggestion is undone.
        assert study.best_loss is None
        assert study.held == frozenset()
        trials = await study.trials()
        # The trial created in the same round trip has nobody to run it: cancelled.
        assert [(t.tid, t.state) for t in trials] == [
            (0, ao.TrialState.CANCELLED),
            (1, ao.TrialState.CANCELLED),
        ]
        assert study.held == frozenset()
        assert study.counts()[ao.TrialState.OK] == 0


async def test_a_sequential_search_on_sqlite_makes_one_storage_call_per_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_call = SQLiteStorage._call

    async def counted(self: SQLiteStorage, fn: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real_call(self, fn)

    monkeypatch.setattr(SQLiteStorage, "_call", counted)
    url = f"sqlite:///{tmp_path}/study.db"
    await ao.minimize(lambda p: p["x"] ** 2, SPACE, max_evals=40, storage=url, seed=1)
    opening = 3 + 2  # create the study, read it, reap; the first ask reads and creates
    # Each finish reads the changes and creates the next trial (the last one creates none).
    finishes = 40
    closing = 1 + 1  # a last ask reads and finds the budget spent; the final read
    assert calls == opening + finishes + closing


async def test_an_outcome_is_recorded_even_if_cancelled_while_another_task_asks() -> None:
    async with ao.open_study(MemoryStorage(), "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        trial = await study.ask()
        assert trial is not None
        holding, release = anyio.Event(), anyio.Event()

        async def ask_slowly() -> None:  # as while another task's suggestion is made
            async with study._ask_lock:
                holding.set()
                await release.wait()

        async with anyio.create_task_group() as group:
            group.start_soon(ask_slowly)
            await holding.wait()
            with anyio.move_on_after(0.05) as scope:
                await study.finish_and_ask(trial.tid, Outcome(ao.TrialState.OK, loss=0.5))
            release.set()
        assert scope.cancelled_caught
        trials = await study.trials()
        assert [(t.tid, t.state, t.loss) for t in trials] == [(0, ao.TrialState.OK, 0.5)]
        assert study.held == frozenset()


async def test_an_ask_long_after_a_tell_reads_what_others_did_meanwhile(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    async with ao.open_study(url, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        trial = await study.ask()
        assert trial is not None
        await study.tell(trial.tid, 1.0)
        async with ao.open_study(url, "s") as other:
            assert await other.ask() is not None
        await anyio.sleep(0.1)  # the read the tell made is old by now
        await study.ask()
        assert [t.tid for t in study.cached_trials()] == [0, 1, 2]
