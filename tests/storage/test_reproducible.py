"""A sequential, seeded search gives the same trials on every backend, resumed or not."""

from __future__ import annotations

from typing import Any

import asyncopt as ao
from asyncopt import hp
from asyncopt.storage.base import Storage
from asyncopt.storage.memory import MemoryStorage

SPACE = {
    "x": hp.uniform("x", -2, 2),
    "lr": hp.loguniform("lr", -6, 0),
    "n": hp.uniformint("n", 1, 9),
    "branch": hp.choice("branch", [{"kind": "a"}, {"kind": "b", "y": hp.normal("y", 0, 1)}]),
}


def loss(params: dict[str, Any]) -> float:
    branch = params["branch"]
    penalty = branch["y"] ** 2 if branch["kind"] == "b" else 0.5
    return float((params["x"] - 0.3) ** 2 + abs(params["n"] - 4) / 9 + penalty + params["lr"])


async def search(storage: str | Storage, max_evals: int) -> list[dict[str, float | int]]:
    result = await ao.minimize(
        loss, SPACE, algo=ao.tpe.suggest, max_evals=max_evals, storage=storage, seed=5
    )
    return [dict(t.assignment) for t in result.trials]


async def test_the_same_trials_on_every_backend_and_after_a_resume(
    storage_target: str | Storage,
) -> None:
    # TPE starts modelling after 10 trials, so most of these suggestions use the results
    # before them, each recorded in the round trip that creates the next trial.
    expected = await search(MemoryStorage(), 24)
    assert await search(storage_target, 12) == expected[:12]
    assert await search(storage_target, 24) == expected
