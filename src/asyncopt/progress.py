"""Progress reporting for `asyncopt.minimize`: a tqdm bar, or anything with the same two methods."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

# Imported here, not on first use: importing tqdm reads files, which would block the loop.
from tqdm.auto import tqdm

__all__ = ["ProgressFactory", "ProgressReporter", "TqdmProgress", "make_reporter"]


class ProgressReporter(Protocol):
    """Receives one call per finished trial and one at the end."""

    def update(self, done: int, best_loss: float | None) -> None:
        """``done`` trials of the study are finished; ``best_loss`` is the best OK loss so far."""
        ...

    def close(self) -> None:
        """The search has ended."""
        ...


#: Called once per `minimize` with the budget (``max_evals``, may be None) and the timeout.
ProgressFactory = Callable[[int | None, float | None], ProgressReporter]


class TqdmProgress:
    """A tqdm bar: trials done of the budget (or seconds of the timeout), best loss, trials/s."""

    def __init__(self, total: int | None, timeout: float | None) -> None:
        self._timeout = timeout if total is None else None
        self._start = time.monotonic()
        self._started_with: int | None = None
        bar_total: float | None = total if total is not None else timeout
        unit = "s" if self._timeout is not None else "trial"
        self._bar: Any = tqdm(total=bar_total, unit=unit, dynamic_ncols=True, leave=True)

    def update(self, done: int, best_loss: float | None) -> None:
        """Move the bar and show the best loss and the rate of this run."""
        if self._started_with is None:
            self._started_with = done - 1
        elapsed = time.monotonic() - self._start
        rate = (done - self._started_with) / elapsed if elapsed > 0 else math.inf
        best = "-" if best_loss is None else f"{best_loss:.6g}"
        self._bar.set_postfix_str(f"best loss: {best}, {rate:.1f} trials/s", refresh=False)
        if self._timeout is not None:
            self._bar.n = min(elapsed, self._timeout)
            self._bar.refresh()
        else:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()


def make_reporter(
    progress: bool | ProgressFactory, total: int | None, timeout: float | None
) -> ProgressReporter | None:
    """The reporter chosen by `minimize`'s ``progress`` argument, or None when off."""
    if progress is False or progress is None:
        return None
    if progress is True:
        return TqdmProgress(total, timeout)
    if callable(progress):
        return progress(total, timeout)
    raise TypeError(f"progress must be True, False or a factory, not {type(progress).__name__}")
