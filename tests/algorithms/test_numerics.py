"""No suggest function raises a floating-point error, for extreme spaces and histories.

Everything runs under ``numpy.errstate(all="raise", under="ignore")``: an overflow, a
division by zero or an invalid operation anywhere in a suggest function fails the test.
The proposals must still be valid (active labels only, finite, in support).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import anneal, rand
from asyncopt.history import History
from asyncopt.space import CompiledSpace, compile_space
from asyncopt.space.distributions import Distribution
from asyncopt.space.evaluate import Assignment
from asyncopt.storage.base import TrialState

from .helpers import SPACES, assert_valid, history_of

Suggest = Callable[..., list[Assignment]]

#: Every suggest function under test; other algorithms append theirs here.
SUGGESTS: list[Any] = [
    pytest.param(rand.suggest, id="rand"),
    pytest.param(anneal.suggest, id="anneal"),
    pytest.param(anneal.configure(avg_best_idx=1e300, shrink_coef=1e300), id="anneal-extreme"),
    pytest.param(anneal.configure(avg_best_idx=1.0, shrink_coef=1e-300), id="anneal-greedy"),
]

BIG = 1.7e308
EXTREME_SPACES: dict[str, Any] = {
    "huge bounds": {
        "u": hp.uniform("u", -BIG, BIG),
        "qu": hp.quniform("qu", -1e300, 1e300, 1e-300),
        "ui": hp.uniformint("ui", -(2**53), 2**53),
        "ri": hp.randint("ri", -(2**53), 2**53),
        "lu": hp.loguniform("lu", -709, 709),
        "qlu": hp.qloguniform("qlu", -700, 700, 1e-300),
    },
    "tiny widths": {
        "u": hp.uniform("u", 0, 1e-300),
        "ulp": hp.uniform("ulp", 1.0, 1.0 + 2.2e-16),
        "far": hp.uniform("far", 1e300, 1.0000001e300),
        "qu": hp.quniform("qu", 0, 1e-300, 1e300),
        "lu": hp.loguniform("lu", -709, -708.9999999),
        "qlu": hp.qloguniform("qlu", -5, 5, 1e300),
        "ui": hp.uniformint("ui", 0, 1),
        "ri": hp.randint("ri", 1),
        "c": hp.choice("c", ["only"]),
    },
    "huge and tiny sigma": {
        "n": hp.normal("n", 0, BIG),
        "nmu": hp.normal("nmu", BIG, BIG),
        "ntiny": hp.normal("ntiny", 1e308, 1e-300),
        "qn": hp.qnormal("qn", 0, 1e300, 1e-300),
        "qnbig": hp.qnormal("qnbig", 0, 1, 1e300),
        "ln": hp.lognormal("ln", 0, 1e5),
        "lnedge": hp.lognormal("lnedge", 709, 1e-300),
        "qln": hp.qlognormal("qln", -709, 1e3, 1e300),
        "qlntiny": hp.qlognormal("qlntiny", 0, 50, 1e-300),
    },
    "degenerate categories": {
        "pc": hp.pchoice("pc", [(0.0, "never"), (1.0, hp.uniform("x", -BIG, BIG)), (0.0, None)]),
        "c": hp.choice("c", [hp.lognormal("y", 0, 1e4), hp.qloguniform("z", -700, 700, 1e300)]),
    },
    **SPACES,
}


def _edge_values(dist: Distribution) -> list[float]:
    """Raw values at the edges of the support (bounds, 0, the largest floats)."""
    candidates: list[float] = [0.0, -0.0, 5e-324, 1e-300, -1e-300, BIG, -BIG, 1.0]
    if dist.is_bounded:
        candidates += [dist.low, dist.high]
        if dist.log:
            candidates += [math.exp(dist.low), math.exp(dist.high)]
    if dist.is_categorical:
        candidates += [float(dist.offset), float(dist.offset + dist.size - 1)]
    if dist.is_normal:
        candidates += [dist.mu, dist.mu + 40 * dist.sigma if dist.sigma < 1e300 else BIG]
    if dist.q is not None and dist.name != "uniformint":
        candidates += [round(c / dist.q) * dist.q for c in candidates if abs(c / dist.q) < 1e15]
    return [dist.to_python(c) for c in candidates if math.isfinite(c) and dist.contains(c)]


def _edge_assignments(space: CompiledSpace, count: int, seed: int) -> list[Assignment]:
    """Prior draws whose active values are replaced by random edge values."""
    rng = np.random.default_rng(seed)
    assignments = rand.suggest(space, History.empty(space), rng, count)
    for assignment in assignments:
        for label in assignment:
            if space[label].dist.name in ("choice", "pchoice"):
                continue  # changing a branch would change which labels are active
            edges = _edge_values(space[label].dist)
            if edges and rng.random() < 0.7:
                assignment[label] = edges[int(rng.integers(len(edges)))]
    assert_valid(space, assignments)
    return assignments


def _histories(space: CompiledSpace) -> dict[str, History]:
    prior = rand.suggest(space, History.empty(space), np.random.default_rng(0), 30)
    edges = _edge_assignments(space, 30, seed=1)
    return {
        "empty": History.empty(space),
        "all failed": history_of(space, edges, [None] * 30, [TrialState.FAIL] * 30),
        "pending only": history_of(
            space, prior, [None] * 30, [TrialState.RUNNING] * 15 + [TrialState.QUEUED] * 15
        ),
        "cancelled only": history_of(space, edges, [None] * 30, [TrialState.CANCELLED] * 30),
        "one ok": history_of(space, edges[:1], [0.0]),
        "all tied": history_of(space, edges, [1.0] * 30),
        "all tied at huge losses": history_of(space, prior, [BIG] * 30),
        "extreme losses": history_of(
            space, edges, [(-BIG, BIG, 0.0, 5e-324, -1e-300, math.inf)[i % 6] for i in range(30)]
        ),
        "mixed states": history_of(
            space,
            prior[:10] + edges,
            [float(i % 3) for i in range(40)],
            [TrialState(i % 5) for i in range(40)],
        ),
    }


@pytest.mark.parametrize("suggest", SUGGESTS)
@pytest.mark.parametrize("name", sorted(EXTREME_SPACES))
def test_no_floating_point_error(suggest: Suggest, name: str) -> None:
    compiled = compile_space(EXTREME_SPACES[name])
    for history_name, history in _histories(compiled).items():
        with np.errstate(all="raise", under="ignore"):
            one = suggest(compiled, history, np.random.default_rng(7), 1)
            many = suggest(compiled, history, np.random.default_rng(8), 16)
        assert len(one) == 1, history_name
        assert len(many) == 16, history_name
        assert_valid(compiled, one + many)


@pytest.mark.parametrize("suggest", SUGGESTS)
def test_a_long_run_on_extreme_spaces_stays_valid(suggest: Suggest) -> None:
    compiled = compile_space(EXTREME_SPACES["huge and tiny sigma"] | EXTREME_SPACES["huge bounds"])
    rng = np.random.default_rng(0)
    assignments: list[Assignment] = []
    losses: list[float] = []
    with np.errstate(all="raise", under="ignore"):
        for step in range(40):
            history = history_of(compiled, assignments, losses)
            batch = suggest(compiled, history, rng, 1 + step % 3)
            assert_valid(compiled, batch)
            assignments += batch
            # ties and huge magnitudes in the losses
            losses += [float(step % 2) * BIG for _ in batch]
