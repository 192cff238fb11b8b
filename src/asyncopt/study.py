"""The ask/tell handle on a study: `open_study` and `Study`.

The handle keeps the study's columnar `History` current by applying only the trials that
changed since its last read, derives each suggestion's seed from the study seed and the
trial's position, and keeps the leases of the trials it holds alive.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import numpy as np

from asyncopt._groups import single_error
from asyncopt.errors import (
    AllTrialsFailed,
    SpaceError,
    StorageError,
    StudyMismatchError,
    TrialError,
    TrialNotFoundError,
    TrialStateError,
)
from asyncopt.history import History, HistoryBuilder
from asyncopt.outcome import Outcome, from_value
from asyncopt.space.compile import CompiledSpace, compile_space
from asyncopt.space.description import rebuild
from asyncopt.space.evaluate import Assignment, space_eval
from asyncopt.storage.base import Finish, NewTrial, Storage, check_study_name, new_worker_id
from asyncopt.storage.urls import open_storage
from asyncopt.trial import BUDGETED_STATES, StudyRecord, Trial, TrialState, best_of, loss_rank

__all__ = [
    "Study",
    "SuggestFunction",
    "default_algorithm",
    "open_study",
    "suggestion_rng",
    "trial_seed",
]

logger = logging.getLogger("asyncopt")

#: ``suggest(space, history, rng, n) -> list of n assignments``.
SuggestFunction = Callable[[CompiledSpace, History, np.random.Generator, int], list[Assignment]]

# Suggestions run on a worker thread, to keep the loop free, while their typical duration
# (a moving average, so one slow call on a busy machine does not count) exceeds this.
_THREAD_THRESHOLD = 0.005
# An `ask` this soon after a `finish` uses the changes that finish read instead of reading.
_FRESH_READ = 0.05
_AVERAGE_WEIGHT = 0.25


def moving_average(average: float | None, sample: float) -> float:
    """``average`` moved a quarter of the way towards ``sample`` (``sample`` if it is None).

    The typical duration of something that one slow run on a busy machine should not set.
    """
    return sample if average is None else average + _AVERAGE_WEIGHT * (sample - average)


def default_algorithm() -> SuggestFunction:
    """The default suggest function: multivariate TPE (random search if TPE is unavailable)."""
    try:
        from asyncopt.algorithms import tpe
    except ImportError:  # pragma: no cover - tpe ships with the package
        from asyncopt.algorithms import rand

        return rand.suggest
    suggest: SuggestFunction = tpe.suggest
    return suggest


def trial_seed(study_seed: int, position: int, salt: str = "") -> int:
    """The seed of the suggestion for the trial at ``position`` (its expected tid).

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

    Call the algorithm with it and the history the trial saw to reproduce the proposal.
    """
    generator = np.random.Generator(np.random.PCG64(0))
    _reseed(generator, seed)
    return generator


def _reseed(generator: np.random.Generator, seed: int) -> None:
    # Setting a PCG64 state directly costs ~1.6 µs; building a generator from a seed
    # (SeedSequence hashing) ~27 µs, a noticeable share of a free trial.
    digest = hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=32).digest()
    generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }


def check_lease(lease: float) -> float:
    """``lease`` as a positive float, or ValueError."""
    if not isinstance(lease, (int, float)) or not math.isfinite(lease) or lease <= 0:
        raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
    return float(lease)


class _Stage(enum.Enum):
    WAITING = enum.auto()  # for the ask lock, or for a round trip to take it
    TAKEN = enum.auto()  # a round trip (maybe another task's) carries it
    DONE = enum.auto()  # settled: a result or an error
    FALLBACK = enum.auto()  # to be served by `finish` then `ask`


# The outcome recorded for a trial created for a caller that went away before running it.
_UNRUN = Outcome(TrialState.CANCELLED, error="cancelled: the caller left before running it")


@attrs.define(eq=False)
class _Handover:
    """One `Study.finish_and_ask` call: the outcome to record and what its round trip gave."""

    tid: int
    outcome: Outcome
    budget: int | None
    undo: Callable[[], None]
    stage: _Stage = _Stage.WAITING
    result: tuple[Trial, Trial | None] | None = None
    error: BaseException | None = None
    _settled: anyio.Event | None = None

    def to_store(self) -> Finish:
        outcome = self.outcome
        return Finish(
            self.tid,
            outcome.state,
            outcome.loss,
            outcome.result,
            outcome.error,
            outcome.started_at,
        )

    def settle(
        self,
        *,
        result: tuple[Trial, Trial | None] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.stage, self.result, self.error = _Stage.DONE, result, error
        if self._settled is not None:
            self._settled.set()

    async def wait_settled(self) -> None:
        if self.stage is not _Stage.DONE:
            self._settled = anyio.Event()
            await self._settled.wait()


class Study:
    """An open study: ask for trials, tell their outcomes, read its trials.

    Get one with `open_study`. Methods are safe to call from many tasks at once; asking
    is serialized so that concurrent suggestions see each other as pending trials.
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
    ) -> None:
        self.storage = storage
        self.record = record
        self.space = space
        self.algo = algo
        self.lease = lease
        self.worker = worker
        self._builder = HistoryBuilder(space)
        self._trials: dict[int, Trial] = {}
        # The latest record of each trial with ``params`` attached, reused until it changes.
        self._dressed: dict[int, Trial] = {}
        self._seq = 0
        self._held: set[int] = set()
        self._ask_lock = anyio.Lock(fast_acquire=True)
        self._rng = np.random.Generator(np.random.PCG64(0))
        self._view_was_stale = False
        # When a `finish` last read every change; the next `ask` soon after uses that read.
        self._finish_read_at = -math.inf
        self._never_yields = type(storage).never_yields
        self._suggest_seconds = 0.0  # moving average of the suggestion's duration
        self._best: Trial | None = None
        self._counts = dict.fromkeys(TrialState, 0)
        self._unfinished: set[int] = set()
        # Handovers are combined into one round trip only where that is one round trip.
        self._combines = type(storage).one_round_trip
        self._handovers: list[_Handover] = []
        self._round_trip_seconds = 0.0  # moving average of a finish_and_create call
        #: Set when the `open_study` block ends: the handle then creates no trial.
        self.closed = False

    @property
    def name(self) -> str:
        """The study's name."""
        return self.record.name

    @property
    def seed(self) -> int:
        """The study seed every suggestion seed derives from."""
        return self.record.seed

    @property
    def round_trip_seconds(self) -> float:
        """The typical duration (a moving average) of the storage call of `finish_and_ask`.

        0.0 until one was made. It is the time a worker waits for the storage between
        two trials, suggestions aside.
        """
        return self._round_trip_seconds

    @property
    def held(self) -> frozenset[int]:
        """Tids of the RUNNING trials this handle holds the lease of."""
        return frozenset(self._held)

    def __repr__(self) -> str:
        return f"Study({self.name!r}, {len(self._trials)} trials, storage={self.storage.url!r})"

    # -- reading ---------------------------------------------------------------------------

    def _apply(self, trials: Sequence[Trial], *, replace: bool = False) -> None:
        # ``replace`` applies records whatever their seq: a local, provisional outcome
        # (which keeps the seq of the record it changes) and its undoing.
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
                # The same trial's newer record (the stored one after a provisional one)
                # replaces it; another replaces it when better.
                if best is None or best.tid == trial.tid or loss_rank(trial) < loss_rank(best):
                    self._best = trial
            elif best is not None and best.tid == trial.tid:
                # The best trial is no longer OK (a provisional outcome undone).
                self._best = best_of(self._trials.values())
            accepted.append(trial)
        self._builder.update(accepted)

    async def refresh(self) -> None:
        """Read the trials that changed since the last read."""
        self._read(await self.storage.trials_since(self.name, self._seq))

    def _read(self, changed: Sequence[Trial]) -> None:
        self._apply(changed)
        # Only a read advances the cursor: this handle's own writes may carry seqs above
        # changes other processes made meanwhile, which the next read must still fetch.
        if changed:
            self._seq = max(self._seq, changed[-1].seq)

    def history(self) -> History:
        """The columnar history as of the last read (immutable)."""
        return self._builder.snapshot()

    def _with_params(self, trial: Trial) -> Trial:
        dressed = self._dressed.get(trial.tid)
        # A provisional outcome keeps the seq of the record it changes: compare states too.
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

    def cached_trials(self) -> tuple[Trial, ...]:
        """The trials as of the last read, ordered by tid, with ``params``."""
        return tuple(self._with_params(self._trials[tid]) for tid in sorted(self._trials))

    def counts(self) -> dict[TrialState, int]:
        """Number of trials per state as of the last read."""
        return dict(self._counts)

    def others_unfinished(self) -> bool:
        """True when, as of the last read, trials are QUEUED or held RUNNING by other workers."""
        return not self._unfinished.issubset(self._held)

    @property
    def best_loss(self) -> float | None:
        """The lowest loss of an OK trial as of the last read."""
        return None if self._best is None else self._best.loss

    async def trials(self) -> tuple[Trial, ...]:
        """Every trial of the study, ordered by tid, with ``params``."""
        await self.refresh()
        return self.cached_trials()

    async def best_trial(self) -> Trial:
        """The OK trial with the lowest loss (lowest tid on ties); `AllTrialsFailed` if none."""
        await self.refresh()
        if self._best is None:
            raise AllTrialsFailed(f"study {self.name!r} has no successful trial")
        return self._with_params(self._best)

    # -- asking ----------------------------------------------------------------------------

    async def ask(self, *, budget: int | None = None) -> Trial | None:
        """A RUNNING trial for this worker: a queued one if any, else a new suggestion.

        With ``budget``, returns None (creating nothing) once the study holds ``budget``
        budgeted trials. ``trial.params`` is the evaluated space.
        """
        if self.closed:
            raise StorageError(f"study {self.name!r} was closed; open it again to ask")
        async with self._ask_lock:
            if time.monotonic() - self._finish_read_at < _FRESH_READ:
                # A finish just read every change (in its own round trip): as fresh as a
                # read here would be. Each such read serves one ask.
                self._finish_read_at = -math.inf
            else:
                await self.refresh()
            if self._counts[TrialState.QUEUED]:
                # Shielded like the create below: a claimed trial must reach `_take`.
                with self.shielded():
                    claimed = await self.storage.claim_trial(
                        self.name, worker=self.worker, lease=self.lease
                    )
                    taken = None if claimed is None else self._take(claimed)
                if taken is not None:
                    return taken
            if self._budget_spent(budget):
                return None  # as of this read: no need to suggest what cannot be created
            seed, position = self._next_seed()
            assignment = await self._suggest(seed)
            # A trial the storage created must be held (so closing the handle cancels it)
            # even if the caller is cancelled meanwhile; the cancellation lands after.
            with self.shielded():
                created = await self.storage.create_trial(
                    self.name,
                    assignment,
                    budget=budget,
                    worker=self.worker,
                    lease=self.lease,
                    seed=seed,
                )
                taken = None if created is None else self._take(created)
            self._note_position(created, position)
            return taken

    def _budget_spent(self, budget: int | None) -> bool:
        """Whether, as of the last read, the study holds ``budget`` budgeted trials."""
        return budget is not None and self._budgeted() >= budget

    def _budgeted(self) -> int:
        """The number of budgeted trials as of the last read."""
        return sum(self._counts[state] for state in BUDGETED_STATES)

    def _next_seed(self, ahead: int = 0) -> tuple[int, int]:
        """The seed of the next suggestion, and the position (tid) it expects.

        ``ahead`` counts the proposals made before it that are not yet stored.
        """
        position = len(self._builder) + ahead
        shared = self._view_was_stale or self.others_unfinished()
        return trial_seed(self.seed, position, self.worker if shared else ""), position

    def _note_position(self, created: Trial | None, position: int) -> None:
        if created is not None and created.tid != position:
            # Another worker created trials since our read: from now on this handle
            # salts its seeds, so two workers never keep proposing from one view.
            self._view_was_stale = True

    def shielded(self) -> contextlib.AbstractContextManager[Any]:
        """A scope that lets a storage write finish even if the caller is cancelled.

        A storage whose calls never yield to the event loop (``never_yields``, the memory
        backend) cannot be interrupted, so it gets a no-op scope.
        """
        if self._never_yields:
            return contextlib.nullcontext()
        return anyio.CancelScope(shield=True)

    def _take(self, trial: Trial) -> Trial:
        self._held.add(trial.tid)
        self._apply([trial])
        return self._with_params(trial)

    async def _suggest(self, seed: int, history: History | None = None) -> Assignment:
        if history is None:
            history = self._builder.snapshot()
        rng = self._rng  # reseeded per suggestion; asks are serialized by the ask lock
        _reseed(rng, seed)

        took = 0.0

        def run() -> Assignment:
            nonlocal took
            started = time.perf_counter()
            proposal = self.algo(self.space, history, rng, 1)[0]
            took = time.perf_counter() - started
            return proposal

        if self._suggest_seconds > _THREAD_THRESHOLD:
            assignment = await anyio.to_thread.run_sync(run)
        else:
            assignment = run()
        self._suggest_seconds = moving_average(self._suggest_seconds, took)
        return assignment

    async def enqueue(
        self, assignments: Sequence[Mapping[str, Any]], *, budget: int | None = None
    ) -> list[Trial]:
        """Queue assignments (validated against the space) to be evaluated first."""
        for assignment in assignments:
            self.space.check_assignment(assignment)
        queued = await self.storage.enqueue_trials(self.name, list(assignments), budget=budget)
        self._apply(queued)
        return queued

    # -- telling ---------------------------------------------------------------------------

    async def tell(self, tid: int, value: Any) -> Trial:
        """Record the objective's value for trial ``tid`` (a loss or a result mapping).

        A value that is not a finite loss or a valid mapping records a FAIL trial.
        Raises `asyncopt.TrialError` subclasses for an unknown tid, a trial told twice
        or a trial that was cancelled or is held by another worker.
        """
        return await self.finish(tid, from_value(value))

    async def finish(self, tid: int, outcome: Outcome) -> Trial:
        """Record ``outcome`` for trial ``tid`` (used by `tell` and `minimize`)."""
        try:
            finish = Finish(
                tid, outcome.state, outcome.loss, outcome.result, outcome.error, outcome.started_at
            )
            batch = await self.storage.finish_and_create(
                self.name,
                [finish],
                [],
                since=self._seq,
                worker=self.worker,
                budget=None,
                lease=self.lease,
            )
            [trial] = batch.finished
            self._read(batch.changed)
            if isinstance(trial, TrialError):
                self._note_vanished(tid, trial)
                raise trial
            self._finish_read_at = time.monotonic()
        finally:
            if outcome.state.is_finished:
                self._held.discard(tid)
        self._apply([trial])
        return self._with_params(trial)

    async def finish_and_ask(
        self, tid: int, outcome: Outcome, *, budget: int | None = None
    ) -> tuple[Trial, Trial | None]:
        """`finish` then `ask`, in one storage round trip when the storage allows.

        Returns the finished trial and the next one (None once ``budget`` is spent). The
        outcome is applied locally at once, so the next suggestion (and those of other
        tasks meanwhile) see it; what other workers changed since the last read arrives
        with the round trip and is seen by the suggestion after. Where the storage does
        several finishes and creates in one round trip (SQLite), calls made by other tasks
        at the same moment share it, while a suggestion takes less time than a round trip.
        While trials are queued (they are claimed first) or the budget looks spent, this
        is `finish` then `ask`. Raises like `finish`; then nothing was asked.
        """
        [result] = await self.finish_and_ask_many([(tid, outcome)], budget=budget)
        if isinstance(result, TrialError):
            raise result
        return result

    async def finish_and_ask_many(
        self, outcomes: Sequence[tuple[int, Outcome]], *, budget: int | None = None
    ) -> list[tuple[Trial, Trial | None] | TrialError]:
        """`finish_and_ask` for several held trials at once, sharing round trips.

        ``outcomes`` holds (tid, outcome) pairs. Returns, in their order, each trial's
        finished record and next trial, or the `TrialError` that refused its finish
        (then nothing was asked for it). Other errors raise.
        """
        mine = [
            _Handover(tid, outcome, budget, self._apply_outcome(tid, outcome))
            for tid, outcome in outcomes
        ]
        self._handovers += mine
        try:
            async with self._ask_lock:
                for handover in mine:
                    if handover.stage is _Stage.WAITING:
                        await self._hand_over(handover)
        except BaseException:
            for handover in mine:
                await self._abandon(handover)
            raise
        results: list[tuple[Trial, Trial | None] | TrialError] = []
        for index, handover in enumerate(mine):
            try:
                results.append(await self._served(handover, budget))
            except BaseException:
                for unreturned in mine[:index] + mine[index + 1 :]:
                    await self._abandon(unreturned)
                raise
        return results

    async def _served(
        self, handover: _Handover, budget: int | None
    ) -> tuple[Trial, Trial | None] | TrialError:
        """What ``handover``'s round trip gave, or its `finish` then `ask` (FALLBACK)."""
        if handover.stage is _Stage.DONE:
            if isinstance(handover.error, TrialError):
                return handover.error
            if handover.error is not None:
                raise handover.error
            assert handover.result is not None
            return handover.result
        try:
            finished = await self.finish(handover.tid, handover.outcome)
        except BaseException as exc:
            handover.undo()
            if isinstance(exc, TrialError):
                return exc
            raise
        handover.settle(result=(finished, None))  # recorded: not to be recorded again
        following = await self.ask(budget=budget)
        handover.settle(result=(finished, following))
        return finished, following

    async def _hand_over(self, own: _Handover) -> None:
        """Serve ``own`` (and others waiting, if combining pays) with one round trip.

        Called holding the ask lock. Leaves ``own`` DONE, or FALLBACK when it must be a
        `finish` then an `ask`; others it carried are DONE.
        """
        if own.tid not in self._held or self._counts[TrialState.QUEUED]:
            self._fall_back(own)
            return
        room = None if own.budget is None else own.budget - self._budgeted()
        if room is not None and room <= 0:
            self._fall_back(own)
            return
        combining = self._combines and self._suggest_seconds < self._round_trip_seconds
        if combining and len(self._held) > 1:
            # Trials finishing in this same pass of the event loop join this round trip.
            await anyio.lowlevel.checkpoint()
        batch = [own]
        if combining:
            batch += [
                h
                for h in self._handovers
                if h is not own and h.budget == own.budget and h.tid in self._held
            ]
            if room is not None:
                del batch[room:]
        for handover in batch:
            handover.stage = _Stage.TAKEN
        self._handovers = [h for h in self._handovers if h.stage is _Stage.WAITING]
        positions: list[int] = []
        new: list[NewTrial] = []
        try:
            for _ in batch:
                seed, position = self._next_seed(len(positions))
                # Not kept in a variable: a snapshot alive during the round trip would
                # make the history copy its columns when the outcomes are applied.
                assignment = await self._suggest(
                    seed,
                    self._builder.snapshot().with_pending(positions, [n.assignment for n in new]),
                )
                positions.append(position)
                new.append(NewTrial(assignment, seed))
        except BaseException:
            # Nothing was sent: each waits for its own turn again (``own``'s caller
            # records its outcome alone).
            for handover in batch:
                handover.stage = _Stage.WAITING
            self._handovers[:0] = batch[1:]
            raise
        await self._round_trip(batch, new, positions)

    async def _round_trip(
        self, batch: list[_Handover], new: list[NewTrial], positions: list[int]
    ) -> None:
        with self.shielded():
            started = time.perf_counter()
            try:
                done = await self.storage.finish_and_create(
                    self.name,
                    [handover.to_store() for handover in batch],
                    new,
                    since=self._seq,
                    worker=self.worker,
                    budget=batch[0].budget,
                    lease=self.lease,
                )
            except BaseException as exc:
                for handover in batch:
                    handover.undo()
                    self._held.discard(handover.tid)  # as `finish` does when refused
                    handover.settle(error=exc)
                raise
            took = time.perf_counter() - started
            self._round_trip_seconds = moving_average(self._round_trip_seconds, took)
            self._read(done.changed)
            # The created trials go, in order, to the handovers whose finish was taken.
            created = iter(zip(done.created, positions))
            for handover, result in zip(batch, done.finished):
                self._held.discard(handover.tid)
                if isinstance(result, TrialError):
                    self._note_vanished(handover.tid, result)
                    handover.undo()
                    handover.settle(error=result)
                    continue
                self._apply([result])
                following, position = next(created, (None, 0))
                taken = None if following is None else self._take(following)
                self._note_position(following, position)
                handover.settle(result=(self._with_params(result), taken))
            # A trial created for a refused handover has nobody to run it.
            for spare, _ in created:
                self._take(spare)
                await self.finish(spare.tid, _UNRUN)

    def _note_vanished(self, tid: int, error: TrialError) -> None:
        """Say so when a trial this worker held is gone from the storage.

        Only a write lost by a crashed server does that; the storage then fills the tid
        gap with a later trial, so the study still reaches its budget.
        """
        if isinstance(error, TrialNotFoundError) and tid in self._held:
            logger.warning(
                "study %r: trial %d vanished from the storage (a write lost in a server "
                "crash?); its outcome is not recorded and another trial takes its place",
                self.name,
                tid,
            )

    def _fall_back(self, handover: _Handover) -> None:
        handover.stage = _Stage.FALLBACK
        self._handovers.remove(handover)

    async def _abandon(self, handover: _Handover) -> None:
        """After ``handover``'s caller failed or was cancelled: its outcome must be recorded,
        and a trial created for it that it will not run must not stay RUNNING."""
        with self.shielded():
            if handover.stage in (_Stage.WAITING, _Stage.FALLBACK):
                # Waiting for the lock or suggesting failed: record the outcome alone.
                if handover in self._handovers:
                    self._handovers.remove(handover)
                handover.undo()
                await self.finish(handover.tid, handover.outcome)
                return
            if handover.stage is _Stage.TAKEN:
                await handover.wait_settled()  # another task's round trip carries it
            if handover.result is not None and handover.result[1] is not None:
                await self.finish(handover.result[1].tid, _UNRUN)

    def _apply_outcome(self, tid: int, outcome: Outcome) -> Callable[[], None]:
        """Apply ``outcome`` to the local view of held trial ``tid`` before it is stored.

        The record keeps its seq, so the stored one replaces it when read. Returns the
        function that undoes it (if no newer record replaced it meanwhile).
        """
        known = self._trials.get(tid)
        if known is None or tid not in self._held:
            return lambda: None
        provisional = known.evolve(
            state=outcome.state,
            loss=outcome.loss,
            result=outcome.result,
            error=outcome.error,
            started_at=known.started_at if outcome.started_at is None else outcome.started_at,
            lease_expires_at=None,
        )
        self._apply([provisional], replace=True)

        def undo() -> None:
            if self._trials.get(tid) is provisional:
                self._apply([known], replace=True)

        return undo

    # -- leases ----------------------------------------------------------------------------

    async def keep_leases(self) -> None:
        """Forever: renew held leases and reap expired ones every third of the lease."""
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                await self.renew_and_reap()
            except StorageError as exc:
                # A passing outage must not stop the search; the next beat tries again.
                logger.warning("renewing leases of study %r failed: %s", self.name, exc)

    async def renew_and_reap(self) -> None:
        """Renew this worker's leases once, and reap trials whose lease expired."""
        if self._held:
            lost = await self.storage.renew_leases(
                self.name, sorted(self._held), worker=self.worker, lease=self.lease
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
        reaped = await self.storage.reap_expired(self.name)
        if reaped:
            logger.info(
                "study %r: reaped trials %s whose worker stopped renewing its lease",
                self.name,
                [t.tid for t in reaped],
            )
            await self.refresh()


def _random_seed() -> int:
    return secrets.randbits(31)


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
) -> AsyncIterator[Study]:
    """Open (creating if needed) the study ``name`` for ask/tell, as ``async with``.

    ``space`` may be omitted for an existing study: it is rebuilt from the stored
    description. ``seed`` fixes a new study's seed (random if None); an existing study
    keeps its seed, and a different explicit seed raises `StudyMismatchError`. While the
    block runs, the leases of asked trials are renewed every ``lease / 3`` seconds.
    Raises `StudyMismatchError` if the study exists with a different space.
    """

    name = check_study_name(name)
    lease = check_lease(lease)
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
                seed=_random_seed() if seed is None else int(seed),
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
        )
        with single_error():
            async with anyio.create_task_group() as group:
                group.start_soon(handle.keep_leases)
                try:
                    await handle.refresh()
                    yield handle
                finally:
                    handle.closed = True
                    group.cancel_scope.cancel()
                    await _release(handle)


async def _release(handle: Study) -> None:
    """Cancel the trials still held (asked, never told) so none stays RUNNING."""
    if not handle.held:
        return
    with anyio.CancelScope(shield=True) as scope:
        scope.deadline = anyio.current_time() + 30
        for tid in sorted(handle.held):
            # A trial reaped or finished elsewhere is no longer ours to release.
            with contextlib.suppress(TrialStateError):
                await handle.finish(
                    tid,
                    Outcome(TrialState.CANCELLED, error="cancelled: the study handle was closed"),
                )
