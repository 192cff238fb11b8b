"""The in-process storage (``memory://``): plain dicts, the default and the test double.

Every operation runs without awaiting at all, so it is atomic under any interleaving of
tasks (and costs no trip through the event loop). Each open of ``memory://`` is a new,
empty storage; pass the instance itself to share it between calls. Values pass through
the same normalization as every backend's (`asyncopt.trial`), so what is read back is
what SQLite and MongoDB would give.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import Any

from asyncopt.errors import TrialError
from asyncopt.storage.base import (
    Batch,
    BatchRequest,
    NewTrial,
    Storage,
    StudyRecord,
    Trial,
    TrialState,
    lease_lost,
    new_trial,
    reap_changes,
    refusal,
    reportable,
    requeues,
    room,
    unreported,
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


class MemoryStorage(Storage):
    """A `Storage` in this process's memory; lost when the process ends."""

    never_yields = True
    one_round_trip = True

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
            raise self._no_study(name) from None

    async def _create_study(self, record: StudyRecord) -> StudyRecord:
        existing = self._studies.setdefault(record.name, _Study(record))
        return existing.record

    async def _get_study(self, name: str) -> StudyRecord | None:
        study = self._studies.get(name)
        return None if study is None else study.record

    async def _list_studies(self) -> list[StudyRecord]:
        return [self._studies[name].record for name in sorted(self._studies)]

    async def _delete_study(self, name: str) -> bool:
        return self._studies.pop(name, None) is not None

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
        if trial.state is TrialState.CANCELLED:
            study.budgeted -= 1
        return trial

    def _add(
        self, study: _Study, state: TrialState, new: NewTrial, now: float, **more: Any
    ) -> Trial:
        trial = new_trial(
            study.record.name,
            len(study.trials),
            state,
            new.assignment,
            now=now,
            seq=self._next_seq(),
            seed=new.seed,
            **more,
        )
        study.budgeted += 1
        return self._put(study, trial)

    async def _batch(self, study: str, request: BatchRequest) -> Batch:
        worker, lease = request.worker, request.lease
        record = self._study(study)
        now = time.time()
        finished: list[Trial | TrialError] = []
        for finish in request.finishes:
            trial = self._trial(record, finish.tid)
            refused = refusal(
                study,
                finish.tid,
                worker,
                None if trial is None else trial.state,
                None if trial is None else trial.worker,
            )
            if refused is not None:
                finished.append(refused)
                continue
            assert trial is not None
            finished.append(self._store(record, trial, **finish.changes(now)))
        new = request.new
        left = room(request.budget, record.budgeted)
        count = len(new) if left is None else min(left, len(new))
        created = [
            self._add(record, TrialState.RUNNING, n, now, worker=worker, lease=lease)
            for n in new[:count]
        ]
        since = request.since
        changed = [] if since is None else self._since(record, since)
        return Batch(finished, created, changed)

    async def _report(self, study: str, tid: int, worker: str, step: int, value: float) -> Trial:
        record = self._study(study)
        trial = self._trial(record, tid)
        if not reportable(trial, worker, step):
            return unreported(study, tid, worker, trial)
        assert trial is not None
        return self._store(record, trial, intermediate={**trial.intermediate, step: value})

    async def _enqueue(
        self, study: str, new: Sequence[NewTrial], *, budget: int | None
    ) -> list[Trial]:
        record = self._study(study)
        left = room(budget, record.budgeted)
        count = len(new) if left is None else min(left, len(new))
        now = time.time()
        return [self._add(record, TrialState.QUEUED, n, now) for n in new[:count]]

    async def _claim(self, study: str, *, worker: str, lease: float, limit: int) -> list[Trial]:
        record = self._study(study)
        claimed: list[Trial] = []
        for trial in record.trials:
            if len(claimed) == limit:
                break
            if trial.state is TrialState.QUEUED:
                now = time.time()
                claimed.append(
                    self._store(
                        record,
                        trial,
                        state=TrialState.RUNNING,
                        started_at=now,
                        lease_expires_at=now + lease,
                        worker=worker,
                    )
                )
        return claimed

    def _trial(self, record: _Study, tid: int) -> Trial | None:
        return record.trials[tid] if 0 <= tid < len(record.trials) else None

    async def _renew(self, study: str, tids: list[int], *, worker: str, lease: float) -> list[int]:
        record = self._study(study)
        expires = time.time() + lease
        lost = []
        for tid in tids:
            trial = self._trial(record, tid)
            if trial is not None and trial.state is TrialState.RUNNING and trial.worker == worker:
                self._store(record, trial, lease_expires_at=expires)
            elif trial is None or lease_lost(trial.state, trial.worker, worker):
                lost.append(tid)
        return lost

    async def _reap(self, study: str) -> list[Trial]:
        record = self._study(study)
        now = time.time()
        reaped = []
        for trial in list(record.trials):
            expires = trial.lease_expires_at
            if trial.state is TrialState.RUNNING and expires is not None and expires < now:
                reaped.append(self._store(record, trial, **reap_changes(trial.worker, now)))
                if requeues(trial):
                    retry = NewTrial(trial.assignment, trial.seed)
                    self._add(record, TrialState.QUEUED, retry, now, retry_of=trial.tid)
        return reaped

    async def _get_trial(self, study: str, tid: int) -> Trial | None:
        return self._trial(self._study(study), tid)

    def _since(self, record: _Study, seq: int) -> list[Trial]:
        start = bisect.bisect_right(record.changes, (seq, len(record.trials)))
        changed = []
        for change, tid in record.changes[start:]:
            trial = record.trials[tid]
            if trial.seq == change:  # only the latest change of each trial
                changed.append(trial)
        return changed

    async def _trials_since(self, study: str, seq: int) -> list[Trial]:
        return self._since(self._study(study), seq)

    async def _count(self, study: str, *, budgeted: bool) -> int:
        record = self._study(study)
        return record.budgeted if budgeted else len(record.trials)
