"""Hyperopt's ``tpe.suggest``: asyncopt's TPE with the "hyperopt" preset.

``partial(tpe.suggest, n_startup_jobs=10, gamma=0.2)`` works as in Hyperopt. The
options map onto `asyncopt.tpe.configure`: ``n_startup_jobs`` -> ``n_startup``,
``n_EI_candidates`` -> ``n_candidates``, ``gamma``, ``prior_weight`` and
``linear_forgetting`` keep their names, ``verbose`` is accepted and ignored. An asyncopt
extra, ``preset="default"``, opts into asyncopt's default (multivariate) model, which
usually finds better points; so does passing ``asyncopt.tpe.suggest`` itself.
"""

from __future__ import annotations

from typing import Any

from asyncopt.algorithms import tpe as _tpe
from asyncopt.hyperopt._algorithms import HyperoptSuggest

__all__ = ["configure", "suggest"]

_NAMES = {
    "n_startup_jobs": "n_startup",
    "n_EI_candidates": "n_candidates",
    "gamma": "gamma",
    "prior_weight": "prior_weight",
    "linear_forgetting": "linear_forgetting",
}


def configure(*, preset: str = "hyperopt", verbose: Any = None, **options: Any) -> _tpe.TPE:
    """asyncopt's TPE configured from Hyperopt's option names (see the module docstring).

    Raises TypeError for an unknown option, and what `asyncopt.tpe.configure` raises for a
    bad value.
    """
    unknown = sorted(set(options) - set(_NAMES))
    if unknown:
        raise TypeError(
            f"unknown tpe.suggest option(s) {unknown}; the options are {sorted(_NAMES)}, "
            "verbose and preset"
        )
    return _tpe.configure(preset=preset, **{_NAMES[name]: value for name, value in options.items()})


#: Hyperopt's TPE; options through ``functools.partial`` (see the module docstring).
suggest = HyperoptSuggest("tpe.suggest", configure)
