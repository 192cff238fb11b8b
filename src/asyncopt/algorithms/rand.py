"""Random search: independent draws from the prior."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncopt.history import History
from asyncopt.space.compile import CompiledSpace
from asyncopt.space.evaluate import Assignment, sample_assignments

__all__ = ["configure", "suggest"]


def suggest(
    space: CompiledSpace, history: History, rng: np.random.Generator, n: int = 1
) -> list[Assignment]:
    """``n`` assignments drawn independently from the prior.

    Args:
        space: the compiled space.
        history: the study's trials (not used).
        rng: the random generator of this suggestion.
        n: how many proposals.
    """
    return sample_assignments(space, rng, n)


def configure(**options: Any) -> Callable[..., list[Assignment]]:
    """Random search takes no options; returns `suggest` (any option raises TypeError)."""
    if options:
        raise TypeError(f"rand.configure() takes no options, got {sorted(options)}")
    return suggest
