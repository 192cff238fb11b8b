"""Task groups raise exception groups; callers of asyncopt expect the one real error."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = ["single_error"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


def _is_cancellation(exc: BaseException) -> bool:
    # Siblings cancelled because one task failed: not errors of their own.
    return type(exc).__name__ in ("CancelledError", "Cancelled")


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise an exception group holding one error as that error.

    The cancellations of the failed task's siblings do not count, nor do copies of the
    same error (several tasks hitting one broken storage).
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        errors = [e for e in leaves if not _is_cancellation(e)] or leaves
        if len({(type(e), str(e)) for e in errors}) != 1:
            raise
        error = errors[0]
        raise error from error.__cause__
