"""MongoDB-specific behaviour: URLs, clients, errors, concurrency across clients, seq reads."""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import anyio.to_thread
import pymongo
import pytest

from asyncopt.errors import (
    LeaseLostError,
    StorageError,
    StorageUnavailableError,
    StorageURLError,
    TrialStateError,
)
from asyncopt.storage.base import TrialState
from asyncopt.storage.mongo import DEFAULT_DATABASE, MongoStorage
from asyncopt.storage.urls import StorageURL, open_storage, storage_from_url
from mongo_server import FlakyProxy

FINGERPRINT = "f" * 64
SPACE = {"x": {"dist": "uniform", "low": 0, "high": 1}}


@pytest.fixture
async def mongo(mongodb_url: str) -> AsyncIterator[MongoStorage]:
    async with MongoStorage(mongodb_url) as storage:
        yield storage


def _database(url: str) -> str:
    return StorageURL.parse(url).path.strip("/")


async def _study(storage: MongoStorage, name: str = "s") -> str:
    await storage.create_study(name, fingerprint=FINGERPRINT, space=SPACE, seed=1)
    return name


def _collect_dropped_sockets() -> None:
    # PyMongo's async monitor can drop the socket it is connecting when the client closes
    # mid-attempt (a driver bug); collect it here so its ResourceWarning cannot surface,
    # as an error, in whichever later test happens to run the garbage collector.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


# -- URLs -------------------------------------------------------------------------------------


def test_the_registry_builds_a_mongo_storage_with_the_database_from_the_path() -> None:
    storage = storage_from_url("mongodb://db.example:27018/tuning?replicaSet=rs0")
    assert isinstance(storage, MongoStorage)
    assert storage.database == "tuning"
    srv = storage_from_url("mongodb+srv://cluster.example/other")
    assert isinstance(srv, MongoStorage)
    assert srv.database == "other"


@pytest.mark.parametrize(
    "url", ["mongodb://localhost", "mongodb://localhost/", "mongodb://h1:1,h2:2/?w=1"]
)
def test_the_database_defaults_to_asyncopt(url: str) -> None:
    assert MongoStorage(url).database == DEFAULT_DATABASE == "asyncopt"


def test_passwords_are_redacted_in_url_and_repr() -> None:
    storage = MongoStorage("mongodb://alice:hunter2@db.example:27017/tuning")
    assert storage.url == "mongodb://alice:***@db.example:27017/tuning"
    assert "hunter2" not in repr(storage)
    assert "hunter2" not in str(StorageURL.parse("mongodb://alice:hunter2@h/db"))


def test_a_non_mongo_url_or_a_nested_path_is_refused() -> None:
    with pytest.raises(StorageURLError, match="not a MongoDB URL"):
        MongoStorage("sqlite:///x.db")
    with pytest.raises(StorageURLError, match="single database name"):
        MongoStorage("mongodb://localhost/a/b")
    with pytest.raises(StorageURLError, match="either a URL or a client"):
        MongoStorage()


@pytest.mark.parametrize(
    ("query", "name"), [("ssl=maybe", "ssl"), ("w=1&replset=rs0", "replset"), ("bogus=1", "bogus")]
)
def test_an_unknown_or_invalid_option_is_a_url_error(query: str, name: str) -> None:
    with pytest.raises(StorageURLError, match=f"invalid option '{name}'") as info:
        storage_from_url(f"mongodb://bob:pw-secret@127.0.0.1:1/db?{query}")
    assert "pw-secret" not in str(info.value)


# -- errors -----------------------------------------------------------------------------------


async def test_an_unreachable_server_is_unavailable_quickly_and_hides_the_password() -> None:
    url = "mongodb://bob:Sup3rSecret@127.0.0.1:1/db?serverSelectionTimeoutMS=300"
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        async with open_storage(url):
            pass
    assert time.monotonic() - started < 10
    _collect_dropped_sockets()
    message = str(info.value)
    assert "Sup3rSecret" not in message
    assert "bob:***@127.0.0.1:1" in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


async def test_refused_credentials_are_unavailable_and_hide_the_password(
    mongodb_server_url: str,
) -> None:
    host = mongodb_server_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    url = f"mongodb://nobody:Wr0ngPassw0rd@{host}/db?serverSelectionTimeoutMS=3000"
    with pytest.raises(StorageUnavailableError, match="authentication failed") as info:
        async with open_storage(url):
            pass
    assert "Wr0ngPassw0rd" not in str(info.value)


async def test_using_a_storage_that_is_not_open_is_an_error(mongodb_url: str) -> None:
    storage = MongoStorage(mongodb_url)
    with pytest.raises(StorageError, match="not open"):
        await storage.list_studies()


async def test_a_result_that_is_not_json_is_refused(mongo: MongoStorage) -> None:
    study = await _study(mongo)
    trial = await mongo.create_trial(study, {"x": 0.5}, budget=None, worker="w", lease=60)
    assert trial is not None
    with pytest.raises(StorageError, match="JSON"):
        await mongo.finish_trial(
            study, trial.tid, worker="w", state=TrialState.OK, loss=1.0, result={"x": object()}
        )
    again = await mongo.get_trial(study, trial.tid)
    assert again.state is TrialState.RUNNING


# -- clients ----------------------------------------------------------------------------------


async def test_a_ready_sync_client_can_be_passed_and_is_left_open(mongodb_url: str) -> None:
    database = StorageURL.parse(mongodb_url).path.strip("/")
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongodb_url)
    try:
        async with MongoStorage(client=client, database=database) as storage:
            assert storage.database == database
            assert storage.url.endswith(f"/{database}")
            await _study(storage, "given")
        # The storage did not close the caller's client.
        names = await anyio.to_thread.run_sync(lambda: client[database]["studies"].distinct("_id"))
        assert names == ["given"]
    finally:
        client.close()


async def test_a_ready_async_client_works_under_asyncio_only(
    mongodb_url: str, anyio_backend: str
) -> None:
    database = StorageURL.parse(mongodb_url).path.strip("/")
    if anyio_backend == "asyncio":
        client: pymongo.AsyncMongoClient[dict[str, object]] = pymongo.AsyncMongoClient(mongodb_url)
        try:
            async with MongoStorage(client=client, database=database) as storage:
                await _study(storage, "async-given")
                assert [s.name for s in await storage.list_studies()] == ["async-given"]
            assert await client[database]["studies"].count_documents({}) == 1
        finally:
            await client.close()
    else:
        # Constructing an AsyncMongoClient does not connect; opening under trio refuses it.
        client = pymongo.AsyncMongoClient(mongodb_url, connect=False)
        with pytest.raises(StorageError, match="only under asyncio"):
            await MongoStorage(client=client, database=database).open()


async def test_open_and_close_are_idempotent(mongodb_url: str) -> None:
    storage = MongoStorage(mongodb_url)
    await storage.open()
    await storage.open()
    await _study(storage)
    await storage.aclose()
    await storage.aclose()
    async with storage:
        assert [s.name for s in await storage.list_studies()] == ["s"]


# -- data round trips -------------------------------------------------------------------------


async def test_labels_results_and_big_seeds_round_trip(mongo: MongoStorage) -> None:
    study = await _study(mongo)
    assignment = {"a.b": 0.25, "$c": 3, "plain": -1.5e-300}
    big_seed = 2**64 - 1
    trial = await mongo.create_trial(
        study, assignment, budget=None, worker="w", lease=60, seed=big_seed
    )
    assert trial is not None
    result = {"loss": 1.5, "nested": {"k": [1, 2, None]}, "status": "ok", "text": "é"}
    done = await mongo.finish_trial(
        study, trial.tid, worker="w", state=TrialState.OK, loss=1.5, result=result
    )
    stored = await mongo.get_trial(study, trial.tid)
    assert stored == done
    assert dict(stored.assignment) == assignment
    assert stored.result == result
    assert stored.seed == big_seed


# -- concurrency across clients ---------------------------------------------------------------


async def test_concurrent_creators_on_separate_clients_honour_the_budget(
    mongodb_url: str,
) -> None:
    budget = 30
    storages = [MongoStorage(mongodb_url) for _ in range(4)]
    for storage in storages:
        await storage.open()
    try:
        await _study(storages[0])
        created: list[int] = []

        async def create_until_full(storage: MongoStorage, worker: str) -> None:
            while True:
                trial = await storage.create_trial(
                    "s", {"x": 0.1}, budget=budget, worker=worker, lease=60
                )
                if trial is None:
                    return
                created.append(trial.tid)

        async with anyio.create_task_group() as tg:
            for i, storage in enumerate(storages):
                for j in range(3):
                    tg.start_soon(create_until_full, storage, f"w{i}.{j}")
        assert sorted(created) == list(range(budget))
        assert await storages[1].count_trials("s") == budget
        assert await storages[2].count_trials("s", budgeted=False) == budget
    finally:
        for storage in storages:
            await storage.aclose()


async def test_concurrent_claims_on_separate_clients_each_win_once(mongodb_url: str) -> None:
    storages = [MongoStorage(mongodb_url) for _ in range(3)]
    for storage in storages:
        await storage.open()
    try:
        await _study(storages[0])
        await storages[0].enqueue_trials("s", [{"x": i / 10} for i in range(9)], budget=None)
        claimed: list[tuple[int, str]] = []

        async def claim_all(storage: MongoStorage, worker: str) -> None:
            while (trial := await storage.claim_trial("s", worker=worker, lease=60)) is not None:
                claimed.append((trial.tid, worker))

        async with anyio.create_task_group() as tg:
            for i, storage in enumerate(storages):
                tg.start_soon(claim_all, storage, f"w{i}")
        assert sorted(tid for tid, _ in claimed) == list(range(9))
        for tid, worker in claimed:
            assert (await storages[0].get_trial("s", tid)).worker == worker
    finally:
        for storage in storages:
            await storage.aclose()


async def test_a_reaped_trial_is_requeued_once_across_clients(mongodb_url: str) -> None:
    storages = [MongoStorage(mongodb_url) for _ in range(3)]
    for storage in storages:
        await storage.open()
    try:
        await _study(storages[0])
        trial = await storages[0].create_trial("s", {"x": 0.3}, budget=2, worker="dead", lease=0.05)
        assert trial is not None
        await anyio.sleep(0.1)
        reaped: list[int] = []

        async def reap(storage: MongoStorage) -> None:
            reaped.extend(t.tid for t in await storage.reap_expired("s"))

        async with anyio.create_task_group() as tg:
            for storage in storages:
                tg.start_soon(reap, storage)
        assert reaped == [trial.tid]
        trials = sorted(await storages[1].trials_since("s", 0), key=lambda t: t.tid)
        assert [(t.tid, t.state, t.retry_of) for t in trials] == [
            (0, TrialState.CANCELLED, None),
            (1, TrialState.QUEUED, 0),
        ]
        # The retry took over the reaped trial's slot: one more fits in a budget of 2.
        assert await storages[2].count_trials("s") == 1
        assert await storages[2].create_trial("s", {}, budget=2, worker="w", lease=60) is not None
        assert await storages[2].create_trial("s", {}, budget=2, worker="w", lease=60) is None
    finally:
        for storage in storages:
            await storage.aclose()


async def test_a_reap_interrupted_before_the_requeue_is_finished_by_the_next_reaper(
    mongo: MongoStorage, mongodb_url: str
) -> None:
    study = await _study(mongo)
    trial = await mongo.create_trial(study, {"x": 0.3}, budget=None, worker="w", lease=60)
    assert trial is not None
    # What a reaper that died right after cancelling leaves behind: a CANCELLED trial
    # still holding its budget slot, and no retry.
    database = StorageURL.parse(mongodb_url).path.strip("/")
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongodb_url)
    try:
        await anyio.to_thread.run_sync(
            lambda: client[database]["trials"].update_one(
                {"study": study, "tid": trial.tid},
                {"$set": {"state": int(TrialState.CANCELLED), "lease_expires_at": None}},
            )
        )
    finally:
        client.close()
    assert await mongo.count_trials(study) == 1
    assert await mongo.reap_expired(study) == []
    assert await mongo.reap_expired(study) == []
    retry = await mongo.get_trial(study, 1)
    assert (retry.state, retry.retry_of) == (TrialState.QUEUED, trial.tid)
    assert await mongo.count_trials(study) == 1
    assert await mongo.count_trials(study, budgeted=False) == 2


# -- sequence numbers -------------------------------------------------------------------------


async def test_an_unstamped_change_is_still_read_and_later_stamped(
    mongo: MongoStorage, mongodb_url: str
) -> None:
    study = await _study(mongo)
    first = await mongo.create_trial(study, {"x": 0.1}, budget=None, worker="w", lease=60)
    second = await mongo.create_trial(study, {"x": 0.2}, budget=None, worker="w", lease=60)
    assert first is not None
    assert second is not None
    # A writer that died between writing a change and stamping it with a seq.
    database = StorageURL.parse(mongodb_url).path.strip("/")
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongodb_url)
    try:
        await anyio.to_thread.run_sync(
            lambda: client[database]["trials"].update_one(
                {"study": study, "tid": first.tid},
                {"$set": {"loss": 7.0, "seq": None, "op": "crashed"}},
            )
        )
    finally:
        client.close()
    since = await mongo.trials_since(study, second.seq)
    assert [(t.tid, t.loss) for t in since] == [(first.tid, 7.0)]
    assert since[0].seq >= second.seq
    await mongo.reap_expired(study)
    stamped = await mongo.get_trial(study, first.tid)
    assert stamped.seq > second.seq
    assert await mongo.trials_since(study, stamped.seq) == []


async def test_every_change_is_read_by_a_reader_following_the_highest_seq(
    mongodb_url: str,
) -> None:
    writers = [MongoStorage(mongodb_url) for _ in range(3)]
    reader = MongoStorage(mongodb_url)
    for storage in [*writers, reader]:
        await storage.open()
    try:
        await _study(writers[0])
        seen: dict[int, TrialState] = {}
        done = anyio.Event()

        async def write(storage: MongoStorage, worker: str) -> None:
            for _ in range(8):
                trial = await storage.create_trial(
                    "s", {"x": 0.5}, budget=None, worker=worker, lease=60
                )
                assert trial is not None
                await storage.finish_trial(
                    "s", trial.tid, worker=worker, state=TrialState.OK, loss=1.0
                )

        async def read() -> None:
            mark = 0
            while True:
                finished = done.is_set()
                for trial in await reader.trials_since("s", mark):
                    seen[trial.tid] = trial.state
                    mark = max(mark, trial.seq)
                if finished:
                    return
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with anyio.create_task_group() as writing:
                for i, storage in enumerate(writers):
                    writing.start_soon(write, storage, f"w{i}")
            done.set()
        assert seen == dict.fromkeys(range(24), TrialState.OK)
    finally:
        for storage in [*writers, reader]:
            await storage.aclose()


# -- lost connections -------------------------------------------------------------------------


async def test_a_finish_whose_reply_is_lost_is_retried_and_recorded_once(
    flaky_proxy: FlakyProxy, mongodb_url: str
) -> None:
    # retryWrites=false: the driver gives up at once, so asyncopt's own retry is tested.
    url = flaky_proxy.url(_database(mongodb_url), "retryWrites=false&serverSelectionTimeoutMS=2000")
    async with MongoStorage(url) as storage:
        study = await _study(storage)
        trial = await storage.create_trial(study, {"x": 0.5}, budget=None, worker="w", lease=60)
        assert trial is not None
        flaky_proxy.drop_reply_to(b"findAndModify")
        done = await storage.finish_trial(
            study, trial.tid, worker="w", state=TrialState.OK, loss=0.25, result={"k": 1}
        )
        assert flaky_proxy.dropped_replies == 1
        assert (done.state, done.loss, done.result) == (TrialState.OK, 0.25, {"k": 1})
        assert await storage.get_trial(study, trial.tid) == done
        # A second, separate finish is still refused.
        with pytest.raises(TrialStateError):
            await storage.finish_trial(study, trial.tid, worker="w", state=TrialState.OK, loss=1)


async def test_an_outage_mid_run_is_waited_out(flaky_proxy: FlakyProxy, mongodb_url: str) -> None:
    url = flaky_proxy.url(
        _database(mongodb_url), "serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    )
    async with MongoStorage(url, retry_timeout=20) as storage:
        study = await _study(storage)
        flaky_proxy.cut()

        async def restore_later() -> None:
            await anyio.sleep(1.0)
            flaky_proxy.restore()

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(restore_later)
            trial = await storage.create_trial(study, {"x": 0.1}, budget=5, worker="w", lease=60)
        assert trial is not None
        assert time.monotonic() - started >= 0.9
        assert [t.tid for t in await storage.trials_since(study, 0)] == [trial.tid]


async def test_an_outage_longer_than_the_retry_timeout_is_unavailable(
    flaky_proxy: FlakyProxy, mongodb_url: str
) -> None:
    url = flaky_proxy.url(
        _database(mongodb_url), "serverSelectionTimeoutMS=200&connectTimeoutMS=200"
    )
    async with MongoStorage(url, retry_timeout=0.8) as storage:
        study = await _study(storage)
        flaky_proxy.cut()
        with pytest.raises(StorageUnavailableError, match=r"MongoDB at mongodb://127\.0\.0\.1"):
            await storage.count_trials(study)
        flaky_proxy.restore()
        assert await storage.count_trials(study) == 0
    _collect_dropped_sockets()


async def test_finish_is_refused_twice_but_a_lease_holder_is_told_why(mongo: MongoStorage) -> None:
    study = await _study(mongo)
    trial = await mongo.create_trial(study, {"x": 0.5}, budget=None, worker="a", lease=60)
    assert trial is not None
    with pytest.raises(LeaseLostError, match="another worker"):
        await mongo.finish_trial(study, trial.tid, worker="b", state=TrialState.OK, loss=1.0)
    await mongo.finish_trial(study, trial.tid, worker="a", state=TrialState.OK, loss=1.0)
    with pytest.raises(TrialStateError, match="not RUNNING"):
        await mongo.finish_trial(study, trial.tid, worker="a", state=TrialState.OK, loss=1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("state", 9), ("assignment", "oops"), ("loss", "cheap"), ("result", "{"), ("seed", 1.5)],
)
async def test_a_tampered_document_is_a_storage_error_naming_study_tid_and_field(
    mongodb_url: str, mongo: MongoStorage, field: str, value: object
) -> None:
    study = await _study(mongo)
    for _ in range(3):
        await mongo.create_trial(study, {"x": 0.5}, budget=None, worker="w", lease=60)

    def tamper() -> None:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongodb_url)
        try:
            client[_database(mongodb_url)]["trials"].update_one(
                {"study": study, "tid": 1}, {"$set": {field: value}}
            )
        finally:
            client.close()

    await anyio.to_thread.run_sync(tamper)
    with pytest.raises(StorageError) as info:
        await mongo.trials_since(study)
    message = str(info.value)
    assert f"trial 1 of study {study!r}" in message
    assert repr(field) in message
