"""Hyperopt's early-stopping rules for ``fmin(early_stop_fn=...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["no_progress_loss"]


def no_progress_loss(
    iteration_stop_count: int = 20, percent_increase: float = 0.0
) -> Callable[..., tuple[bool, list[Any]]]:
    """Stop once ``iteration_stop_count`` trials in a row did not improve the best loss.

    A trial improves when its loss is below the best by more than ``percent_increase``
    percent of the best's magnitude. The first trial sets the best and counts as one
    trial without progress, as in Hyperopt; a trial without a loss (failed) makes none.
    """

    def stop(
        trials: Any, best_loss: float | None = None, iteration_no_progress: int = 0
    ) -> tuple[bool, list[Any]]:
        documents = trials.trials
        new_loss = documents[-1]["result"].get("loss") if documents else None
        if best_loss is None:
            return False, [new_loss, iteration_no_progress + 1]
        threshold = best_loss - abs(best_loss * percent_increase / 100.0)
        if new_loss is not None and new_loss < threshold:
            best_loss, iteration_no_progress = new_loss, 0
        else:
            iteration_no_progress += 1
        return iteration_no_progress >= iteration_stop_count, [best_loss, iteration_no_progress]

    return stop
