"""The one storage base: the rules every backend shares, written once.

A storage holds studies; a study holds trials with dense ids (``tid`` 0, 1, 2, ...).
Every operation that reads and then writes is atomic in every backend, so any number of
tasks, processes or machines can share one study. Each change to a trial stamps it with
a new ``seq``, increasing per storage, so readers can fetch only what changed.

`Storage` checks every argument at the boundary (study names, tids, outcomes, values),
applies the shared rules (which finishes are refused and why, the fingerprint check,
what a reap does, the budget) and hands the backend only checked, normalized values
through a few abstract primitives (the methods whose names start with ``_``). Backends
raise only `asyncopt.errors.StorageError` subclasses, translating their driver's
errors through one `ErrorRule` table each.
"""

from __future__ import annotations

import abc
import json
import math
import numbers
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import attrs

from asyncopt.errors import (
    LeaseLostError,
    StorageError,
    StorageUnavailableError,
    StorageURLError,
    StudyMismatchError,
    StudyNameError,
    StudyNotFoundError,
    TrialError,
    TrialNotFoundError,
    TrialStateError,
)
from asyncopt.trial import (
    BUDGETED_STATES,
    FINISHED_STATES,
    STATUS_FAIL,
    STATUS_OK,
    StudyRecord,
    Trial,
    TrialState,
    best_of,
    loss_rank,
    plain_assignment,
    result_json,
    to_json,
)

__all__ = [
    "BUDGETED_STATES",
    "FINISHED_STATES",
    "MAX_STUDY_NAME",
    "STATUS_FAIL",
    "STATUS_OK",
    "Batch",
    "BatchRequest",
    "ErrorRule",
    "Finish",
    "LeaseLostError",
    "NewTrial",
    "RetryPolicy",
    "Storage",
    "StorageError",
    "StorageURLError",
    "StorageUnavailableError",
    "StoredFinish",
    "StudyMismatchError",
    "StudyNotFoundError",
    "StudyRecord",
    "Trial",
    "TrialNotFoundError",
    "TrialState",
    "TrialStateError",
    "best_of",
    "check_study_name",
    "current_event_loop",
    "loss_rank",
    "new_worker_id",
    "translate",
]

MAX_STUDY_NAME = 256
"""The longest study name, in characters (every backend stores names this long)."""


def check_study_name(name: object) -> str:
    """``name`` if it is a valid study name, else `StudyNameError` saying why.

    Valid: a non-empty `str` of at most `MAX_STUDY_NAME` characters without NUL. Checked
    before any query, so a name can never be a query operator or reach another study.
    """
    if not isinstance(name, str):
        raise StudyNameError(f"a study name must be a string, got {type(name).__name__}")
    if not name:
        raise StudyNameError("a study name must not be empty")
    if "\0" in name:
        raise StudyNameError(f"a study name must not contain NUL, got {name!r}")
    if len(name) > MAX_STUDY_NAME:
        raise StudyNameError(
            f"a study name must be at most {MAX_STUDY_NAME} characters, got {len(name)}"
        )
    return name


def _check_tid(tid: object) -> int:
    if isinstance(tid, bool) or not isinstance(tid, int):
        raise TypeError(f"a tid must be an int, got {tid!r}")
    return tid


def _check_budget(budget: object) -> int | None:
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise TypeError(f"a budget must be an int or None, got {budget!r}")
    return budget


def _check_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    return float(value)


def _check_worker(worker: object) -> str:
    if not isinstance(worker, str) or not worker:
        raise TypeError(f"a worker must be a non-empty string, got {worker!r}")
    return worker


def _check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"a step must be an int, got {step!r}")
    if step < 0:
        raise ValueError(f"a step must be >= 0, got {step!r}")
    return int(step)


def _check_value(value: object) -> float:
    """A reported value as stored: a float, NaN for a non-finite one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"a reported value must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        return math.nan
    return number if math.isfinite(number) else math.nan


def new_worker_id() -> str:
    """A worker identity ``host:pid:random``, unique across machines and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def current_event_loop() -> str:
    """The name of the running event loop (``"asyncio"`` or ``"trio"``)."""
    try:
        import sniffio
    except ImportError:  # trio requires sniffio, so without it only asyncio can be running
        return "asyncio"
    return sniffio.current_async_library()


# -- the units of a batch ------------------------------------------------------------------


@attrs.frozen
class Finish:
    """The outcome of a trial held by the calling worker (OK, FAIL, PRUNED or CANCELLED)."""

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
    """What `Storage.finish_and_create` did.

    ``finished``: one entry per `Finish`, in order: the finished trial, or the
    `TrialError` that refused it (then nothing else changed for it). ``created``: the
    new trials, in order, until the budget was spent (may be fewer, or none).
    ``changed``: the trials changed after ``since``, read after the finishes and the
    creations (so including them), ordered by ``seq``.
    """

    finished: list[Trial | TrialError]
    created: list[Trial]
    changed: list[Trial]


@attrs.frozen
class BatchRequest:
    """`Storage.finish_and_create`'s checked arguments, as a backend's ``_batch`` gets them
    (``since`` None: read nothing)."""

    finishes: Sequence[StoredFinish]
    new: Sequence[NewTrial]
    since: int | None
    worker: str
    budget: int | None
    lease: float


@attrs.frozen
class StoredFinish:
    """A checked `Finish` as backends receive it: ``result`` normalized, and as JSON text."""

    tid: int
    state: TrialState
    loss: float | None
    result: Mapping[str, Any] | None
    result_json: str | None
    error: str | None
    started_at: float | None

    def changes(self, now: float) -> dict[str, Any]:
        """The fields of the trial this finish changes, finishing it at ``now``."""
        changes: dict[str, Any] = {
            "state": self.state,
            "loss": self.loss,
            "result": self.result,
            "error": self.error,
            "finished_at": now,
            "lease_expires_at": None,
        }
        if self.started_at is not None:
            changes["started_at"] = self.started_at
        return changes


def _stored_finish(finish: Finish) -> StoredFinish | TrialError:
    """``finish`` checked (`TrialStateError` for a state it cannot finish with)."""
    if not isinstance(finish, Finish):
        raise TypeError(f"expected a Finish, got {type(finish).__name__}")
    tid = _check_tid(finish.tid)
    try:
        state = TrialState(finish.state)
    except ValueError:
        return TrialStateError(f"cannot finish trial {tid} as {finish.state!r}")
    if not state.is_finished:
        return TrialStateError(f"cannot finish a trial as {state.name}")
    loss = finish.loss
    if loss is not None:
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            loss = _plain_float(loss, "loss")
        loss = float(loss)
    started_at = finish.started_at
    if started_at is not None:
        if isinstance(started_at, bool) or not isinstance(started_at, (int, float)):
            raise TypeError(f"started_at must be a number of seconds, got {started_at!r}")
        started_at = _check_seconds(started_at, "started_at")
    if finish.error is not None and not isinstance(finish.error, str):
        raise TypeError(f"an error must be text, got {finish.error!r}")
    text = result_json(finish.result)
    result = None if text is None else json.loads(text)
    return StoredFinish(tid, state, loss, result, text, finish.error, started_at)


def _plain_float(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, got {value!r}") from None


def _stored_new(new: NewTrial) -> NewTrial:
    if not isinstance(new, NewTrial):
        raise TypeError(f"expected a NewTrial, got {type(new).__name__}")
    seed = new.seed
    if seed is not None:
        seed = _check_seed(seed)
    return NewTrial(plain_assignment(new.assignment), seed)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool):
        raise TypeError(f"a seed must be an int, got {seed!r}")
    try:
        value: int = int(seed)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TypeError(f"a seed must be an int, got {seed!r}") from None
    return value


# -- the shared rules --------------------------------------------------------------------


def refusal(
    study: str, tid: int, worker: str, state: TrialState | None, holder: str | None
) -> TrialError | None:
    """Why ``worker`` may not finish (or report on) trial ``tid`` (found in ``state``,
    held by ``holder``; ``state`` None when there is no such trial), or None if it may."""
    if state is None:
        return TrialNotFoundError(f"study {study!r} has no trial {tid}")
    if state is not TrialState.RUNNING:
        return TrialStateError(
            f"trial {tid} of study {study!r} is {state.name}, not RUNNING; "
            "it cannot be finished or reported on"
        )
    if holder != worker:
        return LeaseLostError(
            f"trial {tid} of study {study!r} is held by another worker ({holder})"
        )
    return None


# A trial its worker holds, or finished itself (CANCELLED is what a reap leaves).
_HELD_OR_DONE = frozenset({TrialState.RUNNING} | FINISHED_STATES) - {TrialState.CANCELLED}


def lease_lost(state: TrialState | None, holder: str | None, worker: str) -> bool:
    """Whether a renewal by ``worker`` finds the lease of a trial (in ``state``, held by
    ``holder``; ``state`` None when there is none) lost to someone else.

    A trial ``worker`` finished itself (OK, FAIL or PRUNED) is done, not lost: a finish
    and a renewal that cross must not read as a reap.
    """
    mine = holder == worker and state in _HELD_OR_DONE
    return not mine


def reportable(trial: Trial | None, worker: str, step: int) -> bool:
    """Whether ``worker`` may record a value at ``step`` of ``trial`` (None: no such
    trial): it is RUNNING, held by ``worker``, and ``step`` was not reported yet."""
    return (
        trial is not None
        and trial.state is TrialState.RUNNING
        and trial.worker == worker
        and step not in trial.intermediate
    )


def unreported(study: str, tid: int, worker: str, trial: Trial | None) -> Trial:
    """What a report that changed nothing gives: ``trial`` unchanged (its step was
    reported before: the first value stays), or the `refusal` raised."""
    refused = refusal(
        study,
        tid,
        worker,
        None if trial is None else trial.state,
        None if trial is None else trial.worker,
    )
    if refused is not None:
        raise refused
    assert trial is not None
    return trial


def reap_changes(holder: str | None, now: float) -> dict[str, Any]:
    """The fields a reap changes in a RUNNING trial whose lease passed."""
    return {
        "state": TrialState.CANCELLED,
        "finished_at": now,
        "lease_expires_at": None,
        "error": f"lease expired: worker {holder} stopped renewing it",
    }


def requeues(trial: Trial) -> bool:
    """Whether reaping ``trial`` queues it again: once, so not when it is itself a retry."""
    return trial.retry_of is None


def room(budget: int | None, budgeted: int) -> int | None:
    """How many more budgeted trials the study may take (None: no limit)."""
    return None if budget is None else max(0, budget - budgeted)


def new_trial(
    study: str,
    tid: int,
    state: TrialState,
    assignment: Mapping[str, int | float],
    *,
    now: float,
    seq: int,
    worker: str | None = None,
    lease: float | None = None,
    seed: int | None = None,
    retry_of: int | None = None,
) -> Trial:
    """A new trial's record: RUNNING for ``worker`` (leased until now + ``lease``) or QUEUED."""
    running = state is TrialState.RUNNING
    return Trial(
        study=study,
        tid=tid,
        state=state,
        assignment=assignment,
        created_at=now,
        started_at=now if running else None,
        lease_expires_at=now + lease if running and lease is not None else None,
        worker=worker if running else None,
        seed=seed,
        retry_of=retry_of,
        seq=seq,
    )


def check_fingerprint(record: StudyRecord, fingerprint: str) -> StudyRecord:
    """``record`` if its space has ``fingerprint``, else `StudyMismatchError`."""
    if record.fingerprint != fingerprint:
        raise StudyMismatchError(
            f"study {record.name!r} exists with a different space "
            f"(fingerprint {record.fingerprint[:12]}, this space {fingerprint[:12]})"
        )
    return record


@attrs.frozen
class RetryPolicy:
    """How long and how often an operation that hit a passing failure is tried again.

    The waits grow from ``first`` by ``factor`` up to ``longest`` seconds, each scaled by a
    random factor in [0.5, 1.5) when ``jitter`` is set, until ``timeout`` seconds have
    passed since the first failure. Each backend says which failures pass.
    """

    first: float
    longest: float
    timeout: float
    factor: float = 2.0
    jitter: bool = True

    def waits(self) -> Iterator[float]:
        """The waits before each retry, until the timeout; each is at most the time left."""
        deadline = time.monotonic() + self.timeout
        wait = self.first
        while (left := deadline - time.monotonic()) > 0:
            scaled = wait * random.uniform(0.5, 1.5) if self.jitter else wait
            yield min(scaled, left)
            wait = min(wait * self.factor, self.longest)


@attrs.frozen
class ErrorRule:
    """One row of a backend's driver-error table.

    ``matches`` tells whether a driver exception falls under the rule; the first rule that
    matches gives the asyncopt ``error`` class and its ``message``, a format string with
    ``{where}`` (the redacted storage URL or path) and ``{detail}`` (the driver's text).
    """

    matches: Callable[[BaseException], bool]
    error: type[StorageError]
    message: str


def translate(
    exc: BaseException, rules: Sequence[ErrorRule], where: str, detail: str
) -> StorageError:
    """The asyncopt error for driver exception ``exc`` by the first matching rule."""
    for rule in rules:
        if rule.matches(exc):
            return rule.error(rule.message.format(where=where, detail=detail))
    return StorageError(f"{where}: {type(exc).__name__}: {detail}")


# -- the base ------------------------------------------------------------------------------

_OpenedStorage = TypeVar("_OpenedStorage", bound="Storage")


class Storage(abc.ABC):
    """What every backend provides. All methods are coroutines; use ``async with``.

    Budgets: ``budget`` is the most trials in budgeted states (all but CANCELLED) the
    study may hold; None means unlimited. Leases: ``lease`` is a duration in seconds
    from now; a RUNNING trial whose lease has passed may be reaped by anyone.
    Study names are checked by `check_study_name` (`StudyNameError`), tids must be ints.
    """

    #: Its coroutines never yield to the event loop, so no cancellation can interrupt
    #: them: callers need no shielded cancel scope around its writes.
    never_yields: ClassVar[bool] = False
    #: `finish_and_create` and `claim_trials` cost one round trip (one transaction)
    #: whatever the number of trials, so batching them pays.
    one_round_trip: ClassVar[bool] = False

    # -- identity and lifetime -----------------------------------------------------------

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The storage URL with any password and secret replaced by ``***``."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create the schema if needed. Idempotent."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""

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

    def _no_study(self, name: str) -> StudyNotFoundError:
        return StudyNotFoundError(f"no study named {name!r} in {self.url}")

    # -- studies -------------------------------------------------------------------------

    async def create_study(
        self, name: str, *, fingerprint: str, space: Mapping[str, Any], seed: int
    ) -> StudyRecord:
        """Create the study, or load it if it exists (then ``space`` and ``seed`` are ignored).

        Raises `StudyMismatchError` if it exists with another fingerprint; nothing changes.
        """
        name = check_study_name(name)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise TypeError(f"a fingerprint must be a non-empty string, got {fingerprint!r}")
        description = json.loads(to_json(dict(space), "space description"))
        record = StudyRecord(name, fingerprint, description, _check_seed(seed), time.time())
        return check_fingerprint(await self._create_study(record), fingerprint)

    async def get_study(self, name: str) -> StudyRecord:
        """The study; `StudyNotFoundError` if there is none."""
        name = check_study_name(name)
        record = await self._get_study(name)
        if record is None:
            raise self._no_study(name)
        return record

    async def list_studies(self) -> list[StudyRecord]:
        """Every study, by name."""
        return await self._list_studies()

    async def delete_study(self, name: str) -> None:
        """Delete the study and its trials; `StudyNotFoundError` if there is none."""
        name = check_study_name(name)
        if not await self._delete_study(name):
            raise self._no_study(name)

    # -- trials --------------------------------------------------------------------------

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
        batch = await self._checked_batch(
            study, [], [NewTrial(assignment, seed)], None, worker, budget, lease
        )
        return batch.created[0] if batch.created else None

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
        """Record the outcome (OK, FAIL, PRUNED or CANCELLED) of a RUNNING trial held by
        ``worker``. A PRUNED trial's ``loss`` is its last reported value, or None.

        ``started_at`` (seconds since the epoch), when given, becomes the trial's start
        time: when its worker began running it, if that was later than taking it.
        Raises `TrialNotFoundError`, `TrialStateError` (not RUNNING: already finished,
        or still queued) or `LeaseLostError` (held by another worker).
        """
        finish = Finish(tid, state, loss, result, error, started_at)
        batch = await self._checked_batch(study, [finish], [], None, worker, None, 1.0)
        [finished] = batch.finished
        if isinstance(finished, TrialError):
            raise finished
        return finished

    async def report(self, study: str, tid: int, *, worker: str, step: int, value: float) -> Trial:
        """Record ``value`` as the intermediate value at ``step`` of a RUNNING trial held
        by ``worker``, atomically, and return the trial after the change.

        ``step`` is an int >= 0 (steps may come in any order); ``value`` a number, a
        non-finite one stored as NaN. The change gets a new ``seq``, so `trials_since`
        returns it. A step reported before keeps its first value: nothing changes (no new
        ``seq``) and the trial is returned as it is. Raises `TypeError` / `ValueError`
        for a bad step or value, and as `finish_trial` does: `TrialNotFoundError`,
        `TrialStateError` (not RUNNING) or `LeaseLostError` (held by another worker).
        """
        study = check_study_name(study)
        tid = _check_tid(tid)
        worker = _check_worker(worker)
        return await self._report(study, tid, worker, _check_step(step), _check_value(value))

    async def finish_and_create(
        self,
        study: str,
        finishes: Sequence[Finish],
        new: Sequence[NewTrial],
        *,
        since: int,
        worker: str,
        budget: int | None,
        lease: float,
    ) -> Batch:
        """Finish trials held by ``worker``, create trials for it, and read the changes.

        Each `Finish` is applied as `finish_trial` would; one that is refused gets its
        `TrialError` in its place and changes nothing. Then the `NewTrial` entries are
        created RUNNING for ``worker``, in order, while the study holds fewer than
        ``budget`` budgeted trials. Then the trials changed after ``since`` are read
        (the finished and created ones among them). Backends with ``one_round_trip`` do
        it all in one transaction.
        """
        if isinstance(since, bool) or not isinstance(since, int):
            raise TypeError(f"since must be an int seq, got {since!r}")
        return await self._checked_batch(study, finishes, new, since, worker, budget, lease)

    async def _checked_batch(
        self,
        study: str,
        finishes: Sequence[Finish],
        new: Sequence[NewTrial],
        since: int | None,
        worker: str,
        budget: int | None,
        lease: float,
    ) -> Batch:
        study = check_study_name(study)
        worker = _check_worker(worker)
        budget = _check_budget(budget)
        lease = _check_seconds(lease, "lease")
        checked = [_stored_finish(finish) for finish in finishes]
        stored = [c for c in checked if not isinstance(c, TrialError)]
        new = [_stored_new(n) for n in new]
        batch = await self._batch(study, BatchRequest(stored, new, since, worker, budget, lease))
        if len(stored) == len(checked):
            return batch
        results = iter(batch.finished)
        finished = [c if isinstance(c, TrialError) else next(results) for c in checked]
        return Batch(finished, batch.created, batch.changed)

    async def enqueue_trials(
        self,
        study: str,
        assignments: Sequence[Mapping[str, int | float]],
        *,
        budget: int | None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Trial]:
        """Atomically add QUEUED trials, in order, as many as the budget allows."""
        study = check_study_name(study)
        budget = _check_budget(budget)
        if seeds is not None and len(seeds) != len(assignments):
            raise ValueError(f"{len(assignments)} assignments but {len(seeds)} seeds")
        new = [
            _stored_new(NewTrial(a, None if seeds is None else seeds[i]))
            for i, a in enumerate(assignments)
        ]
        return await self._enqueue(study, new, budget=budget)

    async def claim_trials(
        self, study: str, *, worker: str, lease: float, limit: int
    ) -> list[Trial]:
        """Atomically move up to ``limit`` QUEUED trials (lowest tids first) to RUNNING
        for ``worker``; each queued trial goes to exactly one claimant."""
        study = check_study_name(study)
        worker = _check_worker(worker)
        lease = _check_seconds(lease, "lease")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        if limit == 0:
            return []
        return await self._claim(study, worker=worker, lease=lease, limit=limit)

    async def claim_trial(self, study: str, *, worker: str, lease: float) -> Trial | None:
        """Atomically move the lowest-tid QUEUED trial to RUNNING for ``worker``, or None."""
        claimed = await self.claim_trials(study, worker=worker, lease=lease, limit=1)
        return claimed[0] if claimed else None

    async def renew_leases(
        self, study: str, tids: Sequence[int], *, worker: str, lease: float
    ) -> list[int]:
        """Extend the leases of ``worker``'s RUNNING trials; returns the tids whose lease it
        lost to someone else (reaped, held by another worker, queued, or gone), by
        `lease_lost`: not those it finished itself meanwhile."""
        study = check_study_name(study)
        worker = _check_worker(worker)
        lease = _check_seconds(lease, "lease")
        return await self._renew(study, [_check_tid(t) for t in tids], worker=worker, lease=lease)

    async def reap_expired(self, study: str) -> list[Trial]:
        """Mark CANCELLED every RUNNING trial whose lease has passed.

        Each reaped trial that is not itself a retry is queued again once, as a new QUEUED
        trial with ``retry_of`` set to the reaped tid (that does not change the budget
        count). Returns the reaped trials. Safe to call concurrently: a trial is reaped once.
        """
        return await self._reap(check_study_name(study))

    async def get_trial(self, study: str, tid: int) -> Trial:
        """One trial; `TrialNotFoundError` if there is none."""
        study = check_study_name(study)
        tid = _check_tid(tid)
        trial = await self._get_trial(study, tid)
        if trial is None:
            raise TrialNotFoundError(f"study {study!r} has no trial {tid}")
        return trial

    async def trials_since(self, study: str, seq: int = 0) -> list[Trial]:
        """Trials changed after sequence number ``seq`` (all with 0), ordered by ``seq``."""
        study = check_study_name(study)
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise TypeError(f"seq must be an int, got {seq!r}")
        return await self._trials_since(study, seq)

    async def count_trials(self, study: str, *, budgeted: bool = True) -> int:
        """Number of budgeted trials (or of all trials with ``budgeted=False``)."""
        return await self._count(check_study_name(study), budgeted=bool(budgeted))

    # -- the primitives each backend implements (arguments already checked) ----------------

    @abc.abstractmethod
    async def _create_study(self, record: StudyRecord) -> StudyRecord:
        """Insert ``record`` unless a study of its name exists; return the stored one."""

    @abc.abstractmethod
    async def _get_study(self, name: str) -> StudyRecord | None:
        """The study, or None."""

    @abc.abstractmethod
    async def _list_studies(self) -> list[StudyRecord]:
        """Every study, by name."""

    @abc.abstractmethod
    async def _delete_study(self, name: str) -> bool:
        """Delete the study and its trials; False if there was none."""

    @abc.abstractmethod
    async def _batch(self, study: str, request: BatchRequest) -> Batch:
        """`finish_and_create` with checked values.

        Refusals come from `refusal`, finished fields from `StoredFinish.changes`, new
        trials from `new_trial`. Raises `StudyNotFoundError` for an unknown study.
        """

    @abc.abstractmethod
    async def _report(self, study: str, tid: int, worker: str, step: int, value: float) -> Trial:
        """`report` with checked values (``value`` a float, NaN for non-finite): records
        it if `reportable`, stamping a new seq, else returns `unreported`."""

    @abc.abstractmethod
    async def _enqueue(
        self, study: str, new: Sequence[NewTrial], *, budget: int | None
    ) -> list[Trial]:
        """`enqueue_trials` with checked values."""

    @abc.abstractmethod
    async def _claim(self, study: str, *, worker: str, lease: float, limit: int) -> list[Trial]:
        """`claim_trials` with checked values (``limit`` >= 1)."""

    @abc.abstractmethod
    async def _renew(self, study: str, tids: list[int], *, worker: str, lease: float) -> list[int]:
        """`renew_leases` with checked values."""

    @abc.abstractmethod
    async def _reap(self, study: str) -> list[Trial]:
        """`reap_expired`: fields from `reap_changes`, retries decided by `requeues`."""

    @abc.abstractmethod
    async def _get_trial(self, study: str, tid: int) -> Trial | None:
        """The trial, or None (`StudyNotFoundError` for an unknown study)."""

    @abc.abstractmethod
    async def _trials_since(self, study: str, seq: int) -> list[Trial]:
        """`trials_since` with checked values."""

    @abc.abstractmethod
    async def _count(self, study: str, *, budgeted: bool) -> int:
        """`count_trials` with checked values."""


_Result = TypeVar("_Result")


class ConnectionStorage(Storage):
    """A backend whose primitives are synchronous operations on a database connection.

    ``_ops`` holds one method per primitive, each taking the connection (or session)
    first; ``_call`` runs one of them as one transaction, off the event loop, and
    translates its errors. The primitives are written here once, as those calls.
    """

    _ops: Any

    @abc.abstractmethod
    async def _call(self, fn: Callable[[Any], _Result]) -> _Result:
        """``fn(connection)`` as one transaction, off the event loop."""

    async def _create_study(self, record: StudyRecord) -> StudyRecord:
        result: StudyRecord = await self._call(lambda c: self._ops.create_study(c, record))
        return result

    async def _get_study(self, name: str) -> StudyRecord | None:
        result: StudyRecord | None = await self._call(lambda c: self._ops.get_study(c, name))
        return result

    async def _list_studies(self) -> list[StudyRecord]:
        result: list[StudyRecord] = await self._call(self._ops.list_studies)
        return result

    async def _delete_study(self, name: str) -> bool:
        result: bool = await self._call(lambda c: self._ops.delete_study(c, name))
        return result

    async def _batch(self, study: str, request: BatchRequest) -> Batch:
        result: Batch = await self._call(lambda c: self._ops.batch(c, study, request))
        return result

    async def _report(self, study: str, tid: int, worker: str, step: int, value: float) -> Trial:
        result: Trial = await self._call(
            lambda c: self._ops.report(c, study, tid, worker, step, value)
        )
        return result

    async def _enqueue(
        self, study: str, new: Sequence[NewTrial], *, budget: int | None
    ) -> list[Trial]:
        result: list[Trial] = await self._call(lambda c: self._ops.enqueue(c, study, new, budget))
        return result

    async def _claim(self, study: str, *, worker: str, lease: float, limit: int) -> list[Trial]:
        result: list[Trial] = await self._call(
            lambda c: self._ops.claim(c, study, worker, lease, limit)
        )
        return result

    async def _renew(self, study: str, tids: list[int], *, worker: str, lease: float) -> list[int]:
        result: list[int] = await self._call(
            lambda c: self._ops.renew(c, study, tids, worker, lease)
        )
        return result

    async def _reap(self, study: str) -> list[Trial]:
        result: list[Trial] = await self._call(lambda c: self._ops.reap(c, study))
        return result

    async def _get_trial(self, study: str, tid: int) -> Trial | None:
        result: Trial | None = await self._call(lambda c: self._ops.get_trial(c, study, tid))
        return result

    async def _trials_since(self, study: str, seq: int) -> list[Trial]:
        result: list[Trial] = await self._call(lambda c: self._ops.trials_since(c, study, seq))
        return result

    async def _count(self, study: str, *, budgeted: bool) -> int:
        result: int = await self._call(lambda c: self._ops.count(c, study, budgeted))
        return result
