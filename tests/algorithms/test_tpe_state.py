"""The state a study keeps between TPE suggestions changes no proposal, and batches of
proposals come from one fitted model."""

from __future__ import annotations

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import tpe
from asyncopt.history import History, HistoryBuilder
from asyncopt.space.compile import compile_space
from asyncopt.space.evaluate import sample_assignments
from asyncopt.storage.base import Trial, TrialState

SPACE = compile_space(
    {
        "x": hp.uniform("x", -5, 5),
        "n": hp.uniformint("n", 1, 20),
        "c": hp.choice("c", [{"k": "a", "y": hp.loguniform("y", -5, 0)}, {"k": "b"}]),
    }
)


def _history(n_ok: int, n_pending: int, seed: int) -> History:
    assignments = sample_assignments(SPACE, np.random.default_rng(seed), n_ok + n_pending)
    trials = [
        Trial("s", i, TrialState.OK, a, loss=float(a["x"] ** 2 + a["n"]))
        if i < n_ok
        else Trial("s", i, TrialState.RUNNING, a)
        for i, a in enumerate(assignments)
    ]
    return History.from_trials(SPACE, trials)


def test_suggest_is_the_default_tpe_and_configure_makes_one() -> None:
    assert isinstance(tpe.suggest, tpe.TPE)
    assert tpe.suggest == tpe.configure()
    assert isinstance(tpe.configure(preset="hyperopt").new_state(), tpe.TPEState)


@pytest.mark.parametrize("preset", ["default", "hyperopt"])
def test_a_warm_state_gives_the_proposals_of_a_fresh_one(preset: str) -> None:
    suggest = tpe.configure(preset=preset)
    warm = suggest.new_state()
    for step, (n_ok, n_pending) in enumerate([(30, 0), (30, 8), (30, 12), (31, 11), (40, 3)]):
        history = _history(n_ok, n_pending, seed=step % 2)
        for n in (1, 4):
            fresh = suggest(SPACE, history, np.random.default_rng(step), n)
            kept = suggest(SPACE, history, np.random.default_rng(step), n, state=warm)
            assert kept == fresh


def test_predictions_are_kept_until_a_result_arrives() -> None:
    state = tpe.suggest.new_state()
    history = _history(30, 6, seed=0)
    tpe.suggest(SPACE, history, np.random.default_rng(0), state=state)
    kept = state._beliefs
    assert kept is not None
    assert len(kept[1]) == 6
    tpe.suggest(SPACE, history, np.random.default_rng(1), state=state)
    assert state._beliefs is kept
    tpe.suggest(SPACE, _history(31, 5, seed=0), np.random.default_rng(1), state=state)
    assert state._beliefs is not kept


def test_two_states_share_nothing() -> None:
    first, second = tpe.suggest.new_state(), tpe.suggest.new_state()
    tpe.suggest(SPACE, _history(30, 4, seed=0), np.random.default_rng(0), state=first)
    assert second._beliefs is None
    assert second._groups is None


def test_a_batch_is_distinct_and_spread_by_the_lies() -> None:
    history = _history(40, 0, seed=3)
    batch = tpe.suggest(SPACE, history, np.random.default_rng(0), 16)
    assert len({tuple(sorted(a.items())) for a in batch}) == 16
    # Without lies between them, 16 independent proposals crowd: the lies spread a batch.
    alone = [tpe.suggest(SPACE, history, np.random.default_rng(s), 1)[0] for s in range(16)]
    assert np.std([a["x"] for a in batch]) > np.std([a["x"] for a in alone])


@pytest.mark.parametrize("preset", ["default", "hyperopt"])
def test_a_state_kept_along_a_study_gives_the_proposals_of_fresh_ones(preset: str) -> None:
    # One builder as a study keeps it: trials arrive one by one, the columns move to
    # larger buffers, some suggestions see proposals not yet stored, one an older snapshot.
    suggest = tpe.configure(preset=preset, n_startup=5)
    warm = suggest.new_state()
    builder = HistoryBuilder(SPACE, capacity=4)
    snapshots = []
    for tid in range(45):
        history = builder.snapshot()
        snapshots.append(history)
        if tid % 4 == 3:
            history = history.with_pending(
                [1000 + tid], sample_assignments(SPACE, np.random.default_rng(tid), 1)
            )
        if tid == 40:
            history = snapshots[35]
        kept = suggest(SPACE, history, np.random.default_rng(tid), 1 + tid % 2, state=warm)
        fresh = suggest(SPACE, history, np.random.default_rng(tid), 1 + tid % 2)
        assert kept == fresh
        loss = float(kept[0]["x"] ** 2)
        builder.update([Trial("s", tid, TrialState.OK, kept[0], loss=loss)])
