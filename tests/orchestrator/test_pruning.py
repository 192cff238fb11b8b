"""Objectives that report intermediate values and stop when the pruner says so."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt.storage.memory import MemoryStorage

pytestmark = pytest.mark.anyio

SPACE = {"x": hp.uniform("x", 0, 1)}
STEPS = 5


class AboveHalf:
    """Prunes a trial whose value is above 0.5 from step 1 on (a rule easy to check)."""

    def should_prune(self, trial: ao.Trial, trials: Sequence[ao.Trial]) -> bool:
        step, value = trial.last_step, trial.last_value
        return step is not None and step >= 1 and value is not None and value > 0.5


@pytest.fixture(params=["memory", "sqlite", "mongodb"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | ao.Storage:
    if request.param == "memory":
        return MemoryStorage()  # one instance: the resume below reads the same one
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    url: str = request.getfixturevalue("mongodb_url")
    return url


async def curve(params: dict[str, float], trial: ao.RunningTrial) -> float:
    """A learning curve falling to x: step s reports x + 0.1 / (s + 1)."""
    for step in range(STEPS):
        await trial.report(params["x"] + 0.1 / (step + 1), step)
        if await trial.should_prune():
            raise ao.TrialPruned()
    return params["x"]


def check_pruned_study(trials: Sequence[ao.Trial]) -> None:
    pruned = [t for t in trials if t.state is ao.TrialState.PRUNED]
    ok = [t for t in trials if t.state is ao.TrialState.OK]
    assert pruned
    assert ok
    for trial in pruned:
        # Stopped at the first step the rule looks at: step 1, its value above 0.5.
        assert sorted(trial.intermediate) == [0, 1]
        assert trial.loss == trial.intermediate[1] > 0.5
        assert trial.finished_at is not None
    for trial in ok:
        assert sorted(trial.intermediate) == list(range(STEPS))
        assert trial.intermediate[1] <= 0.5
        assert trial.loss == pytest.approx(trial.params["x"])


async def test_an_async_objective_reports_and_is_pruned(storage_url: str | ao.Storage) -> None:
    result = await ao.minimize(
        curve,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=12,
        concurrency=3,
        storage=storage_url,
        seed=3,
        pruner=AboveHalf(),
    )
    # Pruned trials count toward max_evals like OK and FAIL ones.
    assert len(result.trials) == 12
    check_pruned_study(result.trials)
    assert result.best_trial.state is ao.TrialState.OK
    # Resume: the values are stored, not only held by the run.
    async with ao.open_storage(storage_url) as storage:
        stored = await storage.trials_since("default")
    assert {t.tid: t.intermediate for t in stored} == {t.tid: t.intermediate for t in result.trials}


async def test_a_sync_objective_reports_from_its_thread() -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def objective(params: dict[str, float], trial: ao.SyncRunningTrial) -> float:
        threads.add(threading.get_ident())
        for step in range(STEPS):
            trial.report(params["x"] + 0.1 / (step + 1), step)
            if trial.should_prune():
                raise ao.TrialPruned()
        return params["x"]

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=12, concurrency=2, seed=3,
        pruner=AboveHalf(),
    )  # fmt: skip
    assert loop_thread not in threads
    check_pruned_study(result.trials)


async def test_returning_after_should_prune_said_yes_prunes_the_trial() -> None:
    async def objective(params: dict[str, float], trial: ao.RunningTrial) -> float:
        await trial.report(0.9, 0)
        await trial.report(0.8, 1)
        assert await trial.should_prune()
        return 0.1  # ignored: the trial was told to stop

    result = await ao.minimize(objective, SPACE, max_evals=2, seed=1, pruner=AboveHalf())
    assert [t.state for t in result.trials] == [ao.TrialState.PRUNED] * 2
    assert [t.loss for t in result.trials] == [0.8, 0.8]


async def test_trial_pruned_before_any_report_has_no_loss() -> None:
    async def objective(params: dict[str, float], trial: ao.RunningTrial) -> float:
        raise ao.TrialPruned()

    # TrialPruned is not a failure even when ``catch`` holds nothing.
    result = await ao.minimize(objective, SPACE, max_evals=3, seed=1, catch=())
    assert [(t.state, t.loss, dict(t.intermediate)) for t in result.trials] == [
        (ao.TrialState.PRUNED, None, {})
    ] * 3
    with pytest.raises(ao.AllTrialsFailed):
        result.best_trial  # noqa: B018


async def test_a_non_finite_report_is_nan_and_the_pruned_loss_is_none() -> None:
    async def objective(params: dict[str, float], trial: ao.RunningTrial) -> float:
        await trial.report(math.inf, 3)
        raise ao.TrialPruned()

    result = await ao.minimize(objective, SPACE, max_evals=1, seed=1)
    [trial] = result.trials
    assert trial.state is ao.TrialState.PRUNED
    assert trial.loss is None
    assert math.isnan(trial.intermediate[3])


async def test_a_bad_report_fails_the_trial_with_a_clear_error() -> None:
    async def objective(params: dict[str, float], trial: ao.RunningTrial) -> float:
        await trial.report(0.5, -1)
        return 0.5

    result = await ao.minimize(objective, SPACE, max_evals=1, seed=1)
    [trial] = result.trials
    assert trial.state is ao.TrialState.FAIL
    assert trial.error is not None
    assert "step" in trial.error.splitlines()[0]


async def test_an_objective_with_an_optional_second_parameter_gets_one_argument() -> None:
    seen: list[Any] = []

    async def objective(params: dict[str, float], extra: Any = "default") -> float:
        seen.append(extra)
        return params["x"]

    await ao.minimize(objective, SPACE, max_evals=2, seed=1)
    assert seen == ["default", "default"]


async def test_minimize_refuses_a_pruner_without_should_prune() -> None:
    with pytest.raises(TypeError, match="should_prune"):
        await ao.minimize(curve, SPACE, max_evals=1, pruner=object())  # type: ignore[arg-type]


async def test_ask_tell_reports_and_prunes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    async with ao.open_study(url, "s", SPACE, seed=1, pruner=AboveHalf()) as study:
        trial = await study.ask()
        assert trial is not None
        await study.report(trial.tid, 0.9, 0)
        assert not await study.should_prune(trial.tid)  # step 0: the rule waits
        reported = await study.report(trial.tid, 0.7, 1)
        assert dict(reported.intermediate) == {0: 0.9, 1: 0.7}
        assert await study.should_prune(trial.tid)
        pruned = await study.tell(trial.tid, state=ao.TrialState.PRUNED)
        assert (pruned.state, pruned.loss) == (ao.TrialState.PRUNED, 0.7)
        with pytest.raises(ao.TrialError):
            await study.report(trial.tid, 0.1, 2)  # finished: refused
        other = await study.ask()
        assert other is not None
        told = await study.tell(other.tid, 0.25, state=ao.TrialState.PRUNED)
        assert (told.state, told.loss) == (ao.TrialState.PRUNED, 0.25)
        with pytest.raises(ValueError, match="PRUNED"):
            await study.tell(other.tid, 0.25, state=ao.TrialState.FAIL)
        third = await study.ask()
        assert third is not None
        with pytest.raises(ValueError, match="finite loss"):
            await study.tell(third.tid, "0.3", state=ao.TrialState.PRUNED)
        await study.tell(third.tid, state=ao.TrialState.PRUNED)
    async with ao.open_study(url, "s") as study:
        trials = await study.trials()
    assert [t.state for t in trials] == [ao.TrialState.PRUNED] * 3
    assert dict(trials[0].intermediate) == {0: 0.9, 1: 0.7}


async def test_a_repeated_step_keeps_its_first_value_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ao.open_study("memory://", "s", SPACE, seed=1) as study:
        trial = await study.ask()
        assert trial is not None
        await study.report(trial.tid, 0.9, 0)
        again = await study.report(trial.tid, 0.1, 0)
    assert dict(again.intermediate) == {0: 0.9}
    assert "already reported step 0" in caplog.text


async def test_two_processes_see_each_others_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    seen: list[int] = []

    class Counting:
        def should_prune(self, trial: ao.Trial, trials: Sequence[ao.Trial]) -> bool:
            seen.append(sum(len(t.intermediate) for t in trials if t.tid != trial.tid))
            return False

    async with (
        ao.open_study(url, "s", SPACE, seed=1, worker="a") as first,
        ao.open_study(url, "s", SPACE, seed=1, worker="b", pruner=Counting()) as second,
    ):
        one = await first.ask()
        two = await second.ask()
        assert one is not None
        assert two is not None
        await first.report(one.tid, 0.5, 0)
        await first.report(one.tid, 0.4, 1)
        await second.report(two.tid, 0.3, 0)
        assert not await second.should_prune(two.tid)
    assert seen == [2]
