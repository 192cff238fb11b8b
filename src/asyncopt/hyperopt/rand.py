"""Hyperopt's ``rand.suggest``: random search, which takes no options."""

from __future__ import annotations

from asyncopt.algorithms import rand as _rand
from asyncopt.hyperopt._algorithms import HyperoptSuggest

__all__ = ["suggest"]

#: Random search (`asyncopt.rand.suggest`); an option given through ``functools.partial``
#: is refused when `fmin` starts.
suggest = HyperoptSuggest("rand.suggest", _rand.configure)
