"""Task groups raise exception groups; callers of asyncopt expect one error."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from asyncopt.errors import AsyncoptError

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
    from exceptiongroup import BaseExceptionGroup
else:
    BaseExceptionGroup = BaseExceptionGroup  # re-exported for the 3.10 backport's sake

__all__ = ["BaseExceptionGroup", "leaves", "one_error", "single_error"]


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of ``group`` and of the groups nested in it."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(leaves(exc))
        else:
            found.append(exc)
    return found


def _is_cancellation(exc: BaseException) -> bool:
    # Siblings cancelled because one task failed: not errors of their own.
    return type(exc).__name__ in ("CancelledError", "Cancelled")


def one_error(errors: Sequence[BaseException]) -> BaseException:
    """The one exception to raise for ``errors`` raised together.

    The cancellations of a failed task's siblings do not count, nor do copies of one
    error (several tasks hitting one broken storage). One error left is itself. Of
    several, an interruption (KeyboardInterrupt, SystemExit) wins, since the process
    must stop; otherwise an `AsyncoptError` that names them, with all of them attached
    as its ``__cause__`` (an exception group).
    """
    errors = [e for e in errors if not _is_cancellation(e)] or list(errors)
    distinct = list({(type(e), str(e)): e for e in errors}.values())
    if len(distinct) == 1:
        return distinct[0]
    for error in errors:
        if not isinstance(error, Exception):
            return error
    summary = "; ".join(f"{type(e).__name__}: {e}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    combined = AsyncoptError(f"{len(errors)} errors at once: {summary}{more}")
    combined.__cause__ = BaseExceptionGroup("the errors", list(errors))
    return combined


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise an exception group as the one error it stands for (see `one_error`)."""
    try:
        yield
    except BaseExceptionGroup as group:
        error = one_error(leaves(group))
        raise error from error.__cause__
