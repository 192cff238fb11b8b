"""The ask/tell handle on a study: `open_study` and `Study`.

The handle keeps the study's columnar `History` current by applying only the trials that
changed since its last read, derives each suggestion's seed from the study seed and the
trial's position, and keeps the leases of the trials it holds alive.

Everything that writes goes through one step, `Study._exchange`: record some outcomes,
propose some new trials with one call of the suggest function, and send both to the
storage in one round trip. `ask`, `tell` and `minimize`'s batches are all that step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import numpy as np

from asyncopt._groups import single_error
from asyncopt.algorithms import tpe
from asyncopt.algorithms.tpe import TPE
from asyncopt.errors import (
    AllTrialsFailed,
    SpaceError,
    StorageError,
    StudyMismatchError,
    TrialError,
    TrialNotFoundError,
)
from asyncopt.history import History, HistoryBuilder
from asyncopt.outcome import Outcome, from_value
from asyncopt.pruners import NopPruner, Pruner
from asyncopt.space.compile import CompiledSpace, compile_space
from asyncopt.space.description import rebuild
from asyncopt.space.evaluate import Assignment, space_eval
from asyncopt.storage.base import Finish, NewTrial, Storage, check_study_name, new_worker_id
from asyncopt.storage.urls import open_storage
from asyncopt.trial import BUDGETED_STATES, StudyRecord, Trial, TrialState, best_of, loss_rank

__all__ = [
    "RunningTrial",
    "Study",
    "SuggestFunction",
    "SyncRunningTrial",
    "default_algorithm",
    "open_study",
    "suggestion_rng",
    "trial_seed",
]

logger = logging.getLogger("asyncopt")

#: ``suggest(space, history, rng, n) -> list of n assignments``.
SuggestFunction = Callable[[CompiledSpace, History, np.random.Generator, int], list[Assignment]]

# A suggestion expected to hold the event loop longer than this runs on a worker thread
# (the loop serves users' other tasks; a thread hop costs far less than this).
_THREAD_AFTER = 0.005

_CLOSED = Outcome(TrialState.CANCELLED, error="cancelled: the study handle was closed")


def default_algorithm() -> SuggestFunction:
    """The default suggest function: multivariate TPE."""
    suggest: SuggestFunction = tpe.suggest
    return suggest


def trial_seed(study_seed: int, position: int, salt: str = "") -> int:
    """The seed of the suggestion whose first proposal is the trial at ``position`` (its tid).

    ``salt`` (a worker id) is mixed in only while other workers run trials of the study
    (or once this worker has seen them create trials behind its back), so that workers
    sharing one view of the study do not keep proposing the same point; a lone worker,
    and so every sequential run and resume, uses the unsalted seed.
    """
    text = f"{study_seed}:{position}:{salt}" if salt else f"{study_seed}:{position}"
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def suggestion_rng(seed: int) -> np.random.Generator:
    """The random generator a suggestion recorded with ``seed`` (``trial.seed``) used.

    Call the algorithm with it, the history the trial saw and the number of trials
    proposed together (1 in a sequential run) to reproduce the proposal.
    """
    digest = hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=32).digest()
    generator = np.random.Generator(np.random.PCG64(0))
    # Setting the state directly: building a generator from a seed hashes a SeedSequence,
    # a noticeable share of a cheap trial.
    generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }
    return generator


def check_lease(lease: float) -> float:
    """``lease`` as a positive float, or ValueError."""
    if not isinstance(lease, (int, float)) or not math.isfinite(lease) or lease <= 0:
        raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
    return float(lease)


class Study:
    """An open study: ask for trials, tell their outcomes, read its trials.

    Get one with `open_study`. Methods are safe to call from many tasks at once; writes
    are serialized so that concurrent suggestions see each other as pending trials.
    """

    def __init__(
        self,
        storage: Storage,
        record: StudyRecord,
        space: CompiledSpace,
        algo: SuggestFunction,
        *,
        lease: float,
        worker: str,
        pruner: Pruner,
    ) -> None:
        self.space = space
        self._storage = storage
        self._record = record
        self._algo = algo
        self._pruner = pruner
        # What TPE keeps between the suggestions of this study (never shared between them).
        self._tpe_state = algo.new_state() if isinstance(algo, TPE) else None
        self._lease = lease
        self._worker = worker
        self._builder = HistoryBuilder(space)
        self._trials: dict[int, Trial] = {}
        # The latest record of each trial with ``params`` attached, reused until it changes.
        self._dressed: dict[int, Trial] = {}
        self._seq = 0
        self._held: set[int] = set()
        self._lock = anyio.Lock(fast_acquire=True)
        self._view_was_stale = False
        self._closed = False
        # How long the last suggestion call took.
        self._suggest_seconds = 0.0
        self._best: Trial | None = None
        self._counts = dict.fromkeys(TrialState, 0)
        self._unfinished: set[int] = set()

    @property
    def name(self) -> str:
        """The study's name."""
        return self._record.name

    @property
    def seed(self) -> int:
        """The study seed every suggestion seed derives from."""
        return self._record.seed

    def __repr__(self) -> str:
        return f"Study({self.name!r}, {len(self._trials)} trials, storage={self._storage.url!r})"

    # -- the public handle -----------------------------------------------------------------

    async def ask(self, *, budget: int | None = None) -> Trial | None:
        """A RUNNING trial for this worker: a queued one if any, else a new suggestion.

        ``trial.params`` is the evaluated space.

        Args:
            budget: the most budgeted trials the study may hold; None (creating nothing)
                is returned once it is reached.
        """
        trials = await self.ask_many(1, budget=budget)
        return trials[0] if trials else None

    async def ask_many(self, n: int, *, budget: int | None = None) -> list[Trial]:
        """Up to ``n`` RUNNING trials (queued ones first), proposed together in one call.

        Args:
            n: how many trials to take.
            budget: the most budgeted trials the study may hold; fewer trials, or none,
                are returned once it is reached.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        _, created = await self._exchange([], n, budget)
        return created

    async def tell(self, tid: int, value: Any = None, *, state: TrialState | None = None) -> Trial:
        """Record the objective's value for trial ``tid``.

        Args:
            tid: the trial's id, as `ask` gave it.
            value: a loss or a result mapping; one that is not a finite loss or a valid
                mapping records a FAIL trial with the reason.
            state: `TrialState.PRUNED` ends the trial PRUNED, its loss ``value`` if that
                is a number, else its last reported value; None takes the state from
                ``value``.

        Raises:
            TrialError: (subclasses) an unknown tid, a trial told twice, or a trial that
                was cancelled or is held by another worker.
        """
        if state is None:
            outcome = from_value(value)
        elif state is TrialState.PRUNED:
            given = None if value is None else from_value(value)
            if given is not None and given.state is not TrialState.OK:
                raise ValueError(
                    f"a pruned trial's value must be a finite loss (or omitted), got {value!r}"
                )
            outcome = self._pruned(tid, None if given is None else given.loss)
        else:
            raise ValueError(
                f"tell takes state=TrialState.PRUNED or no state, not {state!r} (a failure "
                "is told as {'status': 'fail'})"
            )
        [result] = await self._tell([(tid, outcome)])
        if isinstance(result, TrialError):
            raise result
        return result

    async def tell_many(self, values: Sequence[tuple[int, Any]]) -> list[Trial | TrialError]:
        """`tell` for several trials in one storage round trip.

        Args:
            values: (tid, loss or result mapping) pairs.

        Returns:
            In order, each finished trial or the `TrialError` that refused it.
        """
        return await self._tell([(tid, from_value(v)) for tid, v in values])

    async def _tell(self, outcomes: Sequence[tuple[int, Outcome]]) -> list[Trial | TrialError]:
        for tid, _ in outcomes:
            if isinstance(tid, bool) or not isinstance(tid, int):
                raise TypeError(f"tid must be an int, got {tid!r}")
        finished, _ = await self._exchange(outcomes, 0, None)
        return finished

    async def report(self, tid: int, value: float, step: int) -> Trial:
        """Record an intermediate ``value`` of held trial ``tid`` at ``step``.

        A step reported before keeps its first value (a warning says so). Other workers
        see the value at their next read; the pruner sees it at once.

        Args:
            tid: the trial's id, as `ask` gave it.
            value: the objective's loss so far (lower is better); a non-finite one is
                stored as NaN.
            step: a non-negative int: an epoch, an iteration, a number of examples.

        Raises:
            TrialError: (subclasses) an unknown tid, a finished trial, or a trial that is
                held by another worker.
        """
        known = self._trials.get(tid)
        trial = await self._storage.report(
            self.name, tid, worker=self._worker, step=step, value=value
        )
        if known is not None and step in known.intermediate:
            logger.warning(
                "study %r: trial %d already reported step %d; its first value is kept",
                self.name,
                tid,
                step,
            )
        self._apply([trial])
        return self._with_params(trial)

    async def should_prune(self, tid: int) -> bool:
        """Whether the study's pruner would stop trial ``tid`` now, from what every worker
        has reported so far."""
        await self._refresh()
        trial = self._trials.get(tid)
        if trial is None:
            raise TrialNotFoundError(f"study {self.name!r} has no trial {tid}")
        return bool(self._pruner.should_prune(trial, tuple(self._trials.values())))

    def _pruned(self, tid: int, loss: float | None = None) -> Outcome:
        """The outcome that ends trial ``tid`` PRUNED: ``loss`` if given, else the trial's
        last reported value (None without one, or when it is NaN)."""
        if loss is None and tid in self._trials:
            last = self._trials[tid].last_value
            loss = None if last is None or not math.isfinite(last) else last
        return Outcome(TrialState.PRUNED, loss=loss)

    async def enqueue(
        self, assignments: Sequence[Mapping[str, Any]], *, budget: int | None = None
    ) -> list[Trial]:
        """Queue assignments to be evaluated first.

        Args:
            assignments: label -> raw value (a choice's option index), validated against
                the space.
            budget: the most budgeted trials the study may hold; extra ones are dropped.
        """
        for assignment in assignments:
            self.space.check_assignment(assignment)
        queued = await self._storage.enqueue_trials(self.name, list(assignments), budget=budget)
        self._apply(queued)
        return queued

    async def trials(self) -> tuple[Trial, ...]:
        """Every trial of the study, ordered by tid, with ``params``."""
        await self._refresh()
        return self._cached_trials()

    async def best_trial(self) -> Trial:
        """The OK trial with the lowest loss (lowest tid on ties); `AllTrialsFailed` if none."""
        await self._refresh()
        if self._best is None:
            raise AllTrialsFailed(f"study {self.name!r} has no successful trial")
        return self._with_params(self._best)

    async def to_dataframe(self) -> Any:
        """Every trial as a pandas DataFrame, one row per trial (needs ``asyncopt[pandas]``).

        The columns are those of `OptimizationResult.to_dataframe`.
        """
        from asyncopt._table import trials_dataframe

        return trials_dataframe(await self.trials(), self.space)

    def let_go(self, tid: int) -> None:
        """Stop holding trial ``tid``: its lease is no longer renewed and closing the study
        leaves it RUNNING, for another process to finish (``asyncopt ask``, then ``tell``)."""
        self._held.discard(tid)

    # -- the local view --------------------------------------------------------------------

    def _apply(self, trials: Sequence[Trial], *, replace: bool = False) -> None:
        # ``replace`` applies records whatever their seq: an outcome applied before it is
        # stored keeps the seq of the record it changes, so the stored one replaces it.
        accepted = []
        for trial in trials:
            known = self._trials.get(trial.tid)
            if known is not None:
                if known.seq >= trial.seq and not replace:
                    continue  # a record we already have (our own write read back), or older
                self._counts[known.state] -= 1
            self._counts[trial.state] += 1
            if trial.state.is_finished:
                self._unfinished.discard(trial.tid)
            else:
                self._unfinished.add(trial.tid)
            self._trials[trial.tid] = trial
            best = self._best
            if trial.state is TrialState.OK and trial.loss is not None:
                if best is None or best.tid == trial.tid or loss_rank(trial) < loss_rank(best):
                    self._best = trial
            elif best is not None and best.tid == trial.tid:
                self._best = best_of(self._trials.values())
            accepted.append(trial)
        self._builder.update(accepted)

    async def _refresh(self) -> None:
        self._read(await self._storage.trials_since(self.name, self._seq))

    def _read(self, changed: Sequence[Trial]) -> None:
        self._apply(changed)
        # Only a read advances the cursor: this handle's own writes may carry seqs above
        # changes other processes made meanwhile, which the next read must still fetch.
        if changed:
            self._seq = max(self._seq, changed[-1].seq)

    def _with_params(self, trial: Trial) -> Trial:
        dressed = self._dressed.get(trial.tid)
        if dressed is not None and dressed.seq == trial.seq and dressed.state is trial.state:
            return dressed
        if dressed is not None:
            params = dressed.params  # the assignment of a trial never changes
        else:
            try:
                params = space_eval(self.space, trial.assignment)
            except SpaceError:
                return trial
        dressed = trial.evolve(params=params)
        self._dressed[trial.tid] = dressed
        return dressed

    def _cached_trials(self) -> tuple[Trial, ...]:
        return tuple(self._with_params(self._trials[tid]) for tid in sorted(self._trials))

    def _budgeted(self) -> int:
        return sum(self._counts[state] for state in BUDGETED_STATES)

    def _others_unfinished(self) -> bool:
        """True when, as of the last read, trials are QUEUED or held RUNNING by others."""
        return not self._unfinished.issubset(self._held)

    def _shielded(self) -> contextlib.AbstractContextManager[Any]:
        """A scope that lets a storage write finish even if the caller is cancelled.

        A storage whose calls never yield to the event loop (memory) cannot be
        interrupted, so it gets a no-op scope.
        """
        if type(self._storage).never_yields:
            return contextlib.nullcontext()
        return anyio.CancelScope(shield=True)

    # -- the one write step ----------------------------------------------------------------

    async def _exchange(
        self, outcomes: Sequence[tuple[int, Outcome]], n: int, budget: int | None
    ) -> tuple[list[Trial | TrialError], list[Trial]]:
        """Record ``outcomes`` of held trials and take up to ``n`` new RUNNING trials.

        Queued trials are claimed first; the rest are proposed by one suggestion call
        that already sees ``outcomes``, and stored with them in one round trip, as many
        as ``budget`` allows. Returns each outcome's finished trial (or the `TrialError`
        that refused it) and the trials taken.
        """
        async with self._lock:
            if self._closed:
                raise StorageError(f"the handle on study {self.name!r} is closed")
            if n and not outcomes:
                # A lone ask: what others did since the last exchange may be long ago.
                await self._refresh()
            before = {tid: self._trials.get(tid) for tid, _ in outcomes}
            self._apply(
                [self._provisional(tid, o) for tid, o in outcomes if tid in self._held],
                replace=True,
            )
            taken: list[Trial] = []
            if n and self._counts[TrialState.QUEUED]:
                # Queued trials are in the budget already.
                with self._shielded():
                    claimed = await self._storage.claim_trials(
                        self.name, worker=self._worker, lease=self._lease, limit=n
                    )
                    taken = [self._take(trial) for trial in claimed]
            room = n - len(taken)
            if budget is not None:
                room = max(0, min(room, budget - self._budgeted()))
            proposals: list[Assignment] = []
            position = len(self._builder)
            shared = self._view_was_stale or self._others_unfinished()
            seed = trial_seed(self.seed, position, self._worker if shared else "")
            if room:
                proposals = await self._suggest(seed, room)
            with self._shielded():
                batch = await self._storage.finish_and_create(
                    self.name,
                    [_finish(tid, outcome) for tid, outcome in outcomes],
                    [NewTrial(assignment, seed) for assignment in proposals],
                    since=self._seq,
                    worker=self._worker,
                    budget=budget,
                    lease=self._lease,
                )
                self._held.difference_update(tid for tid, _ in outcomes)
                created = [self._take(trial) for trial in batch.created]
            if created and created[0].tid != position:
                # Another worker created trials since our read: from now on this handle
                # salts its seeds, so two workers never keep proposing from one view.
                self._view_was_stale = True
            self._read(batch.changed)
            finished: list[Trial | TrialError] = []
            for (tid, _), result in zip(outcomes, batch.finished):
                if isinstance(result, TrialError):
                    known = before[tid]
                    if known is not None and self._trials[tid].seq == known.seq:
                        if isinstance(result, TrialNotFoundError):
                            known = self._vanished(known)
                        self._apply([known], replace=True)  # nothing newer replaced it
                    finished.append(result)
                else:
                    self._apply([result])
                    finished.append(self._with_params(result))
            return finished, taken + created

    def _vanished(self, trial: Trial) -> Trial:
        """The local record of a held trial that is gone from the storage.

        Only a write lost by a crashed server does that; the storage then fills the tid
        gap with a later trial, so the study still reaches its budget. Locally the trial
        ends (CANCELLED), so nobody waits for it.
        """
        logger.warning(
            "study %r: trial %d vanished from the storage (a write lost in a server crash?); "
            "its outcome is not recorded and another trial takes its place",
            self.name,
            trial.tid,
        )
        return trial.evolve(state=TrialState.CANCELLED, error="vanished from the storage")

    def _provisional(self, tid: int, outcome: Outcome) -> Trial:
        known = self._trials[tid]
        started = known.started_at if outcome.started_at is None else outcome.started_at
        return known.evolve(
            state=outcome.state,
            loss=outcome.loss,
            result=outcome.result,
            error=outcome.error,
            started_at=started,
            lease_expires_at=None,
        )

    def _take(self, trial: Trial) -> Trial:
        self._held.add(trial.tid)
        self._apply([trial])
        return self._with_params(trial)

    async def _suggest(self, seed: int, n: int) -> list[Assignment]:
        history = self._builder.snapshot()
        rng = suggestion_rng(seed)

        def run() -> tuple[list[Assignment], float]:
            started = time.perf_counter()
            algo, state = self._algo, self._tpe_state
            if isinstance(algo, TPE) and state is not None:
                proposals = algo(self.space, history, rng, n, state=state)
            else:
                proposals = algo(self.space, history, rng, n)
            return proposals, time.perf_counter() - started

        # Several proposals (a batch of a busy search) or a slow model: off the loop.
        if n > 1 or self._suggest_seconds > _THREAD_AFTER:
            proposals, took = await anyio.to_thread.run_sync(run)
        else:
            proposals, took = run()
        self._suggest_seconds = took
        return proposals

    # -- leases ----------------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Forever: renew held leases and reap expired ones every third of the lease."""
        while True:
            await anyio.sleep(self._lease / 3)
            try:
                await self._renew_and_reap()
            except StorageError as exc:
                # A passing outage must not stop the search; the next beat tries again.
                logger.warning("renewing leases of study %r failed: %s", self.name, exc)

    async def _renew_and_reap(self) -> None:
        """Renew this worker's leases once, and reap trials whose lease expired."""
        if self._held:
            held = sorted(self._held)
            lost = await self._storage.renew_leases(
                self.name, held, worker=self._worker, lease=self._lease
            )
            # A trial finished while the renewal was in flight is not lost, just done.
            lost = [tid for tid in lost if tid in self._held]
            self._held.difference_update(lost)
            if lost:
                logger.warning(
                    "study %r: lost the lease of trials %s (reaped by another worker)",
                    self.name,
                    lost,
                )
        reaped = await self._storage.reap_expired(self.name)
        if reaped:
            logger.info(
                "study %r: reaped trials %s whose worker stopped renewing its lease",
                self.name,
                [t.tid for t in reaped],
            )
            await self._refresh()

    async def _release(self) -> None:
        """Cancel the trials still held (asked, never told) and refuse further writes."""
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + 30
            if self._held:
                await self._exchange([(tid, _CLOSED) for tid in sorted(self._held)], 0, None)
            self._closed = True


class RunningTrial:
    """An objective's handle on its trial: given as the second argument to an async
    objective that takes two.

    ``await trial.report(value, step)`` records an intermediate value and
    ``await trial.should_prune()`` asks the study's pruner; raise `asyncopt.TrialPruned`
    (or return) once it says yes, and the trial ends PRUNED with its last value.
    """

    def __init__(self, study: Study, trial: Trial) -> None:
        self._study = study
        self.trial = trial
        #: True once `should_prune` said yes: the trial ends PRUNED however it returns.
        self.pruned = False

    @property
    def tid(self) -> int:
        """The trial's id."""
        return self.trial.tid

    @property
    def params(self) -> Any:
        """The evaluated space the objective was called with."""
        return self.trial.params

    async def report(self, value: float, step: int) -> None:
        """Record ``value`` (the loss so far) at ``step`` (a non-negative int)."""
        await self._study.report(self.trial.tid, value, step)

    async def should_prune(self) -> bool:
        """Whether the pruner would stop this trial now."""
        self.pruned = self.pruned or await self._study.should_prune(self.trial.tid)
        return self.pruned


class SyncRunningTrial:
    """`RunningTrial` for a plain (sync) objective, which runs on its own thread: the
    same methods, blocking while the event loop carries them out."""

    def __init__(self, running: RunningTrial) -> None:
        self._running = running
        self._token = anyio.lowlevel.current_token()

    @property
    def tid(self) -> int:
        """The trial's id."""
        return self._running.tid

    @property
    def params(self) -> Any:
        """The evaluated space the objective was called with."""
        return self._running.params

    def report(self, value: float, step: int) -> None:
        """Record ``value`` (the loss so far) at ``step`` (a non-negative int)."""
        anyio.from_thread.run(self._running.report, value, step, token=self._token)

    def should_prune(self) -> bool:
        """Whether the pruner would stop this trial now."""
        pruned: bool = anyio.from_thread.run(self._running.should_prune, token=self._token)
        return pruned


def _finish(tid: int, outcome: Outcome) -> Finish:
    return Finish(
        tid, outcome.state, outcome.loss, outcome.result, outcome.error, outcome.started_at
    )


@asynccontextmanager
async def open_study(
    storage: Storage | str,
    name: str = "default",
    space: Any = None,
    *,
    algo: SuggestFunction | None = None,
    seed: int | None = None,
    lease: float = 60.0,
    worker: str | None = None,
    pruner: Pruner | None = None,
) -> AsyncIterator[Study]:
    """Open (creating if needed) the study ``name`` for ask/tell, as ``async with``.

    While the block runs, the leases of asked trials are renewed every ``lease / 3``
    seconds; at its end, trials asked and never told are recorded CANCELLED and the
    handle refuses further writes.

    Args:
        storage: a storage URL or a `Storage`.
        name: the study's name (a non-empty string without NUL).
        space: the search space; may be omitted for an existing study (rebuilt from its
            stored description).
        algo: the suggest function (default: multivariate TPE).
        seed: a new study's seed (random if None); an existing study keeps its seed, and
            a different explicit one raises `StudyMismatchError`.
        lease: seconds a trial's lease lasts without renewal.
        worker: this handle's worker id (default ``host:pid:random``).
        pruner: what `Study.should_prune` asks (default: `NopPruner`, never prunes).

    Raises:
        StudyMismatchError: the study exists with a different space or seed.
        StudyNotFoundError: ``space`` is omitted and there is no such study.
    """
    name = check_study_name(name)
    lease = check_lease(lease)
    if pruner is not None and not callable(getattr(pruner, "should_prune", None)):
        raise TypeError(f"pruner must have a should_prune method, got {type(pruner).__name__}")
    async with open_storage(storage) as store:
        if space is None:
            record = await store.get_study(name)
            compiled = compile_space(rebuild(dict(record.space)))
        else:
            compiled = compile_space(space)
            record = await store.create_study(
                name,
                fingerprint=compiled.fingerprint,
                space=compiled.describe(),
                seed=secrets.randbits(31) if seed is None else int(seed),
            )
        if seed is not None and record.seed != int(seed):
            raise StudyMismatchError(
                f"study {name!r} was created with seed {record.seed}, not {seed}; "
                "omit seed to resume it"
            )
        handle = Study(
            store,
            record,
            compiled,
            algo or default_algorithm(),
            lease=lease,
            worker=worker or new_worker_id(),
            pruner=NopPruner() if pruner is None else pruner,
        )
        with single_error():
            async with anyio.create_task_group() as group:
                group.start_soon(handle._keep_leases)
                try:
                    await handle._refresh()
                    yield handle
                finally:
                    group.cancel_scope.cancel()
                    await handle._release()
