"""Annealing: valid proposals, the reference trial, shrinking neighbourhoods, options, quality."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import anneal, rand
from asyncopt.space import Assignment, compile_space, space_eval
from asyncopt.storage.base import TrialState

from .helpers import DOMAINS, SPACES, assert_valid, history_of, minimize


def _history_by_annealing(space: Any, evals: int, seed: int) -> Any:
    """A history built by annealing on a loss that depends on every active value."""
    compiled = compile_space(space)
    rng = np.random.default_rng(seed)
    assignments: list[dict[str, Any]] = []
    losses: list[float] = []
    for _ in range(evals):
        history = history_of(compiled, assignments, losses)
        (assignment,) = anneal.suggest(compiled, history, rng)
        assignments.append(assignment)
        losses.append(sum(math.sin(v) for v in assignment.values()))
    return compiled, history_of(compiled, assignments, losses)


# -- valid proposals ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPACES))
def test_proposals_hold_exactly_the_active_labels_in_support(name: str) -> None:
    compiled, history = _history_by_annealing(SPACES[name], evals=25, seed=3)
    proposals = anneal.suggest(compiled, history, np.random.default_rng(0), n=200)
    assert len(proposals) == 200
    assert_valid(compiled, proposals)


def test_every_branch_of_a_conditional_space_is_still_proposed() -> None:
    compiled, history = _history_by_annealing(SPACES["conditional"], evals=10, seed=1)
    proposals = anneal.suggest(compiled, history, np.random.default_rng(0), n=300)
    assert {p["model"] for p in proposals} == {0, 1, 2}
    assert {p["split"] for p in proposals if p["model"] == 1} == {0, 1}


def test_same_seed_same_proposals_and_the_history_is_untouched() -> None:
    compiled, history = _history_by_annealing(SPACES["every distribution"], evals=20, seed=5)
    before = {label: column.copy() for label, column in history.values.items()}
    first = anneal.suggest(compiled, history, np.random.default_rng(42), n=10)
    second = anneal.suggest(compiled, history, np.random.default_rng(42), n=10)
    assert first == second
    assert anneal.suggest(compiled, history, np.random.default_rng(43), n=10) != first
    for label, column in history.values.items():
        np.testing.assert_array_equal(column, before[label])


def test_n() -> None:
    compiled, history = _history_by_annealing(SPACES["single"], evals=5, seed=0)
    assert anneal.suggest(compiled, history, np.random.default_rng(0), n=0) == []
    assert len(anneal.suggest(compiled, history, np.random.default_rng(0), n=7)) == 7
    with pytest.raises(ValueError, match="n must be >= 0"):
        anneal.suggest(compiled, history, np.random.default_rng(0), n=-1)


# -- no reference: the prior ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "state", [TrialState.FAIL, TrialState.RUNNING, TrialState.QUEUED, TrialState.CANCELLED]
)
def test_without_ok_trials_it_is_random_search(state: TrialState) -> None:
    compiled = compile_space(SPACES["every distribution"])
    seeded = rand.suggest(compiled, history_of(compiled, [], []), np.random.default_rng(9), n=30)
    history = history_of(compiled, seeded, [None] * 30, [state] * 30)
    for past in (history_of(compiled, [], []), history):
        proposals = anneal.suggest(compiled, past, np.random.default_rng(1), n=5)
        assert proposals == rand.suggest(compiled, past, np.random.default_rng(1), n=5)


def test_pending_trials_change_nothing() -> None:
    compiled, history = _history_by_annealing(SPACES["conditional"], evals=15, seed=2)
    finished = [
        {label: history.values[label][row] for label in compiled.labels}
        for row in range(len(history))
    ]
    assignments = [{k: v for k, v in row.items() if not math.isnan(v)} for row in finished]
    losses = list(history.losses)
    pending = rand.suggest(compiled, history, np.random.default_rng(0), n=10)
    with_pending = history_of(
        compiled,
        assignments + pending,
        losses + [None] * 10,
        [TrialState.OK] * 15 + [TrialState.RUNNING] * 5 + [TrialState.QUEUED] * 5,
    )
    expected = anneal.suggest(compiled, history, np.random.default_rng(4), n=20)
    assert anneal.suggest(compiled, with_pending, np.random.default_rng(4), n=20) == expected


# -- the reference trial ------------------------------------------------------------------------


def _ranked_categories(size: int) -> tuple[Any, Any]:
    """A choice whose i-th trial chose option i with loss i (so option = rank)."""
    compiled = compile_space(hp.choice("c", list(range(size))))
    losses = np.random.default_rng(0).permutation(size).astype(float)
    assignments: list[Assignment] = [{"c": int(rank)} for rank in losses]
    return compiled, history_of(compiled, assignments, losses.tolist())


@pytest.mark.parametrize("avg_best_idx", [1.0, 2.0, 4.0])
def test_reference_rank_is_geometric_with_the_given_mean(avg_best_idx: float) -> None:
    compiled, history = _ranked_categories(60)
    # A huge shrink_coef makes the categorical neighbourhood the reference itself.
    algo = anneal.configure(avg_best_idx=avg_best_idx, shrink_coef=1e12)
    ranks = np.array([p["c"] for p in algo(compiled, history, np.random.default_rng(7), n=20_000)])
    p = 1.0 / avg_best_idx
    # ranks are 0-based: P(rank = k) = p (1 - p)^k, mean avg_best_idx - 1
    assert ranks.mean() == pytest.approx(avg_best_idx - 1.0, abs=0.05)
    for k in range(4):
        assert np.mean(ranks == k) == pytest.approx(p * (1.0 - p) ** k, abs=0.015)


def test_rank_is_capped_at_the_worst_trial() -> None:
    compiled, history = _ranked_categories(3)
    algo = anneal.configure(avg_best_idx=50.0, shrink_coef=1e12)
    ranks = [p["c"] for p in algo(compiled, history, np.random.default_rng(0), n=2000)]
    counts = np.bincount(ranks, minlength=3)
    assert counts.sum() == 2000
    assert counts[2] > counts[0] > 0


def test_one_reference_is_shared_by_every_parameter_of_a_proposal() -> None:
    space = {"x": hp.choice("x", list(range(30))), "y": hp.randint("y", 100, 130)}
    compiled = compile_space(space)
    losses = np.random.default_rng(0).random(30).tolist()
    history = history_of(compiled, [{"x": i, "y": 100 + i} for i in range(30)], losses)
    algo = anneal.configure(shrink_coef=1e12)
    proposals = algo(compiled, history, np.random.default_rng(3), n=500)
    assert all(p["y"] == 100 + p["x"] for p in proposals)
    # each proposal draws its own reference
    assert len({p["x"] for p in proposals}) > 3


def test_a_label_the_reference_does_not_use_is_drawn_from_the_prior() -> None:
    space = hp.choice("c", [{"a": hp.uniform("a", 0, 1)}, {"b": hp.uniform("b", 0, 1)}])
    compiled = compile_space(space)
    # Every trial chose branch 0 with a = 0.5: only "a" has a reference.
    history = history_of(compiled, [{"c": 0, "a": 0.5}] * 40, [1.0] * 40)
    proposals = anneal.suggest(compiled, history, np.random.default_rng(0), n=4000)
    assert_valid(compiled, proposals)
    a = np.array([p["a"] for p in proposals if p["c"] == 0])
    b = np.array([p["b"] for p in proposals if p["c"] == 1])
    half = 0.5 / (1 + 40 * 0.1)
    assert a.min() >= 0.5 - half
    assert a.max() <= 0.5 + half
    # c keeps the reference's branch with probability 1 - s + s / 2 (s = 1/5)
    assert len(b) / len(proposals) == pytest.approx(0.1, abs=0.02)
    assert b.min() < 0.05
    assert b.max() > 0.95


# -- neighbourhoods -------------------------------------------------------------------------------


def _proposals_around(space: Any, value: float, observations: int, n: int = 4000) -> np.ndarray:
    """Proposals for the one label of ``space`` when every trial had ``value``."""
    compiled = compile_space(space)
    (label,) = compiled.labels
    history = history_of(compiled, [{label: value}] * observations, [0.0] * observations)
    proposals = anneal.suggest(compiled, history, np.random.default_rng(11), n=n)
    assert_valid(compiled, proposals)
    return np.array([p[label] for p in proposals], dtype=float)


@pytest.mark.parametrize("observations", [1, 10, 100])
def test_uniform_window_shrinks_with_observations(observations: int) -> None:
    x = _proposals_around(hp.uniform("x", -2, 8), 3.0, observations)
    half = 0.5 * 10 / (1 + 0.1 * observations)
    assert x.min() >= 3.0 - half
    assert x.max() <= 3.0 + half
    assert x.min() < 3.0 - 0.95 * half
    assert x.max() > 3.0 + 0.95 * half
    assert x.std() == pytest.approx(2 * half / math.sqrt(12), rel=0.05)


def test_uniform_window_is_shifted_inside_the_bounds() -> None:
    x = _proposals_around(hp.uniform("x", 0, 1), 0.99, observations=10)
    # width 1/2, shifted to [0.5, 1]
    assert x.min() >= 0.5
    assert x.max() <= 1.0
    assert x.mean() == pytest.approx(0.75, abs=0.01)


def test_loguniform_window_is_in_log_space() -> None:
    x = _proposals_around(hp.loguniform("x", math.log(1e-6), math.log(1.0)), 1e-3, observations=20)
    logs = np.log(x)
    half = 0.5 * math.log(1e6) / 3
    assert logs.min() >= math.log(1e-3) - half - 1e-9
    assert logs.max() <= math.log(1e-3) + half + 1e-9
    assert np.median(logs) == pytest.approx(math.log(1e-3), abs=0.2)


def test_quantized_window_stays_on_the_grid() -> None:
    x = _proposals_around(hp.quniform("x", 0, 100, 5), 50.0, observations=40)
    # window [40, 60] (width 100 / 5): 45, 50 and 55 own 5 units each, 40 and 60 half that
    counts = {v: np.mean(x == v) for v in (40.0, 45.0, 50.0, 55.0, 60.0)}
    assert sum(counts.values()) == 1.0
    for value, expected in zip(counts, [0.125, 0.25, 0.25, 0.25, 0.125], strict=True):
        assert counts[value] == pytest.approx(expected, abs=0.025)


def test_uniformint_window_covers_neighbouring_integers() -> None:
    x = _proposals_around(hp.uniformint("x", 0, 20), 0.0, observations=10)
    # width 21 / 2 = 10.5 cells shifted to start at the lower edge: 0..10
    assert set(np.unique(x)) == set(range(11))


@pytest.mark.parametrize("observations", [1, 30])
def test_normal_sigma_shrinks(observations: int) -> None:
    x = _proposals_around(hp.normal("x", 0, 4), 10.0, observations)
    assert x.mean() == pytest.approx(10.0, abs=0.1)
    assert x.std() == pytest.approx(4 / (1 + 0.1 * observations), rel=0.05)


def test_lognormal_neighbourhood_is_around_the_log() -> None:
    x = _proposals_around(hp.lognormal("x", 0, 2), 50.0, observations=10)
    logs = np.log(x)
    assert logs.mean() == pytest.approx(math.log(50.0), abs=0.05)
    assert logs.std() == pytest.approx(1.0, rel=0.05)


def test_qlognormal_reference_at_zero_stays_finite() -> None:
    x = _proposals_around(hp.qlognormal("x", 0, 1, 10), 0.0, observations=10)
    # 0 stands for anything below q / 2: the neighbourhood is centred on log(5)
    assert np.all(x % 10 == 0)
    assert np.mean(x == 0.0) == pytest.approx(0.5, abs=0.03)
    assert np.mean(x == 10.0) > 0.4


@pytest.mark.parametrize("observations", [2, 40])
def test_categorical_mixes_the_reference_with_the_prior(observations: int) -> None:
    x = _proposals_around(
        hp.pchoice("x", [(0.5, "a"), (0.25, "b"), (0.25, "c")]), 2.0, observations, n=20_000
    )
    s = 1 / (1 + 0.1 * observations)
    expected = (1 - s) * np.array([0, 0, 1]) + s * np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(
        np.bincount(x.astype(int), minlength=3) / x.size, expected, atol=0.015
    )


def test_randint_keeps_its_offset() -> None:
    x = _proposals_around(hp.randint("x", 10, 15), 13.0, observations=100)
    assert set(np.unique(x)) <= set(range(10, 15))
    assert np.mean(x == 13.0) > 0.9


def test_failed_trials_count_as_observations() -> None:
    compiled = compile_space(hp.uniform("x", 0, 1))
    ok = [{"x": 0.5}] * 5
    failed = rand.suggest(compiled, history_of(compiled, [], []), np.random.default_rng(0), n=45)
    history = history_of(
        compiled, ok + failed, [0.0] * 5 + [None] * 45, [TrialState.OK] * 5 + [TrialState.FAIL] * 45
    )
    x = np.array(
        [p["x"] for p in anneal.suggest(compiled, history, np.random.default_rng(1), 2000)]
    )
    half = 0.5 / (1 + 0.1 * 50)
    assert x.min() >= 0.5 - half
    assert x.max() <= 0.5 + half


def test_shrink_coef_sets_the_pace() -> None:
    compiled = compile_space(hp.uniform("x", 0, 1))
    history = history_of(compiled, [{"x": 0.5}] * 10, [0.0] * 10)
    slow = anneal.configure(shrink_coef=0.01)(compiled, history, np.random.default_rng(0), 2000)
    fast = anneal.configure(shrink_coef=1.0)(compiled, history, np.random.default_rng(0), 2000)
    spread_slow = np.ptp([p["x"] for p in slow])
    spread_fast = np.ptp([p["x"] for p in fast])
    assert spread_slow == pytest.approx(1 / 1.1, rel=0.02)
    assert spread_fast == pytest.approx(1 / 11, rel=0.02)


# -- options ---------------------------------------------------------------------------------


def test_configure_returns_a_frozen_suggest_with_the_options() -> None:
    algo = anneal.configure(avg_best_idx=3, shrink_coef=0.5)
    assert (algo.avg_best_idx, algo.shrink_coef) == (3.0, 0.5)
    assert algo == anneal.configure(avg_best_idx=3.0, shrink_coef=0.5)
    assert hash(algo) == hash(anneal.configure(avg_best_idx=3.0, shrink_coef=0.5))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        algo.shrink_coef = 1.0  # type: ignore[misc]
    default = anneal.configure()
    compiled, history = _history_by_annealing(SPACES["every distribution"], evals=10, seed=0)
    assert default(compiled, history, np.random.default_rng(5), 4) == anneal.suggest(
        compiled, history, np.random.default_rng(5), 4
    )


@pytest.mark.parametrize("value", [0.0, 0.5, -1.0, math.nan, math.inf])
def test_configure_rejects_bad_avg_best_idx(value: float) -> None:
    with pytest.raises(ValueError, match="avg_best_idx must be a finite number >= 1"):
        anneal.configure(avg_best_idx=value)


@pytest.mark.parametrize("value", [0.0, -0.1, math.nan, math.inf])
def test_configure_rejects_bad_shrink_coef(value: float) -> None:
    with pytest.raises(ValueError, match="shrink_coef must be a finite number > 0"):
        anneal.configure(shrink_coef=value)


@pytest.mark.parametrize("value", ["2", None, True])
def test_configure_rejects_non_numbers(value: Any) -> None:
    with pytest.raises(TypeError, match="real numbers"):
        anneal.configure(avg_best_idx=value)


def test_configure_rejects_unknown_options() -> None:
    with pytest.raises(TypeError, match="gamma"):
        anneal.configure(gamma=0.25)  # type: ignore[call-arg]


# -- acceptance: annealing beats random search ----------------------------------------------------

SEEDS = range(5)


@pytest.mark.parametrize(
    ("domain", "evals", "max_ratio"),
    [
        ("quadratic", 100, 0.1),
        ("lognormal target", 100, 0.1),
        ("conditional choice", 100, 0.1),
        ("many distributions", 100, 0.6),
    ],
)
def test_anneal_beats_random_search(domain: str, evals: int, max_ratio: float) -> None:
    space, objective = DOMAINS[domain]
    random_best = [minimize(rand.suggest, space, objective, evals, seed) for seed in SEEDS]
    anneal_best = [minimize(anneal.suggest, space, objective, evals, seed) for seed in SEEDS]
    assert np.mean(anneal_best) < max_ratio * np.mean(random_best)
    assert sum(a < r for a, r in zip(anneal_best, random_best, strict=True)) >= 4


def test_acceptance_objectives_have_their_stated_minimum() -> None:
    space, objective = DOMAINS["conditional choice"]
    best = {"branch": 1, "b_lr": 1e-3, "b_n": 7, "b_act": 0}
    assert objective(space_eval(compile_space(space), best)) == pytest.approx(0.0, abs=1e-12)


def test_reference_lookup_by_partition_matches_the_stable_sort() -> None:
    rng = np.random.default_rng(0)
    # many ties, infinities, rows out of order
    losses = np.round(rng.normal(size=3000), 1)
    losses[::97] = math.inf
    losses[::89] = -math.inf
    rows = rng.permutation(5000)[:3000]
    for n in (1, 3, 40):
        ranks = np.minimum(rng.geometric(0.3, n) - 1, losses.size - 1)
        expected = rows[np.argsort(losses, kind="stable")[ranks]]
        for partial in (True, False):
            found = anneal._rows_at_ranks(losses, rows, ranks, partial=partial)
            np.testing.assert_array_equal(found, expected)
