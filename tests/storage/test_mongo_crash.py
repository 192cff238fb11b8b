"""MongoDB: the server killed (SIGKILL) and restarted mid-run, on its persistent storage.

Writes are journaled and the test server syncs them like a production server, so an
acknowledged trial survives; should a write be lost anyway, the study reconciles (see
`test_a_lost_trial_is_reconciled`). Either way, the run and a resume end with exactly
``max_evals`` trials and nothing RUNNING.
"""

from __future__ import annotations

import time

import anyio
import anyio.to_thread
import pymongo
import pytest
from test_crash import assert_budget_met
from test_multiprocess import finish, read_trials, start_worker, wait_for_lines

import asyncopt as ao
from asyncopt.storage.base import TrialState
from mongo_server import Server


@pytest.mark.slow
def test_a_server_killed_and_restarted_mid_run_loses_nothing(
    restartable_server: Server,
) -> None:
    url = f"{restartable_server.url}crash?serverSelectionTimeoutMS=2000"
    max_evals = 60
    worker = start_worker(url, max_evals=max_evals, concurrency=4, pause=0.05, lease=5.0)
    wait_for_lines(worker, finished=15, in_flight=2)
    restartable_server.kill()
    time.sleep(0.5)
    restartable_server.start()
    code, output = finish(worker)
    assert code == 0, output
    assert "Traceback" not in output
    assert "ExceptionGroup" not in output
    trials = read_trials(url)
    assert_budget_met(trials, max_evals)

    # A resume finds the budget met and changes nothing.
    code, output = finish(start_worker(url, max_evals=max_evals, concurrency=4, pause=0))
    assert code == 0, output
    assert_budget_met(read_trials(url), max_evals)


async def test_a_lost_trial_is_reconciled(mongodb_url: str) -> None:
    """A trial write lost in a crash (deleted behind the workers' backs here): the worker
    holding it records that and goes on, the gap is filled, the budget met exactly."""
    space = {"x": ao.hp.uniform("x", -1, 1)}
    database = mongodb_url.rsplit("/", 1)[1]
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongodb_url)
    lost: list[int] = []

    async def objective(params: dict[str, float]) -> float:
        return params["x"] ** 2

    def delete_the_lowest_running_trial() -> None:
        doc = client[database]["trials"].find_one_and_delete(
            {"study": "s", "state": int(TrialState.RUNNING)}, sort=[("tid", 1)]
        )
        assert doc is not None
        lost.append(int(doc["tid"]))

    async def lose_a_running_trial(trial: ao.Trial) -> None:
        if trial.tid >= 10 and not lost:
            await anyio.to_thread.run_sync(delete_the_lowest_running_trial)

    try:
        result = await ao.minimize(
            objective,
            space,
            algo=ao.rand.suggest,
            max_evals=30,
            concurrency=4,
            storage=mongodb_url,
            study="s",
            seed=1,
            callbacks=[lose_a_running_trial],
        )
    finally:
        client.close()
    assert lost
    trials = result.trials
    assert_budget_met(list(trials), 30)
    [placeholder] = [t for t in trials if t.tid == lost[0]]
    assert placeholder.state is TrialState.CANCELLED
    assert placeholder.error is not None
    assert "lost by the storage" in placeholder.error
