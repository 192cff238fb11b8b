"""Hyperopt's ``fmin`` on asyncopt: same signature, same behaviour, asyncopt underneath.

The search runs through `asyncopt.minimize` on the study of a `Trials`. What Hyperopt
does differently from `minimize` is done here: its stopping rules (``timeout`` lets the
running trial finish, ``loss_threshold`` stops below the threshold, ``early_stop_fn``
receives the `Trials`) are one ``early_stop`` check after each trial; its return value
(``argmin`` or the evaluated space, None when every trial failed) is read from the
`Trials`.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from asyncopt.hyperopt import tpe
from asyncopt.hyperopt._algorithms import resolve
from asyncopt.hyperopt._blocking import run_blocking
from asyncopt.hyperopt.base import Trials
from asyncopt.hyperopt.exceptions import AllTrialsFailed, InvalidAnnotatedParameter
from asyncopt.orchestrator import minimize
from asyncopt.space.compile import CompiledSpace, compile_space
from asyncopt.space.evaluate import space_eval
from asyncopt.space.expressions import Expr
from asyncopt.storage import Storage, Trial, open_storage
from asyncopt.study import SuggestFunction
from asyncopt.trial import best_of

__all__ = ["fmin", "generate_trials_to_calculate", "partial", "space_eval"]

#: Hyperopt re-exports ``functools.partial`` as ``hyperopt.partial``.
partial = functools.partial

EarlyStopFn = Callable[..., tuple[bool, Sequence[Any]]]


def generate_trials_to_calculate(points: Sequence[Mapping[str, Any]]) -> Trials:
    """A `Trials` holding ``points`` (label -> raw value) for `fmin` to evaluate first.

    They count toward ``max_evals``, as in Hyperopt.
    """
    trials = Trials()
    trials.queue(points)
    return trials


def fmin(
    fn: Callable[..., Any],
    space: Any,
    algo: Any = None,
    max_evals: int | None = None,
    timeout: float | None = None,
    loss_threshold: float | None = None,
    trials: Trials | None = None,
    rstate: np.random.Generator | np.random.RandomState | None = None,
    allow_trials_fmin: bool = True,
    pass_expr_memo_ctrl: bool | None = None,
    catch_eval_exceptions: bool = False,
    verbose: bool = True,
    return_argmin: bool = True,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    max_queue_len: int = 1,
    show_progressbar: bool | Callable[..., Any] = True,
    early_stop_fn: EarlyStopFn | None = None,
    trials_save_file: str = "",
    *,
    concurrency: int = 1,
    storage: str | Storage | None = None,
    study: str | None = None,
    backend: str = "asyncio",
    trial_timeout: float | None = None,
) -> Any:
    """Minimize ``fn`` over ``space`` and block until done, as Hyperopt's ``fmin``.

    Called inside a running event loop (a notebook), the search runs on a helper thread
    and the loop waits; in async code, ``await asyncopt.minimize(...)`` instead.

    Args:
        fn: the objective: a loss or a result mapping for the evaluated space.
        space: the search space.
        algo: ``tpe.suggest`` (Hyperopt's TPE, the default), ``anneal.suggest``,
            ``rand.suggest`` or ``mix.suggest`` of this package, with Hyperopt's options
            through ``functools.partial``, or any asyncopt suggest function.
        max_evals: the total number of trials (those already in ``trials`` count).
        timeout: seconds after which no trial starts (the running one finishes, counts).
        loss_threshold: stop once a loss is at or below it.
        trials: a `Trials`, filled, and resumed when given again.
        rstate: a numpy Generator or RandomState that seeds a new study.
        allow_trials_fmin: accepted for compatibility.
        pass_expr_memo_ctrl: refused (TypeError); use the ask/tell API instead.
        catch_eval_exceptions: an exception in ``fn`` fails its trial instead of being
            raised (after its trial is recorded).
        verbose: False hides the progress bar.
        return_argmin: return the raw values (choices as option indices), else the
            space evaluated at them.
        points_to_evaluate: assignments (label -> raw value) run first.
        max_queue_len: accepted: suggestions here see the trials in flight.
        show_progressbar: True, False or a Hyperopt progress callback.
        early_stop_fn: ``early_stop_fn(trials, *state) -> (stop, state)`` after each trial.
        trials_save_file: an SQLite file the study is kept in and resumed from.
        concurrency: objective calls at once (asyncopt extra).
        storage: a storage URL or instance when no ``trials`` is given (asyncopt extra).
        study: the study's name when no ``trials`` is given (asyncopt extra).
        backend: ``"asyncio"`` or ``"trio"`` (asyncopt extra).
        trial_timeout: seconds after which a single call fails (asyncopt extra).

    Returns:
        The best trial's values (see ``return_argmin``), or None when no trial succeeded
        and ``return_argmin`` is False.

    Raises:
        AllTrialsFailed: no trial succeeded and ``return_argmin`` is True.
    """
    if pass_expr_memo_ctrl or getattr(fn, "fmin_pass_expr_memo_ctrl", False):
        raise TypeError(
            "pass_expr_memo_ctrl is not supported: fn receives the evaluated space; for "
            "control over each trial use the ask/tell API (asyncopt.open_study)"
        )
    _check_timeout(timeout)
    _check_loss_threshold(loss_threshold)
    max_evals = _checked_max_evals(max_evals)
    if isinstance(max_queue_len, bool) or not isinstance(max_queue_len, int) or max_queue_len < 1:
        raise ValueError(f"max_queue_len must be a positive int, got {max_queue_len!r}")
    if isinstance(space, str) and space == "annotated":
        fn, space = _annotated(fn)
    if max_evals is None and timeout is None and loss_threshold is None and early_stop_fn is None:
        raise ValueError(
            "fmin needs a stopping rule: max_evals, timeout, loss_threshold or early_stop_fn"
        )
    compiled = compile_space(space)
    suggest = resolve(tpe.suggest if algo is None else algo)
    seed = _seed(rstate)
    trials = _trials_for(trials, trials_save_file, storage, study)
    points = [*trials.take_points(), *(points_to_evaluate or ())]
    progress: Any = False
    if verbose and show_progressbar:
        progress = (
            True
            if show_progressbar is True
            else _HyperoptProgress.factory(show_progressbar, len(trials.records))
        )
    search = _Search(
        trials,
        deadline=None if timeout is None else time.monotonic() + timeout,
        loss_threshold=loss_threshold,
        early_stop_fn=early_stop_fn,
    )

    async def run() -> None:
        await search.run(
            fn,
            compiled,
            suggest,
            max_evals=max_evals,
            seed=seed,
            points=points,
            concurrency=concurrency,
            progress=progress,
            catch=(Exception,) if catch_eval_exceptions else (),
            trial_timeout=trial_timeout,
        )

    run_blocking(run, backend)
    best = best_of(trials.records)
    if best is None:
        if return_argmin:
            errors = [record.error for record in trials.records if record.error]
            first = f"; the first error: {errors[0].splitlines()[0]}" if errors else ""
            raise AllTrialsFailed(
                f"none of the {len(trials.records)} trials succeeded; no argmin to return{first}"
            )
        return None
    if return_argmin:
        return dict(best.assignment)
    return space_eval(compiled, best.assignment)


class _Search:
    """One `fmin` run: the `minimize` call and Hyperopt's stopping rules."""

    def __init__(
        self,
        trials: Trials,
        *,
        deadline: float | None,
        loss_threshold: float | None,
        early_stop_fn: EarlyStopFn | None,
    ) -> None:
        self.trials = trials
        self.deadline = deadline
        self.loss_threshold = loss_threshold
        self.early_stop_fn = early_stop_fn
        self.state: Sequence[Any] = ()

    def stops(self, records: tuple[Trial, ...]) -> bool:
        """Hyperopt's checks after each trial: deadline, threshold, ``early_stop_fn``."""
        self.trials.update(records)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return True
        if self.loss_threshold is not None:
            best = best_of(records)
            if best is not None and best.loss is not None and best.loss < self.loss_threshold:
                return True
        if self.early_stop_fn is not None:
            stop, state = self.early_stop_fn(self.trials, *self.state)
            self.state = () if state is None else tuple(state)
            return bool(stop)
        return False

    async def run(
        self,
        fn: Callable[..., Any],
        space: CompiledSpace,
        suggest: SuggestFunction,
        *,
        max_evals: int | None,
        seed: int | None,
        points: Sequence[Mapping[str, Any]],
        concurrency: int,
        progress: Any,
        catch: tuple[type[BaseException], ...],
        trial_timeout: float | None,
    ) -> None:
        trials = self.trials
        trials.update(trials.records, space)
        checks = (self.deadline, self.loss_threshold, self.early_stop_fn)
        async with open_storage(trials.storage) as store:
            exists = any(record.name == trials.study for record in await store.list_studies())
            try:
                result = await minimize(
                    _keeping(fn, trials),
                    space,
                    algo=suggest,
                    max_evals=max_evals,
                    concurrency=concurrency,
                    storage=store,
                    study=trials.study,
                    # A resumed study keeps its seed (as a Hyperopt rstate would go on).
                    seed=None if exists else seed,
                    early_stop=self.stops if any(c is not None for c in checks) else None,
                    points_to_evaluate=points or None,
                    progress=progress,
                    catch=catch,
                    trial_timeout=trial_timeout,
                )
            except BaseException:
                # An exception from fn (or an interrupt): show the trials recorded so far.
                with anyio.CancelScope(shield=True):
                    await trials.read()
                raise
            trials.update(result.trials)


def _keeping(fn: Callable[..., Any], trials: Trials) -> Callable[..., Any]:
    """``fn`` with the parts of its results the storage cannot hold kept in ``trials``."""
    if inspect.iscoroutinefunction(fn):

        async def call_async(params: Any) -> Any:
            return trials.keep(await fn(params))

        return call_async

    def call(params: Any) -> Any:
        return trials.keep(fn(params))

    return call


def _trials_for(
    trials: Trials | None,
    trials_save_file: str,
    storage: str | Storage | None,
    study: str | None,
) -> Trials:
    if trials is not None and not isinstance(trials, Trials):
        raise TypeError(
            f"trials must be an asyncopt.hyperopt.Trials, got {type(trials).__module__}."
            f"{type(trials).__qualname__}; for a shared study give Trials a storage "
            "(Trials(storage='sqlite:///tuning.db'))"
        )
    if trials_save_file:
        if storage is not None:
            raise ValueError("give either trials_save_file or storage, not both")
        path = Path(trials_save_file).resolve()
        _check_not_a_pickle(path)
        url = f"sqlite:///{path}"
        if trials is None:
            return Trials(exp_key=study, storage=url)
        if trials.storage != url:
            # An empty in-memory Trials moves into the file, so that the caller's object
            # shows the study; one holding trials (or stored elsewhere) cannot.
            trials.relocate(url)
        return trials
    if trials is None:
        return Trials(exp_key=study, storage="memory://" if storage is None else storage)
    if storage is not None or (study is not None and study != trials.study):
        raise ValueError(
            "give the storage and study name to Trials(exp_key=..., storage=...), "
            "not to fmin, when passing trials"
        )
    return trials


def _check_not_a_pickle(path: Path) -> None:
    """Refuse a trials file Hyperopt wrote (a pickle): here the file is an SQLite study."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as file:
        header = file.read(16)
    if header != b"SQLite format 3\x00":
        raise ValueError(
            f"trials_save_file {str(path)!r} is not an SQLite study (a pickle Hyperopt wrote?); "
            "asyncopt keeps the study in an SQLite file: give another file name"
        )


def _seed(rstate: np.random.Generator | np.random.RandomState | None) -> int | None:
    if rstate is None:
        text = os.environ.get("HYPEROPT_FMIN_SEED", "")
        if not text:
            return None
        rstate = np.random.default_rng(int(text))
    if isinstance(rstate, np.random.Generator):
        return int(rstate.integers(2**31 - 1))
    if isinstance(rstate, np.random.RandomState):
        return int(rstate.randint(2**31 - 1))
    raise TypeError(f"rstate must be a numpy Generator or RandomState, got {type(rstate).__name__}")


def _check_timeout(timeout: Any) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not (math.isfinite(timeout) and float(timeout) > 0)
    ):
        raise ValueError(
            f"The timeout argument should be None or a positive value. Given value: {timeout}"
        )


def _check_loss_threshold(loss_threshold: Any) -> None:
    if loss_threshold is None:
        return
    if isinstance(loss_threshold, bool) or not isinstance(loss_threshold, numbers.Real):
        raise TypeError(
            "The loss_threshold argument should be None or a numeric value. "
            f"Given value: {loss_threshold}"
        )


def _checked_max_evals(max_evals: Any) -> int | None:
    # Hyperopt does arithmetic with it, so 1e3 works there; an integral float is accepted.
    if isinstance(max_evals, float) and max_evals.is_integer():
        return int(max_evals)
    if max_evals is not None and (isinstance(max_evals, bool) or not isinstance(max_evals, int)):
        raise TypeError(f"max_evals must be an int, got {max_evals!r}")
    return max_evals


def _annotated(fn: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Hyperopt's ``space="annotated"``: the space is ``fn``'s parameter annotations."""
    try:
        # Evaluated: a module with ``from __future__ import annotations`` holds strings.
        space = dict(inspect.get_annotations(fn, eval_str=True))
    except Exception:  # an annotation that is not an expression is refused below
        space = dict(inspect.get_annotations(fn))
    space.pop("return", None)
    for name, annotation in space.items():
        if not isinstance(annotation, Expr):
            raise InvalidAnnotatedParameter(
                f"parameter {name!r} of the objective is annotated with {annotation!r}; with "
                'space="annotated" every parameter is annotated with an hp expression',
                None,
            )

    def call(params: dict[str, Any]) -> Any:
        return fn(**params)

    return call, space


class _HyperoptProgress:
    """A Hyperopt progress callback (``show_progressbar=callback``) as an asyncopt reporter.

    Hyperopt calls ``callback(initial=..., total=...)`` and uses the context it enters:
    ``context.postfix`` and ``context.update(n)``.
    """

    def __init__(self, callback: Callable[..., Any], initial: int, total: int | None) -> None:
        self._manager = callback(initial=initial, total=total)
        self._context = self._manager.__enter__()
        self._done = initial

    @classmethod
    def factory(cls, callback: Callable[..., Any], initial: int) -> Callable[..., Any]:
        return lambda total, timeout: cls(callback, initial, total)

    def start(self, done: int, best_loss: float | None) -> None:
        self.update(done, best_loss)

    def update(self, done: int, best_loss: float | None) -> None:
        if best_loss is not None:
            self._context.postfix = f"best loss: {best_loss}"
        if done > self._done:
            self._context.update(done - self._done)
            self._done = done

    def close(self) -> None:
        self._manager.__exit__(None, None, None)
