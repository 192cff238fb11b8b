"""`Study.finish_and_ask` calls made together share one round trip (SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt.errors import TrialStateError
from asyncopt.history import History
from asyncopt.outcome import Outcome
from asyncopt.space.compile import CompiledSpace
from asyncopt.storage.base import Finish, NewTrial
from asyncopt.storage.sqlite import SQLiteStorage

SPACE = {"x": hp.uniform("x", -1, 1), "n": hp.uniformint("n", 1, 3)}


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The tids finished by each `finish_and_create` call with finishes on SQLite."""
    seen: list[list[int]] = []
    real = SQLiteStorage.finish_and_create

    async def recorded(
        self: SQLiteStorage,
        study: str,
        finishes: Sequence[Finish],
        new: Sequence[NewTrial],
        **options: Any,
    ) -> Any:
        if new:
            seen.append([f.tid for f in finishes])
        return await real(self, study, finishes, new, **options)

    monkeypatch.setattr(SQLiteStorage, "finish_and_create", recorded)
    return seen


async def asked(study: ao.Study, n: int) -> list[ao.Trial]:
    trials = [await study.ask() for _ in range(n)]
    assert all(t is not None for t in trials)
    return [t for t in trials if t is not None]


async def finish_together(
    study: ao.Study, tids: Sequence[int]
) -> dict[int, tuple[ao.Trial, ao.Trial | None] | BaseException]:
    """Call `finish_and_ask` for every tid in one pass of the event loop."""
    outcomes: dict[int, tuple[ao.Trial, ao.Trial | None] | BaseException] = {}

    async def one(tid: int) -> None:
        try:
            outcomes[tid] = await study.finish_and_ask(
                tid, Outcome(ao.TrialState.OK, loss=tid / 10)
            )
        except ao.AsyncoptError as exc:
            outcomes[tid] = exc

    async with anyio.create_task_group() as group:
        for tid in tids:
            group.start_soon(one, tid)
    return outcomes


async def warmed_up(study: ao.Study, n: int) -> list[ao.Trial]:
    """``n`` held trials, after one round trip (combining waits for a measured one)."""
    [first] = await asked(study, 1)
    _, following = await study.finish_and_ask(first.tid, Outcome(ao.TrialState.OK, loss=1.0))
    assert following is not None
    return [following, *await asked(study, n - 1)]


async def test_handovers_made_together_share_one_round_trip(
    tmp_path: Path, batches: list[list[int]]
) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    async with ao.open_study(url, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        held = await warmed_up(study, 3)
        outcomes = await finish_together(study, [t.tid for t in held])
        assert sorted(batches[-1]) == [t.tid for t in held]
        following = []
        for trial in held:
            result = outcomes[trial.tid]
            assert not isinstance(result, BaseException)
            finished, new = result
            assert (finished.tid, finished.state, finished.loss) == (
                trial.tid,
                ao.TrialState.OK,
                trial.tid / 10,
            )
            assert new is not None
            following.append(new)
        assert sorted(t.tid for t in following) == [4, 5, 6]
        assert study.held == frozenset(t.tid for t in following)
        stored = {t.tid: t for t in await study.trials()}
        assert all(stored[t.tid].state is ao.TrialState.OK for t in held)
        assert all(stored[t.tid].state is ao.TrialState.RUNNING for t in following)
        assert all(stored[t.tid].params == t.params for t in following)


async def test_a_handover_beyond_the_budget_is_a_finish_then_an_ask(
    tmp_path: Path, batches: list[list[int]]
) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    async with ao.open_study(url, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        held = await warmed_up(study, 3)  # 4 trials so far

        async def one(tid: int) -> None:
            _, following = await study.finish_and_ask(
                tid, Outcome(ao.TrialState.OK, loss=0.5), budget=5
            )
            news.append(following)

        news: list[ao.Trial | None] = []
        async with anyio.create_task_group() as group:
            for trial in held:
                group.start_soon(one, trial.tid)
        assert len(batches[-1]) == 1  # only one trial fits in the budget
        assert sorted(t is None for t in news) == [False, True, True]
        assert await study.storage.count_trials("s") == 5


async def test_later_proposals_of_a_round_trip_see_the_earlier_ones_as_pending(
    tmp_path: Path, batches: list[list[int]]
) -> None:
    seen: list[tuple[list[int], list[float]]] = []

    def recording(
        space: CompiledSpace, history: History, rng: np.random.Generator, n: int
    ) -> list[dict[str, float]]:
        pending = history.pending
        seen.append((history.tids[pending].tolist(), history.values["x"][pending].tolist()))
        return ao.rand.suggest(space, history, rng, n)

    url = f"sqlite:///{tmp_path}/study.db"
    async with ao.open_study(url, "s", SPACE, algo=recording, seed=1) as study:
        held = await warmed_up(study, 3)
        seen.clear()
        outcomes = await finish_together(study, [t.tid for t in held])
        assert len(batches[-1]) == 3
        # The first proposal sees no pending trial (the three are finished locally);
        # each later one also sees the proposals before it, at the tids they will get.
        assert [tids for tids, _ in seen] == [[], [4], [4, 5]]
        created = sorted(
            (r[1] for r in outcomes.values() if not isinstance(r, BaseException) and r[1]),
            key=lambda t: t.tid,
        )
        assert [t.tid for t in created] == [4, 5, 6]
        assert [t.assignment["x"] for t in created[:2]] == seen[2][1]


async def test_a_refused_handover_fails_alone(tmp_path: Path, batches: list[list[int]]) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    async with ao.open_study(url, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        held = await warmed_up(study, 3)
        lost = held[1]
        # Behind the handle's back (as a reaper would after a lost lease), it ends.
        await study.storage.finish_trial(
            "s", lost.tid, worker=study.worker, state=ao.TrialState.CANCELLED
        )
        outcomes = await finish_together(study, [t.tid for t in held])
        assert len(batches[-1]) == 3
        assert isinstance(outcomes[lost.tid], TrialStateError)
        assert all(not isinstance(outcomes[t.tid], BaseException) for t in held if t is not lost)
        stored = {t.tid: t for t in await study.trials()}
        assert stored[lost.tid].state is ao.TrialState.CANCELLED
        # The trial created alongside the refused one has nobody to run it: cancelled.
        spares = [t for t in stored.values() if t.tid > 3 and t.state is ao.TrialState.CANCELLED]
        assert len(stored) == 4 + 3
        assert len(spares) == 1
        assert spares[0].tid not in study.held
        assert lost.tid not in study.held


async def test_a_caller_cancelled_while_another_carries_its_handover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    scopes: dict[int, anyio.CancelScope] = {}
    real = SQLiteStorage.finish_and_create

    async def cancelling(
        self: SQLiteStorage,
        study: str,
        finishes: Sequence[Finish],
        new: Sequence[NewTrial],
        **options: Any,
    ) -> Any:
        if len(finishes) > 1:
            # Cancel the caller whose handover this task carries, while under way.
            for task, scope in scopes.items():
                if task != anyio.get_current_task().id:
                    scope.cancel()
        return await real(self, study, finishes, new, **options)

    monkeypatch.setattr(SQLiteStorage, "finish_and_create", cancelling)
    async with ao.open_study(url, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        held = await warmed_up(study, 2)
        results: dict[int, tuple[ao.Trial, ao.Trial | None]] = {}
        cancelled: list[int] = []

        async def caller(tid: int) -> None:
            with anyio.CancelScope() as scope:
                scopes[anyio.get_current_task().id] = scope
                results[tid] = await study.finish_and_ask(
                    tid, Outcome(ao.TrialState.OK, loss=tid / 10)
                )
            if scope.cancelled_caught:
                cancelled.append(tid)

        async with anyio.create_task_group() as group:
            for trial in held:
                group.start_soon(caller, trial.tid)
        [gone] = cancelled
        [(kept, (_, mine))] = results.items()
        assert mine is not None
        stored = {t.tid: t for t in await study.trials()}
        # Both outcomes are recorded.
        for tid in (gone, kept):
            assert (stored[tid].state, stored[tid].loss) == (ao.TrialState.OK, tid / 10)
        # The trial made for the cancelled caller does not stay RUNNING.
        [unrun] = [t for tid, t in stored.items() if tid > max(gone, kept) and tid != mine.tid]
        assert unrun.state is ao.TrialState.CANCELLED
        assert stored[mine.tid].state is ao.TrialState.RUNNING
        assert study.held == frozenset({mine.tid})


async def test_finish_and_ask_many_records_several_outcomes_in_one_round_trip(
    tmp_path: Path, batches: list[list[int]]
) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    async with ao.open_study(url, "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        held = await warmed_up(study, 4)  # tids 1..4; 5 trials so far
        lost = held[1]
        await study.storage.finish_trial(
            "s", lost.tid, worker=study.worker, state=ao.TrialState.CANCELLED
        )
        results = await study.finish_and_ask_many(
            [(t.tid, Outcome(ao.TrialState.OK, loss=t.tid / 10)) for t in held]
        )
        assert batches[-1] == [t.tid for t in held]
        assert isinstance(results[1], TrialStateError)  # refused in its place, alone
        done = [r for r in results if not isinstance(r, BaseException)]
        assert [(f.tid, f.loss) for f, _ in done] == [
            (t.tid, t.tid / 10) for t in held if t is not lost
        ]
        assert [None if new is None else new.tid for _, new in done] == [5, 6, 7]
        assert study.held == frozenset({5, 6, 7})


async def test_finish_and_ask_many_on_a_storage_without_the_combined_call() -> None:
    async with ao.open_study("memory://", "s", SPACE, algo=ao.rand.suggest, seed=1) as study:
        held = await asked(study, 3)
        results = await study.finish_and_ask_many(
            [(t.tid, Outcome(ao.TrialState.OK, loss=1.0)) for t in held]
        )
        pairs = [r for r in results if not isinstance(r, BaseException)]
        assert [f.tid for f, _ in pairs] == [0, 1, 2]
        assert sorted(new.tid for _, new in pairs if new is not None) == [3, 4, 5]
        assert study.counts()[ao.TrialState.OK] == 3
