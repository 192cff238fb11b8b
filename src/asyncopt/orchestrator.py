"""`minimize`: the async search loop over a shared study.

Inside one task group, up to ``concurrency`` workers each take a trial (a queued one, or
a new suggestion created only if the study's budget allows), await the objective and
record the outcome. Every write that must survive cancellation is shielded.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import attrs

from asyncopt._groups import BaseExceptionGroup, leaves, one_error
from asyncopt._log import log_finished
from asyncopt._table import trials_dataframe
from asyncopt.errors import (
    AllTrialsFailed,
    TrialError,
    TrialNotFoundError,
    TrialPruned,
    TrialStateError,
)
from asyncopt.outcome import Outcome, from_exception, from_value
from asyncopt.progress import ProgressFactory, make_reporter
from asyncopt.pruners import Pruner
from asyncopt.space.compile import CompiledSpace
from asyncopt.storage.base import Storage
from asyncopt.study import RunningTrial, Study, SuggestFunction, SyncRunningTrial, open_study
from asyncopt.trial import Trial, TrialState, best_of

__all__ = ["OptimizationResult", "minimize"]

Objective = Callable[..., Any]
Callback = Callable[[Trial], Any]
EarlyStop = Callable[[tuple[Trial, ...]], Any]

# Seconds between looks at a study whose budget is spent while other workers still run
# (or may requeue) trials: the search ends at most this long after their last trial.
_IDLE_POLL = 0.05

_STOPPED_FIRST = Outcome(TrialState.CANCELLED, error="cancelled: the search stopped first")


@attrs.frozen
class OptimizationResult:
    """What `minimize` found: the study's trials and its best one."""

    study: str
    trials: tuple[Trial, ...]
    space: CompiledSpace | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    _best: Trial | None = attrs.field(init=False, eq=False, repr=False)

    @_best.default
    def _find_best(self) -> Trial | None:
        return best_of(self.trials)

    @property
    def best_trial(self) -> Trial:
        """The OK trial with the lowest loss (lowest tid on ties); `AllTrialsFailed` if none."""
        if self._best is None:
            raise AllTrialsFailed(
                f"none of the {len(self.trials)} trials of study {self.study!r} succeeded"
            )
        return self._best

    @property
    def best_loss(self) -> float:
        """The best trial's loss."""
        loss = self.best_trial.loss
        assert loss is not None
        return loss

    @property
    def best_params(self) -> Any:
        """The space evaluated at the best trial's assignment (real values, not indices)."""
        return self.best_trial.params

    @property
    def best_assignment(self) -> Mapping[str, int | float]:
        """The best trial's raw assignment (choices as option indices)."""
        return self.best_trial.assignment

    def to_dataframe(self) -> Any:
        """The trials as a pandas DataFrame, one row per trial (needs ``asyncopt[pandas]``).

        Columns: tid, state, loss, times, duration, worker, ``params_<label>`` (the value
        the objective saw), ``params_<label>_index`` (a choice's option index),
        ``result_<key>`` (each extra the objective returned) and error; see docs/results.md.
        """
        return trials_dataframe(self.trials, self.space)


def _is_async(function: Callable[..., Any]) -> bool:
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - async __call__ methods
    )


def _takes_trial(function: Callable[..., Any]) -> bool:
    """True when ``function`` takes a second positional argument (its `RunningTrial`)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: one argument
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _check_number(
    name: str, value: float | None, *, integer: bool = False, zero_ok: bool = False
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "positive"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _exception_types(catch: Any) -> tuple[type[BaseException], ...]:
    types = (catch,) if isinstance(catch, type) else tuple(catch)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"catch must hold exception classes, got {kind!r}")
    return types


class _Run:
    """One `minimize` call: the loop that records outcomes and starts trials in batches.

    The loop (`serve`) is the one batching layer: each pass records every outcome that
    arrived since the last one and fills every free slot, with one suggestion call and
    one storage round trip (`Study._exchange`). Trials run as tasks of ``group`` and hand
    their outcomes back to it; what arrives while a pass runs goes in the next one.
    """

    def __init__(
        self,
        study: Study,
        objective: Objective,
        *,
        max_evals: int | None,
        concurrency: int,
        trial_timeout: float | None,
        loss_threshold: float | None,
        early_stop: EarlyStop | None,
        callbacks: Sequence[Callback],
        catch: tuple[type[BaseException], ...],
        progress: Any,
    ) -> None:
        self.study = study
        self.objective = objective
        self.objective_is_async = _is_async(objective)
        self.objective_takes_trial = _takes_trial(objective)
        self.max_evals = max_evals
        self.concurrency = concurrency
        self.trial_timeout = trial_timeout
        self.loss_threshold = loss_threshold
        self.early_stop = early_stop
        self.callbacks = callbacks
        self.catch = catch
        self.progress = progress
        self.threads = anyio.CapacityLimiter(concurrency)
        self.stopping = False
        # Slots are tasks of ``group`` that each run one trial after another, taking the
        # next from `ready`; an idle one waits for `fed`, set when `serve` adds trials
        # or ends (`over`).
        self.slots = 0
        self.running = 0  # busy slots
        self.fed = anyio.Event()
        self.over = False
        # Trials taken one batch ahead, so that a slot whose call ends starts the next
        # at once while its result is recorded and the next batch is proposed (a storage
        # round trip and a model fit both take time), never where each suggestion must
        # see every earlier result (one slot: reproducibility; ``early_stop``).
        self.ready: collections.deque[Trial] = collections.deque()
        self.spare = concurrency if concurrency > 1 and early_stop is None else 0
        # Outcomes of finished objective calls, not yet recorded; `arrived` is set when
        # one is added.
        self.outcomes: list[tuple[Trial, Outcome]] = []
        self.arrived = anyio.Event()
        # Exceptions from objectives outside ``catch``: raised once every trial is recorded.
        self.escaped: list[BaseException] = []

    async def serve(self, group: anyio.abc.TaskGroup) -> None:
        """Record outcomes and start trials until the search is over."""
        while True:
            outcomes, self.outcomes = self.outcomes, []
            self.stopping = self.stopping or self.reached_threshold(outcomes)
            # ``early_stop`` sees every trial before the next one starts.
            wanted = self.concurrency + self.spare - self.running - len(self.ready)
            if self.stopping or (self.early_stop is not None and outcomes):
                wanted = 0
            starved = False
            if outcomes or wanted:
                taken = await self.exchange(outcomes, wanted)
                # A trial taken with a result that stops the search (read in the same
                # round trip) never runs: `record_the_rest` cancels it.
                self.ready.extend([] if self.stopping else taken)
                if self.ready:
                    self.feed(group)
                starved = len(taken) < wanted
                if self.early_stop is not None and outcomes:
                    continue
            if self.outcomes:
                continue
            if self.running or (self.ready and not self.stopping):
                self.arrived = anyio.Event()
                await self.arrived.wait()
            elif self.stopping or (starved and not self.study._others_unfinished()):
                self.over = True
                self.fed.set()
                return
            else:
                # The budget is spent, but other workers may still finish, or die and
                # have their trials requeued.
                await anyio.sleep(_IDLE_POLL)
                await self.study._renew_and_reap()
                await self.study._refresh()

    async def exchange(self, outcomes: list[tuple[Trial, Outcome]], wanted: int) -> list[Trial]:
        """Record ``outcomes``, take up to ``wanted`` trials, run `after` on the finished."""
        try:
            finished, taken = await self.study._exchange(
                [(trial.tid, outcome) for trial, outcome in outcomes], wanted, self.max_evals
            )
        except BaseException:
            # Not recorded (the round trip never ran): `record_the_rest` does it.
            self.outcomes[:0] = [o for o in outcomes if o[0].tid in self.study._held]
            raise
        for result in finished:
            if isinstance(result, (TrialStateError, TrialNotFoundError)):
                # The lease was lost (reaped and requeued: the retry counts), or the trial
                # vanished in a server crash (the storage fills the gap).
                continue
            if isinstance(result, TrialError):
                raise result
            await self.after(result)
        best = self.study._best
        if self.loss_threshold is not None and best is not None and best.loss is not None:
            self.stopping = self.stopping or best.loss <= self.loss_threshold
        return taken

    def reached_threshold(self, outcomes: list[tuple[Trial, Outcome]]) -> bool:
        if self.loss_threshold is None:
            return False
        threshold = self.loss_threshold
        return any(
            outcome.state is TrialState.OK
            and outcome.loss is not None
            and outcome.loss <= threshold
            for _, outcome in outcomes
        )

    def feed(self, group: anyio.abc.TaskGroup) -> None:
        """Wake the idle slots for the trials in `ready`, starting slots where too few."""
        self.fed.set()
        self.fed = anyio.Event()
        while self.slots < self.concurrency and len(self.ready) > self.slots - self.running:
            self.slots += 1
            group.start_soon(self.slot)

    async def slot(self) -> None:
        """Run trials from `ready`, one after another, while the search goes on."""
        try:
            while True:
                while not self.ready:
                    if self.stopping or self.over:
                        return
                    await self.fed.wait()
                if self.stopping:
                    return
                trial = self.ready.popleft()
                self.running += 1
                try:
                    outcome, escaping = await self.evaluate(trial)
                finally:
                    self.running -= 1
                self.outcomes.append((trial, outcome))
                self.arrived.set()
                if escaping is not None:
                    self.escaped.append(escaping)
                    self.stopping = True
                    # Every other trial is cancelled; `minimize` records them and raises.
                    raise _Escaped
                self.stopping = self.stopping or self.reached_threshold([(trial, outcome)])
                if self.ready:
                    # A turn of the event loop between ending one call and starting the
                    # next: when a wave of calls ends at once, their endings and the next
                    # starts run in two turns, not one long one that holds the loop.
                    await anyio.lowlevel.checkpoint()
        finally:
            self.slots -= 1

    async def record_the_rest(self) -> None:
        """Record the outcomes not yet recorded, and cancel trials taken but never run."""
        held = self.study._held
        outcomes = {trial.tid: outcome for trial, outcome in self.outcomes if trial.tid in held}
        self.outcomes = []
        for tid in held:
            outcomes.setdefault(tid, _STOPPED_FIRST)
        if outcomes:
            await self.study._exchange(sorted(outcomes.items()), 0, None)

    async def call_objective(self, trial: Trial, running: RunningTrial) -> Any:
        arguments: tuple[Any, ...] = (trial.params,)
        if self.objective_takes_trial:
            handle = running if self.objective_is_async else SyncRunningTrial(running)
            arguments = (trial.params, handle)
        if self.objective_is_async:
            value = await self.objective(*arguments)
        else:
            async with self.threads:
                value = await _call_on_daemon_thread(functools.partial(self.objective, *arguments))
        if inspect.isawaitable(value):
            value = await value
        return value

    async def evaluate(self, trial: Trial) -> tuple[Outcome, BaseException | None]:
        """Call the objective on ``trial``: its outcome, and the exception to re-raise
        once the outcome is recorded (one outside ``catch``), if any.

        When the search is cancelled, the trial's CANCELLED outcome is left for
        `record_the_rest` and the cancellation goes on.
        """
        began = time.time()
        escaping: BaseException | None = None
        running = RunningTrial(self.study, trial)
        try:
            timed_out = False
            if self.trial_timeout is None:
                value = await self.call_objective(trial, running)
            else:
                with anyio.move_on_after(self.trial_timeout) as scope:
                    value = await self.call_objective(trial, running)
                timed_out = scope.cancelled_caught
            if timed_out:
                error = f"TimeoutError: the objective exceeded trial_timeout={self.trial_timeout}s"
                outcome = Outcome(TrialState.FAIL, error=error)
            elif running.pruned:
                outcome = self.study._pruned(trial.tid)
            else:
                outcome = from_value(value)
        except TrialPruned:
            outcome = self.study._pruned(trial.tid)
        except anyio.get_cancelled_exc_class() as exc:
            if anyio.current_effective_deadline() == -math.inf:
                self.outcomes.append((trial, Outcome(TrialState.CANCELLED, error="cancelled")))
                raise
            # The objective raised a cancellation exception itself: it failed.
            outcome = from_exception(exc)
        except self.catch as exc:
            outcome = from_exception(exc)
        except KeyboardInterrupt as exc:
            # Ctrl-C (under trio it is raised in whichever task runs): interrupted, not failed.
            outcome, escaping = Outcome(TrialState.CANCELLED, error="KeyboardInterrupt"), exc
        except BaseException as exc:
            outcome, escaping = from_exception(exc), exc
        stamped = attrs.evolve(outcome, started_at=began)
        return stamped, escaping

    def done(self) -> int:
        """The study's finished trials that count toward the budget, as of the last read."""
        counts = self.study._counts
        return counts[TrialState.OK] + counts[TrialState.FAIL] + counts[TrialState.PRUNED]

    async def after(self, trial: Trial) -> None:
        log_finished(trial)
        for callback in self.callbacks:
            returned = callback(trial)
            if inspect.isawaitable(returned):
                await returned
        best = self.study._best
        best_loss = None if best is None else best.loss
        if self.progress is not None:
            self.progress.update(self.done(), best_loss)
        if self.early_stop is not None and not self.stopping:
            verdict = self.early_stop(self.study._cached_trials())
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict:
                self.stopping = True


class _Escaped(Exception):
    """Raised by a trial task to stop the search; the escaping exception is on the run."""


async def _call_on_daemon_thread(function: Callable[[], Any]) -> Any:
    """``function()`` on a new daemon thread, awaited.

    A daemon thread, unlike the event loops' thread pools, never keeps the process from
    exiting: a sync objective that hangs is abandoned when its trial times out or the
    search is cancelled, and runs on, unobserved, until it returns or the process ends.
    """
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    returned: list[tuple[bool, Any]] = []

    def call() -> None:
        try:
            returned.append((True, function()))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the caller decides
            returned.append((False, exc))
        with contextlib.suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=call, name="asyncopt objective", daemon=True).start()
    await done.wait()
    ok, value = returned[0]
    if not ok:
        raise value
    return value


async def minimize(
    objective: Objective,
    space: Any,
    *,
    algo: SuggestFunction | None = None,
    max_evals: int | None = None,
    concurrency: int = 1,
    storage: str | Storage = "memory://",
    study: str = "default",
    seed: int | None = None,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    loss_threshold: float | None = None,
    early_stop: EarlyStop | None = None,
    callbacks: Iterable[Callback] = (),
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    progress: bool | ProgressFactory = False,
    lease: float = 60.0,
    catch: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    pruner: Pruner | None = None,
) -> OptimizationResult:
    """Search ``space`` for the assignment that minimizes ``objective``.

    Trials run in batches: each pass records the results that arrived and fills every
    free slot with one suggestion call and one storage round trip (see Concepts).
    Running again with the same storage and study resumes it.

    Args:
        objective: ``objective(params)`` receives the evaluated space and returns a loss
            or a mapping with ``loss``/``status`` and JSON extras; a coroutine function
            (awaited) or a plain function (run on a daemon thread). One that takes a
            second argument gets its trial's handle (`RunningTrial`, or
            `SyncRunningTrial` for a plain function) to report intermediate values and
            ask the pruner; raising `TrialPruned` ends the trial PRUNED.
        space: the search space (dicts, lists, constants and `hp` expressions).
        algo: the suggest function (default: multivariate TPE, `asyncopt.tpe.suggest`).
        max_evals: the study's total budget: trials of every worker and of earlier runs
            count, CANCELLED ones do not.
        concurrency: objective calls in flight at once in this process.
        storage: a storage URL (``memory://``, ``sqlite:///file.db``, ``mongodb://...``,
            ``postgresql://...``) or a `Storage`.
        study: the study's name in the storage.
        seed: the seed of a new study (random if None); an existing study keeps its own.
        timeout: seconds for this call; then nothing new starts and running trials are
            recorded CANCELLED.
        trial_timeout: seconds for one objective call; a longer one is a FAIL trial.
        loss_threshold: stop starting trials once the best loss is at or below it.
        early_stop: ``early_stop(trials) -> bool`` (may be async), asked after each
            result before any new trial starts; True stops the search.
        callbacks: called (or awaited) with each finished trial.
        points_to_evaluate: assignments (label -> raw value) queued first when the study
            is new; they count toward ``max_evals``.
        progress: True for a tqdm bar, or a factory of progress reporters.
        lease: seconds a running trial's lease lasts without renewal (renewed every third).
        catch: exception types that fail a trial; others end the search and are raised
            after their trial is recorded.
        pruner: decides when a reporting trial stops early (default: `NopPruner`); see
            `asyncopt.pruners`.

    Returns:
        The study's trials and its best one.

    Raises:
        StudyMismatchError: the stored study has another space or seed.
        SpaceError: the space is invalid.
        AsyncoptError: several objective calls raised outside ``catch`` at once.
        ValueError: an argument is out of range (TypeError: of the wrong type).
    """
    _check_number("max_evals", max_evals, integer=True, zero_ok=True)
    _check_number("concurrency", concurrency, integer=True)
    _check_number("timeout", timeout)
    _check_number("trial_timeout", trial_timeout)
    if not isinstance(study, str) or not study:
        raise ValueError(f"study must be a non-empty name, got {study!r}")
    if algo is not None and not callable(algo):
        raise TypeError(f"algo must be a suggest function, got {type(algo).__name__}")
    catch = _exception_types(catch)
    if max_evals is None and timeout is None and loss_threshold is None and early_stop is None:
        raise ValueError(
            "minimize needs a stopping rule: max_evals, timeout, loss_threshold or early_stop"
        )
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    reporter = make_reporter(progress, max_evals, timeout)
    try:
        async with open_study(
            storage, study, space, algo=algo, seed=seed, lease=lease, pruner=pruner
        ) as handle:
            if points_to_evaluate and not handle._trials:
                await handle.enqueue(list(points_to_evaluate), budget=max_evals)
            run = _Run(
                handle,
                objective,
                max_evals=max_evals,
                concurrency=concurrency,
                trial_timeout=trial_timeout,
                loss_threshold=loss_threshold,
                early_stop=early_stop,
                callbacks=list(callbacks),
                catch=catch,
                progress=reporter,
            )
            await handle._renew_and_reap()
            if reporter is not None:
                best = handle._best
                reporter.start(run.done(), None if best is None else best.loss)
            await _search(run, timeout)
            with anyio.CancelScope(shield=True):
                trials = await handle.trials()
    finally:
        if reporter is not None:
            reporter.close()
    return OptimizationResult(study, trials, space=handle.space)


async def _search(run: _Run, timeout: float | None) -> None:
    """Run ``run`` until it ends or ``timeout``; record every trial; raise what escaped."""
    errors: list[BaseException] = []
    try:
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            async with anyio.create_task_group() as group:
                await run.serve(group)
    except BaseExceptionGroup as group_error:
        errors += [e for e in leaves(group_error) if not isinstance(e, _Escaped)]
    finally:
        with anyio.CancelScope(shield=True):
            await run.record_the_rest()
    errors = run.escaped + errors
    if errors:
        raise one_error(errors)
