"""Hyperopt's ``anneal.suggest``: asyncopt's annealing, options ``avg_best_idx`` and
``shrink_coef`` through ``functools.partial``."""

from __future__ import annotations

from asyncopt.algorithms import anneal as _anneal
from asyncopt.hyperopt._algorithms import HyperoptSuggest
from asyncopt.study import SuggestFunction

__all__ = ["configure", "suggest"]


def configure(*, avg_best_idx: float = 2.0, shrink_coef: float = 0.1) -> SuggestFunction:
    """asyncopt's annealing with Hyperopt's options (`asyncopt.anneal.configure`)."""
    return _anneal.configure(avg_best_idx=avg_best_idx, shrink_coef=shrink_coef)


#: Hyperopt's annealing; options through ``functools.partial``.
suggest = HyperoptSuggest("anneal.suggest", configure)
