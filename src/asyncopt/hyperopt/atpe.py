"""Hyperopt's ATPE is not available: `fmin` refuses it and names the alternative."""

from __future__ import annotations

from typing import Any

from asyncopt.hyperopt._algorithms import HyperoptSuggest
from asyncopt.study import SuggestFunction

__all__ = ["suggest"]

MESSAGE = (
    "atpe (adaptive TPE) is not available in asyncopt: use tpe.suggest (Hyperopt's TPE), "
    "or asyncopt.tpe.suggest (multivariate TPE, which usually finds better points)"
)


def _refuse(**options: Any) -> SuggestFunction:
    raise NotImplementedError(MESSAGE)


#: Refused by `fmin` (and when called) with a message that names ``tpe.suggest``.
suggest = HyperoptSuggest("atpe.suggest", _refuse)
