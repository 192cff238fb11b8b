"""Pruned trials in TPE's history: observations ranked after OK trials, by step then value."""

from __future__ import annotations

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import anneal, rand, tpe
from asyncopt.history import History
from asyncopt.space.compile import compile_space
from asyncopt.storage.base import Trial, TrialState

LINE = compile_space({"x": hp.uniform("x", 0, 1)})
PRESETS = {"default": tpe.configure(), "hyperopt": tpe.configure(preset="hyperopt")}


def pruned(tid: int, x: float, reports: dict[int, float]) -> Trial:
    last = reports[max(reports)] if reports else None
    return Trial("t", tid, TrialState.PRUNED, {"x": x}, loss=last, intermediate=reports)


def ok(tid: int, x: float, loss: float) -> Trial:
    return Trial("t", tid, TrialState.OK, {"x": x}, loss=loss, intermediate={9: loss})


def proposals(suggest: tpe.TPE, history: History, seeds: int = 40) -> np.ndarray:
    return np.array(
        [suggest(LINE, history, np.random.default_rng(seed))[0]["x"] for seed in range(seeds)]
    )


def test_pruned_order_is_by_step_reached_then_last_value() -> None:
    trials = [
        pruned(0, 0.1, {0: 1.0, 3: 0.5}),
        pruned(1, 0.2, {}),  # no report: last
        pruned(2, 0.3, {0: 1.0, 5: 9.0}),  # furthest: first, whatever its value
        ok(3, 0.4, 0.1),
        pruned(4, 0.5, {3: 0.2}),  # same step as trial 0, lower value
        pruned(5, 0.6, {3: float("nan")}),  # same step, NaN value: after the numbers
        pruned(6, 0.7, {3: 0.2}),  # a tie with trial 4: by row
    ]
    history = History.from_trials(LINE, trials)
    assert history.tids[history.pruned_order()].tolist() == [2, 4, 6, 0, 5, 1]
    assert history.pruned.tolist() == [True, True, True, False, True, True, True]
    np.testing.assert_array_equal(history.last_steps[:3], [3, np.nan, 5])
    np.testing.assert_array_equal(history.last_values[3:5], [np.nan, 0.2])


def test_pruned_columns_follow_a_trial_that_is_pruned_later() -> None:
    history = History.from_trials(LINE, [Trial("t", 0, TrialState.RUNNING, {"x": 0.5})])
    assert history.pruned_order().tolist() == []
    again = History.from_trials(LINE, [pruned(0, 0.5, {4: 2.0})])
    assert again.pruned_order().tolist() == [0]
    pending = again.with_pending([1], [{"x": 0.1}])
    assert np.isnan(pending.last_steps[1])
    assert pending.pruned_order().tolist() == [0]


@pytest.mark.parametrize("preset", PRESETS)
def test_pruned_trials_count_toward_startup(preset: str) -> None:
    suggest = PRESETS[preset]
    # Only pruned trials (as many as n_startup): TPE models them instead of drawing the
    # prior. The one that went furthest (x = 0.8) is the below group: proposals go its
    # way, away from the others (g).
    n = suggest.n_startup
    xs = np.linspace(0.0, 0.6, n - 1)
    trials = [pruned(i, float(x), {0: 1.0, 1: 1.0}) for i, x in enumerate(xs)]
    trials.append(pruned(n - 1, 0.8, {0: 1.0, 1: 1.0, 5: 1.0}))
    chosen = proposals(suggest, History.from_trials(LINE, trials))
    prior = proposals(suggest, History.from_trials(LINE, trials[:-1]))  # startup: prior
    assert np.mean(chosen > 0.7) > 0.9
    assert np.mean(prior > 0.7) < 0.6


@pytest.mark.parametrize("preset", PRESETS)
def test_pruned_trials_join_the_below_group_in_rank_order(preset: str) -> None:
    # One below place, and no forgetting (it would favour the oldest trials' region).
    suggest = tpe.configure(preset=preset, n_startup=5, max_below=1, linear_forgetting=None)
    # Pruned trials spread over [0, 1], stopped at step 1; two stopped at step 8, at 0.25
    # and 0.75. The lower value of the two takes the below place ...
    spread = [pruned(i, float(x), {1: 5.0}) for i, x in enumerate(np.linspace(0, 1, 30))]
    late = [pruned(30, 0.25, {0: 9.0, 8: 2.0}), pruned(31, 0.75, {0: 9.0, 8: 3.0})]
    toward_25 = proposals(suggest, History.from_trials(LINE, [*spread, *late]))
    # ... and with the values swapped, the other one does;
    swapped = [pruned(30, 0.25, {0: 9.0, 8: 3.0}), pruned(31, 0.75, {0: 9.0, 8: 2.0})]
    toward_75 = proposals(suggest, History.from_trials(LINE, [*spread, *swapped]))
    # a later step beats a lower value.
    later = [pruned(30, 0.25, {0: 9.0, 8: 0.1}), pruned(31, 0.75, {0: 9.0, 9: 50.0})]
    toward_later = proposals(suggest, History.from_trials(LINE, [*spread, *later]))
    assert np.mean(toward_25 < 0.5) > 0.8
    assert np.mean(toward_75 > 0.5) > 0.8
    np.testing.assert_array_equal(toward_later, toward_75)


def test_ok_trials_rank_before_pruned_ones() -> None:
    suggest = PRESETS["default"]
    # Ten OK trials, the best at 0.2; ten pruned at 0.9 with values far below every OK
    # loss. N = 20 gives two below places, both OK trials: proposals stay near 0.2.
    oks = [ok(i, 0.2 + 0.05 * i, 1.0 + i) for i in range(10)]
    prunes = [pruned(10 + i, 0.9 + 0.005 * i, {0: -100.0, 8: -100.0}) for i in range(10)]
    chosen = proposals(suggest, History.from_trials(LINE, [*oks, *prunes]))
    assert np.median(np.abs(chosen - 0.22)) < 0.1
    assert np.mean(chosen > 0.8) < 0.1


def test_tpe_without_pruned_trials_is_unchanged_by_the_columns() -> None:
    # The same OK trials with and without extra CANCELLED ones (not observations):
    # pruned-trial columns add nothing when there are no pruned trials.
    oks = [ok(i, float(x), float((x - 0.3) ** 2)) for i, x in enumerate(np.linspace(0, 1, 12))]
    cancelled = Trial("t", 50, TrialState.CANCELLED, {"x": 0.99})
    plain = proposals(PRESETS["default"], History.from_trials(LINE, oks), seeds=5)
    more = proposals(PRESETS["default"], History.from_trials(LINE, [*oks, cancelled]), seeds=5)
    np.testing.assert_array_equal(plain, more)


def test_rand_and_anneal_accept_pruned_trials() -> None:
    trials = [pruned(i, 0.1 * i, {0: 1.0}) for i in range(5)] + [ok(5, 0.5, 1.0)]
    history = History.from_trials(LINE, trials)
    rng = np.random.default_rng(0)
    for suggest in (rand.suggest, anneal.suggest):
        (proposal,) = suggest(LINE, history, rng)
        assert 0.0 <= proposal["x"] <= 1.0


def _split_of(suggest: tpe.TPE, history: History) -> tpe._Suggestion:
    return tpe._Suggestion(suggest, tpe.TPEState(), LINE, history, np.random.default_rng(0))


@pytest.mark.parametrize("preset", PRESETS)
def test_with_only_pruned_trials_pending_ones_are_believed_from_them(preset: str) -> None:
    # No trial is OK yet, as often with a pruner: twelve trials stopped at step 1 over
    # [0, 0.5], one at step 5 at 0.9. A running trial at 0.9 and a queued one at 0.1 are
    # believed from the pruned trials around them (not lies in g): the one next to the
    # trial that went furthest ranks before the other.
    stopped = [pruned(i, float(x), {1: 2.0 + x}) for i, x in enumerate(np.linspace(0, 0.5, 12))]
    furthest = pruned(12, 0.9, {1: 1.0, 5: 0.5})
    running = Trial("t", 13, TrialState.RUNNING, {"x": 0.9}, intermediate={1: 0.9})
    queued = Trial("t", 14, TrialState.QUEUED, {"x": 0.1})
    history = History.from_trials(LINE, [*stopped, furthest, running, queued])
    split = _split_of(PRESETS[preset], history)
    assert not split.lied.any()
    assert split.believed.tolist() == [False] * 13 + [True, True]
    assert split.losses[13] < split.losses[14]
    assert split.losses[13] < split.losses[:12].min()
    # Without the liar, pending trials are left out.
    off = _split_of(tpe.configure(preset=preset, constant_liar=False), history)
    assert not off.believed.any()
    assert not off.lied.any()


def test_once_a_trial_is_ok_pending_ones_are_believed_from_the_ok_trials() -> None:
    oks = [ok(i, float(x), float((x - 0.3) ** 2)) for i, x in enumerate(np.linspace(0, 1, 12))]
    running = Trial("t", 12, TrialState.RUNNING, {"x": 0.35})
    prunes = [pruned(20 + i, 0.3 + 0.01 * i, {1: 9.0}) for i in range(5)]
    plain = _split_of(PRESETS["default"], History.from_trials(LINE, [*oks, running]))
    mixed = _split_of(PRESETS["default"], History.from_trials(LINE, [*oks, running, *prunes]))
    # The pruned trials next to it change nothing in its belief.
    assert mixed.losses[12] == plain.losses[12]
    assert mixed.believed[12]
    assert not mixed.lied.any()
