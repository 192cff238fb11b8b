"""Random search: ancestral draws from the prior, independent of the history."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import rand
from asyncopt.space import compile_space
from asyncopt.storage.base import TrialState

from .helpers import SPACES, assert_valid, history_of


@pytest.mark.parametrize("name", sorted(SPACES))
def test_proposals_hold_exactly_the_active_labels_in_support(name: str) -> None:
    compiled = compile_space(SPACES[name])
    proposals = rand.suggest(compiled, history_of(compiled, [], []), np.random.default_rng(0), 300)
    assert len(proposals) == 300
    assert_valid(compiled, proposals)


def test_same_seed_same_proposals() -> None:
    compiled = compile_space(SPACES["conditional"])
    empty = history_of(compiled, [], [])
    first = rand.suggest(compiled, empty, np.random.default_rng(5), 20)
    assert rand.suggest(compiled, empty, np.random.default_rng(5), 20) == first
    assert rand.suggest(compiled, empty, np.random.default_rng(6), 20) != first


def test_the_history_is_ignored() -> None:
    compiled = compile_space(SPACES["every distribution"])
    empty = history_of(compiled, [], [])
    past = rand.suggest(compiled, empty, np.random.default_rng(1), 10)
    history = history_of(
        compiled, past, [1.0] * 5 + [None] * 5, [TrialState.OK] * 5 + [TrialState.RUNNING] * 5
    )
    assert rand.suggest(compiled, history, np.random.default_rng(2), 8) == rand.suggest(
        compiled, empty, np.random.default_rng(2), 8
    )


def test_n_zero() -> None:
    compiled = compile_space(SPACES["single"])
    assert rand.suggest(compiled, history_of(compiled, [], []), np.random.default_rng(0), 0) == []


def test_draws_follow_the_prior() -> None:
    space = {
        "c": hp.pchoice("c", [(0.2, hp.uniform("u", 2, 4)), (0.8, hp.normal("n", 5, 2))]),
        "lu": hp.loguniform("lu", 0, 4),
        "ri": hp.randint("ri", 3, 6),
    }
    compiled = compile_space(space)
    proposals = rand.suggest(
        compiled, history_of(compiled, [], []), np.random.default_rng(3), 20_000
    )
    c = np.array([p["c"] for p in proposals])
    assert np.mean(c == 0) == pytest.approx(0.2, abs=0.01)
    u = np.array([p["u"] for p in proposals if "u" in p])
    assert u.mean() == pytest.approx(3.0, abs=0.03)
    normal = np.array([p["n"] for p in proposals if "n" in p])
    assert normal.std() == pytest.approx(2.0, rel=0.03)
    logs = np.log([p["lu"] for p in proposals])
    assert logs.mean() == pytest.approx(2.0, abs=0.03)
    ri = np.bincount([p["ri"] for p in proposals], minlength=6)[3:] / len(proposals)
    np.testing.assert_allclose(ri, [1 / 3] * 3, atol=0.015)
    assert math.isclose(sum(ri), 1.0)


def test_configure() -> None:
    assert rand.configure() is rand.suggest
    with pytest.raises(TypeError, match="takes no options"):
        rand.configure(seed=1)
