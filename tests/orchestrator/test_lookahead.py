"""`minimize` workers take their next trial ahead when the storage's wait is costly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncopt as ao
from asyncopt import hp

SPACE = {"x": hp.uniform("x", -1, 1)}


class Counted:
    """An async objective that waits ``seconds`` and counts its calls running at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.calls = 0
        self.returned = 0

    async def __call__(self, params: dict[str, Any]) -> float:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await anyio.sleep(self.seconds)
        finally:
            self.running -= 1
        self.returned += 1
        return float(params["x"] ** 2)


def most_held_at_once(trials: Sequence[ao.Trial]) -> int:
    """The most trials held at one moment: taken (created) and not yet finished."""
    events: list[tuple[float, int]] = []
    for trial in trials:
        assert trial.created_at is not None
        assert trial.finished_at is not None
        events += [(trial.created_at, 1), (trial.finished_at, -1)]
    held = most = 0
    for _, change in sorted(events):
        held += change
        most = max(most, held)
    return most


def assert_complete(trials: Sequence[ao.Trial], budget: int) -> None:
    budgeted = [t for t in trials if t.state is not ao.TrialState.CANCELLED]
    assert len(budgeted) == budget
    assert all(t.state is ao.TrialState.OK for t in budgeted)
    assert [t.tid for t in trials] == list(range(len(trials)))


async def test_a_worker_holds_its_next_trial_while_the_storage_wait_is_costly(
    tmp_path: Path,
) -> None:
    objective = Counted(0.002)  # a SQLite round trip is far above 5 % of 2 ms
    result = await ao.minimize(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=60,
        concurrency=4,
        storage=f"sqlite:///{tmp_path / 'ahead.db'}",
        seed=3,
    )
    assert_complete(result.trials, 60)
    assert objective.calls == 60
    assert objective.most <= 4  # never more calls at once than asked for
    assert most_held_at_once(result.trials) > 4  # but trials were taken ahead
    # A trial's start is when its objective call began, not when it was taken.
    waits = [t.started_at - t.created_at for t in result.trials]  # type: ignore[operator]
    assert min(waits) >= 0
    assert max(waits) > 0.001


async def test_no_worker_looks_ahead_when_the_wait_is_small() -> None:
    objective = Counted(0.1)  # a memory round trip is far below 5 % of 100 ms
    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=8, concurrency=4, seed=3
    )
    assert_complete(result.trials, 8)
    assert most_held_at_once(result.trials) <= 4


async def test_no_worker_looks_ahead_on_a_storage_that_answers_at_once() -> None:
    # A free objective: the memory round trip is many times the call, but it takes the
    # event loop's time, so there is no wait for the objectives to fill.
    objective = Counted(0.0)
    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=60, concurrency=4, seed=3
    )
    assert_complete(result.trials, 60)
    assert most_held_at_once(result.trials) <= 4


async def test_one_worker_never_looks_ahead(tmp_path: Path) -> None:
    # Its suggestions must see every result before them (reproducibility).
    objective = Counted(0.0)
    result = await ao.minimize(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=30,
        storage=f"sqlite:///{tmp_path / 'one.db'}",
        seed=3,
    )
    assert_complete(result.trials, 30)
    assert most_held_at_once(result.trials) == 1


async def test_trials_taken_ahead_are_cancelled_when_a_stopping_rule_stops(
    tmp_path: Path,
) -> None:
    async def reaches_threshold(params: dict[str, Any]) -> float:
        await anyio.sleep(0.002)
        return -1.0 if params["x"] > 0.6 else 1.0

    result = await ao.minimize(
        reaches_threshold,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=500,
        concurrency=4,
        loss_threshold=0.0,
        storage=f"sqlite:///{tmp_path / 'stop.db'}",
        seed=5,
    )
    states = {t.state for t in result.trials}
    assert ao.TrialState.RUNNING not in states
    assert result.best_loss == -1.0
    assert len(result.trials) < 500
    unrun = [t for t in result.trials if t.state is ao.TrialState.CANCELLED]
    assert unrun, "the workers held trials they did not run"
    assert all(t.error == "cancelled: the search stopped first" for t in unrun)


async def test_a_timeout_leaves_no_trial_taken_ahead_running(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'timeout.db'}"
    objective = Counted(0.002)
    await ao.minimize(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        timeout=0.3,
        concurrency=4,
        storage=url,
        seed=5,
    )
    async with ao.open_storage(url) as storage:
        trials = await storage.trials_since("default")
    assert len(trials) > 8  # the workers did look ahead before the deadline
    assert most_held_at_once([t for t in trials if t.finished_at is not None]) > 4
    assert all(t.state is not ao.TrialState.RUNNING for t in trials)
    assert sorted(t.tid for t in trials) == list(range(len(trials)))
    # Outcomes waiting to be recorded behind a call when the deadline came were kept.
    assert sum(t.state is ao.TrialState.OK for t in trials) == objective.returned


async def test_an_escaping_error_leaves_no_trial_taken_ahead_running(tmp_path: Path) -> None:
    calls = 0

    async def breaks(params: dict[str, Any]) -> float:
        nonlocal calls
        calls += 1
        breaking = calls == 40
        await anyio.sleep(0.002)
        if breaking:
            raise KeyError("broken")
        return 1.0

    url = f"sqlite:///{tmp_path / 'error.db'}"
    with pytest.raises(KeyError, match="broken"):
        await ao.minimize(
            breaks,
            SPACE,
            algo=ao.rand.suggest,
            max_evals=200,
            concurrency=4,
            catch=(ValueError,),
            storage=url,
            seed=5,
        )
    async with ao.open_storage(url) as storage:
        trials = await storage.trials_since("default")
    assert all(t.state is not ao.TrialState.RUNNING for t in trials)
    assert sum(t.state is ao.TrialState.FAIL for t in trials) == 1
