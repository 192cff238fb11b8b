"""`minimize`: the async search loop over a shared study.

Inside one task group, up to ``concurrency`` workers each take a trial (a queued one, or
a new suggestion created only if the study's budget allows), await the objective and
record the outcome. Every write that must survive cancellation is shielded.
"""

from __future__ import annotations

import collections
import functools
import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import attrs

from asyncopt._groups import single_error
from asyncopt.errors import AllTrialsFailed, TrialError, TrialNotFoundError, TrialStateError
from asyncopt.outcome import Outcome, from_exception, from_value
from asyncopt.progress import ProgressFactory, make_reporter
from asyncopt.storage.base import Storage
from asyncopt.study import Study, SuggestFunction, moving_average, open_study
from asyncopt.trial import Trial, TrialState, best_of

__all__ = ["OptimizationResult", "minimize"]

Objective = Callable[[Any], Any]
Callback = Callable[[Trial], Any]
EarlyStop = Callable[[tuple[Trial, ...]], Any]

# Seconds to wait between looks at a study whose budget is spent while other workers
# still run (or may requeue) trials: a quarter of a typical trial, within these bounds,
# so that such a search ends soon after the last trial. Leases are renewed and expired
# ones reaped at most every _IDLE_POLL.
_IDLE_POLL = 0.25
_MIN_IDLE_POLL = 0.002

# A worker holds its next trial before its objective call ends (so that the call after
# need not wait for the storage) while the wait would cost more than this share of a call.
_LOOKAHEAD_SHARE = 0.05

_STOPPED_FIRST = Outcome(TrialState.CANCELLED, error="cancelled: the search stopped first")

# A worker whose trials never wait (a free objective, a storage that answers at once)
# hands the event loop over at least this often, in seconds. A pass of the loop costs
# about 30 us: once per millisecond was 3 % of a TPE trial; other tasks (progress,
# leases, a timeout) do not need to run more often than this.
_YIELD_EVERY = 0.01


@attrs.frozen
class OptimizationResult:
    """What `minimize` found: the study's trials and its best one."""

    study: str
    trials: tuple[Trial, ...]
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


def _is_async(function: Callable[..., Any]) -> bool:
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - async __call__ methods
    )


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


class _Ahead:
    """The trials a worker took in advance, and its handover in flight (at most one)."""

    def __init__(self) -> None:
        self.ready: collections.deque[Trial] = collections.deque()
        self._landed: anyio.Event | None = None

    def take_off(self) -> None:
        """Note that a handover for this worker is now in flight."""
        self._landed = anyio.Event()

    def land(self) -> None:
        """Note that the handover in flight ended (its trial, if any, is in `ready`)."""
        if self._landed is not None:
            self._landed.set()

    async def wait_landed(self) -> None:
        """Wait until no handover of this worker is in flight."""
        if self._landed is not None:
            await self._landed.wait()
            self._landed = None


class _Run:
    """State shared by the workers of one `minimize` call."""

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
        self.max_evals = max_evals
        self.trial_timeout = trial_timeout
        self.loss_threshold = loss_threshold
        self.early_stop = early_stop
        self.callbacks = callbacks
        self.catch = catch
        self.progress = progress
        self.concurrency = concurrency
        # A storage that answers without yielding (memory) has no wait to hide.
        self.storage_waits = not getattr(study.storage, "never_yields", False)
        self.threads = anyio.CapacityLimiter(concurrency)
        self.stopping = False
        # Set when the worker looking at the study for the idle ones has looked.
        self.looked: anyio.Event | None = None
        # Outcomes handed over behind objective calls, waiting to `depart`; the task
        # group of the workers, where departures run.
        self.passengers: list[tuple[_Ahead, Trial, Outcome]] = []
        self.background: anyio.abc.TaskGroup  # set when the workers start
        self.all_aboard = anyio.Event()  # set when every worker has an outcome waiting
        self.last_reap = -math.inf
        self.objective_seconds: float | None = None  # moving average of an objective call

    async def worker(self) -> None:
        ahead = _Ahead()
        try:
            await self.work(ahead)
        finally:
            with anyio.CancelScope(shield=True):
                await ahead.wait_landed()
            for trial in ahead.ready:
                # Taken, but the search stopped (a stopping rule, another worker's result
                # read in that round trip, a timeout, an error) before it could run.
                await self.record(trial, _STOPPED_FIRST)

    async def work(self, ahead: _Ahead) -> None:
        """Run trials until the study has none left for this worker or the search stops."""
        last_yield = time.perf_counter()
        while not self.stopping:
            if not ahead.ready:
                await ahead.wait_landed()  # the trial it takes may be this worker's next
            trial = ahead.ready.popleft() if ahead.ready else None
            if trial is None:
                trial = await self.study.ask(budget=self.max_evals)
                if trial is None:
                    if not self.study.others_unfinished():
                        return
                    # Other workers may still finish, or die and have their trials requeued.
                    await self.wait_for_others()
                    continue
            outcome, escaping = await self.evaluate(trial)
            await self.hand_over(trial, outcome, escaping, ahead)
            if escaping is not None:
                raise escaping
            # Storage calls need not yield; this keeps a free objective from starving
            # other tasks (and lets a timeout's cancellation in) without a loop pass
            # per trial.
            now = time.perf_counter()
            if now - last_yield >= _YIELD_EVERY:
                await anyio.lowlevel.checkpoint()
                last_yield = now

    def looks_ahead(self) -> bool:
        """Whether a worker should hold its next trial before its objective call ends.

        It pays while the storage call that records an outcome and takes the next trial
        costs more than `_LOOKAHEAD_SHARE` of an objective call: the objectives can run
        while it waits. Suggestions are not counted: they take the event loop's time
        either way, and looking ahead makes them see more pending trials, which costs a
        model-based search time and quality. Never on a storage that answers without
        waiting (memory), nor with one worker (its suggestions must see every earlier
        result, for reproducibility), nor with ``early_stop``, which sees each trial
        before the next starts.
        """
        return (
            self.concurrency > 1
            and self.storage_waits
            and self.early_stop is None
            and self.objective_seconds is not None
            and self.study.round_trip_seconds > _LOOKAHEAD_SHARE * self.objective_seconds
        )

    async def depart(self) -> None:
        """Record the outcomes handed over behind objective calls, after a short wait.

        Off the workers' path, the first such outcome waits up to a quarter of an
        objective call for those of the other workers (all of them, at most), and all
        go in one call, which saves storage work. Each worker gets the trial it runs
        after next.
        """
        cancelled: BaseException | None = None
        try:
            assert self.objective_seconds is not None
            with anyio.move_on_after(min(_IDLE_POLL, self.objective_seconds / 4)):
                await self.all_aboard.wait()
        except BaseException as exc:  # cancelled: the outcomes must still be recorded
            cancelled = exc
        passengers, self.passengers = self.passengers, []
        finished: list[Trial] = []
        try:
            if cancelled is not None:
                for _, trial, outcome in passengers:
                    await self.record(trial, outcome)
                raise cancelled
            with self.study.shielded():
                results = await self.study.finish_and_ask_many(
                    [(trial.tid, outcome) for _, trial, outcome in passengers],
                    budget=self.max_evals,
                )
            for (ahead, _, _), result in zip(passengers, results):
                if isinstance(result, (TrialStateError, TrialNotFoundError)):
                    # The lease was lost (reaped and requeued: the retry counts), or the
                    # trial vanished in a server crash (the study fills the gap).
                    continue
                if isinstance(result, TrialError):
                    raise result
                finished.append(result[0])
                if result[1] is not None:
                    ahead.ready.append(result[1])
        finally:
            for ahead, _, _ in passengers:
                ahead.land()
        for trial in finished:
            await self.after(trial)

    async def wait_for_others(self) -> None:
        """Wait a while for other workers' trials; one idle worker looks for the rest."""
        if self.looked is not None:
            await self.looked.wait()
            return
        self.looked = anyio.Event()
        try:
            typical = _IDLE_POLL if self.objective_seconds is None else self.objective_seconds / 4
            await anyio.sleep(min(_IDLE_POLL, max(_MIN_IDLE_POLL, typical)))
            if time.monotonic() - self.last_reap >= _IDLE_POLL:
                self.last_reap = time.monotonic()
                await self.study.renew_and_reap()
        finally:
            looked, self.looked = self.looked, None
            looked.set()

    async def call_objective(self, params: Any) -> Any:
        if self.objective_is_async:
            value = await self.objective(params)
        else:
            value = await anyio.to_thread.run_sync(
                self.objective, params, limiter=self.threads, abandon_on_cancel=True
            )
        if inspect.isawaitable(value):
            value = await value
        return value

    async def evaluate(self, trial: Trial) -> tuple[Outcome, BaseException | None]:
        """Call the objective on ``trial``: its outcome, and the exception to re-raise
        once the outcome is recorded (one outside ``catch``), if any."""
        cancelled = anyio.get_cancelled_exc_class()
        # Stored as the trial's start: a trial taken ahead waited before this.
        began = time.time()
        started = time.perf_counter()
        try:
            if self.trial_timeout is None:
                value = await self.call_objective(trial.params)
            else:
                with anyio.fail_after(self.trial_timeout):
                    value = await self.call_objective(trial.params)
            outcome, escaping = from_value(value), None
        except (cancelled, KeyboardInterrupt):
            # Under trio, Ctrl-C raises KeyboardInterrupt in whichever task runs (here the
            # objective): the trial was interrupted, not failed.
            interrupted = Outcome(TrialState.CANCELLED, error="cancelled", started_at=began)
            await self.record(trial, interrupted)
            raise
        except TimeoutError:
            message = f"TimeoutError: the objective exceeded trial_timeout={self.trial_timeout}s"
            outcome, escaping = Outcome(TrialState.FAIL, error=message), None
        except self.catch as exc:
            outcome, escaping = from_exception(exc), None
        except BaseException as exc:
            outcome, escaping = from_exception(exc), exc
        finally:
            took = time.perf_counter() - started
            self.objective_seconds = moving_average(self.objective_seconds, took)
        # (Built directly: attrs.evolve costs three times as much, on every trial.)
        stamped = Outcome(
            outcome.state,
            loss=outcome.loss,
            result=outcome.result,
            error=outcome.error,
            started_at=began,
        )
        return stamped, escaping

    async def hand_over(
        self, trial: Trial, outcome: Outcome, escaping: BaseException | None, ahead: _Ahead
    ) -> None:
        """Record ``trial``'s outcome and, when allowed, take the worker's next trial.

        While looking ahead pays, a worker holds one more trial than it runs, and its
        outcomes are recorded (taking the trial after next) behind its next call.
        """
        try:
            await ahead.wait_landed()  # at most one handover in flight per worker
        except BaseException:
            await self.record(trial, outcome)  # cancelled: the outcome must stay
            raise
        if escaping is not None or not self.may_take_next(outcome):
            finished = await self.record(trial, outcome)
        elif ahead.ready and self.looks_ahead():
            ahead.take_off()
            self.passengers.append((ahead, trial, outcome))
            if len(self.passengers) == 1:
                self.all_aboard = anyio.Event()
                self.background.start_soon(self.depart)
            elif len(self.passengers) == self.concurrency:
                self.all_aboard.set()
            return
        elif ahead.ready:
            # Looking ahead no longer pays: run the trial held in advance, take no other.
            finished = await self.record(trial, outcome)
        else:
            finished, following = await self.record_and_ask(trial, outcome)
            if following is not None:
                ahead.ready.append(following)
                if self.looks_ahead():
                    ahead.take_off()
                    self.background.start_soon(self.take_spare, ahead)
        if finished is not None:
            await self.after(finished)

    async def take_spare(self, ahead: _Ahead) -> None:
        """Take a trial for a worker that starts to look ahead, while it runs its next."""
        try:
            spare = await self.study.ask(budget=self.max_evals)
            if spare is not None:
                ahead.ready.append(spare)
        finally:
            ahead.land()

    def may_take_next(self, outcome: Outcome) -> bool:
        """Whether the next trial may be taken before `after` has seen this outcome."""
        if self.stopping or self.early_stop is not None:
            return False  # early_stop must see every trial before the next one starts
        if self.loss_threshold is None:
            return True
        threshold = self.loss_threshold
        loss = outcome.loss if outcome.state is TrialState.OK else None
        return all(x is None or x > threshold for x in (loss, self.study.best_loss))

    async def record_and_ask(
        self, trial: Trial, outcome: Outcome
    ) -> tuple[Trial | None, Trial | None]:
        with self.study.shielded():
            try:
                return await self.study.finish_and_ask(trial.tid, outcome, budget=self.max_evals)
            except (TrialStateError, TrialNotFoundError):
                # Our lease was lost (the trial was reaped and requeued: the retry counts),
                # or the trial vanished in a server crash (the study fills the gap).
                return None, None
        return None, None  # pragma: no cover - a shielded scope does not swallow exceptions

    async def record(self, trial: Trial, outcome: Outcome) -> Trial | None:
        with self.study.shielded():
            try:
                return await self.study.finish(trial.tid, outcome)
            except (TrialStateError, TrialNotFoundError):
                # Our lease was lost (the trial was reaped and requeued: the retry counts),
                # or the trial vanished in a server crash (the study fills the gap).
                return None
        return None  # pragma: no cover - a shielded scope does not swallow exceptions

    async def after(self, trial: Trial) -> None:
        for callback in self.callbacks:
            returned = callback(trial)
            if inspect.isawaitable(returned):
                await returned
        if self.progress is not None:
            counts = self.study.counts()
            done = counts[TrialState.OK] + counts[TrialState.FAIL]
            self.progress.update(done, self.study.best_loss)
        best = self.study.best_loss
        if self.loss_threshold is not None and best is not None and best <= self.loss_threshold:
            self.stopping = True
        if self.early_stop is not None and not self.stopping:
            verdict = self.early_stop(self.study.cached_trials())
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict:
                self.stopping = True


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
) -> OptimizationResult:
    """Search ``space`` for the assignment that minimizes ``objective``.

    ``objective(params)`` receives the evaluated space and returns a loss or a mapping
    with ``loss``/``status`` and JSON extras; it may be a coroutine function (awaited) or
    a plain function (run on a worker thread). Up to ``concurrency`` calls run at once.

    Stopping: ``max_evals`` is the study's total budget (trials of every worker and of
    earlier runs count; CANCELLED ones do not); ``timeout`` seconds for this call, after
    which nothing new starts and running trials are cancelled; ``loss_threshold`` and
    ``early_stop(trials) -> bool`` stop starting new trials and let running ones finish.
    ``trial_timeout`` fails a single slow call. ``points_to_evaluate`` (assignments, raw
    values) are queued first when the study is new, and count toward ``max_evals``.

    The study lives in ``storage`` (a URL or a `Storage`) under the name ``study``;
    running again resumes it. Exceptions in ``catch`` make FAIL trials; others propagate
    after their trial is recorded. Raises `StudyMismatchError` when the stored study has
    another space, `SpaceError` for a bad space, ValueError/TypeError for bad arguments.
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
        async with open_study(storage, study, space, algo=algo, seed=seed, lease=lease) as handle:
            if points_to_evaluate and not handle.cached_trials():
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
            await handle.renew_and_reap()
            with anyio.move_on_after(timeout if timeout is not None else math.inf), single_error():
                async with anyio.create_task_group() as group:
                    run.background = group
                    for _ in range(concurrency):
                        group.start_soon(run.worker)
            with anyio.CancelScope(shield=True):
                trials = await handle.trials()
    finally:
        if reporter is not None:
            reporter.close()
    return OptimizationResult(study, trials)
