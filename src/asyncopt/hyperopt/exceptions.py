"""Hyperopt's exception names, mapped onto asyncopt's errors.

``except DuplicateLabel`` or ``except AllTrialsFailed`` in a Hyperopt script keeps
working: the names are asyncopt's own exceptions (a duplicate label is a `SpaceError`).
"""

from __future__ import annotations

from asyncopt.errors import AllTrialsFailed, SpaceError

__all__ = [
    "AllTrialsFailed",
    "BadSearchSpace",
    "DuplicateLabel",
    "InvalidAnnotatedParameter",
]

#: Something is wrong with the search space.
BadSearchSpace = SpaceError

#: Two hyperparameters built separately share a label (a `SpaceError` naming it).
DuplicateLabel = SpaceError


class InvalidAnnotatedParameter(SpaceError):
    """``fmin(space="annotated")`` met a parameter annotation that is not an ``hp`` expression."""
