"""SQLite-specific behaviour: URLs, bad files, schema version, durability, locking, integrity."""

from __future__ import annotations

import ctypes
import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from version_1 import check_opened_at_once, check_upgraded_study

from asyncopt.errors import StorageError, StorageUnavailableError, StorageURLError
from asyncopt.storage.base import TrialState
from asyncopt.storage.sqlite import SCHEMA_VERSION, SQLiteStorage
from asyncopt.storage.urls import open_storage, storage_from_url

FINGERPRINT = "f" * 64


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def has_wal(path: Path) -> bool:
    return Path(f"{path}-wal").exists()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def make_database(path: Path, trials: int = 3) -> None:
    """A valid asyncopt database with one study, ``trials`` finished trials, checkpointed."""
    async with SQLiteStorage(path) as storage:
        await storage.create_study("s", fingerprint=FINGERPRINT, space={}, seed=1)
        for i in range(trials):
            trial = await storage.create_trial("s", {"x": i}, budget=None, worker="w", lease=60)
            assert trial is not None
            await storage.finish_trial("s", trial.tid, worker="w", state=TrialState.OK, loss=i)
    assert not has_wal(path)


def assert_clean_error(exc: BaseException, *needles: str) -> None:
    """The message names what it must, and no sqlite3 exception shows in the traceback."""
    message = str(exc)
    for needle in needles:
        assert needle in message
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "sqlite3." not in text
    assert "database is locked" not in text
    assert exc.__cause__ is None


# -- URLs ---------------------------------------------------------------------------------------


def test_a_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = storage_from_url("sqlite:///sub/tuning.db")
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == str(tmp_path / "sub" / "tuning.db")
    assert storage.url == "sqlite:///sub/tuning.db"
    assert storage.synchronous == "normal"


def test_an_absolute_url_has_four_slashes(tmp_path: Path) -> None:
    storage = storage_from_url(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == str(tmp_path / "a.db")
    assert str(tmp_path / "a.db") in repr(storage)


@pytest.mark.parametrize(
    "url", ["sqlite://:memory:", "sqlite:///:memory:", "sqlite://", "sqlite:///"]
)
def test_urls_without_a_file_point_to_memory(url: str) -> None:
    with pytest.raises(StorageURLError, match="memory://"):
        storage_from_url(url)


def test_a_host_is_refused() -> None:
    with pytest.raises(StorageURLError, match="no host"):
        storage_from_url("sqlite://server/tuning.db")


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("journal=delete", "'journal'"),
        ("synchronous=full&mode=memory", "mode"),
        ("synchronous=off", "synchronous"),
        ("timeout=-1", "timeout"),
        ("timeout=soon", "timeout"),
    ],
)
def test_bad_options_are_refused_by_name(tmp_path: Path, query: str, needle: str) -> None:
    with pytest.raises(StorageURLError, match=needle):
        storage_from_url(f"{url_of(tmp_path / 'a.db')}?{query}")


def test_the_documented_options_are_accepted(tmp_path: Path) -> None:
    storage = storage_from_url(f"{url_of(tmp_path / 'a.db')}?synchronous=FULL&timeout=2.5")
    assert isinstance(storage, SQLiteStorage)
    assert storage.synchronous == "full"


# -- opening ------------------------------------------------------------------------------------


async def _pragma(storage: SQLiteStorage, name: str) -> object:
    return await storage._call(lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])


async def test_a_new_file_gets_wal_and_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with open_storage(url_of(path)) as storage:
        assert isinstance(storage, SQLiteStorage)
        assert await _pragma(storage, "journal_mode") == "wal"
        assert await _pragma(storage, "synchronous") == 1
    with sqlite3.connect(path) as conn:
        version = conn.execute(
            "SELECT value FROM asyncopt_meta WHERE key = 'schema_version'"
        ).fetchone()
    conn.close()
    assert version == (SCHEMA_VERSION,)


async def test_a_new_file_gets_small_pages_and_an_existing_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    async with SQLiteStorage(tmp_path / "new.db") as storage:
        assert await _pragma(storage, "page_size") == 1024
    theirs = tmp_path / "theirs.db"
    with sqlite3.connect(theirs) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    async with SQLiteStorage(theirs) as storage:
        await storage.create_study("s", fingerprint=FINGERPRINT, space={}, seed=1)
        assert await _pragma(storage, "page_size") == 4096


async def test_synchronous_full_is_applied(tmp_path: Path) -> None:
    async with open_storage(f"{url_of(tmp_path / 'full.db')}?synchronous=full") as storage:
        assert isinstance(storage, SQLiteStorage)
        assert await _pragma(storage, "synchronous") == 2


async def test_data_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    async with SQLiteStorage(path) as storage:
        await storage.create_study("s", fingerprint=FINGERPRINT, space={"a": [1]}, seed=5)
        trial = await storage.create_trial("s", {"x": 0.1}, budget=None, worker="w", lease=60)
        assert trial is not None
        done = await storage.finish_trial(
            "s", trial.tid, worker="w", state=TrialState.OK, loss=0.5, result={"k": "v"}
        )
    async with SQLiteStorage(path) as storage:
        assert (await storage.get_study("s")).seed == 5
        assert await storage.get_trial("s", 0) == done
        again = await storage.create_trial("s", {"x": 0.2}, budget=None, worker="w", lease=60)
        assert again is not None
        assert again.tid == 1
        assert again.seq > done.seq


async def test_open_and_close_are_idempotent_and_a_closed_storage_refuses(
    tmp_path: Path,
) -> None:
    storage = SQLiteStorage(tmp_path / "a.db")
    with pytest.raises(StorageError, match="not open"):
        await storage.list_studies()
    await storage.open()
    await storage.open()
    assert await storage.list_studies() == []
    await storage.aclose()
    await storage.aclose()
    with pytest.raises(StorageError, match="not open"):
        await storage.list_studies()


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "a.db"
    with pytest.raises(StorageUnavailableError) as info:
        async with open_storage(url_of(path)):
            pass
    assert_clean_error(info.value, str(path), "does not exist")
    assert not path.parent.exists()


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailableError) as info:
        async with open_storage(url_of(tmp_path)):
            pass
    assert_clean_error(info.value, str(tmp_path), "directory")


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 200)
    before = digest(path)
    with pytest.raises(StorageUnavailableError) as info:
        async with open_storage(url_of(path)):
            pass
    assert_clean_error(info.value, str(path), "not an SQLite database")
    assert digest(path) == before
    assert not has_wal(path)


async def test_a_corrupted_schema_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    await make_database(path)
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # page 1 past the header: the schema table
    path.write_bytes(bytes(data))
    with pytest.raises(StorageUnavailableError) as info:
        async with open_storage(url_of(path)):
            pass
    assert_clean_error(info.value, str(path), "corrupted")
    assert path.read_bytes() == bytes(data)


async def test_corrupted_trial_pages_are_reported_when_read(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    await make_database(path, trials=200)
    with sqlite3.connect(path) as conn:
        root = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'asyncopt_trials'"
        ).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    data[start : start + page_size] = b"\x5a" * page_size
    path.write_bytes(bytes(data))
    with pytest.raises(StorageUnavailableError) as info:
        async with open_storage(url_of(path)) as storage:
            await storage.trials_since("s")
    assert_clean_error(info.value, str(path), "corrupted")


async def test_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    await make_database(path)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("UPDATE asyncopt_meta SET value = ? WHERE key = 'schema_version'", (99,))
    conn.close()
    before = digest(path)
    with pytest.raises(StorageError) as info:
        async with open_storage(url_of(path)):
            pass
    assert_clean_error(info.value, str(path), "newer asyncopt", "99")
    assert digest(path) == before
    assert not has_wal(path)


# The tables of schema version 1 (asyncopt before intermediate values), as it made them.
SCHEMA_1 = (
    """CREATE TABLE asyncopt_meta (
        key TEXT PRIMARY KEY,
        value NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE asyncopt_studies (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL,
        space TEXT NOT NULL,
        seed NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE asyncopt_trials (
        study_id INTEGER NOT NULL,
        tid INTEGER NOT NULL,
        state INTEGER NOT NULL,
        assignment TEXT NOT NULL,
        loss,
        result TEXT,
        error TEXT,
        created_at REAL,
        started_at REAL,
        finished_at REAL,
        lease_expires_at REAL,
        worker TEXT,
        seed,
        retry_of INTEGER,
        seq INTEGER NOT NULL,
        PRIMARY KEY (study_id, tid)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX asyncopt_trials_by_seq ON asyncopt_trials (seq)",
    "CREATE INDEX asyncopt_trials_queued ON asyncopt_trials (study_id, tid) WHERE state = 0",
    "CREATE INDEX asyncopt_trials_leased ON asyncopt_trials (study_id, lease_expires_at) "
    "WHERE state = 1",
    "CREATE INDEX asyncopt_trials_cancelled ON asyncopt_trials (study_id) WHERE state = 4",
)


def make_version_1_file(path: Path) -> None:
    """A file as asyncopt with schema version 1 left it: study "s" with a RUNNING trial 0
    held by "w", an OK trial 1 and a CANCELLED trial 2."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        for statement in SCHEMA_1:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO asyncopt_meta (key, value) VALUES (?, ?)",
            [("schema_version", 1), ("seq_floor", 0)],
        )
        conn.execute(
            "INSERT INTO asyncopt_studies (name, fingerprint, space, seed, created_at) "
            "VALUES ('s', ?, '{}', 1, 1.0)",
            (FINGERPRINT,),
        )
        conn.executemany(
            "INSERT INTO asyncopt_trials (study_id, tid, state, assignment, loss, created_at, "
            "started_at, finished_at, lease_expires_at, worker, seq) "
            "VALUES (1, ?, ?, ?, ?, 1.0, 1.0, ?, ?, 'w', ?)",
            [
                (0, 1, '{"x":0}', None, None, 4e9, 1),
                (1, 2, '{"x":1}', 0.5, 2.0, None, 2),
                (2, 4, '{"x":2}', None, 2.0, None, 3),
            ],
        )
    conn.close()


def schema_of(path: Path) -> tuple[int, list[str]]:
    with sqlite3.connect(path) as conn:
        [(version,)] = conn.execute(
            "SELECT value FROM asyncopt_meta WHERE key = 'schema_version'"
        ).fetchall()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(asyncopt_trials)")]
    conn.close()
    return version, columns


async def test_a_version_1_file_is_refused_read_only_and_upgraded_at_a_writing_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    make_version_1_file(path)
    before = digest(path)
    with pytest.raises(StorageError) as info:
        async with SQLiteStorage(path, read_only=True):
            pass
    assert_clean_error(info.value, str(path), "older asyncopt", "version 1", "for writing")
    assert digest(path) == before

    async with SQLiteStorage(path) as storage:
        pruned = await check_upgraded_study(storage)
    version, columns = schema_of(path)
    assert version == SCHEMA_VERSION == 2
    assert columns[-1] == "intermediate"
    async with SQLiteStorage(path, read_only=True) as storage:
        assert await storage.get_trial("s", 0) == pruned


async def test_processes_opening_a_version_1_file_at_once_upgrade_it_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    make_version_1_file(path)
    storages = [SQLiteStorage(path) for _ in range(4)]
    await check_opened_at_once(storages)
    version, columns = schema_of(path)
    assert version == SCHEMA_VERSION
    assert columns.count("intermediate") == 1


async def test_asyncopt_tables_without_a_version_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    await make_database(path)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("DELETE FROM asyncopt_meta WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StorageError, match="schema version"):
        async with open_storage(url_of(path)):
            pass


async def test_a_database_of_another_application_gains_our_tables_only(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO studies (name) VALUES ('theirs')")
    conn.close()
    async with SQLiteStorage(path) as storage:
        await storage.create_study("ours", fingerprint=FINGERPRINT, space={}, seed=1)
        assert [r.name for r in await storage.list_studies()] == ["ours"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM studies").fetchall() == [("theirs",)]
    conn.close()


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Iterator[Path]:
    """A directory whose permissions the test changes, restored afterwards."""
    directory = tmp_path / "perm"
    directory.mkdir()
    yield directory
    directory.chmod(0o755)
    for child in directory.iterdir():
        child.chmod(0o644)


_OPEN_SCRIPT = """
import anyio, sys
from asyncopt.errors import StorageUnavailableError
from asyncopt.storage.urls import open_storage

async def main():
    try:
        async with open_storage(sys.argv[1]) as storage:
            await storage.list_studies()
    except StorageUnavailableError as exc:
        print("REFUSED:", exc)
    else:
        print("OPENED")

anyio.run(main)
"""


def _without_root_file_access() -> None:
    """Root writes any file; drop the capabilities that let it (the child then obeys modes)."""
    if os.getuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _open_unprivileged(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _OPEN_SCRIPT, url],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_without_root_file_access,
        check=False,
    )


def test_an_unwritable_file_is_refused_untouched(shared_tmp: Path) -> None:
    path = shared_tmp / "readonly.db"
    anyio.run(make_database, path)
    path.chmod(0o444)
    before = digest(path)
    result = _open_unprivileged(url_of(path))
    assert "REFUSED:" in result.stdout, result.stdout + result.stderr
    assert str(path) in result.stdout
    assert "permission denied" in result.stdout
    assert "Traceback" not in result.stderr
    assert digest(path) == before


def test_an_unwritable_directory_is_refused(shared_tmp: Path) -> None:
    path = shared_tmp / "new.db"
    shared_tmp.chmod(0o555)
    try:
        result = _open_unprivileged(url_of(path))
    finally:
        shared_tmp.chmod(0o755)
    assert "REFUSED:" in result.stdout, result.stdout + result.stderr
    assert "not writable" in result.stdout
    assert not path.exists()


# -- locking, cancellation, integrity -----------------------------------------------------------


def _hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        threading.Event().wait(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_held_write_lock_is_waited_for_not_reported(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with SQLiteStorage(path) as storage:
        await storage.create_study("s", fingerprint=FINGERPRINT, space={}, seed=1)
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 0.4, locked))
        holder.start()
        try:
            await anyio.to_thread.run_sync(locked.wait)
            started = anyio.current_time()
            trial = await storage.create_trial("s", {"x": 1}, budget=None, worker="w", lease=60)
            waited = anyio.current_time() - started
        finally:
            await anyio.to_thread.run_sync(holder.join)
    assert trial is not None
    assert trial.tid == 0
    assert waited >= 0.2


async def test_a_lock_held_past_the_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with open_storage(f"{url_of(path)}?timeout=0.2") as storage:
        await storage.create_study("s", fingerprint=FINGERPRINT, space={}, seed=1)
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 1.0, locked))
        holder.start()
        try:
            await anyio.to_thread.run_sync(locked.wait)
            with pytest.raises(StorageUnavailableError) as info:
                await storage.create_trial("s", {"x": 1}, budget=None, worker="w", lease=60)
        finally:
            await anyio.to_thread.run_sync(holder.join)
        assert_clean_error(info.value, str(path), "write lock", "0.2 s")
        assert await storage.count_trials("s") == 0
        assert await storage.create_trial("s", {"x": 1}, budget=3, worker="w", lease=60)


async def test_a_cancelled_caller_leaves_no_open_transaction(tmp_path: Path) -> None:
    path = tmp_path / "cancel.db"
    async with SQLiteStorage(path) as storage, SQLiteStorage(path) as other:
        await storage.create_study("s", fingerprint=FINGERPRINT, space={}, seed=1)
        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(
                    lambda i=i: storage.create_trial(
                        "s", {"x": i}, budget=None, worker="w", lease=60
                    )
                )
            await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()
        with anyio.fail_after(5):
            made = await other.create_trial("s", {"x": 99}, budget=None, worker="v", lease=60)
        assert made is not None
        count = await storage.count_trials("s", budgeted=False)
        assert made.tid == count - 1
        tids = sorted(t.tid for t in await other.trials_since("s"))
        assert tids == list(range(count))


async def test_integrity_after_concurrent_connections(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"

    async def work(storage: SQLiteStorage, name: str) -> None:
        while (
            trial := await storage.create_trial("s", {"x": 1.5}, budget=120, worker=name, lease=60)
        ) is not None:
            await storage.finish_trial(
                "s", trial.tid, worker=name, state=TrialState.OK, loss=trial.tid
            )
            await storage.trials_since("s", trial.seq)

    storages = [SQLiteStorage(path) for _ in range(4)]
    for storage in storages:
        await storage.open()
    try:
        await storages[0].create_study("s", fingerprint=FINGERPRINT, space={}, seed=1)
        async with anyio.create_task_group() as group:
            for i, storage in enumerate(storages * 2):
                group.start_soon(work, storage, f"w{i}")
    finally:
        for storage in storages:
            await storage.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute("SELECT tid, state, loss FROM asyncopt_trials ORDER BY tid").fetchall()
    conn.close()
    assert [row[0] for row in rows] == list(range(120))
    assert all(row[1] == TrialState.OK and row[2] == row[0] for row in rows)
