"""g's widths updated between suggestions (`tpe._GrownWidths`) are the widths computed afresh."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import tpe
from asyncopt.algorithms._parzen import clip_floor, gap_bandwidths
from asyncopt.history import HistoryBuilder
from asyncopt.space.compile import compile_space
from asyncopt.space.evaluate import sample_assignments
from asyncopt.storage.base import Trial, TrialState

LOW, HIGH, CENTRE = np.zeros(3), np.ones(3), np.full(3, 0.5)


def _fresh(numeric: np.ndarray, order: list[np.ndarray] | None = None) -> np.ndarray:
    return gap_bandwidths(
        numeric, prior_mu=CENTRE, low=LOW, high=HIGH, rule="optuna", order_out=order
    )


def _state(numeric: np.ndarray) -> tpe._GrownWidths:
    order: list[np.ndarray] = []
    sigmas = _fresh(numeric, order)
    return tpe._GrownWidths(numeric, sigmas, clip_floor(len(numeric), True), *order)


# (From 98 observations on, the clip floor stays put; before, no update applies.)
@pytest.mark.parametrize("n", [120, 300])
def test_inserted_observations_give_the_fresh_widths(n: int) -> None:
    rng = np.random.default_rng(n)
    numeric = np.asfortranarray(rng.random((n, 3)))
    state = _state(numeric)
    updated = 0
    for step in range(60):
        # A new trial last, or one coming back from l somewhere among the others; some
        # land outside the range so far, some very near another observation.
        row = rng.random(3) * 1.2 - 0.1 if step % 7 else numeric[step % n] + 1e-3
        at = len(numeric) if step % 3 else int(rng.integers(len(numeric)))
        numeric = np.asfortranarray(np.insert(numeric, at, row, axis=0))
        fresh = _fresh(numeric)
        grown = state.grown(numeric, clip_floor(len(numeric), True))
        if grown is None:
            state = _state(numeric)
            continue
        updated += 1
        assert grown.flags.f_contiguous
        np.testing.assert_array_equal(grown, fresh)
    assert updated > 40


def test_ties_nan_and_other_changes_are_declined() -> None:
    rng = np.random.default_rng(1)
    numeric = np.asfortranarray(rng.random((150, 3)))
    state = _state(numeric)
    floor = clip_floor(151, True)
    tie = np.vstack([numeric, numeric[5]])
    assert state.grown(tie, floor) is None
    nan = np.vstack([numeric, [0.5, math.nan, 0.5]])
    assert state.grown(nan, floor) is None
    changed = np.vstack([numeric, [0.1, 0.2, 0.3]])
    changed[3, 1] += 0.01
    assert state.grown(changed, floor) is None
    assert state.grown(np.vstack([numeric, [0.1, 0.2, 0.3]]), floor / 2) is None
    assert state.grown(np.vstack([numeric, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), floor) is None
    # The declined updates left the state as it was.
    grown = state.grown(np.vstack([numeric, [0.1, 0.2, 0.3]]), floor)
    assert grown is not None
    np.testing.assert_array_equal(grown, _fresh(np.vstack([numeric, [0.1, 0.2, 0.3]])))


SPACE = compile_space(
    {
        "a": hp.uniform("a", -5, 5),
        "lr": hp.loguniform("lr", math.log(1e-5), 0.0),
        "x": hp.normal("x", 0, 2),
        "act": hp.choice("act", ["relu", "tanh", "sigmoid"]),
    }
)


def _run(trials: int, pending: int) -> list[dict[str, float]]:
    builder = HistoryBuilder(SPACE)
    rng = np.random.default_rng(3)
    proposals: list[dict[str, float]] = []
    running: list[Trial] = []
    for tid in range(trials):
        (assignment,) = tpe.suggest(SPACE, builder.snapshot(), rng, 1)
        proposals.append(dict(assignment))
        trial = Trial("s", tid, TrialState.RUNNING, assignment)
        builder.update([trial])
        running.append(trial)
        if len(running) > pending:
            done = running.pop(0)
            params = SPACE.evaluate(done.assignment)
            loss = (params["a"] - 1) ** 2 + math.log10(params["lr"]) ** 2 + abs(params["x"])
            builder.update([done.evolve(state=TrialState.OK, loss=float(loss))])
    return proposals


@pytest.mark.parametrize("pending", [0, 2])
def test_a_run_proposes_the_same_with_and_without_updates(
    pending: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tpe._GROUP_CACHE.clear()  # fresh groups: nothing kept from earlier suggestions
    monkeypatch.setattr(tpe, "_GROW_FROM", 64)
    updated = _run(320, pending)
    monkeypatch.setattr(tpe, "_GROW_FROM", 10**9)
    assert _run(320, pending) == updated


def test_a_group_without_numeric_parameters_on_a_long_history() -> None:
    # The root choice alone is a group with no numeric axis: g's widths on its (empty)
    # axes once g holds hundreds of trials.
    space = compile_space(
        hp.choice(
            "branch",
            [
                {"kind": "a", "u": hp.uniform("u", 0, 1)},
                {"kind": "b", "c": hp.choice("c", ["x", "y", "z"])},
            ],
        )
    )
    assignments = sample_assignments(space, np.random.default_rng(0), 400)
    builder = HistoryBuilder(space)
    builder.update(
        [Trial("s", i, TrialState.OK, a, loss=float(i % 17)) for i, a in enumerate(assignments)]
    )
    (proposal,) = tpe.suggest(space, builder.snapshot(), np.random.default_rng(1), 1)
    assert proposal["branch"] in (0, 1)
