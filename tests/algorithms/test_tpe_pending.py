"""TPE with pending trials: the believer (constant_liar on) and ignoring them (off)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import tpe
from asyncopt.history import History, HistoryBuilder
from asyncopt.space.compile import CompiledSpace, compile_space
from asyncopt.space.evaluate import Assignment, sample_assignments
from asyncopt.storage.base import Trial, TrialState

PRESETS = {"default": tpe.configure(), "hyperopt": tpe.configure(preset="hyperopt")}
PRESETS_OFF = {
    "default": tpe.configure(constant_liar=False),
    "hyperopt": tpe.configure(preset="hyperopt", constant_liar=False),
}

PLANE = compile_space({"x": hp.uniform("x", 0, 10), "y": hp.uniform("y", 0, 10)})


def _bowl(a: Assignment) -> float:
    return float((a["x"] - 3.0) ** 2 + (a["y"] - 7.0) ** 2)


def _trials(
    space: CompiledSpace, n_ok: int, n_pending: int, seed: int, loss: Callable[[Assignment], float]
) -> list[Trial]:
    assignments = sample_assignments(space, np.random.default_rng(seed), n_ok + n_pending)
    trials = [Trial("t", i, TrialState.OK, a, loss=loss(a)) for i, a in enumerate(assignments)]
    for i in range(n_ok, n_ok + n_pending):
        state = TrialState.RUNNING if i % 2 else TrialState.QUEUED
        trials[i] = Trial("t", i, state, assignments[i])
    return trials


def _believed(suggest: tpe.TPE, space: CompiledSpace, history: History) -> np.ndarray:
    proposer = tpe._Proposer(suggest, space, history, np.random.default_rng(0))
    return np.asarray(proposer.losses)


def test_a_pending_trial_is_believed_to_score_its_three_nearest_neighbours() -> None:
    points = [(1.0, 1.0, 5.0), (1.2, 1.0, 7.0), (1.0, 1.4, 9.0), (9.0, 9.0, 0.0), (8.0, 9.0, 1.0)]
    trials = [
        Trial("t", i, TrialState.OK, {"x": x, "y": y}, loss=loss)
        for i, (x, y, loss) in enumerate(points)
    ]
    trials.append(Trial("t", 5, TrialState.RUNNING, {"x": 1.1, "y": 1.1}))
    trials.append(Trial("t", 6, TrialState.QUEUED, {"x": 8.6, "y": 8.8}))
    history = History.from_trials(PLANE, trials)
    suggest = tpe.configure(n_startup=3)
    losses = _believed(suggest, PLANE, history)
    assert losses[:5].tolist() == [p[2] for p in points]
    # The first pending trial sits among the three trials near (1, 1); the second has
    # the two trials near (9, 9) and, next, (1.0, 1.4) among its nearest three.
    assert losses[5] == pytest.approx(7.0)
    assert losses[6] == pytest.approx((0.0 + 1.0 + 9.0) / 3)
    # The history itself is left alone.
    assert np.isnan(history.losses[5:]).all()


def test_neighbours_are_found_in_the_same_branch_and_category() -> None:
    space = compile_space(
        {
            "m": hp.choice(
                "m",
                [{"a": hp.uniform("a", 0, 1)}, {"b": hp.uniform("b", 0, 1)}],
            ),
            "c": hp.choice("c", ["p", "q"]),
        }
    )
    rows = [
        ({"m": 0, "a": 0.5, "c": 0}, 1.0),
        ({"m": 0, "a": 0.6, "c": 0}, 1.0),
        ({"m": 0, "a": 0.4, "c": 0}, 1.0),
        ({"m": 1, "b": 0.5, "c": 0}, 50.0),
        ({"m": 1, "b": 0.5, "c": 1}, 90.0),
        ({"m": 1, "b": 0.6, "c": 1}, 90.0),
        ({"m": 1, "b": 0.4, "c": 1}, 90.0),
    ]
    trials = [Trial("t", i, TrialState.OK, a, loss=loss) for i, (a, loss) in enumerate(rows)]
    trials.append(Trial("t", 7, TrialState.RUNNING, {"m": 0, "a": 0.55, "c": 1}))
    trials.append(Trial("t", 8, TrialState.RUNNING, {"m": 1, "b": 0.5, "c": 1}))
    history = History.from_trials(space, trials)
    losses = _believed(tpe.configure(n_startup=3), space, history)
    assert losses[7] == pytest.approx(1.0)
    assert losses[8] == pytest.approx(90.0)


def test_distances_in_blocks_give_the_same_beliefs(monkeypatch: pytest.MonkeyPatch) -> None:
    history = History.from_trials(PLANE, _trials(PLANE, 60, 20, 3, _bowl))
    whole = _believed(tpe.configure(), PLANE, history)
    monkeypatch.setattr(tpe, "_DISTANCE_CELLS", 7)
    assert np.array_equal(_believed(tpe.configure(), PLANE, history), whole)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_without_the_liar_pending_trials_are_ignored(preset: str) -> None:
    trials = _trials(PLANE, 40, 12, 1, _bowl)
    with_pending = History.from_trials(PLANE, trials)
    finished = History.from_trials(PLANE, [t for t in trials if t.state is TrialState.OK])
    off = PRESETS_OFF[preset]
    for seed in range(3):
        got = off(PLANE, with_pending, np.random.default_rng(seed), 2)
        assert got == off(PLANE, finished, np.random.default_rng(seed), 2)
    on = PRESETS[preset]
    assert any(
        on(PLANE, with_pending, np.random.default_rng(s))
        != off(PLANE, with_pending, np.random.default_rng(s))
        for s in range(5)
    )


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_proposals_with_many_pending_are_distinct_and_valid(preset: str) -> None:
    suggest = PRESETS[preset]
    builder = HistoryBuilder(PLANE)
    builder.update(_trials(PLANE, 30, 0, 2, _bowl))
    proposals = []
    rng = np.random.default_rng(4)
    for tid in range(30, 62):
        (a,) = suggest(PLANE, builder.snapshot(), rng)
        PLANE.check_assignment(a)
        proposals.append((a["x"], a["y"]))
        builder.update([Trial("t", tid, TrialState.RUNNING, a)])
    assert len(set(proposals)) == 32
    assert np.std(np.array(proposals), axis=0).min() > 0.05


def test_pending_trials_before_any_result_are_lies() -> None:
    # Only reachable with n_startup=0: nothing to predict from, so pending trials repel.
    suggest = tpe.configure(n_startup=0)
    space = compile_space({"x": hp.uniform("x", 0, 10)})
    pending = [Trial("t", i, TrialState.RUNNING, {"x": 5.0 + 0.01 * i}) for i in range(10)]
    history = History.from_trials(space, pending)
    xs = [suggest(space, history, np.random.default_rng(s))[0]["x"] for s in range(20)]
    assert min(abs(x - 5.05) for x in xs) > 2.0


def test_believed_trials_join_the_group_their_prediction_puts_them_in() -> None:
    space = compile_space({"x": hp.uniform("x", 0, 10)})
    xs = np.random.default_rng(0).uniform(0, 10, 40)
    trials = [
        Trial("t", i, TrialState.OK, {"x": float(x)}, loss=abs(float(x) - 3.0))
        for i, x in enumerate(xs)
    ]
    trials.append(Trial("t", 40, TrialState.RUNNING, {"x": 3.01}))
    trials.append(Trial("t", 41, TrialState.RUNNING, {"x": 9.5}))
    history = History.from_trials(space, trials)
    proposer = tpe._Proposer(PRESETS["default"], space, history, np.random.default_rng(0))
    below, above = proposer._split(0)
    assert 40 in below
    assert 41 in above
    # The multivariate split's N counts the finished trials only: 4 of 40 are below, one
    # of them the believed trial.
    assert len(below) == 4
    # The Hyperopt preset counts believed trials in N (ceil(0.25 * sqrt(42)) = 2 below).
    proposer = tpe._Proposer(PRESETS["hyperopt"], space, history, np.random.default_rng(0))
    below, above = proposer._split(0)
    assert len(below) == 2
    assert 41 in above
