"""Turning the ``algo`` given to `fmin` into an asyncopt suggest function."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from asyncopt.history import History
from asyncopt.space.compile import CompiledSpace
from asyncopt.space.evaluate import Assignment
from asyncopt.study import SuggestFunction

__all__ = ["HyperoptSuggest", "resolve"]


@attrs.frozen
class HyperoptSuggest:
    """A suggest function that takes Hyperopt's options by keyword.

    Called like any asyncopt suggest function, ``suggest(space, history, rng, n,
    **options)``; `fmin` configures a ``functools.partial`` of it once, with
    ``configure(**options)``.
    """

    name: str
    configure: Callable[..., SuggestFunction] = attrs.field(repr=False)

    def __call__(
        self,
        space: CompiledSpace,
        history: History,
        rng: np.random.Generator,
        n: int = 1,
        **options: Any,
    ) -> list[Assignment]:
        return self.configure(**options)(space, history, rng, n)


def resolve(algo: Any) -> SuggestFunction:
    """The asyncopt suggest function for ``algo``.

    ``algo`` is one of this package's ``suggest`` functions, possibly wrapped in
    `functools.partial` with Hyperopt's keyword options (configured once here), or any
    asyncopt suggest function (``asyncopt.tpe.suggest``, a configured one...), used as is.
    """
    function: Any = algo
    options: dict[str, Any] = {}
    while isinstance(function, functools.partial):
        if function.args:
            raise TypeError(
                "give the options of a suggest function by keyword: "
                "partial(tpe.suggest, n_startup_jobs=10, gamma=0.2)"
            )
        options = {**function.keywords, **options}
        function = function.func
    if isinstance(function, HyperoptSuggest):
        return function.configure(**options)
    if not callable(function):
        raise TypeError(f"algo must be a suggest function, got {type(algo).__name__}")
    module = getattr(function, "__module__", None) or ""
    if module == "hyperopt" or module.startswith("hyperopt."):
        name = getattr(function, "__qualname__", "suggest")
        raise TypeError(
            f"algo is Hyperopt's own {module}.{name}: import it from asyncopt.hyperopt "
            "instead (from asyncopt.hyperopt import tpe)"
        )
    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        parameters = []
    if parameters[:2] == ["new_ids", "domain"]:
        raise TypeError(
            "algo has Hyperopt's internal signature (new_ids, domain, trials, seed), which "
            "asyncopt does not provide: use tpe.suggest, anneal.suggest, rand.suggest (with "
            "functools.partial for options) or an asyncopt suggest(space, history, rng, n)"
        )
    suggest: SuggestFunction = algo
    return suggest
