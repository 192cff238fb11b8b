"""The in-process storage (``memory://``): plain dicts, the default and the test double.

Every operation runs without awaiting at all, so it is atomic under any interleaving of
tasks (and costs no trip through the event loop). Each open of ``memory://`` is a new,
empty storage; pass the instance itself to share it between calls.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping, Sequence
from typing import Any

from asyncopt.errors import (
    LeaseLostError,
    StudyMismatchError,
    StudyNotFoundError,
    TrialNotFoundError,
    TrialStateError,
)
from asyncopt.storage.base import (
    StorageContext,
    StudyRecord,
    Trial,
    TrialState,
    checked_start,
    finishing_state,
)
from asyncopt.storage.urls import StorageURL

__all__ = ["MemoryStorage"]


class _Study:
    def __init__(self, record: StudyRecord) -> None:
        self.record = record
        self.trials: list[Trial] = []
        self.budgeted = 0
        # (seq, tid) of every change, in seq order, for incremental reads.
        self.changes: list[tuple[int, int]] = []


class MemoryStorage(StorageContext):
    """A `Storage` in this process's memory; lost when the process ends."""

    #: Its coroutines never yield to the event loop, so no cancellation can interrupt
    #: them: callers need no shielded scope around its writes.
    never_yields = True

    def __init__(self) -> None:
        self._studies: dict[str, _Study] = {}
        self._seq = 0

    @classmethod
    def from_url(cls, url: StorageURL) -> MemoryStorage:
        """A new, empty storage (``memory://`` takes no host, path or options)."""
        return cls()

    @property
    def url(self) -> str:
        """Always ``memory://``."""
        return "memory://"

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self._studies)} studies)"

    async def open(self) -> None:
        """Nothing to connect."""

    async def aclose(self) -> None:
        """Nothing to release; the data stays with the instance."""

    # -- studies ---------------------------------------------------------------------------

    def _study(self, name: str) -> _Study:
        try:
            return self._studies[name]
        except KeyError:
            raise StudyNotFoundError(f"no study named {name!r} in memory://") from None

    async def create_study(
        self, name: str, *, fingerprint: str, space: Mapping[str, Any], seed: int
    ) -> StudyRecord:
        existing = self._studies.get(name)
        if existing is not None:
            if existing.record.fingerprint != fingerprint:
                raise StudyMismatchError(
                    f"study {name!r} exists with a different space "
                    f"(fingerprint {existing.record.fingerprint[:12]}, "
                    f"this space {fingerprint[:12]})"
                )
            return existing.record
        record = StudyRecord(name, fingerprint, dict(space), int(seed), time.time())
        self._studies[name] = _Study(record)
        return record

    async def get_study(self, name: str) -> StudyRecord:
        return self._study(name).record

    async def list_studies(self) -> list[StudyRecord]:
        return [self._studies[name].record for name in sorted(self._studies)]

    async def delete_study(self, name: str) -> None:
        self._study(name)
        del self._studies[name]

    # -- trials ----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _store(self, study: _Study, trial: Trial, **changes: Any) -> Trial:
        return self._put(study, trial.evolve(seq=self._next_seq(), **changes))

    def _put(self, study: _Study, trial: Trial) -> Trial:
        """Keep ``trial`` (already stamped with a new seq) as the latest record of its tid."""
        study.changes.append((trial.seq, trial.tid))
        if trial.tid == len(study.trials):
            study.trials.append(trial)
        else:
            study.trials[trial.tid] = trial
        return trial

    def _new_trial(
        self,
        study: _Study,
        assignment: Mapping[str, int | float],
        state: TrialState,
        *,
        now: float,
        worker: str | None = None,
        lease: float | None = None,
        seed: int | None = None,
        retry_of: int | None = None,
    ) -> Trial:
        running = state is TrialState.RUNNING
        trial = Trial(
            study=study.record.name,
            tid=len(study.trials),
            state=state,
            assignment=dict(assignment),
            created_at=now,
            started_at=now if running else None,
            lease_expires_at=now + lease if running and lease is not None else None,
            worker=worker if running else None,
            seed=seed,
            retry_of=retry_of,
            seq=self._next_seq(),
        )
        study.budgeted += 1
        return self._put(study, trial)

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
        record = self._study(study)
        if budget is not None and record.budgeted >= budget:
            return None
        return self._new_trial(
            record,
            assignment,
            TrialState.RUNNING,
            now=time.time(),
            worker=worker,
            lease=lease,
            seed=seed,
        )

    async def enqueue_trials(
        self,
        study: str,
        assignments: Sequence[Mapping[str, int | float]],
        *,
        budget: int | None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Trial]:
        record = self._study(study)
        now = time.time()
        created = []
        for i, assignment in enumerate(assignments):
            if budget is not None and record.budgeted >= budget:
                break
            seed = seeds[i] if seeds is not None else None
            created.append(
                self._new_trial(record, assignment, TrialState.QUEUED, now=now, seed=seed)
            )
        return created

    async def claim_trial(self, study: str, *, worker: str, lease: float) -> Trial | None:
        record = self._study(study)
        for trial in record.trials:
            if trial.state is TrialState.QUEUED:
                now = time.time()
                return self._store(
                    record,
                    trial,
                    state=TrialState.RUNNING,
                    started_at=now,
                    lease_expires_at=now + lease,
                    worker=worker,
                )
        return None

    def _trial(self, record: _Study, tid: int) -> Trial:
        if not 0 <= tid < len(record.trials):
            raise TrialNotFoundError(f"study {record.record.name!r} has no trial {tid}")
        return record.trials[tid]

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
        state = finishing_state(state)
        started_at = checked_start(started_at)
        record = self._study(study)
        trial = self._trial(record, tid)
        if trial.state is not TrialState.RUNNING:
            raise TrialStateError(
                f"trial {tid} of study {study!r} is {trial.state.name}, not RUNNING; "
                "it cannot be finished"
            )
        if trial.worker != worker:
            raise LeaseLostError(
                f"trial {tid} of study {study!r} is held by another worker ({trial.worker})"
            )
        if state is TrialState.CANCELLED:
            record.budgeted -= 1
        return self._store(
            record,
            trial,
            state=state,
            loss=loss,
            result=None if result is None else dict(result),
            error=error,
            started_at=trial.started_at if started_at is None else started_at,
            finished_at=time.time(),
            lease_expires_at=None,
        )

    async def renew_leases(
        self, study: str, tids: Sequence[int], *, worker: str, lease: float
    ) -> list[int]:
        record = self._study(study)
        now = time.time()
        lost = []
        for tid in tids:
            if not 0 <= tid < len(record.trials):
                lost.append(tid)
                continue
            trial = record.trials[tid]
            if trial.state is not TrialState.RUNNING or trial.worker != worker:
                lost.append(tid)
                continue
            self._store(record, trial, lease_expires_at=now + lease)
        return lost

    async def reap_expired(self, study: str) -> list[Trial]:
        record = self._study(study)
        now = time.time()
        reaped = []
        for trial in list(record.trials):
            expires = trial.lease_expires_at
            if trial.state is TrialState.RUNNING and expires is not None and expires < now:
                record.budgeted -= 1
                reaped.append(
                    self._store(
                        record,
                        trial,
                        state=TrialState.CANCELLED,
                        finished_at=now,
                        lease_expires_at=None,
                        error=f"lease expired: worker {trial.worker} stopped renewing it",
                    )
                )
                if trial.retry_of is None:
                    self._new_trial(
                        record,
                        trial.assignment,
                        TrialState.QUEUED,
                        now=now,
                        seed=trial.seed,
                        retry_of=trial.tid,
                    )
        return reaped

    async def get_trial(self, study: str, tid: int) -> Trial:
        return self._trial(self._study(study), tid)

    async def trials_since(self, study: str, seq: int = 0) -> list[Trial]:
        record = self._study(study)
        start = bisect.bisect_right(record.changes, (seq, len(record.trials)))
        changed = []
        for change, tid in record.changes[start:]:
            trial = record.trials[tid]
            if trial.seq == change:  # only the latest change of each trial
                changed.append(trial)
        return changed

    async def count_trials(self, study: str, *, budgeted: bool = True) -> int:
        record = self._study(study)
        return record.budgeted if budgeted else len(record.trials)
