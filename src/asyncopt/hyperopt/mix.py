"""Hyperopt's ``mix.suggest``: each proposal from one of several algorithms, at random.

``partial(mix.suggest, p_suggest=[(0.1, rand.suggest), (0.9, tpe.suggest)])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from asyncopt.history import History
from asyncopt.hyperopt._algorithms import HyperoptSuggest, resolve
from asyncopt.space.compile import CompiledSpace
from asyncopt.space.evaluate import Assignment
from asyncopt.study import SuggestFunction

__all__ = ["Mix", "configure", "suggest"]


@attrs.frozen
class Mix:
    """Proposes with ``algorithms[i]`` chosen with probability ``probabilities[i]``."""

    probabilities: tuple[float, ...]
    algorithms: tuple[SuggestFunction, ...]

    def __call__(
        self, space: CompiledSpace, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Assignment]:
        picks = rng.choice(len(self.algorithms), size=n, p=self.probabilities)
        proposals: list[Assignment] = []
        for index in range(len(self.algorithms)):
            count = int(np.count_nonzero(picks == index))
            if count:
                proposals.extend(self.algorithms[index](space, history, rng, count))
        return proposals


def configure(*, p_suggest: Sequence[tuple[float, Any]]) -> Mix:
    """A `Mix` of ``p_suggest``: (probability, algo) pairs, probabilities summing to 1."""
    pairs = list(p_suggest)
    if not pairs or any(not isinstance(pair, tuple) or len(pair) != 2 for pair in pairs):
        raise TypeError("p_suggest must be a list of (probability, algo) pairs")
    probabilities = tuple(float(p) for p, _ in pairs)
    if any(p < 0 or not math.isfinite(p) for p in probabilities) or not math.isclose(
        sum(probabilities), 1.0, abs_tol=1e-6
    ):
        raise ValueError(f"p_suggest probabilities must be >= 0 and sum to 1, got {probabilities}")
    total = sum(probabilities)
    return Mix(tuple(p / total for p in probabilities), tuple(resolve(algo) for _, algo in pairs))


#: Hyperopt's mix; ``p_suggest`` through ``functools.partial``.
suggest = HyperoptSuggest("mix.suggest", configure)
