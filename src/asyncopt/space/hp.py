"""Constructors of labelled hyperparameters, with Hyperopt's names and argument order.

Every constructor validates its arguments and raises `SpaceError` naming the label.
Note the two things Hyperopt users trip on: `loguniform` and `qloguniform` bounds are in
*log* space (``loguniform("lr", log(1e-5), log(1))``), and a `choice` hands the objective
the chosen option while the study stores its index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncopt.errors import SpaceError
from asyncopt.space.distributions import Distribution, normalized_args
from asyncopt.space.expressions import Choice, Param, as_node

__all__ = [
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "pchoice",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
    "uniformint",
]


def _param(label: str, name: str, *args: Any) -> Param:
    return Param(label, Distribution(name, normalized_args(args)))


def choice(label: str, options: Sequence[Any]) -> Choice:
    """One of ``options`` (each may be a sub-space), index drawn uniformly.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        options: the options, each a constant or a sub-space; the stored value is the index.
    """
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
        raise SpaceError(f"label {label!r}: choice options must be a list or tuple", label)
    return Choice(
        label, tuple(as_node(o) for o in options), Distribution("choice", (len(options),))
    )


def pchoice(label: str, p_options: Sequence[tuple[float, Any]]) -> Choice:
    """One of the options of ``[(probability, option), ...]``; probabilities sum to 1.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        p_options: ``(probability, option)`` pairs; probabilities non-negative, summing to 1.
    """
    if isinstance(p_options, (str, bytes)) or not isinstance(p_options, Sequence):
        raise SpaceError(
            f"label {label!r}: pchoice takes a list of (probability, option) pairs", label
        )
    pairs = list(p_options)
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise SpaceError(
                f"label {label!r}: pchoice takes a list of (probability, option) pairs", label
            )
    if not pairs:
        raise SpaceError(f"label {label!r}: pchoice needs at least one option", label)
    probabilities = normalized_args([p for p, _ in pairs])
    return Choice(
        label, tuple(as_node(o) for _, o in pairs), Distribution("pchoice", probabilities)
    )


def randint(label: str, low: int, upper: int | None = None) -> Param:
    """An integer in ``[0, low)`` (one bound) or ``[low, upper)``, treated as unordered.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        low: the upper bound (exclusive) when ``upper`` is None, else the lower bound.
        upper: the upper bound (exclusive).
    """
    if upper is None:
        low, upper = 0, low
    return _param(label, "randint", low, upper)


def uniform(label: str, low: float, high: float) -> Param:
    """A float uniform in ``[low, high]``.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        low: the lower bound.
        high: the upper bound, above ``low``.
    """
    return _param(label, "uniform", low, high)


def quniform(label: str, low: float, high: float, q: float) -> Param:
    """``round(uniform(low, high) / q) * q``.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        low: the lower bound.
        high: the upper bound, above ``low``.
        q: the step, positive.
    """
    return _param(label, "quniform", low, high, q)


def uniformint(label: str, low: int, high: int) -> Param:
    """An integer uniform in ``[low, high]``, both inclusive, ordered.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        low: the smallest integer.
        high: the largest integer, above ``low``.
    """
    return _param(label, "uniformint", low, high)


def loguniform(label: str, low: float, high: float) -> Param:
    """``exp(uniform(low, high))``: the bounds are in log space.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        low: the log of the lower bound.
        high: the log of the upper bound.
    """
    return _param(label, "loguniform", low, high)


def qloguniform(label: str, low: float, high: float, q: float) -> Param:
    """``round(exp(uniform(low, high)) / q) * q``: the bounds are in log space.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        low: the log of the lower bound.
        high: the log of the upper bound.
        q: the step, positive.
    """
    return _param(label, "qloguniform", low, high, q)


def normal(label: str, mu: float, sigma: float) -> Param:
    """A float from ``N(mu, sigma)``.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        mu: the mean.
        sigma: the standard deviation, positive.
    """
    return _param(label, "normal", mu, sigma)


def qnormal(label: str, mu: float, sigma: float, q: float) -> Param:
    """``round(normal(mu, sigma) / q) * q``.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        mu: the mean.
        sigma: the standard deviation, positive.
        q: the step, positive.
    """
    return _param(label, "qnormal", mu, sigma, q)


def lognormal(label: str, mu: float, sigma: float) -> Param:
    """``exp(normal(mu, sigma))``.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        mu: the mean of the log.
        sigma: the standard deviation of the log, positive.
    """
    return _param(label, "lognormal", mu, sigma)


def qlognormal(label: str, mu: float, sigma: float, q: float) -> Param:
    """``round(exp(normal(mu, sigma)) / q) * q``.

    Args:
        label: the parameter's name, unique in the space (the key of the stored assignment).
        mu: the mean of the log.
        sigma: the standard deviation of the log, positive.
        q: the step, positive.
    """
    return _param(label, "qlognormal", mu, sigma, q)
