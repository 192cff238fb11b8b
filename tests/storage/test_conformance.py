"""The storage conformance suite: every backend, both event loops, the same semantics.

The `storage` fixture (tests/storage/conftest.py) is an open connection to a fresh storage;
`connect()` opens more connections to the same storage, so races run across connections
where the backend has them (memory hands back the same instance).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
import pytest

from asyncopt.errors import (
    LeaseLostError,
    StorageError,
    StudyMismatchError,
    StudyNameError,
    StudyNotFoundError,
    TrialNotFoundError,
    TrialStateError,
)
from asyncopt.storage.base import MAX_STUDY_NAME, Finish, NewTrial, Storage, Trial, TrialState

FINGERPRINT = "a" * 64
OTHER_FINGERPRINT = "b" * 64
SPACE: dict[str, Any] = {
    "x": {"dist": "uniform", "low": -1.5, "high": 2},
    "nested": [{"a": 1}, None, True, "text"],
}
Connect = Callable[[], AbstractAsyncContextManager[Storage]]
LEASE = 60.0
SHORT_LEASE = 0.2


async def new_study(storage: Storage, name: str = "s", seed: int = 7) -> str:
    await storage.create_study(name, fingerprint=FINGERPRINT, space=SPACE, seed=seed)
    return name


async def create(
    storage: Storage,
    study: str = "s",
    x: float = 0.5,
    *,
    budget: int | None = None,
    worker: str = "w1",
    lease: float = LEASE,
    seed: int | None = None,
) -> Trial:
    trial = await storage.create_trial(
        study, {"x": x}, budget=budget, worker=worker, lease=lease, seed=seed
    )
    assert trial is not None
    return trial


# -- studies ----------------------------------------------------------------------------


async def test_create_study_returns_the_record(storage: Storage) -> None:
    before = time.time()
    record = await storage.create_study("s", fingerprint=FINGERPRINT, space=SPACE, seed=42)
    assert record.name == "s"
    assert record.fingerprint == FINGERPRINT
    assert record.seed == 42
    assert dict(record.space) == SPACE
    assert before - 1 <= record.created_at <= time.time() + 1
    assert await storage.get_study("s") == record
    assert dict((await storage.get_study("s")).space) == SPACE


async def test_create_study_again_loads_it_unchanged(storage: Storage) -> None:
    first = await storage.create_study("s", fingerprint=FINGERPRINT, space=SPACE, seed=1)
    again = await storage.create_study("s", fingerprint=FINGERPRINT, space={"y": 1}, seed=99)
    assert again == first
    assert again.seed == 1
    assert dict(again.space) == SPACE


async def test_a_different_fingerprint_is_a_mismatch_and_changes_nothing(
    storage: Storage,
) -> None:
    await new_study(storage)
    await create(storage)
    with pytest.raises(StudyMismatchError, match="'s'"):
        await storage.create_study("s", fingerprint=OTHER_FINGERPRINT, space={}, seed=1)
    assert (await storage.get_study("s")).fingerprint == FINGERPRINT
    assert await storage.count_trials("s") == 1
    assert [t.tid for t in await storage.trials_since("s")] == [0]


async def test_large_seeds_round_trip(storage: Storage) -> None:
    big = 2**64 + 12345
    record = await storage.create_study("s", fingerprint=FINGERPRINT, space=SPACE, seed=big)
    assert record.seed == big
    assert (await storage.get_study("s")).seed == big
    trial = await create(storage, seed=big)
    assert trial.seed == big
    assert (await storage.get_trial("s", trial.tid)).seed == big


async def test_get_study_of_an_unknown_name(storage: Storage) -> None:
    with pytest.raises(StudyNotFoundError, match="'nope'"):
        await storage.get_study("nope")


async def test_list_studies_by_name(storage: Storage) -> None:
    assert await storage.list_studies() == []
    for name in ["b", "c", "a"]:
        await new_study(storage, name)
    assert [record.name for record in await storage.list_studies()] == ["a", "b", "c"]


async def test_delete_study_removes_it_and_its_trials_only(storage: Storage) -> None:
    await new_study(storage, "gone")
    await new_study(storage, "kept")
    await create(storage, "gone")
    await create(storage, "kept")
    await storage.delete_study("gone")
    assert [record.name for record in await storage.list_studies()] == ["kept"]
    with pytest.raises(StudyNotFoundError):
        await storage.get_study("gone")
    with pytest.raises(StudyNotFoundError):
        await storage.get_trial("gone", 0)
    with pytest.raises(StudyNotFoundError):
        await storage.trials_since("gone")
    assert await storage.count_trials("kept") == 1
    with pytest.raises(StudyNotFoundError):
        await storage.delete_study("gone")


async def test_a_study_created_again_after_delete_starts_empty(storage: Storage) -> None:
    await new_study(storage)
    await create(storage)
    last_seq = (await create(storage)).seq
    await storage.delete_study("s")
    await storage.create_study("s", fingerprint=OTHER_FINGERPRINT, space={}, seed=3)
    trial = await create(storage)
    assert trial.tid == 0
    assert trial.seq > last_seq
    assert await storage.count_trials("s", budgeted=False) == 1


TRIAL_OPERATIONS: dict[str, Callable[[Storage, Any], Awaitable[object]]] = {
    "create_trial": lambda s, n: s.create_trial(n, {"x": 1}, budget=None, worker="w", lease=1),
    "enqueue_trials": lambda s, n: s.enqueue_trials(n, [{"x": 1}], budget=None),
    "claim_trial": lambda s, n: s.claim_trial(n, worker="w", lease=1),
    "claim_trials": lambda s, n: s.claim_trials(n, worker="w", lease=1, limit=3),
    "finish_trial": lambda s, n: s.finish_trial(n, 0, worker="w", state=TrialState.OK, loss=1),
    "finish_and_create": lambda s, n: s.finish_and_create(
        n,
        [Finish(0, TrialState.OK, loss=1)],
        [NewTrial({"x": 1})],
        since=0,
        worker="w",
        budget=None,
        lease=1,
    ),
    "report": lambda s, n: s.report(n, 0, worker="w", step=0, value=1.0),
    "renew_leases": lambda s, n: s.renew_leases(n, [0], worker="w", lease=1),
    "renew_no_leases": lambda s, n: s.renew_leases(n, [], worker="w", lease=1),
    "reap_expired": lambda s, n: s.reap_expired(n),
    "get_trial": lambda s, n: s.get_trial(n, 0),
    "trials_since": lambda s, n: s.trials_since(n),
    "count_trials": lambda s, n: s.count_trials(n),
    "delete_study": lambda s, n: s.delete_study(n),
    "get_study": lambda s, n: s.get_study(n),
}


@pytest.mark.parametrize("operation", list(TRIAL_OPERATIONS))
async def test_every_operation_on_an_unknown_study_raises(storage: Storage, operation: str) -> None:
    await new_study(storage, "other")
    with pytest.raises(StudyNotFoundError):
        await TRIAL_OPERATIONS[operation](storage, "nope")


BAD_NAMES = {
    "operator": {"$gt": ""},
    "int": 3,
    "none": None,
    "bytes": b"s",
    "empty": "",
    "nul": "s\0",
    "too long": "s" * (MAX_STUDY_NAME + 1),
}


@pytest.mark.parametrize("name", list(BAD_NAMES))
@pytest.mark.parametrize("operation", [*TRIAL_OPERATIONS, "create_study"])
async def test_a_bad_study_name_is_refused_before_any_query(
    storage: Storage, operation: str, name: str
) -> None:
    await new_study(storage)
    await create(storage)
    before = await storage.trials_since("s")
    bad = BAD_NAMES[name]
    call = TRIAL_OPERATIONS.get(operation) or (
        lambda s, n: s.create_study(n, fingerprint=FINGERPRINT, space={}, seed=1)
    )
    with pytest.raises(StudyNameError, match="study name"):
        await call(storage, bad)
    assert await storage.trials_since("s") == before
    assert [r.name for r in await storage.list_studies()] == ["s"]


async def test_the_longest_study_name_is_kept(storage: Storage) -> None:
    name = "é" * MAX_STUDY_NAME
    await storage.create_study(name, fingerprint=FINGERPRINT, space={}, seed=1)
    assert (await storage.get_study(name)).name == name
    assert await storage.create_trial(name, {"x": 1}, budget=None, worker="w", lease=1)


# -- creating trials ----------------------------------------------------------------------


async def test_create_trial_is_running_with_dense_tids(storage: Storage) -> None:
    await new_study(storage)
    before = time.time()
    trials = [await create(storage, x=float(i), worker=f"w{i}", seed=i) for i in range(3)]
    after = time.time()
    assert [t.tid for t in trials] == [0, 1, 2]
    for i, trial in enumerate(trials):
        assert trial.study == "s"
        assert trial.state is TrialState.RUNNING
        assert trial.assignment == {"x": float(i)}
        assert trial.worker == f"w{i}"
        assert trial.seed == i
        assert trial.retry_of is None
        assert trial.loss is None
        assert trial.result is None
        assert trial.error is None
        assert trial.finished_at is None
        assert trial.created_at is not None
        assert trial.started_at is not None
        assert before - 1 <= trial.started_at <= after + 1
        assert trial.lease_expires_at is not None
        assert trial.lease_expires_at == pytest.approx(trial.started_at + LEASE)
        assert await storage.get_trial("s", trial.tid) == trial


async def test_assignments_round_trip_exactly(storage: Storage) -> None:
    await new_study(storage)
    assignment: dict[str, int | float] = {
        "a": 0.1,
        "b": 1e-300,
        "c": -2.5e300,
        "d": 3,
        "e": 0,
        "f": 1 / 3,
        "g": 5e-324,
    }
    trial = await storage.create_trial("s", assignment, budget=None, worker="w", lease=LEASE)
    assert trial is not None
    stored = (await storage.get_trial("s", trial.tid)).assignment
    assert stored == assignment
    assert [type(v) for v in stored.values()] == [type(v) for v in assignment.values()]
    assert list(stored) == list(assignment)


async def test_the_budget_caps_created_trials(storage: Storage) -> None:
    await new_study(storage)
    created = [await storage.create_trial("s", {"x": 1}, budget=3, worker="w", lease=LEASE)]
    created += [await storage.create_trial("s", {"x": 1}, budget=3, worker="w", lease=LEASE)]
    created += [await storage.create_trial("s", {"x": 1}, budget=3, worker="w", lease=LEASE)]
    assert [t.tid for t in created if t is not None] == [0, 1, 2]
    assert await storage.create_trial("s", {"x": 1}, budget=3, worker="w", lease=LEASE) is None
    assert await storage.count_trials("s", budgeted=False) == 3
    unlimited = await storage.create_trial("s", {"x": 1}, budget=None, worker="w", lease=LEASE)
    assert unlimited is not None
    assert unlimited.tid == 3


async def test_a_zero_budget_creates_nothing(storage: Storage) -> None:
    await new_study(storage)
    assert await storage.create_trial("s", {"x": 1}, budget=0, worker="w", lease=LEASE) is None
    assert await storage.enqueue_trials("s", [{"x": 1}], budget=0) == []
    assert await storage.count_trials("s", budgeted=False) == 0


async def test_studies_have_their_own_tids_and_budgets(storage: Storage) -> None:
    await new_study(storage, "a")
    await new_study(storage, "b")
    await create(storage, "a", budget=2)
    await create(storage, "a", budget=2)
    trial = await create(storage, "b", budget=2)
    assert trial.tid == 0
    assert await storage.count_trials("a") == 2
    assert await storage.count_trials("b") == 1


# -- queued trials --------------------------------------------------------------------------


async def test_enqueue_adds_queued_trials_in_order(storage: Storage) -> None:
    await new_study(storage)
    await create(storage)
    queued = await storage.enqueue_trials(
        "s", [{"x": 1}, {"x": 2}, {"x": 3}], budget=None, seeds=[10, None, 30]
    )
    assert [t.tid for t in queued] == [1, 2, 3]
    assert [t.assignment for t in queued] == [{"x": 1}, {"x": 2}, {"x": 3}]
    assert [t.seed for t in queued] == [10, None, 30]
    for trial in queued:
        assert trial.state is TrialState.QUEUED
        assert trial.worker is None
        assert trial.started_at is None
        assert trial.lease_expires_at is None
        assert await storage.get_trial("s", trial.tid) == trial
    assert await storage.count_trials("s") == 4
    assert await storage.enqueue_trials("s", [], budget=None) == []


async def test_enqueue_stops_at_the_budget(storage: Storage) -> None:
    await new_study(storage)
    await create(storage)
    queued = await storage.enqueue_trials("s", [{"x": i} for i in range(5)], budget=3)
    assert [t.assignment for t in queued] == [{"x": 0}, {"x": 1}]
    assert await storage.enqueue_trials("s", [{"x": 9}], budget=3) == []
    assert await storage.count_trials("s") == 3


async def test_claim_takes_the_lowest_queued_tid(storage: Storage) -> None:
    await new_study(storage)
    assert await storage.claim_trial("s", worker="w", lease=LEASE) is None
    await storage.enqueue_trials("s", [{"x": 1}, {"x": 2}], budget=None, seeds=[5, 6])
    before = time.time()
    first = await storage.claim_trial("s", worker="w1", lease=LEASE)
    second = await storage.claim_trial("s", worker="w2", lease=LEASE)
    assert first is not None
    assert second is not None
    assert (first.tid, first.worker, first.seed, first.assignment) == (0, "w1", 5, {"x": 1})
    assert (second.tid, second.worker) == (1, "w2")
    assert first.state is TrialState.RUNNING
    assert first.started_at is not None
    assert first.started_at >= before - 1
    assert first.lease_expires_at == pytest.approx(first.started_at + LEASE)
    assert await storage.get_trial("s", 0) == first
    assert await storage.claim_trial("s", worker="w3", lease=LEASE) is None
    assert await storage.count_trials("s") == 2


# -- finishing --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [TrialState.OK, TrialState.FAIL])
async def test_finish_records_the_outcome(storage: Storage, state: TrialState) -> None:
    await new_study(storage)
    trial = await create(storage, seed=3)
    result = {"loss": 0.25, "status": "ok", "extra": {"list": [1, 2.5, None], "s": "é"}}
    finished = await storage.finish_trial(
        "s",
        trial.tid,
        worker="w1",
        state=state,
        loss=0.25,
        result=result,
        error="boom" if state is TrialState.FAIL else None,
    )
    assert finished.state is state
    assert finished.loss == 0.25
    assert finished.result == result
    assert finished.error == ("boom" if state is TrialState.FAIL else None)
    assert finished.finished_at is not None
    assert trial.started_at is not None
    assert finished.finished_at >= trial.started_at
    assert finished.lease_expires_at is None
    assert (finished.tid, finished.seed, finished.worker) == (trial.tid, 3, "w1")
    assert finished.assignment == trial.assignment
    assert finished.started_at == trial.started_at
    assert finished.seq > trial.seq
    assert await storage.get_trial("s", trial.tid) == finished
    assert await storage.count_trials("s") == 1


@pytest.mark.parametrize("loss", [math.inf, -math.inf, 1e-320, -0.0, 123456789.123456789])
async def test_losses_round_trip(storage: Storage, loss: float) -> None:
    await new_study(storage)
    trial = await create(storage)
    await storage.finish_trial("s", trial.tid, worker="w1", state=TrialState.FAIL, loss=loss)
    stored = (await storage.get_trial("s", trial.tid)).loss
    assert stored == loss
    assert stored is not None
    assert math.copysign(1, stored) == math.copysign(1, loss)


async def test_a_nan_loss_reads_back_as_nan(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage)
    await storage.finish_trial("s", trial.tid, worker="w1", state=TrialState.FAIL, loss=math.nan)
    stored = (await storage.get_trial("s", trial.tid)).loss
    assert stored is not None
    assert math.isnan(stored)


async def test_finish_by_another_worker_is_refused_and_changes_nothing(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage, worker="holder")
    with pytest.raises(LeaseLostError, match="holder"):
        await storage.finish_trial("s", trial.tid, worker="thief", state=TrialState.OK, loss=1)
    assert await storage.get_trial("s", trial.tid) == trial
    done = await storage.finish_trial("s", trial.tid, worker="holder", state=TrialState.OK, loss=2)
    assert done.loss == 2


async def test_finish_twice_is_refused(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage)
    done = await storage.finish_trial("s", trial.tid, worker="w1", state=TrialState.OK, loss=1)
    with pytest.raises(TrialStateError, match="OK"):
        await storage.finish_trial("s", trial.tid, worker="w1", state=TrialState.OK, loss=5)
    with pytest.raises(TrialStateError):
        await storage.finish_trial("s", trial.tid, worker="w1", state=TrialState.CANCELLED)
    assert await storage.get_trial("s", trial.tid) == done


async def test_finish_records_when_the_worker_began_running_the_trial(storage: Storage) -> None:
    await new_study(storage)
    first, second, third = [await create(storage) for _ in range(3)]
    assert first.started_at is not None
    began = first.started_at + 12.5
    done = await storage.finish_trial(
        "s", first.tid, worker="w1", state=TrialState.OK, loss=1, started_at=began
    )
    assert done.started_at == began
    assert done.duration is not None
    assert await storage.get_trial("s", first.tid) == done
    batch = await storage.finish_and_create(
        "s",
        [
            Finish(second.tid, TrialState.OK, started_at=began + 1),
            Finish(third.tid, TrialState.OK, loss=1.0, started_at=began + 2),
        ],
        [NewTrial({"x": 1})],
        since=0,
        worker="w1",
        budget=None,
        lease=30,
    )
    second_done, done = batch.finished
    [created] = batch.created
    assert isinstance(second_done, Trial)
    assert isinstance(done, Trial)
    assert second_done.started_at == began + 1
    assert done.started_at == began + 2
    assert created.started_at is not None
    # Without it, the start stays the time the trial was taken.
    kept = await storage.finish_trial("s", created.tid, worker="w1", state=TrialState.OK)
    assert kept.started_at == created.started_at


@pytest.mark.parametrize("started_at", [math.nan, math.inf, "noon", True])
async def test_a_bad_start_time_is_refused_and_changes_nothing(
    storage: Storage, started_at: Any
) -> None:
    await new_study(storage)
    trial = await create(storage)
    with pytest.raises((TypeError, ValueError), match="started_at"):
        await storage.finish_trial(
            "s", trial.tid, worker="w1", state=TrialState.OK, loss=1, started_at=started_at
        )
    assert await storage.get_trial("s", trial.tid) == trial


async def test_finish_and_create_with_nothing_to_create_reads_every_change_since(
    storage: Storage,
) -> None:
    await new_study(storage)
    await new_study(storage, "other")
    first = await create(storage)
    cursor = first.seq
    second = await create(storage, worker="w2")
    await create(storage, "other")
    batch = await storage.finish_and_create(
        "s",
        [Finish(first.tid, TrialState.OK, loss=0.5, result={"k": 1})],
        [],
        since=cursor,
        worker="w1",
        budget=None,
        lease=30,
    )
    [done] = batch.finished
    assert isinstance(done, Trial)
    assert (done.state, done.loss, done.result) == (TrialState.OK, 0.5, {"k": 1})
    assert done == await storage.get_trial("s", first.tid)
    assert batch.created == []
    assert [t.tid for t in batch.changed] == [second.tid, first.tid]
    assert batch.changed[-1] == done
    again = await storage.finish_and_create(
        "s",
        [Finish(second.tid, TrialState.FAIL, error="boom")],
        [],
        since=done.seq,
        worker="w2",
        budget=None,
        lease=30,
    )
    assert [(t.tid, t.state) for t in again.changed] == [(second.tid, TrialState.FAIL)]


async def test_finish_and_create_finishes_creates_then_reads(storage: Storage) -> None:
    await new_study(storage)
    first = await create(storage)
    other = await create(storage, worker="w2")
    second = await create(storage)
    batch = await storage.finish_and_create(
        "s",
        [Finish(first.tid, TrialState.OK, loss=0.5), Finish(second.tid, TrialState.OK, loss=1)],
        [NewTrial({"x": 0.25}, seed=7), NewTrial({"x": 0.75})],
        since=first.seq,
        worker="w1",
        budget=5,
        lease=30,
    )
    done, done_too = batch.finished
    created, created_too = batch.created
    assert done == await storage.get_trial("s", first.tid)
    assert (done.state, done.loss) == (TrialState.OK, 0.5)  # type: ignore[union-attr]
    assert done_too == await storage.get_trial("s", second.tid)
    # The changes are read after the creations: the new trials are among them.
    assert [t.tid for t in batch.changed] == [other.tid, first.tid, second.tid, 3, 4]
    assert batch.changed[-2:] == [created, created_too]
    assert created == await storage.get_trial("s", 3)
    assert created_too == await storage.get_trial("s", 4)
    assert created.state is TrialState.RUNNING
    assert (created.assignment, created.worker, created.seed) == ({"x": 0.25}, "w1", 7)
    assert created_too.assignment == {"x": 0.75}
    assert done.seq < done_too.seq < created.seq < created_too.seq  # type: ignore[union-attr]
    assert created.lease_expires_at is not None
    # The budget allows one more trial: the first new one gets it, the second none.
    batch = await storage.finish_and_create(
        "s",
        [
            Finish(created.tid, TrialState.FAIL, error="boom"),
            Finish(created_too.tid, TrialState.OK, loss=2.0),
        ],
        [NewTrial({"x": 1}), NewTrial({"x": 2})],
        since=created_too.seq,
        worker="w1",
        budget=6,
        lease=30,
    )
    failed, finished = batch.finished
    assert isinstance(failed, Trial)
    assert isinstance(finished, Trial)
    assert (failed.state, failed.error) == (TrialState.FAIL, "boom")
    assert finished.loss == 2.0
    [last] = batch.created
    assert (last.tid, last.assignment) == (5, {"x": 1})
    assert await storage.count_trials("s", budgeted=False) == 6


async def test_a_refused_finish_changes_nothing_and_others_go_on(storage: Storage) -> None:
    await new_study(storage)
    stolen = await create(storage, worker="holder")
    mine = await create(storage, worker="w1")
    batch = await storage.finish_and_create(
        "s",
        [
            Finish(stolen.tid, TrialState.OK),
            Finish(99, TrialState.OK),
            Finish(mine.tid, TrialState.OK, loss=1),
        ],
        [NewTrial({"x": 0.5})],
        since=mine.seq,
        worker="w1",
        budget=None,
        lease=30,
    )
    refused, unknown, finished = batch.finished
    assert isinstance(refused, LeaseLostError)
    assert "holder" in str(refused)
    assert isinstance(unknown, TrialNotFoundError)
    assert isinstance(finished, Trial)
    assert finished.state is TrialState.OK
    [created] = batch.created
    assert created.assignment == {"x": 0.5}
    assert [t.tid for t in batch.changed] == [mine.tid, created.tid]
    assert await storage.get_trial("s", stolen.tid) == stolen
    # Finishing twice is refused the same way, also within one call.
    batch = await storage.finish_and_create(
        "s", [Finish(mine.tid, TrialState.OK)], [], since=0, worker="w1", budget=None, lease=30
    )
    assert isinstance(batch.finished[0], TrialStateError)
    batch = await storage.finish_and_create(
        "s",
        [Finish(created.tid, TrialState.OK), Finish(created.tid, TrialState.OK)],
        [],
        since=0,
        worker="w1",
        budget=None,
        lease=30,
    )
    assert isinstance(batch.finished[0], Trial)
    assert isinstance(batch.finished[1], TrialStateError)
    assert await storage.count_trials("s", budgeted=False) == 3


async def test_a_finish_into_an_unfinished_state_is_refused_alone(storage: Storage) -> None:
    await new_study(storage)
    first = await create(storage)
    second = await create(storage)
    batch = await storage.finish_and_create(
        "s",
        [Finish(first.tid, TrialState.RUNNING), Finish(second.tid, TrialState.OK, loss=1)],
        [],
        since=0,
        worker="w1",
        budget=None,
        lease=30,
    )
    refused, finished = batch.finished
    assert isinstance(refused, TrialStateError)
    assert "RUNNING" in str(refused)
    assert isinstance(finished, Trial)
    assert finished.state is TrialState.OK
    assert await storage.get_trial("s", first.tid) == first


async def test_claim_trials_takes_up_to_the_limit_lowest_tids_first(storage: Storage) -> None:
    await new_study(storage)
    await storage.enqueue_trials("s", [{"x": i} for i in range(3)], budget=None)
    claimed = await storage.claim_trials("s", worker="w1", lease=30, limit=2)
    assert [(t.tid, t.state, t.worker) for t in claimed] == [
        (0, TrialState.RUNNING, "w1"),
        (1, TrialState.RUNNING, "w1"),
    ]
    assert claimed == [await storage.get_trial("s", 0), await storage.get_trial("s", 1)]
    assert [t.tid for t in await storage.claim_trials("s", worker="w2", lease=30, limit=5)] == [2]
    assert await storage.claim_trials("s", worker="w2", lease=30, limit=5) == []


async def test_finishing_a_queued_trial_is_refused(storage: Storage) -> None:
    await new_study(storage)
    [queued] = await storage.enqueue_trials("s", [{"x": 1}], budget=None)
    with pytest.raises(TrialStateError, match="QUEUED"):
        await storage.finish_trial("s", queued.tid, worker="w1", state=TrialState.OK, loss=1)


@pytest.mark.parametrize("state", [TrialState.QUEUED, TrialState.RUNNING])
async def test_finishing_into_an_unfinished_state_is_refused(
    storage: Storage, state: TrialState
) -> None:
    await new_study(storage)
    trial = await create(storage)
    with pytest.raises(TrialStateError):
        await storage.finish_trial("s", trial.tid, worker="w1", state=state)
    assert (await storage.get_trial("s", trial.tid)).state is TrialState.RUNNING


async def test_finishing_an_unknown_trial(storage: Storage) -> None:
    await new_study(storage)
    await create(storage)
    for tid in (1, 99, -1):
        with pytest.raises(TrialNotFoundError):
            await storage.finish_trial("s", tid, worker="w1", state=TrialState.OK, loss=1)


async def test_cancelled_trials_do_not_count_toward_the_budget(storage: Storage) -> None:
    await new_study(storage)
    first = await create(storage, budget=2)
    await create(storage, budget=2)
    assert await storage.create_trial("s", {"x": 1}, budget=2, worker="w", lease=LEASE) is None
    cancelled = await storage.finish_trial(
        "s", first.tid, worker="w1", state=TrialState.CANCELLED, error="stopped"
    )
    assert cancelled.state is TrialState.CANCELLED
    assert cancelled.error == "stopped"
    assert await storage.count_trials("s") == 1
    assert await storage.count_trials("s", budgeted=False) == 2
    third = await create(storage, budget=2)
    assert third.tid == 2
    assert await storage.create_trial("s", {"x": 1}, budget=2, worker="w", lease=LEASE) is None
    assert await storage.count_trials("s") == 2


# -- intermediate values ----------------------------------------------------------------------


async def test_reports_land_in_any_step_order_each_with_a_new_seq(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage)
    assert trial.intermediate == {}
    assert trial.last_step is None
    seq = trial.seq
    expected: dict[int, float] = {}
    for step, value in [(2, 0.5), (0, 1.0), (10, 0.25), (1, 3)]:
        reported = await storage.report("s", trial.tid, worker="w1", step=step, value=value)
        expected[step] = float(value)
        assert reported.intermediate == expected
        assert reported.seq > seq
        seq = reported.seq
        assert reported.state is TrialState.RUNNING
        assert reported.lease_expires_at == trial.lease_expires_at
        assert await storage.get_trial("s", trial.tid) == reported
    assert reported.last_step == 10
    assert reported.last_value == 0.25
    assert all(type(v) is float for v in reported.intermediate.values())


async def test_a_repeated_step_keeps_its_first_value_and_changes_nothing(
    storage: Storage,
) -> None:
    await new_study(storage)
    trial = await create(storage)
    first = await storage.report("s", trial.tid, worker="w1", step=3, value=0.5)
    again = await storage.report("s", trial.tid, worker="w1", step=3, value=9.0)
    assert again == first
    assert again.seq == first.seq
    assert again.intermediate == {3: 0.5}
    assert await storage.get_trial("s", trial.tid) == first
    assert await storage.trials_since("s", first.seq) == []
    nan = await storage.report("s", trial.tid, worker="w1", step=4, value=math.nan)
    kept = await storage.report("s", trial.tid, worker="w1", step=4, value=1.0)
    assert kept.seq == nan.seq
    assert math.isnan((await storage.get_trial("s", trial.tid)).intermediate[4])


async def test_trials_since_returns_a_reported_trial(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage)
    other = await create(storage)
    reported = await storage.report("s", trial.tid, worker="w1", step=0, value=0.5)
    assert await storage.trials_since("s", other.seq) == [reported]
    assert [t.tid for t in await storage.trials_since("s")] == [other.tid, trial.tid]
    batch = await storage.finish_and_create(
        "s", [], [], since=other.seq, worker="w1", budget=None, lease=LEASE
    )
    assert batch.changed == [reported]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
async def test_a_non_finite_value_is_stored_as_nan(storage: Storage, value: float) -> None:
    await new_study(storage)
    trial = await create(storage)
    reported = await storage.report("s", trial.tid, worker="w1", step=4, value=value)
    for read in (
        reported,
        await storage.get_trial("s", trial.tid),
        (await storage.trials_since("s"))[-1],
    ):
        assert list(read.intermediate) == [4]
        assert math.isnan(read.intermediate[4])


async def test_numpy_steps_and_values_are_stored_as_plain_python(storage: Storage) -> None:
    import numpy as np

    await new_study(storage)
    trial = await create(storage)
    await storage.report("s", trial.tid, worker="w1", step=np.int64(2), value=np.float32(0.5))
    stored = (await storage.get_trial("s", trial.tid)).intermediate
    assert stored == {2: 0.5}
    assert [(type(k), type(v)) for k, v in stored.items()] == [(int, float)]


@pytest.mark.parametrize(
    ("step", "value", "error", "needle"),
    [
        (-1, 0.5, ValueError, "step"),
        (1.0, 0.5, TypeError, "step"),
        (True, 0.5, TypeError, "step"),
        ("1", 0.5, TypeError, "step"),
        (None, 0.5, TypeError, "step"),
        (1, "0.5", TypeError, "value"),
        (1, None, TypeError, "value"),
        (1, True, TypeError, "value"),
        (1, 1j, TypeError, "value"),
    ],
)
async def test_a_bad_step_or_value_is_refused_and_nothing_is_stored(
    storage: Storage, step: Any, value: Any, error: type[Exception], needle: str
) -> None:
    await new_study(storage)
    trial = await create(storage)
    with pytest.raises(error, match=needle):
        await storage.report("s", trial.tid, worker="w1", step=step, value=value)
    assert await storage.get_trial("s", trial.tid) == trial
    assert await storage.trials_since("s", trial.seq) == []


@pytest.mark.parametrize("state", [TrialState.OK, TrialState.FAIL, TrialState.PRUNED])
async def test_a_report_after_the_trial_finished_is_refused(
    storage: Storage, state: TrialState
) -> None:
    await new_study(storage)
    trial = await create(storage)
    await storage.report("s", trial.tid, worker="w1", step=0, value=0.5)
    done = await storage.finish_trial("s", trial.tid, worker="w1", state=state, loss=0.5)
    with pytest.raises(TrialStateError, match=state.name):
        await storage.report("s", trial.tid, worker="w1", step=1, value=0.25)
    with pytest.raises(TrialStateError):
        await storage.report("s", trial.tid, worker="w1", step=0, value=0.5)
    assert await storage.get_trial("s", trial.tid) == done
    assert done.intermediate == {0: 0.5}


async def test_a_report_on_a_queued_or_cancelled_trial_is_refused(storage: Storage) -> None:
    await new_study(storage)
    [queued] = await storage.enqueue_trials("s", [{"x": 1}], budget=None)
    with pytest.raises(TrialStateError, match="QUEUED"):
        await storage.report("s", queued.tid, worker="w1", step=0, value=0.5)
    assert await storage.get_trial("s", queued.tid) == queued
    trial = await create(storage)
    await storage.finish_trial("s", trial.tid, worker="w1", state=TrialState.CANCELLED)
    with pytest.raises(TrialStateError, match="CANCELLED"):
        await storage.report("s", trial.tid, worker="w1", step=0, value=0.5)


async def test_a_report_by_another_worker_is_refused(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage, worker="holder")
    with pytest.raises(LeaseLostError, match="holder"):
        await storage.report("s", trial.tid, worker="thief", step=0, value=0.5)
    assert await storage.get_trial("s", trial.tid) == trial


async def test_a_report_on_an_unknown_trial_is_refused(storage: Storage) -> None:
    await new_study(storage)
    await create(storage)
    for tid in (1, 99, -1):
        with pytest.raises(TrialNotFoundError, match=str(tid)):
            await storage.report("s", tid, worker="w1", step=0, value=0.5)
    with pytest.raises(TypeError, match="tid"):
        await storage.report("s", "0", worker="w1", step=0, value=0.5)  # type: ignore[arg-type]


async def test_reported_values_survive_closing_and_reopening(connect: Connect) -> None:
    async with connect() as storage:
        await new_study(storage)
        trial = await create(storage)
        other = await create(storage)
        await storage.report("s", trial.tid, worker="w1", step=1, value=0.5)
        await storage.report("s", trial.tid, worker="w1", step=2, value=math.inf)
        reported = await storage.report("s", other.tid, worker="w1", step=0, value=0.125)
        await storage.finish_trial("s", other.tid, worker="w1", state=TrialState.PRUNED, loss=0.125)
    async with connect() as storage:
        resumed = await storage.get_trial("s", trial.tid)
        assert resumed.state is TrialState.RUNNING
        assert list(resumed.intermediate) == [1, 2]
        assert resumed.intermediate[1] == 0.5
        assert math.isnan(resumed.intermediate[2])
        pruned = await storage.get_trial("s", other.tid)
        assert pruned.state is TrialState.PRUNED
        assert pruned.intermediate == reported.intermediate == {0: 0.125}
        more = await storage.report("s", trial.tid, worker="w1", step=3, value=0.25)
        assert list(more.intermediate) == [1, 2, 3]


async def test_a_pruned_trial_is_finished_and_counts_toward_the_budget(storage: Storage) -> None:
    await new_study(storage)
    first = await create(storage, budget=3)
    second = await create(storage, budget=3)
    third = await create(storage, budget=3)
    await storage.report("s", first.tid, worker="w1", step=0, value=0.75)
    pruned = await storage.finish_trial(
        "s", first.tid, worker="w1", state=TrialState.PRUNED, loss=0.75
    )
    assert pruned.state is TrialState.PRUNED
    assert pruned.state.is_finished
    assert pruned.loss == 0.75
    assert pruned.intermediate == {0: 0.75}
    assert pruned.finished_at is not None
    assert pruned.lease_expires_at is None
    no_loss = await storage.finish_trial("s", second.tid, worker="w1", state=TrialState.PRUNED)
    assert (no_loss.state, no_loss.loss) == (TrialState.PRUNED, None)
    batch = await storage.finish_and_create(
        "s",
        [Finish(third.tid, TrialState.PRUNED, loss=0.5)],
        [NewTrial({"x": 1})],
        since=0,
        worker="w1",
        budget=3,
        lease=LEASE,
    )
    [finished] = batch.finished
    assert isinstance(finished, Trial)
    assert (finished.state, finished.loss) == (TrialState.PRUNED, 0.5)
    assert batch.created == []
    assert await storage.create_trial("s", {"x": 1}, budget=3, worker="w", lease=LEASE) is None
    assert await storage.count_trials("s") == 3
    assert [t.state for t in await storage.trials_since("s")] == [TrialState.PRUNED] * 3
    # A renewal crossing the worker's own prune is no lost lease; another worker's is.
    assert await storage.renew_leases("s", [first.tid], worker="w1", lease=LEASE) == []
    assert await storage.renew_leases("s", [first.tid], worker="w2", lease=LEASE) == [first.tid]
    with pytest.raises(TrialStateError, match="PRUNED"):
        await storage.finish_trial("s", first.tid, worker="w1", state=TrialState.OK, loss=1)


# -- leases -------------------------------------------------------------------------------------


async def test_renew_extends_held_leases_and_names_the_lost_ones(storage: Storage) -> None:
    await new_study(storage)
    mine = await create(storage, worker="me", lease=SHORT_LEASE)
    theirs = await create(storage, worker="them", lease=SHORT_LEASE)
    finished = await create(storage, worker="me")
    await storage.finish_trial("s", finished.tid, worker="me", state=TrialState.OK, loss=1)
    [queued] = await storage.enqueue_trials("s", [{"x": 1}], budget=None)
    lost = await storage.renew_leases(
        "s", [mine.tid, theirs.tid, finished.tid, queued.tid, 99], worker="me", lease=LEASE
    )
    # A trial "me" finished is done, not lost: a renewal crossing a finish is no reap.
    assert sorted(lost) == sorted([theirs.tid, queued.tid, 99])
    renewed = await storage.get_trial("s", mine.tid)
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at >= time.time() + LEASE - 5
    assert renewed.state is TrialState.RUNNING
    assert renewed.worker == "me"
    assert await storage.renew_leases("s", [], worker="me", lease=LEASE) == []
    await anyio.sleep(SHORT_LEASE + 0.1)
    assert [t.tid for t in await storage.reap_expired("s")] == [theirs.tid]


async def test_an_expired_lease_is_reaped_once_and_requeued_once(storage: Storage) -> None:
    await new_study(storage)
    expired = await create(storage, x=0.125, worker="dead", lease=SHORT_LEASE, seed=77)
    alive = await create(storage, worker="alive", lease=LEASE)
    assert await storage.reap_expired("s") == []
    await anyio.sleep(SHORT_LEASE + 0.1)
    reaped = await storage.reap_expired("s")
    assert [t.tid for t in reaped] == [expired.tid]
    [cancelled] = reaped
    assert cancelled.state is TrialState.CANCELLED
    assert cancelled.error is not None
    assert "lease" in cancelled.error
    assert cancelled.finished_at is not None
    assert cancelled.lease_expires_at is None
    assert await storage.get_trial("s", expired.tid) == cancelled
    retry = await storage.get_trial("s", 2)
    assert retry.state is TrialState.QUEUED
    assert retry.retry_of == expired.tid
    assert retry.assignment == {"x": 0.125}
    assert retry.seed == 77
    assert retry.worker is None
    assert retry.lease_expires_at is None
    assert await storage.count_trials("s") == 2
    assert await storage.count_trials("s", budgeted=False) == 3
    assert await storage.reap_expired("s") == []
    assert (await storage.get_trial("s", alive.tid)).state is TrialState.RUNNING
    with pytest.raises(TrialStateError):
        await storage.finish_trial("s", expired.tid, worker="dead", state=TrialState.OK, loss=1)
    claimed = await storage.claim_trial("s", worker="w2", lease=LEASE)
    assert claimed is not None
    assert claimed.tid == 2
    assert claimed.retry_of == expired.tid


async def test_a_reaped_retry_is_not_requeued_again(storage: Storage) -> None:
    await new_study(storage)
    await create(storage, worker="dead", lease=SHORT_LEASE)
    await anyio.sleep(SHORT_LEASE + 0.1)
    await storage.reap_expired("s")
    retry = await storage.claim_trial("s", worker="dead-too", lease=SHORT_LEASE)
    assert retry is not None
    assert retry.retry_of == 0
    await anyio.sleep(SHORT_LEASE + 0.1)
    reaped = await storage.reap_expired("s")
    assert [t.tid for t in reaped] == [retry.tid]
    assert reaped[0].retry_of == 0
    assert await storage.count_trials("s", budgeted=False) == 2
    assert await storage.count_trials("s") == 0
    assert await storage.claim_trial("s", worker="w", lease=LEASE) is None


async def test_a_renewed_lease_is_not_reaped(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage, lease=SHORT_LEASE)
    for _ in range(3):
        await anyio.sleep(SHORT_LEASE / 2)
        assert await storage.renew_leases("s", [trial.tid], worker="w1", lease=SHORT_LEASE) == []
    assert await storage.reap_expired("s") == []
    assert (await storage.get_trial("s", trial.tid)).state is TrialState.RUNNING


async def test_a_reaped_trial_keeps_its_budget_slot_through_the_retry(storage: Storage) -> None:
    await new_study(storage)
    await create(storage, budget=2, lease=SHORT_LEASE)
    await create(storage, budget=2)
    await anyio.sleep(SHORT_LEASE + 0.1)
    await storage.reap_expired("s")
    assert await storage.create_trial("s", {"x": 1}, budget=2, worker="w", lease=LEASE) is None
    assert await storage.count_trials("s") == 2


# -- reads --------------------------------------------------------------------------------------


async def test_get_trial_of_an_unknown_tid(storage: Storage) -> None:
    await new_study(storage)
    await create(storage)
    for tid in (1, -1, 10**6):
        with pytest.raises(TrialNotFoundError, match=str(tid)):
            await storage.get_trial("s", tid)


async def test_count_trials(storage: Storage) -> None:
    await new_study(storage)
    assert await storage.count_trials("s") == 0
    trials = [await create(storage) for _ in range(4)]
    await storage.enqueue_trials("s", [{"x": 1}], budget=None)
    await storage.finish_trial("s", trials[0].tid, worker="w1", state=TrialState.OK, loss=1)
    await storage.finish_trial("s", trials[1].tid, worker="w1", state=TrialState.FAIL)
    await storage.finish_trial("s", trials[2].tid, worker="w1", state=TrialState.CANCELLED)
    assert await storage.count_trials("s") == 4
    assert await storage.count_trials("s", budgeted=True) == 4
    assert await storage.count_trials("s", budgeted=False) == 5


async def test_trials_since_returns_every_change_exactly_once(storage: Storage) -> None:
    await new_study(storage)
    await new_study(storage, "other")
    seen: dict[int, Trial] = {}
    last_seq = 0
    changes = 0

    async def read(expected: set[int]) -> None:
        nonlocal last_seq, changes
        changed = await storage.trials_since("s", last_seq)
        assert {t.tid for t in changed} == expected
        assert len(changed) == len(expected)
        seqs = [t.seq for t in changed]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        assert all(seq > last_seq for seq in seqs)
        for trial in changed:
            assert trial == await storage.get_trial("s", trial.tid)
            seen[trial.tid] = trial
        if changed:
            last_seq = seqs[-1]
        changes += len(changed)

    await read(set())
    a = await create(storage, worker="w1")
    b = await create(storage, worker="w1", lease=SHORT_LEASE)
    await create(storage, "other")
    await read({a.tid, b.tid})
    await read(set())
    await storage.enqueue_trials("s", [{"x": 1}, {"x": 2}], budget=None)
    await read({2, 3})
    await storage.claim_trial("s", worker="w2", lease=LEASE)
    await storage.finish_trial("s", a.tid, worker="w1", state=TrialState.OK, loss=1.5)
    await read({2, a.tid})
    assert seen[a.tid].state is TrialState.OK
    assert seen[a.tid].loss == 1.5
    await storage.renew_leases("s", [2], worker="w2", lease=LEASE)
    await read({2})
    await anyio.sleep(SHORT_LEASE + 0.1)
    await storage.reap_expired("s")
    await read({b.tid, 4})
    assert seen[b.tid].state is TrialState.CANCELLED
    assert seen[4].retry_of == b.tid
    await storage.finish_trial("s", 2, worker="w2", state=TrialState.FAIL, error="x")
    await storage.create_trial("other", {"x": 3}, budget=None, worker="w", lease=LEASE)
    await read({2})
    await read(set())
    everything = await storage.trials_since("s")
    assert [t.tid for t in sorted(everything, key=lambda t: t.tid)] == [0, 1, 2, 3, 4]
    assert {t.tid: t for t in everything} == seen
    assert changes == 10


async def test_seq_increases_across_studies(storage: Storage) -> None:
    await new_study(storage, "a")
    await new_study(storage, "b")
    seqs = []
    for i in range(6):
        trial = await create(storage, "ab"[i % 2])
        seqs.append(trial.seq)
        done = await storage.finish_trial(
            "ab"[i % 2], trial.tid, worker="w1", state=TrialState.OK, loss=i
        )
        seqs.append(done.seq)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert seqs[0] > 0


# -- races ----------------------------------------------------------------------------------------


async def _connections(stack: AsyncExitStack, connect: Connect, count: int) -> list[Storage]:
    return [await stack.enter_async_context(connect()) for _ in range(count)]


async def test_concurrent_creates_against_a_budget_get_exactly_the_budget(
    storage: Storage, connect: Connect
) -> None:
    await new_study(storage)
    budget = 7
    created: list[Trial] = []
    refused = 0

    async def worker(connection: Storage, name: str) -> None:
        nonlocal refused
        while True:
            trial = await connection.create_trial(
                "s", {"x": 1}, budget=budget, worker=name, lease=LEASE
            )
            if trial is None:
                refused += 1
                return
            created.append(trial)

    async with AsyncExitStack() as stack:
        connections = await _connections(stack, connect, 4)
        async with anyio.create_task_group() as group:
            for i in range(16):
                group.start_soon(worker, connections[i % len(connections)], f"w{i}")
    assert sorted(t.tid for t in created) == list(range(budget))
    assert refused == 16
    assert await storage.count_trials("s") == budget
    assert await storage.count_trials("s", budgeted=False) == budget
    stored = await storage.trials_since("s")
    assert sorted(t.tid for t in stored) == list(range(budget))
    assert {t.tid: t.worker for t in stored} == {t.tid: t.worker for t in created}


async def test_concurrent_creates_and_enqueues_share_the_budget(
    storage: Storage, connect: Connect
) -> None:
    await new_study(storage)
    budget = 10
    made: list[Trial] = []

    async def creator(connection: Storage) -> None:
        while (
            t := await connection.create_trial(
                "s", {"x": 1}, budget=budget, worker="c", lease=LEASE
            )
        ) is not None:
            made.append(t)

    async def enqueuer(connection: Storage) -> None:
        for _ in range(5):
            made.extend(await connection.enqueue_trials("s", [{"x": 2}] * 2, budget=budget))

    async with AsyncExitStack() as stack:
        connections = await _connections(stack, connect, 4)
        async with anyio.create_task_group() as group:
            group.start_soon(creator, connections[0])
            group.start_soon(creator, connections[1])
            group.start_soon(enqueuer, connections[2])
            group.start_soon(enqueuer, connections[3])
    assert sorted(t.tid for t in made) == list(range(budget))
    assert await storage.count_trials("s") == budget


async def test_concurrent_claims_have_one_winner_per_queued_trial(
    storage: Storage, connect: Connect
) -> None:
    await new_study(storage)
    queued = 5
    await storage.enqueue_trials("s", [{"x": i} for i in range(queued)], budget=None)
    claims: dict[str, Trial | None] = {}

    async def claimant(connection: Storage, name: str) -> None:
        claims[name] = await connection.claim_trial("s", worker=name, lease=LEASE)

    async with AsyncExitStack() as stack:
        connections = await _connections(stack, connect, 4)
        async with anyio.create_task_group() as group:
            for i in range(12):
                group.start_soon(claimant, connections[i % len(connections)], f"w{i}")
    winners = {name: t for name, t in claims.items() if t is not None}
    assert len(claims) == 12
    assert sorted(t.tid for t in winners.values()) == list(range(queued))
    for name, trial in winners.items():
        stored = await storage.get_trial("s", trial.tid)
        assert stored.state is TrialState.RUNNING
        assert stored.worker == name
        assert stored.assignment == {"x": trial.tid}


async def test_concurrent_finishes_of_one_trial_have_one_winner(
    storage: Storage, connect: Connect
) -> None:
    await new_study(storage)
    trial = await create(storage)
    outcomes: list[object] = []

    async def finisher(connection: Storage, loss: float) -> None:
        try:
            done = await connection.finish_trial(
                "s", trial.tid, worker="w1", state=TrialState.OK, loss=loss
            )
            outcomes.append(done.loss)
        except TrialStateError as exc:
            outcomes.append(type(exc))

    async with AsyncExitStack() as stack:
        connections = await _connections(stack, connect, 3)
        async with anyio.create_task_group() as group:
            for i, connection in enumerate(connections * 2):
                group.start_soon(finisher, connection, float(i))
    losses = [o for o in outcomes if isinstance(o, float)]
    assert len(losses) == 1
    assert outcomes.count(TrialStateError) == 5
    assert (await storage.get_trial("s", trial.tid)).loss == losses[0]


async def test_concurrent_reapers_reap_each_trial_once(storage: Storage, connect: Connect) -> None:
    await new_study(storage)
    for i in range(4):
        await create(storage, worker=f"dead{i}", lease=SHORT_LEASE)
    await create(storage, worker="alive")
    await anyio.sleep(SHORT_LEASE + 0.1)
    reaped: list[Trial] = []

    async def reaper(connection: Storage) -> None:
        reaped.extend(await connection.reap_expired("s"))

    async with AsyncExitStack() as stack:
        connections = await _connections(stack, connect, 4)
        async with anyio.create_task_group() as group:
            for connection in connections * 2:
                group.start_soon(reaper, connection)
    assert sorted(t.tid for t in reaped) == [0, 1, 2, 3]
    everything = await storage.trials_since("s")
    retries = sorted(t.retry_of for t in everything if t.retry_of is not None)
    assert retries == [0, 1, 2, 3]
    assert len(everything) == 9
    assert await storage.count_trials("s") == 5


async def test_concurrent_reports_of_one_trial_all_land_and_repeats_keep_one_value(
    storage: Storage, connect: Connect
) -> None:
    await new_study(storage)
    trial = await create(storage)
    returned: list[tuple[int, float, Trial]] = []

    async def reporter(connection: Storage, step: int, value: float) -> None:
        reported = await connection.report("s", trial.tid, worker="w1", step=step, value=value)
        returned.append((step, value, reported))

    async with AsyncExitStack() as stack:
        connections = await _connections(stack, connect, 4)
        async with anyio.create_task_group() as group:
            for step in range(12):
                group.start_soon(reporter, connections[step % 4], step, step / 10)
            # Step 20 reported four times at once with different values: one wins.
            for i, connection in enumerate(connections):
                group.start_soon(reporter, connection, 20, 100.0 + i)
    stored = await storage.get_trial("s", trial.tid)
    winner = stored.intermediate[20]
    assert winner in (100.0, 101.0, 102.0, 103.0)
    assert stored.intermediate == {**{step: step / 10 for step in range(12)}, 20: winner}
    for step, value, reported in returned:
        assert reported.intermediate[step] == (winner if step == 20 else value)
    landed = [t for step, value, t in returned if t.intermediate[step] == value]
    assert len(landed) == 13
    assert len({t.seq for t in landed}) == 13  # each landed report has a seq of its own
    assert stored.seq in {t.seq for t in landed}


# -- values -------------------------------------------------------------------------------


async def test_numpy_values_big_ints_and_nan_extras_read_back_as_plain_python(
    storage: Storage,
) -> None:
    import numpy as np

    await new_study(storage, seed=2**80)
    assert (await storage.get_study("s")).seed == 2**80
    trial = await storage.create_trial(
        "s",
        {"x": np.float64(0.5), "n": np.int64(3), "z": np.array(0.25), "k": np.int32(-2)},
        budget=None,
        worker="w1",
        lease=LEASE,
        seed=2**70 + 1,
    )
    assert trial is not None
    result = {
        "acc": np.float32(0.9),
        "zero_d": np.array(2),
        "big": 2**70,
        "nan": math.nan,
        "inf": math.inf,
        "nested": {"values": [np.int32(1), np.float16(0.5)], "flag": np.bool_(True)},
    }
    done = await storage.finish_trial(
        "s", trial.tid, worker="w1", state=TrialState.OK, loss=np.float64(0.125), result=result
    )
    expected = {
        "acc": float(np.float32(0.9)),
        "zero_d": 2,
        "big": 2**70,
        "inf": math.inf,
        "nested": {"values": [1, 0.5], "flag": True},
    }
    for read in (
        done,
        await storage.get_trial("s", trial.tid),
        (await storage.trials_since("s"))[-1],
    ):
        assert read.assignment == {"x": 0.5, "n": 3, "z": 0.25, "k": -2}
        assert [type(v) for v in read.assignment.values()] == [float, int, float, int]
        assert read.seed == 2**70 + 1
        assert read.loss == 0.125
        assert type(read.loss) is float
        assert read.result is not None
        values = dict(read.result)
        assert math.isnan(values.pop("nan"))
        assert values == expected
        assert type(values["acc"]) is float
        assert type(values["zero_d"]) is int
        assert type(values["nested"]["flag"]) is bool


@pytest.mark.parametrize(
    ("assignment", "needle"),
    [
        ({"x": "text"}, "'x'"),
        ({"x": None}, "'x'"),
        ({"x": True}, "'x'"),
        ({3: 1.0}, "label"),
    ],
)
async def test_an_assignment_that_is_not_numbers_is_refused(
    storage: Storage, assignment: dict[Any, Any], needle: str
) -> None:
    await new_study(storage)
    with pytest.raises(StorageError, match=needle):
        await storage.create_trial("s", assignment, budget=None, worker="w1", lease=LEASE)
    assert await storage.count_trials("s", budgeted=False) == 0


async def test_a_result_that_is_not_json_is_refused_and_changes_nothing(storage: Storage) -> None:
    await new_study(storage)
    trial = await create(storage)
    with pytest.raises(StorageError, match="result"):
        await storage.finish_trial(
            "s", trial.tid, worker="w1", state=TrialState.OK, loss=1, result={"f": object()}
        )
    assert await storage.get_trial("s", trial.tid) == trial


async def test_a_closed_study_refuses_ask_and_creates_nothing(storage: Storage) -> None:
    import asyncopt as ao

    space = {"x": ao.hp.uniform("x", 0, 1)}
    async with ao.open_study(storage, "s", space, algo=ao.rand.suggest, seed=1) as study:
        assert await study.ask() is not None
    with pytest.raises(StorageError, match="closed"):
        await study.ask()
    trials = await storage.trials_since("s")
    assert [t.state for t in trials] == [TrialState.CANCELLED]


@pytest.mark.parametrize("name", ["", "s\0", "s" * (MAX_STUDY_NAME + 1)])
async def test_open_study_applies_the_same_name_rule(storage: Storage, name: str) -> None:
    import asyncopt as ao

    with pytest.raises(StudyNameError):
        async with ao.open_study(storage, name, {"x": ao.hp.uniform("x", 0, 1)}):
            pass
    assert await storage.list_studies() == []
