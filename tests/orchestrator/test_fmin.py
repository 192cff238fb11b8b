"""fmin: Hyperopt's blocking interface."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest

import asyncopt as ao
from asyncopt import hp

SPACE = {
    "x": hp.uniform("x", -3, 3),
    "opt": hp.choice("opt", ["sgd", {"name": "adam", "beta": hp.uniform("beta", 0.8, 1.0)}]),
}


def objective(params: dict[str, Any]) -> float:
    penalty = 0.0 if params["opt"] == "sgd" else 0.1
    return float((params["x"] - 1) ** 2 + penalty)


def test_return_argmin_gives_raw_assignment() -> None:
    best = ao.fmin(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=40,
        rstate=np.random.default_rng(1),
        show_progressbar=False,
    )
    assert set(best) <= {"x", "opt", "beta"}
    assert best["opt"] in (0, 1)
    assert isinstance(best["opt"], int)
    evaluated = ao.space_eval(SPACE, best)
    assert evaluated["opt"] == "sgd" or evaluated["opt"]["name"] == "adam"


def test_return_argmin_false_gives_evaluated_space() -> None:
    kwargs: dict[str, Any] = {"algo": ao.rand.suggest, "max_evals": 40, "show_progressbar": False}
    raw = ao.fmin(objective, SPACE, rstate=np.random.default_rng(2), **kwargs)
    evaluated = ao.fmin(
        objective, SPACE, rstate=np.random.default_rng(2), return_argmin=False, **kwargs
    )
    assert evaluated == ao.space_eval(SPACE, raw)


def test_same_rstate_same_result() -> None:
    kwargs: dict[str, Any] = {"algo": ao.rand.suggest, "max_evals": 25, "show_progressbar": False}
    first = ao.fmin(objective, SPACE, rstate=np.random.default_rng(3), **kwargs)
    second = ao.fmin(objective, SPACE, rstate=np.random.default_rng(3), **kwargs)
    assert first == second


def test_points_to_evaluate_are_tried_first() -> None:
    seen: list[float] = []

    def recording(params: dict[str, Any]) -> float:
        seen.append(params["x"])
        return objective(params)

    best = ao.fmin(
        recording,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=10,
        points_to_evaluate=[{"x": 1.0, "opt": 0}],
        show_progressbar=False,
    )
    assert seen[0] == 1.0
    assert len(seen) == 10
    assert best == {"x": 1.0, "opt": 0}


def test_early_stop_fn_keeps_state_between_calls() -> None:
    calls: list[tuple[int, tuple[Any, ...]]] = []

    def stop_after(trials: tuple[ao.Trial, ...], *state: Any) -> tuple[bool, list[Any]]:
        count = state[0] + 1 if state else 1
        calls.append((len(trials), state))
        return count >= 4, [count]

    ao.fmin(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=50,
        early_stop_fn=stop_after,
        show_progressbar=False,
    )
    assert calls == [(1, ()), (2, (1,)), (3, (2,)), (4, (3,))]


def test_exceptions_abort_unless_caught() -> None:
    def failing(params: dict[str, Any]) -> float:
        if params["x"] > 0:
            raise ZeroDivisionError("no")
        return objective(params)

    with pytest.raises(ZeroDivisionError):
        ao.fmin(failing, SPACE, algo=ao.rand.suggest, max_evals=30, show_progressbar=False)
    best = ao.fmin(
        failing,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=30,
        catch_eval_exceptions=True,
        show_progressbar=False,
    )
    assert best["x"] <= 0


def test_all_failed_raises() -> None:
    with pytest.raises(ao.AllTrialsFailed):
        ao.fmin(
            lambda params: float("nan"),
            SPACE,
            algo=ao.rand.suggest,
            max_evals=3,
            show_progressbar=False,
        )


def test_loss_threshold_and_timeout() -> None:
    calls = 0

    def counting(params: dict[str, Any]) -> float:
        nonlocal calls
        calls += 1
        return objective(params)

    ao.fmin(
        counting,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=10_000,
        loss_threshold=1.0,
        show_progressbar=False,
    )
    assert calls < 10_000


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_inside_an_event_loop_it_blocks_the_loop_and_runs(backend: str) -> None:
    # A notebook runs cells inside an event loop: fmin runs there as in a script.
    kwargs: dict[str, Any] = {"algo": ao.rand.suggest, "max_evals": 5, "show_progressbar": False}
    outside = ao.fmin(objective, SPACE, rstate=np.random.default_rng(8), **kwargs)

    async def inside() -> Any:
        await anyio.lowlevel.checkpoint()
        return ao.fmin(objective, SPACE, rstate=np.random.default_rng(8), **kwargs)

    assert anyio.run(inside, backend=backend) == outside
