"""The storage protocol every backend implements, and the records it stores.

A storage holds studies; a study holds trials with dense ids (``tid`` 0, 1, 2, ...).
Every operation that reads and then writes is atomic in every backend, so any number of
tasks, processes or machines can share one study. Each change to a trial stamps it with
a new ``seq``, increasing per storage, so readers can fetch only what changed.

Backends raise only `asyncopt.errors.StorageError` subclasses.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import attrs

from asyncopt.errors import (
    LeaseLostError,
    StorageError,
    StorageUnavailableError,
    StorageURLError,
    StudyMismatchError,
    StudyNotFoundError,
    TrialError,
    TrialNotFoundError,
    TrialStateError,
)

__all__ = [
    "BUDGETED_STATES",
    "FINISHED_STATES",
    "STATUS_FAIL",
    "STATUS_OK",
    "Handover",
    "LeaseLostError",
    "Storage",
    "StorageContext",
    "StorageError",
    "StorageURLError",
    "StorageUnavailableError",
    "StudyMismatchError",
    "StudyNotFoundError",
    "StudyRecord",
    "Trial",
    "TrialNotFoundError",
    "TrialState",
    "TrialStateError",
    "best_of",
    "checked_start",
    "finish_and_read_of",
    "finish_read_create_many",
    "finish_then_read",
    "finishing_state",
    "loss_rank",
    "new_worker_id",
]

STATUS_OK = "ok"
STATUS_FAIL = "fail"


class TrialState(enum.IntEnum):
    """Where a trial is in its life: QUEUED → RUNNING → OK | FAIL | CANCELLED."""

    QUEUED = 0
    RUNNING = 1
    OK = 2
    FAIL = 3
    CANCELLED = 4

    @property
    def is_finished(self) -> bool:
        """True for OK, FAIL and CANCELLED."""
        return self >= TrialState.OK

    @property
    def counts_toward_budget(self) -> bool:
        """Every state but CANCELLED counts toward ``max_evals``."""
        return self is not TrialState.CANCELLED


BUDGETED_STATES = frozenset(s for s in TrialState if s.counts_toward_budget)
FINISHED_STATES = frozenset(s for s in TrialState if s.is_finished)


# Not slotted: `Trial.evolve` then copies the instance dict in one step, which costs a
# third of writing each slot (the orchestrator makes several copies per trial).
@attrs.frozen(slots=False)
class Trial:
    """One evaluation of the objective, as stored.

    ``assignment`` maps each active label to its raw value (a choice's option index).
    ``params`` is the evaluated space; it is filled in by `asyncopt.open_study` and
    `asyncopt.minimize`, not by storages. Times are Unix timestamps in seconds.
    """

    study: str
    tid: int
    state: TrialState = attrs.field(converter=TrialState)
    assignment: Mapping[str, int | float]
    loss: float | None = None
    result: Mapping[str, Any] | None = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires_at: float | None = None
    worker: str | None = None
    seed: int | None = None
    retry_of: int | None = None
    seq: int = 0
    params: Any = attrs.field(default=None, eq=False, repr=False)

    def evolve(self, **changes: Any) -> Trial:
        """A copy with ``changes`` applied (like `attrs.evolve`, without re-validation).

        Backends and the orchestrator make several copies per trial; this is the fast path.
        """
        if not _TRIAL_FIELDS.issuperset(changes):
            unknown = sorted(set(changes) - _TRIAL_FIELDS)
            raise TypeError(f"Trial has no field {unknown[0]!r}")
        fields = self.__dict__.copy()
        fields.update(changes)
        copy = object.__new__(Trial)
        object.__setattr__(copy, "__dict__", fields)
        return copy

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """The stored fields as a JSON-serializable dict (``params`` excluded)."""
        data = attrs.asdict(self, recurse=False, filter=lambda a, _: a.name != "params")
        data["state"] = self.state.name
        data["assignment"] = dict(self.assignment)
        data["result"] = None if self.result is None else dict(self.result)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        """Inverse of `to_dict`."""
        fields = dict(data)
        state = fields.pop("state")
        fields["state"] = TrialState[state] if isinstance(state, str) else TrialState(state)
        return cls(**fields)


def loss_rank(trial: Trial) -> tuple[float, int]:
    """The order of OK trials, best first: lower loss, then lower tid."""
    assert trial.loss is not None
    return trial.loss, trial.tid


def best_of(trials: Iterable[Trial]) -> Trial | None:
    """The OK trial with the lowest loss (lowest tid on ties), or None if there is none."""
    return min(
        (t for t in trials if t.state is TrialState.OK and t.loss is not None),
        key=loss_rank,
        default=None,
    )


def finishing_state(state: TrialState | int) -> TrialState:
    """``state`` as a `TrialState` a trial can be finished with, or `TrialStateError`."""
    state = TrialState(state)
    if not state.is_finished:
        raise TrialStateError(f"cannot finish a trial as {state.name}")
    return state


def checked_start(started_at: float | None) -> float | None:
    """A finish's ``started_at`` as a float; TypeError or ValueError naming it if it is not
    a finite number of seconds."""
    if started_at is None:
        return None
    if isinstance(started_at, bool) or not isinstance(started_at, (int, float)):
        raise TypeError(f"started_at must be a number of seconds, got {started_at!r}")
    if not math.isfinite(started_at):
        raise ValueError(f"started_at must be a finite number of seconds, got {started_at!r}")
    return float(started_at)


_TRIAL_FIELDS = frozenset(field.name for field in attrs.fields(Trial))


@attrs.frozen
class StudyRecord:
    """A study: its name, the space it searches (fingerprint and JSON description), its seed."""

    name: str
    fingerprint: str
    space: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    seed: int
    created_at: float


@attrs.frozen
class Handover:
    """A held trial's outcome, and the assignment of the trial its worker runs next.

    The unit of `StorageContext.finish_and_create_many`.
    """

    tid: int
    state: TrialState
    loss: float | None
    result: Mapping[str, Any] | None
    error: str | None
    assignment: Mapping[str, int | float]
    seed: int | None
    started_at: float | None = None


_OpenedStorage = TypeVar("_OpenedStorage", bound="StorageContext")


class StorageContext:
    """Base for backends: ``async with storage:`` opens it and closes it at the end."""

    #: True for a backend whose coroutines never yield to the event loop (memory): its
    #: writes cannot be interrupted, so they need no shielded cancel scope.
    never_yields: bool = False

    async def open(self) -> None:
        """Connect, create the schema if needed. Idempotent."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        raise NotImplementedError

    async def finish_and_read(
        self,
        study: str,
        tid: int,
        *,
        since: int,
        worker: str,
        state: TrialState,
        loss: float | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> tuple[Trial, list[Trial]]:
        """`Storage.finish_trial`, then `Storage.trials_since` from ``since``.

        The finished trial is among the changes read. Backends that can do both in one
        round trip override this; if the finish is refused, nothing is read.
        """
        return await finish_then_read(
            cast(Storage, self),
            study,
            tid,
            since=since,
            worker=worker,
            state=state,
            loss=loss,
            result=result,
            error=error,
            started_at=started_at,
        )

    async def finish_and_create_many(
        self,
        study: str,
        handovers: Sequence[Handover],
        *,
        since: int,
        worker: str,
        budget: int | None,
        lease: float,
    ) -> tuple[list[tuple[Trial, Trial | None] | TrialError], list[Trial]]:
        """Finish several trials, read the changes, then create the trials that follow them.

        Each handover's trial is finished as `Storage.finish_trial` would; one that is
        refused gets its `TrialError` in its place and creates nothing. Then the changes
        since ``since`` are read (the finished trials are among them, the new ones are
        not). Then, in order, each finished handover's ``assignment`` is created for
        ``worker`` as `Storage.create_trial` would: the new trial, or None once the budget
        is spent. Returns the per-handover results and the changes. Backends that can do
        it all in one round trip override this.
        """
        return await finish_read_create_many(
            cast(Storage, self),
            study,
            handovers,
            since=since,
            worker=worker,
            budget=budget,
            lease=lease,
        )

    async def __aenter__(self: _OpenedStorage) -> _OpenedStorage:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def finish_then_read(
    storage: Storage,
    study: str,
    tid: int,
    *,
    since: int,
    worker: str,
    state: TrialState,
    loss: float | None = None,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    started_at: float | None = None,
) -> tuple[Trial, list[Trial]]:
    """`Storage.finish_trial`, then `Storage.trials_since` from ``since``, on any storage."""
    trial = await storage.finish_trial(
        study,
        tid,
        worker=worker,
        state=state,
        loss=loss,
        result=result,
        error=error,
        started_at=started_at,
    )
    return trial, await storage.trials_since(study, since)


async def finish_read_create_many(
    storage: Storage,
    study: str,
    handovers: Sequence[Handover],
    *,
    since: int,
    worker: str,
    budget: int | None,
    lease: float,
) -> tuple[list[tuple[Trial, Trial | None] | TrialError], list[Trial]]:
    """`StorageContext.finish_and_create_many` on any storage, one call at a time."""
    finished: list[Trial | TrialError] = []
    for handover in handovers:
        try:
            finished.append(
                await storage.finish_trial(
                    study,
                    handover.tid,
                    worker=worker,
                    state=handover.state,
                    loss=handover.loss,
                    result=handover.result,
                    error=handover.error,
                    started_at=handover.started_at,
                )
            )
        except TrialError as exc:
            finished.append(exc)
    changed = await storage.trials_since(study, since)
    results: list[tuple[Trial, Trial | None] | TrialError] = []
    for handover, trial in zip(handovers, finished):
        if isinstance(trial, TrialError):
            results.append(trial)
            continue
        created = await storage.create_trial(
            study,
            handover.assignment,
            budget=budget,
            worker=worker,
            lease=lease,
            seed=handover.seed,
        )
        results.append((trial, created))
    return results, changed


def finish_and_read_of(storage: Storage) -> Callable[..., Awaitable[tuple[Trial, list[Trial]]]]:
    """``storage.finish_and_read`` when it has one, else the generic two-call form."""
    method: Callable[..., Awaitable[tuple[Trial, list[Trial]]]] | None = getattr(
        storage, "finish_and_read", None
    )
    return method or functools.partial(finish_then_read, storage)


@attrs.frozen
class Finish:
    """The outcome of a trial held by the calling worker, to record."""

    tid: int
    state: TrialState
    loss: float | None = None
    result: Mapping[str, Any] | None = None
    error: str | None = None
    started_at: float | None = None


@attrs.frozen
class NewTrial:
    """A trial to create RUNNING for the calling worker."""

    assignment: Mapping[str, int | float]
    seed: int | None = None


@attrs.frozen
class Batch:
    """What `finish_and_create` did: per finish its record or refusal, the trials
    created (in order, until the budget was spent), and the changes read after both."""

    finished: list[Trial | TrialError]
    created: list[Trial]
    changed: list[Trial]


async def finish_and_create(
    storage: Storage,
    study: str,
    finishes: Sequence[Finish],
    new: Sequence[NewTrial],
    *,
    since: int,
    worker: str,
    budget: int | None,
    lease: float,
) -> Batch:
    """Record ``finishes``, create ``new`` trials while the budget allows, read changes."""
    finished: list[Trial | TrialError] = []
    for item in finishes:
        try:
            finished.append(
                await storage.finish_trial(
                    study,
                    item.tid,
                    worker=worker,
                    state=item.state,
                    loss=item.loss,
                    result=item.result,
                    error=item.error,
                    started_at=item.started_at,
                )
            )
        except TrialError as exc:
            finished.append(exc)
    created: list[Trial] = []
    for proposal in new:
        trial = await storage.create_trial(
            study,
            proposal.assignment,
            budget=budget,
            worker=worker,
            lease=lease,
            seed=proposal.seed,
        )
        if trial is None:
            break
        created.append(trial)
    return Batch(finished, created, await storage.trials_since(study, since))


def new_worker_id() -> str:
    """A worker identity ``host:pid:random``, unique across machines and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@runtime_checkable
class Storage(Protocol):
    """What every backend provides. All methods are coroutines; use ``async with``.

    Budgets: ``budget`` is the most trials in budgeted states (all but CANCELLED) the
    study may hold; None means unlimited. Leases: ``lease`` is a duration in seconds
    from now; a RUNNING trial whose lease has passed may be reaped by anyone.

    Backends built on `StorageContext` also offer ``finish_and_read`` (a finish and an
    incremental read in one round trip) and ``finish_and_create_many`` (several finishes,
    the read and the creation of the trials that follow them, in one round trip);
    `asyncopt.open_study` uses them when present.
    A backend whose coroutines never yield to the event loop may set the class attribute
    ``never_yields = True``: its writes then need (and get) no shielded cancel scope.
    """

    never_yields: bool

    @property
    def url(self) -> str:
        """The storage URL with any password replaced by ``***``."""
        ...

    async def __aenter__(self) -> Storage: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def open(self) -> None:
        """Connect, create the schema if needed. Idempotent."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...

    async def create_study(
        self, name: str, *, fingerprint: str, space: Mapping[str, Any], seed: int
    ) -> StudyRecord:
        """Create the study, or load it if it exists (then ``space`` and ``seed`` are ignored).

        Raises `StudyMismatchError` if it exists with another fingerprint; nothing changes.
        """
        ...

    async def get_study(self, name: str) -> StudyRecord:
        """The study; `StudyNotFoundError` if there is none."""
        ...

    async def list_studies(self) -> list[StudyRecord]:
        """Every study, by name."""
        ...

    async def delete_study(self, name: str) -> None:
        """Delete the study and its trials; `StudyNotFoundError` if there is none."""
        ...

    async def create_trial(
        self,
        study: str,
        assignment: Mapping[str, int | float],
        *,
        budget: int | None,
        worker: str,
        lease: float,
        seed: int | None = None,
    ) -> Trial | None:
        """Atomically create a RUNNING trial with the next tid, if the budget allows.

        Returns None, creating nothing, when the study already holds ``budget``
        budgeted trials.
        """
        ...

    async def enqueue_trials(
        self,
        study: str,
        assignments: Sequence[Mapping[str, int | float]],
        *,
        budget: int | None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Trial]:
        """Atomically add QUEUED trials, in order, as many as the budget allows."""
        ...

    async def claim_trial(self, study: str, *, worker: str, lease: float) -> Trial | None:
        """Atomically move the lowest-tid QUEUED trial to RUNNING for ``worker``, or None."""
        ...

    async def finish_trial(
        self,
        study: str,
        tid: int,
        *,
        worker: str,
        state: TrialState,
        loss: float | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> Trial:
        """Record the outcome (OK, FAIL or CANCELLED) of a RUNNING trial held by ``worker``.

        ``started_at`` (seconds since the epoch), when given, becomes the trial's start
        time: when its worker began running it, if that was later than taking it.
        Raises `TrialNotFoundError`, `TrialStateError` (not RUNNING: already finished,
        or still queued) or `LeaseLostError` (held by another worker).
        """
        ...

    async def renew_leases(
        self, study: str, tids: Sequence[int], *, worker: str, lease: float
    ) -> list[int]:
        """Extend the leases of ``worker``'s RUNNING trials; returns the tids it no longer holds."""
        ...

    async def reap_expired(self, study: str) -> list[Trial]:
        """Mark CANCELLED every RUNNING trial whose lease has passed.

        Each reaped trial that is not itself a retry is queued again once, as a new QUEUED
        trial with ``retry_of`` set to the reaped tid (that does not change the budget
        count). Returns the reaped trials. Safe to call concurrently: a trial is reaped once.
        """
        ...

    async def get_trial(self, study: str, tid: int) -> Trial:
        """One trial; `TrialNotFoundError` if there is none."""
        ...

    async def trials_since(self, study: str, seq: int = 0) -> list[Trial]:
        """Trials changed after sequence number ``seq`` (all with 0), ordered by ``seq``."""
        ...

    async def count_trials(self, study: str, *, budgeted: bool = True) -> int:
        """Number of budgeted trials (or of all trials with ``budgeted=False``)."""
        ...
