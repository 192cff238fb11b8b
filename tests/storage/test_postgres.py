"""PostgreSQL-specific behaviour: URLs, errors, schemas, concurrency, crashes and restarts.

The conformance suite, the multi-process and the crash tests also run on PostgreSQL
(tests/storage/conftest.py); these cover what only this backend has.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import psycopg
import pytest
from test_crash import assert_budget_met
from test_multiprocess import (
    assert_no_lock_errors,
    finish,
    read_trials,
    start_worker,
    wait_for_lines,
)
from version_1 import check_opened_at_once, check_upgraded_study

import asyncopt as ao
from asyncopt.cli import main
from asyncopt.errors import (
    StorageError,
    StorageUnavailableError,
    StorageURLError,
    TrialStateError,
)
from asyncopt.storage.base import Finish, NewTrial, TrialState
from asyncopt.storage.postgres import DEFAULT_SCHEMA, SCHEMA_VERSION, PostgresStorage
from asyncopt.storage.urls import StorageURL, open_storage, storage_from_url
from postgres_server import PostgresServer, running_server, with_schema

FINGERPRINT = "f" * 64
SPACE = {"x": {"dist": "uniform", "low": 0, "high": 1}}


def _schema(url: str) -> str:
    return StorageURL.parse(url).query["schema"]


def _plain(url: str) -> str:
    """The server URL without our options, for psycopg itself."""
    return url.split("?", 1)[0]


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PostgresStorage]:
    async with open_storage(postgres_url) as storage:
        assert isinstance(storage, PostgresStorage)
        yield storage


async def _study(storage: ao.storage.Storage, name: str = "s") -> str:
    await storage.create_study(name, fingerprint=FINGERPRINT, space=SPACE, seed=1)
    return name


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
def test_both_schemes_build_a_postgres_storage(scheme: str) -> None:
    storage = storage_from_url(f"{scheme}://u:pw@db.example:5433/tuning?sslmode=prefer")
    assert isinstance(storage, PostgresStorage)
    assert storage.schema == DEFAULT_SCHEMA == "asyncopt"
    other = storage_from_url("postgresql://db.example/tuning?schema=team_a&pool_size=2")
    assert isinstance(other, PostgresStorage)
    assert other.schema == "team_a"


def test_passwords_are_redacted_in_url_and_repr() -> None:
    storage = storage_from_url("postgresql://alice:hunter2@db.example:5432/tuning")
    assert storage.url == "postgresql://alice:***@db.example:5432/tuning"
    assert "hunter2" not in repr(storage)


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("schema=Bad-Name", "schema"),
        ("schema=1abc", "schema"),
        ("pool_size=0", "pool_size"),
        ("pool_size=many", "pool_size"),
        ("retry_timeout=-1", "retry_timeout"),
        ("no_such_option=1", "no_such_option"),
    ],
)
def test_bad_options_are_url_errors_naming_them(query: str, needle: str) -> None:
    with pytest.raises(StorageURLError, match=needle) as info:
        storage_from_url(f"postgresql://bob:pw-secret@127.0.0.1:1/db?{query}")
    assert "pw-secret" not in str(info.value)


def test_a_nested_path_is_refused() -> None:
    with pytest.raises(StorageURLError, match="one database"):
        storage_from_url("postgresql://127.0.0.1/db/more")


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from asyncopt.storage import urls

    monkeypatch.setitem(sys.modules, "asyncopt.storage.postgres", None)
    with pytest.raises(StorageURLError, match=r"asyncopt\[postgres\]"):
        urls.resolve_backend("postgresql")


# -- errors -----------------------------------------------------------------------------------


async def test_an_unreachable_server_is_unavailable_quickly_and_hides_the_password() -> None:
    url = "postgresql://bob:Sup3rSecret@127.0.0.1:1/db"
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="cannot reach PostgreSQL") as info:
        async with open_storage(url):
            pass
    assert time.monotonic() - started < 10
    assert "Sup3rSecret" not in str(info.value)
    assert info.value.__cause__ is None


async def test_a_silent_host_is_unavailable_within_the_connect_timeout() -> None:
    # 192.0.2.0/24 is reserved for documentation: nothing answers there.
    url = "postgresql://bob:Sup3rSecret@192.0.2.1:5432/db?connect_timeout=1"
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        async with open_storage(url):
            pass
    assert time.monotonic() - started < 5
    assert "Sup3rSecret" not in str(info.value)


async def test_a_wrong_password_is_refused_and_never_shown(postgres_server_url: str) -> None:
    parts = StorageURL.parse(postgres_server_url)
    url = f"postgresql://{parts.username}:Wr0ngPassw0rd@{parts.host}:{parts.port}{parts.path}"
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="refused the credentials") as info:
        async with open_storage(url):
            pass
    assert time.monotonic() - started < 10
    assert "Wr0ngPassw0rd" not in str(info.value)
    assert "Wr0ngPassw0rd" not in repr(info.value)


async def test_a_missing_database_is_named(postgres_server_url: str) -> None:
    parts = StorageURL.parse(postgres_server_url)
    url = postgres_server_url.replace(parts.path, "/no_such_database")
    with pytest.raises(StorageUnavailableError, match="no_such_database"):
        async with open_storage(url):
            pass


async def test_using_a_storage_that_is_not_open_is_an_error(postgres_url: str) -> None:
    storage = storage_from_url(postgres_url)
    with pytest.raises(StorageError, match="not open"):
        await storage.list_studies()


async def test_open_and_close_are_idempotent(postgres_url: str) -> None:
    storage = storage_from_url(postgres_url)
    await storage.open()
    await storage.open()
    await _study(storage)
    await storage.aclose()
    await storage.aclose()
    async with open_storage(postgres_url) as again:
        assert [s.name for s in await again.list_studies()] == ["s"]


# -- the schema -------------------------------------------------------------------------------


async def test_the_schema_is_created_on_first_use_with_its_version(postgres_url: str) -> None:
    schema = _schema(postgres_url)
    async with open_storage(postgres_url):
        pass
    with psycopg.connect(_plain(postgres_url)) as conn:
        version = conn.execute(
            f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'"
        ).fetchone()
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            )
        }
    assert version == (str(SCHEMA_VERSION),)
    assert tables == {"meta", "studies", "trials"}


async def test_many_storages_opening_a_new_schema_at_once_create_it_once(
    postgres_url: str,
) -> None:
    storages = [storage_from_url(postgres_url) for _ in range(6)]
    async with anyio.create_task_group() as tg:
        for storage in storages:
            tg.start_soon(storage.open)
    try:
        await _study(storages[0])
        assert [s.name for s in await storages[5].list_studies()] == ["s"]
    finally:
        for storage in storages:
            await storage.aclose()


async def test_a_schema_of_another_application_is_refused_untouched(postgres_url: str) -> None:
    schema = _schema(postgres_url)
    with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.studies (name text)")
        conn.execute(f"INSERT INTO {schema}.studies VALUES ('theirs')")
    with pytest.raises(StorageError, match="not asyncopt's"):
        async with open_storage(postgres_url):
            pass
    with psycopg.connect(_plain(postgres_url)) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
        rows = conn.execute(f"SELECT * FROM {schema}.studies").fetchall()
    assert tables == [("studies",)]
    assert rows == [("theirs",)]


async def test_other_schemas_of_the_database_are_left_alone(postgres_url: str) -> None:
    schema = _schema(postgres_url)
    mine = with_schema(postgres_url, f"{schema}_mine")
    with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.anything (x int)")
    try:
        async with open_storage(mine) as storage:
            await _study(storage)
        with psycopg.connect(_plain(postgres_url)) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        assert tables == [("anything",)]
    finally:
        with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}_mine CASCADE")


async def test_an_empty_schema_made_by_an_administrator_is_used(postgres_url: str) -> None:
    schema = _schema(postgres_url)
    with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    async with open_storage(postgres_url) as storage:
        await _study(storage)
        assert [s.name for s in await storage.list_studies()] == ["s"]


async def test_a_newer_schema_is_refused_and_left_untouched(postgres_url: str) -> None:
    schema = _schema(postgres_url)
    async with open_storage(postgres_url) as storage:
        await _study(storage)
    with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="newer asyncopt"):
        async with open_storage(postgres_url):
            pass
    with psycopg.connect(_plain(postgres_url)) as conn:
        assert conn.execute(f"SELECT name FROM {schema}.studies").fetchall() == [("s",)]


# The tables of schema version 1 (asyncopt before intermediate values), as it made them.
SCHEMA_1 = (
    "CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE SEQUENCE {s}.seq",
    """CREATE TABLE {s}.studies (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        fingerprint text NOT NULL,
        space text NOT NULL,
        seed numeric NOT NULL,
        created_at double precision NOT NULL,
        n_trials bigint NOT NULL DEFAULT 0,
        n_released bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE {s}.trials (
        study_id bigint NOT NULL,
        tid bigint NOT NULL,
        state smallint NOT NULL,
        assignment text NOT NULL,
        loss double precision,
        result text,
        error text,
        created_at double precision,
        started_at double precision,
        finished_at double precision,
        lease_expires_at double precision,
        worker text,
        seed numeric,
        retry_of bigint,
        seq bigint NOT NULL,
        PRIMARY KEY (study_id, tid)
    )""",
    "CREATE UNIQUE INDEX trials_retry ON {s}.trials (study_id, retry_of) "
    "WHERE retry_of IS NOT NULL",
    "CREATE INDEX trials_by_seq ON {s}.trials (study_id, seq)",
    "CREATE INDEX trials_queued ON {s}.trials (study_id, tid) WHERE state = 0",
    "CREATE INDEX trials_leased ON {s}.trials (study_id, lease_expires_at) WHERE state = 1",
)


def make_version_1_schema(url: str) -> None:
    """A schema as asyncopt with schema version 1 left it: study "s" with a RUNNING trial 0
    held by "w", an OK trial 1 and a CANCELLED trial 2."""
    schema = _schema(url)
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        for statement in SCHEMA_1:
            conn.execute(statement.format(s=schema))
        conn.execute(f"INSERT INTO {schema}.meta VALUES ('schema_version', '1')")
        conn.execute(
            f"INSERT INTO {schema}.studies (name, fingerprint, space, seed, created_at, "
            "n_trials, n_released) VALUES ('s', %s, '{{}}', 1, 1.0, 3, 1)",
            (FINGERPRINT,),
        )
        for tid, state, loss, finished, expires in [
            (0, 1, None, None, 4e9),
            (1, 2, 0.5, 2.0, None),
            (2, 4, None, 2.0, None),
        ]:
            conn.execute(
                f"INSERT INTO {schema}.trials (study_id, tid, state, assignment, loss, "
                "created_at, started_at, finished_at, lease_expires_at, worker, seq) "
                f"SELECT id, %s, %s, '{{\"x\":1}}', %s, 1.0, 1.0, %s, %s, 'w', "
                f"nextval('{schema}.seq') FROM {schema}.studies",
                (tid, state, loss, finished, expires),
            )


def version_and_columns(url: str) -> tuple[str, list[str]]:
    schema = _schema(url)
    with psycopg.connect(_plain(url)) as conn:
        [(version,)] = conn.execute(
            f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'"
        ).fetchall()
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'trials' ORDER BY ordinal_position",
                (schema,),
            )
        ]
    return version, columns


async def test_a_version_1_schema_is_refused_read_only_and_upgraded_at_a_writing_open(
    postgres_url: str,
) -> None:
    make_version_1_schema(postgres_url)
    with pytest.raises(StorageError, match=r"older asyncopt \(schema version 1.*for writing"):
        async with open_storage(postgres_url, read_only=True):
            pass
    version, columns = version_and_columns(postgres_url)
    assert (version, "intermediate" in columns) == ("1", False)

    async with open_storage(postgres_url) as storage:
        pruned = await check_upgraded_study(storage)
    version, columns = version_and_columns(postgres_url)
    assert version == str(SCHEMA_VERSION) == "2"
    assert columns.count("intermediate") == 1
    async with open_storage(postgres_url, read_only=True) as storage:
        assert await storage.get_trial("s", 0) == pruned


async def test_storages_opening_a_version_1_schema_at_once_upgrade_it_once(
    postgres_url: str,
) -> None:
    make_version_1_schema(postgres_url)
    storages = [storage_from_url(postgres_url) for _ in range(4)]
    await check_opened_at_once(storages)
    version, columns = version_and_columns(postgres_url)
    assert version == str(SCHEMA_VERSION)
    assert columns.count("intermediate") == 1


# -- values and concurrency -------------------------------------------------------------------


async def test_labels_results_losses_and_big_seeds_round_trip(pg: PostgresStorage) -> None:
    study = await _study(pg)
    assignment = {"a.b": 1, "$c": 0.1 + 0.2, "ünï": -0.0}
    seed = 2**80 + 7
    trial = await pg.create_trial(study, assignment, budget=None, worker="w", lease=60, seed=seed)
    assert trial is not None
    assert trial.seed == seed
    done = await pg.finish_trial(
        study, trial.tid, worker="w", state=TrialState.OK, loss=float("nan"), result={"k": [1]}
    )
    stored = await pg.get_trial(study, trial.tid)
    assert stored.assignment == assignment
    assert stored.seed == seed
    assert stored.loss is not None
    assert math.isnan(stored.loss)
    assert stored.result == {"k": [1]}
    assert done.seq == stored.seq


async def test_asyncio_needs_no_worker_thread_and_trio_uses_one(
    pg: PostgresStorage, anyio_backend: str
) -> None:
    # The drivers per loop: psycopg's asyncio connection on the event loop under asyncio,
    # its synchronous one on a worker thread under trio. With every worker thread slot
    # taken, only the asyncio driver can answer.
    study = await _study(pg)
    limiter = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    answered = anyio.Event()

    async def count() -> None:
        assert await pg.count_trials(study) == 0
        answered.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(count)
            with anyio.move_on_after(1):
                await answered.wait()
            answered_without_a_thread = answered.is_set()
            limiter.release_on_behalf_of(holders.pop())
            await answered.wait()
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)
    assert answered_without_a_thread == (anyio_backend == "asyncio")


async def test_concurrent_creators_on_separate_connections_honour_the_budget(
    postgres_url: str,
) -> None:
    budget = 40
    storages = [storage_from_url(postgres_url) for _ in range(4)]
    for storage in storages:
        await storage.open()
    try:
        await _study(storages[0])
        created: list[int] = []

        async def create_until_full(storage: ao.storage.Storage, worker: str) -> None:
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
    finally:
        for storage in storages:
            await storage.aclose()


async def test_concurrent_claims_on_separate_connections_each_win_once(
    postgres_url: str,
) -> None:
    storages = [storage_from_url(postgres_url) for _ in range(3)]
    for storage in storages:
        await storage.open()
    try:
        await _study(storages[0])
        await storages[0].enqueue_trials("s", [{"x": i / 10} for i in range(12)], budget=None)
        claimed: list[tuple[int, str]] = []

        async def claim_all(storage: ao.storage.Storage, worker: str) -> None:
            while (trial := await storage.claim_trial("s", worker=worker, lease=60)) is not None:
                claimed.append((trial.tid, worker))

        async with anyio.create_task_group() as tg:
            for i, storage in enumerate(storages):
                for j in range(2):
                    tg.start_soon(claim_all, storage, f"w{i}.{j}")
        assert sorted(tid for tid, _ in claimed) == list(range(12))
        for tid, worker in claimed:
            assert (await storages[0].get_trial("s", tid)).worker == worker
    finally:
        for storage in storages:
            await storage.aclose()


async def test_a_reader_following_the_highest_seq_misses_no_change(postgres_url: str) -> None:
    writers = [storage_from_url(postgres_url) for _ in range(3)]
    reader = storage_from_url(postgres_url)
    for storage in [*writers, reader]:
        await storage.open()
    try:
        await _study(reader)
        seen: dict[int, int] = {}
        writing = True

        async def write(storage: ao.storage.Storage, worker: str) -> None:
            for _ in range(15):
                trial = await storage.create_trial(
                    "s", {"x": 0.5}, budget=None, worker=worker, lease=60
                )
                assert trial is not None
                await storage.finish_trial(
                    "s", trial.tid, worker=worker, state=TrialState.OK, loss=1.0
                )

        async def read() -> None:
            cursor = 0
            while writing:
                for trial in await reader.trials_since("s", cursor):
                    seen[trial.tid] = max(seen.get(trial.tid, 0), trial.seq)
                    cursor = max(cursor, trial.seq)
            for trial in await reader.trials_since("s", cursor):
                seen[trial.tid] = max(seen.get(trial.tid, 0), trial.seq)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with anyio.create_task_group() as writers_group:
                for i, storage in enumerate(writers):
                    writers_group.start_soon(write, storage, f"w{i}")
            writing = False
        final = {t.tid: t.seq for t in await reader.trials_since("s", 0)}
        assert len(final) == 45
        assert seen == final
    finally:
        for storage in [*writers, reader]:
            await storage.aclose()


async def test_finish_is_refused_twice_even_in_one_call(pg: PostgresStorage) -> None:
    study = await _study(pg)
    trial = await pg.create_trial(study, {"x": 0.5}, budget=None, worker="a", lease=60)
    assert trial is not None
    finish = Finish(trial.tid, TrialState.OK, loss=1.0)
    batch = await pg.finish_and_create(
        study, [finish, finish], [NewTrial({"x": 0.1})], since=0, worker="a", budget=None, lease=60
    )
    first, second = batch.finished
    assert isinstance(first, ao.Trial)
    assert first.state is TrialState.OK
    assert isinstance(second, TrialStateError)
    assert [t.tid for t in batch.created] == [1]
    assert [t.tid for t in batch.changed] == [0, 1]
    assert await pg.count_trials(study) == 2


# -- outages ----------------------------------------------------------------------------------


@pytest.fixture
def private_server() -> Iterator[PostgresServer]:
    """A server of this test's own, which it may stop and restart."""
    with running_server() as server:
        yield server


async def test_a_restart_between_calls_is_ridden_through(private_server: PostgresServer) -> None:
    async with open_storage(private_server.url) as storage:
        study = await _study(storage)
        assert await storage.create_trial(study, {"x": 0.1}, budget=5, worker="w", lease=60)
        await anyio.to_thread.run_sync(private_server.restart)
        trial = await storage.create_trial(study, {"x": 0.2}, budget=5, worker="w", lease=60)
        assert trial is not None
        assert trial.tid == 1


async def test_a_terminated_session_is_replaced(private_server: PostgresServer) -> None:
    url = f"{private_server.url}?application_name=asyncopt_victim"
    async with open_storage(url) as storage:
        study = await _study(storage)
        with psycopg.connect(private_server.url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'asyncopt_victim'"
            ).fetchall()
        assert killed
        assert all(row[0] for row in killed)
        assert await storage.count_trials(study) == 0


async def test_an_outage_is_waited_out_and_a_long_one_is_named(
    private_server: PostgresServer,
) -> None:
    async with (
        open_storage(f"{private_server.url}?retry_timeout=20") as patient,
        open_storage(f"{private_server.url}?retry_timeout=1") as hasty,
    ):
        study = await _study(patient)
        await anyio.to_thread.run_sync(private_server.stop)
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match="cannot reach PostgreSQL"):
            await hasty.count_trials(study)
        assert time.monotonic() - started < 5

        async def start_later() -> None:
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(private_server.start)

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(start_later)
            trial = await patient.create_trial(study, {"x": 0.1}, budget=5, worker="w", lease=60)
        assert trial is not None
        assert time.monotonic() - started >= 0.9
        assert await hasty.count_trials(study) == 1


# -- many processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_four_processes_at_concurrency_eight_share_one_study_exactly(
    postgres_url: str, tmp_path: Path
) -> None:
    max_evals = 320
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    loops = ["asyncio", "trio", "asyncio", "trio"]
    processes = [
        start_worker(
            postgres_url,
            max_evals=max_evals,
            concurrency=8,
            loop=loop,
            barrier=barrier,
            parties=len(loops),
            pause=0.02,
        )
        for loop in loops
    ]
    results = [finish(process) for process in processes]
    outputs = [output for _, output in results]
    assert [code for code, _ in results] == [0] * len(loops), outputs
    assert_no_lock_errors(outputs)
    trials = read_trials(postgres_url)
    assert [t.tid for t in trials] == list(range(max_evals))
    assert all(t.state is TrialState.OK for t in trials)
    workers = {t.worker for t in trials}
    assert len({w.split(":")[1] for w in workers if w}) == len(loops)


@pytest.mark.slow
def test_a_killed_worker_is_cancelled_and_retried_once(postgres_url: str) -> None:
    max_evals = 30
    victim = start_worker(postgres_url, max_evals=max_evals, concurrency=4, pause=0.2, lease=1.0)
    wait_for_lines(victim, finished=6, in_flight=2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    orphans = [t for t in read_trials(postgres_url) if t.state is TrialState.RUNNING]
    assert orphans
    code, output = finish(
        start_worker(postgres_url, max_evals=max_evals, concurrency=4, pause=0.01, lease=1.0)
    )
    assert code == 0, output
    trials = read_trials(postgres_url)
    assert_budget_met(trials, max_evals)
    for orphan in orphans:
        assert trials[orphan.tid].state is TrialState.CANCELLED
        assert "lease expired" in (trials[orphan.tid].error or "")
        [retry] = [t for t in trials if t.retry_of == orphan.tid]
        assert (retry.assignment, retry.seed) == (orphan.assignment, orphan.seed)
        assert retry.state is TrialState.OK


@pytest.mark.slow
def test_a_server_restart_mid_run_is_ridden_through_or_named(
    private_server: PostgresServer,
) -> None:
    url = private_server.url
    max_evals = 60
    worker = start_worker(url, max_evals=max_evals, concurrency=4, pause=0.05, lease=2.0)
    wait_for_lines(worker, finished=8, in_flight=2)
    private_server.restart()
    code, output = finish(worker)
    if code != 0:
        assert "StorageUnavailableError" in output, output
    code, output = finish(
        start_worker(url, max_evals=max_evals, concurrency=4, pause=0.01, lease=2.0)
    )
    assert code == 0, output
    trials = read_trials(url)
    assert [t.tid for t in trials] == list(range(len(trials)))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.QUEUED)]
    assert len([t for t in trials if t.state is not TrialState.CANCELLED]) == max_evals


# -- the command line -------------------------------------------------------------------------


def test_the_cli_reads_and_writes_a_postgres_study(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run() -> None:
        await ao.minimize(
            lambda p: p["x"] ** 2,
            {"x": ao.hp.uniform("x", -1, 1)},
            algo=ao.rand.suggest,
            max_evals=6,
            storage=postgres_url,
            study="cli",
            seed=2,
        )

    anyio.run(run)
    assert main(["studies", postgres_url]) == 0
    out = capsys.readouterr().out
    assert "cli" in out
    assert main(["trials", postgres_url, "cli", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 7
    assert main(["best", postgres_url, "cli"]) == 0
    capsys.readouterr()
    assert main(["delete", postgres_url, "cli", "--yes"]) == 0
    capsys.readouterr()
    assert main(["studies", postgres_url]) == 0
    assert "cli" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("field", "value"),
    [("assignment", "'not json'"), ("result", "'[1, 2]'"), ("seed", "0.5")],
)
async def test_a_tampered_row_is_a_storage_error_naming_study_tid_and_field(
    pg: PostgresStorage, postgres_url: str, field: str, value: str
) -> None:
    study = await _study(pg)
    trial = await pg.create_trial(study, {"x": 0.5}, budget=None, worker="w", lease=60, seed=3)
    assert trial is not None
    await pg.finish_trial(study, trial.tid, worker="w", state=TrialState.OK, loss=1.0)
    with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
        conn.execute(f"UPDATE {_schema(postgres_url)}.trials SET {field} = {value}")
    with pytest.raises(StorageError) as info:
        await pg.trials_since(study)
    message = str(info.value)
    assert "trial 0" in message
    assert "'s'" in message
    assert repr(field) in message
    assert info.value.__cause__ is None
