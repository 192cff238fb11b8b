"""Hyperopt's ``pyll.stochastic.sample``: one random draw of a space."""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncopt.space.evaluate import sample as _sample

__all__ = ["sample"]


def sample(expr: Any, rng: np.random.Generator | np.random.RandomState | None = None) -> Any:
    """One draw of the space ``expr`` (the concrete structure), using ``rng``.

    ``rng`` is a numpy Generator (advanced by the draw) or RandomState (a seed is drawn
    from it); None draws from fresh entropy.
    """
    if isinstance(rng, np.random.RandomState):
        rng = np.random.default_rng(rng.randint(2**31 - 1))
    return _sample(expr, rng)
