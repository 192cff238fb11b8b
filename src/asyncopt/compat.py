"""`fmin`: Hyperopt's blocking entry point, for scripts and migrating users."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import numpy as np
import sniffio

from asyncopt.errors import AllTrialsFailed
from asyncopt.orchestrator import OptimizationResult, minimize
from asyncopt.space.evaluate import space_eval
from asyncopt.storage.base import Storage
from asyncopt.study import SuggestFunction
from asyncopt.trial import Trial

__all__ = ["fmin"]


def _inside_event_loop() -> bool:
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True


def fmin(
    fn: Callable[[Any], Any],
    space: Any,
    algo: SuggestFunction | None = None,
    max_evals: int | None = None,
    timeout: float | None = None,
    loss_threshold: float | None = None,
    rstate: np.random.Generator | None = None,
    catch_eval_exceptions: bool = False,
    return_argmin: bool = True,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    show_progressbar: bool = True,
    early_stop_fn: Callable[..., tuple[bool, Sequence[Any]]] | None = None,
    *,
    storage: str | Storage = "memory://",
    study: str = "default",
    concurrency: int = 1,
    backend: str = "asyncio",
) -> Any:
    """Minimize ``fn`` over ``space`` and block until done, like Hyperopt's ``fmin``.

    Returns the best trial's raw assignment (choices as option indices) with
    ``return_argmin=True`` (the default), else the space evaluated at it.
    ``rstate`` (a numpy Generator) seeds the study. As in Hyperopt, an exception in
    ``fn`` aborts the search unless ``catch_eval_exceptions=True``;
    ``early_stop_fn(trials, *state)`` returns ``(stop, state)`` and receives the study's
    trials as a tuple of `Trial`. Raises `AllTrialsFailed` when no trial succeeded, and
    RuntimeError when called inside a running event loop (use ``await minimize`` there).
    """
    if _inside_event_loop():
        raise RuntimeError(
            "fmin() blocks and cannot run inside an event loop; "
            "use `await asyncopt.minimize(...)` instead"
        )
    seed = None if rstate is None else int(rstate.integers(2**31 - 1))
    early_stop = None if early_stop_fn is None else _EarlyStopAdapter(early_stop_fn)

    async def run() -> OptimizationResult:
        return await minimize(
            fn,
            space,
            algo=algo,
            max_evals=max_evals,
            concurrency=concurrency,
            storage=storage,
            study=study,
            seed=seed,
            timeout=timeout,
            loss_threshold=loss_threshold,
            early_stop=early_stop,
            points_to_evaluate=points_to_evaluate,
            progress=show_progressbar,
            catch=(Exception,) if catch_eval_exceptions else (),
        )

    result = anyio.run(run, backend=backend)
    try:
        best = result.best_trial
    except AllTrialsFailed:
        raise AllTrialsFailed(
            f"all {len(result.trials)} trials failed; no best assignment to return"
        ) from None
    if return_argmin:
        return dict(best.assignment)
    return space_eval(space, best.assignment)


class _EarlyStopAdapter:
    """Keeps Hyperopt's ``(stop, state)`` protocol of ``early_stop_fn`` between calls."""

    def __init__(self, function: Callable[..., tuple[bool, Sequence[Any]]]) -> None:
        self.function = function
        self.state: Sequence[Any] = ()

    def __call__(self, trials: tuple[Trial, ...]) -> bool:
        stop, state = self.function(trials, *self.state)
        self.state = tuple(state) if state is not None else ()
        return bool(stop)
