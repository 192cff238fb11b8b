"""TPE with pending trials: the believer (constant_liar on) and ignoring them (off)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import _believer, tpe
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
    proposer = tpe._Suggestion(suggest, tpe.TPEState(), space, history, np.random.default_rng(0))
    return np.asarray(proposer.losses)


def test_a_pending_trial_is_believed_to_score_like_the_trials_around_it() -> None:
    points = [(1.0, 1.0, 5.0), (1.2, 1.0, 7.0), (1.0, 1.4, 9.0), (9.0, 9.0, 0.0), (8.0, 9.0, 1.0)]
    trials = [
        Trial("t", i, TrialState.OK, {"x": x, "y": y}, loss=loss)
        for i, (x, y, loss) in enumerate(points)
    ]
    # On a finished trial, and between two.
    trials.append(Trial("t", 5, TrialState.RUNNING, {"x": 1.2, "y": 1.0}))
    trials.append(Trial("t", 6, TrialState.QUEUED, {"x": 8.5, "y": 9.0}))
    history = History.from_trials(PLANE, trials)
    losses = _believed(tpe.configure(n_startup=3), PLANE, history)
    assert losses[:5].tolist() == [p[2] for p in points]
    assert losses[5] == pytest.approx(7.0, abs=0.1)
    assert 0.0 < losses[6] < 1.0
    # The history itself is left alone.
    assert np.isnan(history.losses[5:]).all()


def test_a_prediction_stays_within_one_range_of_the_neighbours_losses() -> None:
    # Two nearly equal points with very different losses: the fitted slope is steep,
    # and a pending trial further along the line would be predicted far off.
    points = [(1.0, 1.0, 0.0), (1.01, 1.0, 10.0), (6.0, 6.0, 5.0), (8.0, 2.0, 5.0)]
    trials = [
        Trial("t", i, TrialState.OK, {"x": x, "y": y}, loss=loss)
        for i, (x, y, loss) in enumerate(points)
    ]
    trials.append(Trial("t", 4, TrialState.RUNNING, {"x": 1.6, "y": 1.0}))
    trials.append(Trial("t", 5, TrialState.RUNNING, {"x": 0.4, "y": 1.0}))
    history = History.from_trials(PLANE, trials)
    losses = _believed(tpe.configure(n_startup=3), PLANE, history)
    assert losses[4] == pytest.approx(20.0)
    assert losses[5] == pytest.approx(-10.0)


def test_distances_count_categories_and_branches() -> None:
    space = compile_space(
        {
            "m": hp.choice(
                "m",
                [{"a": hp.uniform("a", 0, 10)}, {"b": hp.uniform("b", 0, 10)}],
            ),
            "c": hp.choice("c", ["p", "q"]),
        }
    )
    rows = [
        {"m": 0, "a": 5.0, "c": 0},
        {"m": 0, "a": 7.0, "c": 0},
        {"m": 0, "a": 5.0, "c": 1},
        {"m": 1, "b": 5.0, "c": 0},
    ]
    trials = [Trial("t", i, TrialState.OK, a, loss=1.0) for i, a in enumerate(rows)]
    trials.append(Trial("t", 4, TrialState.RUNNING, rows[0]))
    history = History.from_trials(space, trials)
    proposer = tpe._Suggestion(
        tpe.configure(n_startup=3), tpe.TPEState(), space, history, np.random.default_rng(0)
    )

    def between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _believer.distances(proposer.active, proposer.units, proposer.indices, a, b)

    distances = between(np.array([0]), np.arange(4))[0]
    # Same point; a moved by 0.2 of its range; another category; another branch (m
    # differs, and a and b are each active in only one of the two).
    assert distances.tolist() == pytest.approx([0.0, 0.04, 1.0, 3.0])
    grid = between(np.arange(4), np.arange(4))
    assert np.array_equal(grid, grid.T)
    assert (np.diag(grid) == 0).all()
    # Batched: one block of distances per leading index.
    batch = between(np.array([[0, 1], [2, 3]]), np.array([[0, 1, 2], [1, 2, 3]]))
    assert np.array_equal(batch[0], grid[np.ix_([0, 1], [0, 1, 2])])
    assert np.array_equal(batch[1], grid[np.ix_([2, 3], [1, 2, 3])])


def test_nearest_is_a_stable_sorts_first_columns() -> None:
    rng = np.random.default_rng(5)
    # Many ties (a coarse grid), infinite distances, and rows of every kind.
    apart = rng.integers(0, 6, (50, 300)).astype(float)
    apart[rng.random(apart.shape) < 0.2] = np.inf
    apart[3] = np.inf
    apart[4] = 1.0
    for k in (0, 1, 7, 40, 299, 300, 301):
        assert np.array_equal(_believer._nearest(apart, k), _believer._nearest_plain(apart, k))


def test_distances_in_blocks_give_the_same_beliefs(monkeypatch: pytest.MonkeyPatch) -> None:
    history = History.from_trials(PLANE, _trials(PLANE, 60, 20, 3, _bowl))
    whole = _believed(tpe.configure(), PLANE, history)
    monkeypatch.setattr(_believer, "_BLOCK", 7)
    assert np.allclose(_believed(tpe.configure(), PLANE, history), whole, rtol=1e-9, atol=0)


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
    proposer = tpe._Suggestion(
        PRESETS["default"], tpe.TPEState(), space, history, np.random.default_rng(0)
    )
    below, above = proposer._split(0)
    assert 40 in below
    assert 41 in above
    # The multivariate split's N counts the finished trials only: 4 of 40 are below, one
    # of them the believed trial.
    assert len(below) == 4
    # The Hyperopt preset counts believed trials in N (ceil(0.25 * sqrt(42)) = 2 below).
    proposer = tpe._Suggestion(
        PRESETS["hyperopt"], tpe.TPEState(), space, history, np.random.default_rng(0)
    )
    below, above = proposer._split(0)
    assert len(below) == 2
    assert 41 in above


def test_a_believed_improvement_takes_several_places_below() -> None:
    places = _believer._IMPROVEMENT_PLACES
    losses = np.array([5.0, 1.0, 3.0, 0.5, 2.0, 4.0])
    believed = np.array([False, False, False, True, True, False])
    # Row 3 is believed to beat the best finished trial (1.0): it takes `places` places;
    # row 4, believed but no improvement, takes one like a finished trial.
    for count, expected in [(1, {3}), (places, {3}), (places + 1, {3, 1}), (places + 2, {3, 1, 4})]:
        assert set(np.flatnonzero(_believer.believed_below(losses, believed, count))) == expected
    assert not _believer.believed_below(losses, believed, 0).any()
    # Without a predicted improvement: the `count` smallest, ties and NaNs as a stable sort.
    plain = np.array([2.0, np.nan, 1.0, 2.0, 3.0])
    for flags in (np.zeros(5, dtype=bool), np.array([False, False, False, True, True])):
        got = _believer.believed_below(plain, flags, 3)
        assert np.array_equal(got, tpe._smallest(plain, 3))
    # Nothing finished: every believed trial counts as an improvement.
    assert _believer.believed_below(np.array([2.0, 1.0, 3.0]), np.ones(3, dtype=bool), 5).sum() == 2


def test_a_pending_trial_predicted_best_makes_the_below_group_alone() -> None:
    space = compile_space({"x": hp.uniform("x", 0, 10)})
    xs = np.linspace(0.0, 10.0, 41)[1::2]  # 20 points, none at the minimum 5.0
    trials = [
        Trial("t", i, TrialState.OK, {"x": float(x)}, loss=(float(x) - 5.0) ** 2)
        for i, x in enumerate(xs)
    ]
    trials.append(Trial("t", 20, TrialState.RUNNING, {"x": 5.0}))
    history = History.from_trials(space, trials)
    proposer = tpe._Suggestion(
        PRESETS["default"], tpe.TPEState(), space, history, np.random.default_rng(0)
    )
    assert proposer.losses[20] < proposer.losses[:20].min()
    below, above = proposer._split(0)
    # n_below(20) = 2 places, both taken by the predicted improvement.
    assert below.tolist() == [20]
    assert len(above) == 20
    # The sequential split is untouched: the 2 best finished trials.
    finished = History.from_trials(space, trials[:20])
    proposer = tpe._Suggestion(
        PRESETS["default"], tpe.TPEState(), space, finished, np.random.default_rng(0)
    )
    assert sorted(proposer._split(0)[0].tolist()) == [9, 10]


def test_with_trials_believed_l_may_grow_sharper(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int | None] = []
    widths = tpe._Suggestion._widths

    def recording(
        self: tpe._Suggestion,
        axes: object,
        numeric: np.ndarray,
        lied: np.ndarray,
        rule: str,
        clip: int | None = None,
    ) -> np.ndarray:
        if clip is not None:
            counts.append(clip)
        return widths(self, axes, numeric, lied, rule, clip)  # type: ignore[arg-type]

    monkeypatch.setattr(tpe._Suggestion, "_widths", recording)
    trials = _trials(PLANE, 60, 16, 3, _bowl)
    for history in (History.from_trials(PLANE, trials[:60]), History.from_trials(PLANE, trials)):
        proposer = tpe._Suggestion(
            PRESETS["default"], tpe.TPEState(), PLANE, history, np.random.default_rng(0)
        )
        below, above = proposer._split(0)
        proposer.propose(1)
        # l's magic clip counts the geometric mean of its own and all observations (one
        # proposal in flight), times the factor while trials are believed.
        expected = max(len(below), int(np.sqrt(len(below) * (len(below) + len(above)))))
        factor = _believer.BELIEVED_CLIP_FACTOR if proposer.any_believed else 1
        assert counts.pop() == factor * expected
    assert _believer.BELIEVED_CLIP_FACTOR > 1
