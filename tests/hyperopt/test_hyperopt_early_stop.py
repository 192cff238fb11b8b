"""`early_stop.no_progress_loss` (Hyperopt's rule, our words)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from asyncopt.hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, rand
from asyncopt.hyperopt.early_stop import no_progress_loss


def run_losses(losses: list[float | None], rule: Any) -> int:
    """How many trials run before ``rule`` stops a search whose losses are ``losses``."""
    feed: Iterator[float | None] = iter(losses)

    def fn(x: float) -> dict[str, Any]:
        loss = next(feed)
        return {"status": STATUS_FAIL} if loss is None else {"loss": loss, "status": STATUS_OK}

    trials = Trials()
    fmin(
        fn,
        hp.uniform("x", 0, 1),
        algo=rand.suggest,
        max_evals=len(losses),
        trials=trials,
        early_stop_fn=rule,
        show_progressbar=False,
    )
    return len(trials)


def test_stops_after_the_given_number_of_trials_without_progress() -> None:
    # The first trial sets the best and counts as one without progress.
    assert run_losses([5.0] * 50, no_progress_loss(10)) == 10
    assert run_losses([5.0, 4.0, 3.0] + [3.0] * 50, no_progress_loss(3)) == 6


def test_progress_resets_the_count() -> None:
    losses = [10.0, 10.0, 9.0, 9.0, 8.0] + [8.0] * 20
    assert run_losses(losses, no_progress_loss(3)) == 8


def test_percent_increase_asks_for_a_large_enough_improvement() -> None:
    # Each step improves by 1 %: progress without a margin, none with a 5 % margin.
    losses = [100.0 * 0.99**i for i in range(40)]
    assert run_losses(losses, no_progress_loss(5)) == 40
    assert run_losses(losses, no_progress_loss(5, percent_increase=5.0)) == 5


def test_failed_trials_make_no_progress() -> None:
    assert run_losses([1.0, None, None, None, 0.5], no_progress_loss(3)) == 3
