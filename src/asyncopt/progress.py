"""Progress reporting for `asyncopt.minimize`: a tqdm bar, or anything with the same methods."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

# Imported here, not on first use: importing tqdm reads files, which would block the loop.
from tqdm.auto import tqdm

__all__ = ["ProgressFactory", "ProgressReporter", "TqdmProgress", "make_reporter"]


class ProgressReporter(Protocol):
    """Told where the search starts, then of each finished trial, then that it ended."""

    def start(self, done: int, best_loss: float | None) -> None:
        """The search starts; ``done`` trials of the study were already finished (a resume)."""
        ...

    def update(self, done: int, best_loss: float | None) -> None:
        """``done`` trials of the study are finished; ``best_loss`` is the best OK loss so far."""
        ...

    def close(self) -> None:
        """The search has ended."""
        ...


#: Called once per `minimize` with the budget (``max_evals``, may be None) and the timeout.
ProgressFactory = Callable[[int | None, float | None], ProgressReporter]

# A search that ends this close to its timeout ended because of it (the clocks of the
# bar and of the event loop are read at slightly different moments).
_TIMEOUT_SLACK = 0.05


class TqdmProgress:
    """A tqdm bar of the study's trials done out of ``max_evals``, with the best loss.

    Without ``max_evals`` the bar counts the seconds of the timeout instead, shown as
    whole seconds, and reaches 100 % when the search stops at its timeout; the trials
    done and their rate go in the bar's text. Either way the bar shows one rate, of the
    trials finished since this run started (a resumed study's earlier trials count as
    done, not as fast), and the time left at that rate.
    """

    def __init__(self, total: int | None, timeout: float | None) -> None:
        self._by_time = total is None and timeout is not None
        self._total = total
        self._timeout = timeout
        self._started = time.monotonic()
        self._done_before = 0
        self._best = "-"
        self._bar: Any = None  # drawn by `start`, once the trials already done are known

    def start(self, done: int, best_loss: float | None) -> None:
        """Draw the bar with the trials a resumed study already has as done (they add
        nothing to the rate)."""
        self._started = time.monotonic()
        self._done_before = done
        self._best = _loss_text(best_loss)
        if self._by_time:
            assert self._timeout is not None
            self._bar = tqdm(
                total=float(self._timeout),
                unit="s",
                dynamic_ncols=True,
                leave=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]",
                postfix=self._text(done),
            )
        else:
            # `initial`: counted as done, not as progress (tqdm's rate follows updates).
            self._bar = tqdm(
                total=self._total,
                initial=done,
                unit="trial",
                dynamic_ncols=True,
                leave=True,
                postfix=self._text(done),
            )

    def update(self, done: int, best_loss: float | None) -> None:
        """Move the bar to ``done`` trials (or the seconds elapsed) and show the best loss."""
        if self._bar is None:
            self.start(0, None)
        self._best = _loss_text(best_loss)
        self._bar.set_postfix_str(self._text(done), refresh=False)
        if self._by_time:
            self._move_to(time.monotonic() - self._started)
        else:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Close the bar; a search that ran to its timeout shows 100 %."""
        if self._bar is None:
            return
        if self._by_time:
            assert self._timeout is not None
            elapsed = time.monotonic() - self._started
            self._move_to(self._timeout if elapsed >= self._timeout - _TIMEOUT_SLACK else elapsed)
        self._bar.close()

    def _move_to(self, seconds: float) -> None:
        assert self._timeout is not None
        self._bar.n = min(seconds, self._timeout)
        self._bar.refresh()

    def _text(self, done: int) -> str:
        if not self._by_time:
            return f"best loss: {self._best}"
        elapsed = time.monotonic() - self._started
        ran = done - self._done_before
        rate = ran / elapsed if elapsed > 0 else 0.0
        return f"best loss: {self._best}, {done} trials ({rate:.3g} trials/s)"


def _loss_text(loss: float | None) -> str:
    return "-" if loss is None or not math.isfinite(loss) else f"{loss:.6g}"


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
