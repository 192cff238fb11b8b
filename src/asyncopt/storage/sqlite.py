"""The SQLite storage (``sqlite:///relative.db``, ``sqlite:////absolute/path.db``).

One file holds every study; any number of processes on one machine may share it. The
database runs in WAL mode, so readers never wait for writers; every read-modify-write
takes the write lock up front (``BEGIN IMMEDIATE``) and, when another process holds it,
waits and retries with a jittered backoff instead of failing, up to ``timeout`` seconds.

URL options (query string):

- ``synchronous=normal`` (default) or ``full``: with ``normal`` a committed trial survives
  a crash of the process; ``full`` also survives a power loss, at the cost of an fsync
  per commit.
- ``timeout=SECONDS`` (default 60): how long an operation may wait for another process's
  write lock before `asyncopt.errors.StorageUnavailableError` is raised.
- ``mode=ro``: open the file read-only (as ``open_storage(url, read_only=True)`` does):
  it must exist, nothing is created or written, and it may sit on a read-only file system.

Every ``sqlite3`` error is translated into an `asyncopt.errors.StorageError` subclass that
names the file; a database written by a newer asyncopt is refused, never rewritten. One
written by an older asyncopt is upgraded in place by the first open for writing (in one
transaction); a read-only open refuses it until then, rather than misread it. A
file deleted or replaced while the storage is open is noticed after the next transaction,
which then raises instead of reporting success.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import anyio

from asyncopt.errors import StorageError, StorageUnavailableError, StorageURLError, TrialError
from asyncopt.storage._sqlite_conn import ConnectionThread
from asyncopt.storage.base import (
    Batch,
    BatchRequest,
    ConnectionStorage,
    ErrorRule,
    NewTrial,
    RetryPolicy,
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
    translate,
    unreported,
)
from asyncopt.storage.urls import StorageURL
from asyncopt.trial import (
    STORED_FIELDS,
    encode_big_int,
    intermediate_json,
    study_from_document,
    to_json,
    trial_from_document,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStorage"]

T = TypeVar("T")

SCHEMA_VERSION = 2
"""The layout of the tables this version of asyncopt reads and writes."""

_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
_OPTIONS = ("synchronous", "timeout", "mode")
_MODES = ("rw", "ro")
# SQLite's own busy handler sleeps whole milliseconds, far longer than a commit here
# takes, so waiting for another process's lock is done with short jittered waits.
_FIRST_WAIT = 0.0002
_LONGEST_WAIT = 0.005

_PAGE_SIZE = 1024

# SQLite primary result codes (the low byte of an extended code).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT = 3, 5, 6, 8, 10, 11
_FULL, _CANTOPEN, _NOTADB = 13, 14, 26


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is(codes: tuple[int, ...], *words: str) -> Callable[[BaseException], bool]:
    def matches(exc: BaseException) -> bool:
        code = _code(exc)
        if code is not None:
            return code in codes
        message = str(exc).lower()
        return any(word in message for word in words)

    return matches


_is_busy = _is((_BUSY, _LOCKED), "locked", "busy")

#: sqlite3 errors → asyncopt errors; ``{where}`` is the file's path.
ERRORS = (
    ErrorRule(
        _is((_NOTADB,), "not a database"),
        StorageUnavailableError,
        "{where} is not an SQLite database (or is encrypted): {detail}",
    ),
    ErrorRule(
        _is((_CORRUPT,), "malformed"),
        StorageUnavailableError,
        "the SQLite database {where} is corrupted ({detail}); restore it from a backup",
    ),
    ErrorRule(
        _is((_READONLY,), "readonly"),
        StorageUnavailableError,
        "cannot write to the SQLite database {where} ({detail}); "
        "the file and its directory must be writable (or open it read-only to read it)",
    ),
    ErrorRule(
        _is((_CANTOPEN, _PERM), "unable to open"),
        StorageUnavailableError,
        "cannot open the SQLite database {where}: {detail}",
    ),
    ErrorRule(
        _is((_IOERR, _FULL), "disk"),
        StorageUnavailableError,
        "I/O error on the SQLite database {where}: {detail}",
    ),
    ErrorRule(lambda exc: True, StorageError, "SQLite error on {where}: {detail}"),
)

_SCHEMA = (
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
        intermediate TEXT,
        PRIMARY KEY (study_id, tid)
    ) WITHOUT ROWID""",
    # A commit costs roughly one page write per b-tree it touches, so trials carry only
    # the indexes the operations need, the sparse ones partial; the counts (next tid,
    # budgeted trials) are read from the indexes rather than kept in a row every
    # transaction would rewrite. Queries name their index (INDEXED BY): without ANALYZE
    # statistics the planner would scan a study's whole primary key instead.
    "CREATE UNIQUE INDEX asyncopt_trials_by_seq ON asyncopt_trials (seq)",
    "CREATE INDEX asyncopt_trials_queued ON asyncopt_trials (study_id, tid) WHERE state = 0",
    "CREATE INDEX asyncopt_trials_leased ON asyncopt_trials (study_id, lease_expires_at) "
    "WHERE state = 1",
    "CREATE INDEX asyncopt_trials_cancelled ON asyncopt_trials (study_id) WHERE state = 4",
)

# What brings a file of each older schema version to the next one (run in one write
# transaction at open). Version 2 adds the reported values (JSON text; NULL: none).
_UPGRADES = {1: ("ALTER TABLE asyncopt_trials ADD COLUMN intermediate TEXT",)}

_FIELDS = STORED_FIELDS
_COLUMNS = ", ".join(_FIELDS)
_SEQ = _FIELDS.index("seq")
_STUDY_ID = "(SELECT id FROM asyncopt_studies WHERE name = ?)"
# The last seq given out. Deleting a study records its highest seq as a floor, so seqs
# never go back.
_LAST_SEQ = (
    "max(coalesce((SELECT max(seq) FROM asyncopt_trials), 0), "
    "(SELECT value FROM asyncopt_meta WHERE key = 'seq_floor'))"
)
# The study's id, its number of trials (tids are dense) and of cancelled trials, and the
# last seq.
_SQL_STUDY = (
    "SELECT s.id, (SELECT coalesce(max(t.tid) + 1, 0) FROM asyncopt_trials t "
    "WHERE t.study_id = s.id), "
    "(SELECT count(*) FROM asyncopt_trials t INDEXED BY asyncopt_trials_cancelled "
    f"WHERE t.study_id = s.id AND t.state = 4), {_LAST_SEQ} "
    "FROM asyncopt_studies s WHERE s.name = ?"
)
_SQL_SINCE = (
    f"SELECT {_COLUMNS} FROM asyncopt_trials INDEXED BY asyncopt_trials_by_seq "
    "WHERE study_id = ? AND seq > ? ORDER BY seq"
)
# Finish a RUNNING trial held by a worker: (state, loss, result, error, started_at or
# NULL to keep it, finished_at, seq, study id, tid, worker).
_SQL_FINISH = (
    "UPDATE asyncopt_trials SET state = ?, loss = ?, result = ?, error = ?, "
    "started_at = COALESCE(?, started_at), finished_at = ?, lease_expires_at = NULL, seq = ? "
    "WHERE study_id = ? AND tid = ? AND state = 1 AND worker = ?"
)
_SQL_HOLDER = "SELECT state, worker FROM asyncopt_trials WHERE study_id = ? AND tid = ?"
_SQL_TRIAL = f"SELECT {_COLUMNS} FROM asyncopt_trials WHERE study_id = ? AND tid = ?"
_SQL_STUDY_RECORD = (
    "SELECT name, fingerprint, space, seed, created_at FROM asyncopt_studies WHERE name = ?"
)
_SQL_INSERT_TRIAL = (
    f"INSERT INTO asyncopt_trials (study_id, {_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_LAST_SEQ = f"SELECT {_LAST_SEQ}"


# -- values in and out -------------------------------------------------------------------


def _loss_in(loss: float | None) -> float | str | None:
    # SQLite stores NaN as NULL; it is kept as text (the column has no type affinity, which
    # also keeps -0.0 a float) so it reads back as NaN.
    if loss is None:
        return None
    return "NaN" if math.isnan(loss) else loss


def _row_of(study_id: int, trial: Trial) -> tuple[Any, ...]:
    """The parameters of `_SQL_INSERT_TRIAL` for ``trial``."""
    return (
        study_id,
        trial.tid,
        int(trial.state),
        to_json(trial.assignment, "assignment"),
        _loss_in(trial.loss),
        None if trial.result is None else to_json(trial.result, "result"),
        trial.error,
        trial.created_at,
        trial.started_at,
        trial.finished_at,
        trial.lease_expires_at,
        trial.worker,
        encode_big_int(trial.seed),
        trial.retry_of,
        trial.seq,
        intermediate_json(trial.intermediate),
    )


def _trial(study: str, row: Sequence[Any]) -> Trial:
    return trial_from_document(study, dict(zip(_FIELDS, row)))


def _record(row: Sequence[Any]) -> StudyRecord:
    return study_from_document(
        dict(zip(("name", "fingerprint", "space", "seed", "created_at"), row))
    )


def _batch_of(
    study: str,
    request: BatchRequest,
    refusals: Sequence[TrialError | None],
    created: list[Trial],
    rows: Sequence[Sequence[Any]],
) -> Batch:
    """The `Batch` of `_Ops.batch`'s outcome: ``rows`` read, and the trials created."""
    # The trials just created are known: their rows need no decoding.
    fresh = {trial.seq: trial for trial in created}
    changed = [fresh.get(row[_SEQ]) or _trial(study, row) for row in rows]
    by_tid = {trial.tid: trial for trial in changed}
    finished: list[Trial | TrialError] = [
        by_tid[f.tid] if refused is None else refused
        for f, refused in zip(request.finishes, refusals)
    ]
    return Batch(finished, created, changed if request.since is not None else [])


# -- running transactions ----------------------------------------------------------------


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _run(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], path: str, retry: RetryPolicy
) -> T:
    """Run ``fn`` (one whole transaction) on the connection's thread; retry while busy."""
    waits: Iterator[float] | None = None
    while True:
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            _rollback(conn)
            if not _is_busy(exc):
                raise translate(exc, ERRORS, path, str(exc)) from None
            waits = waits or retry.waits()
            wait = next(waits, None)
            if wait is None:
                raise StorageUnavailableError(
                    f"gave up after waiting {retry.timeout:g} s for the write lock of {path}; "
                    "another process kept it (raise ?timeout= in the URL to wait longer)"
                ) from None
            time.sleep(wait)
        except BaseException:
            _rollback(conn)
            raise


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding the lock from its start (``BEGIN IMMEDIATE``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        _rollback(conn)
        raise
    conn.execute("COMMIT")


def _identity(path: str) -> tuple[int, int] | None:
    """What tells this file from another at the same path (None when there is none)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


# -- opening -----------------------------------------------------------------------------


def _check_path(path: str, read_only: bool) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StorageUnavailableError(
            f"cannot open the SQLite database {path}: directory {directory} does not exist"
        )
    if os.path.isdir(path):
        raise StorageUnavailableError(f"cannot open the SQLite database {path}: it is a directory")
    if read_only:
        if not os.path.exists(path):
            raise StorageUnavailableError(
                f"no SQLite database at {path} (a read-only open creates nothing)"
            )
        if not os.access(path, os.R_OK):
            raise StorageUnavailableError(
                f"cannot open the SQLite database {path}: permission denied "
                "(the file must be readable)"
            )
        return
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StorageUnavailableError(
            f"cannot open the SQLite database {path}: permission denied "
            "(the file must be readable and writable; open it read-only to read it)"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StorageUnavailableError(
            f"cannot open the SQLite database {path}: directory {directory} is not writable "
            "(SQLite keeps its write-ahead log next to the file)"
        )


def _schema_version(conn: sqlite3.Connection, path: str) -> int | None:
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'asyncopt%'"
        )
    }
    if "asyncopt_meta" not in tables:
        return None
    row = conn.execute("SELECT value FROM asyncopt_meta WHERE key = 'schema_version'").fetchone()
    if row is None or not isinstance(row[0], int):
        raise StorageError(f"{path} holds asyncopt tables without a schema version; not opening it")
    version: int = row[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path} was written by a newer asyncopt (schema version {version}; this "
            f"version knows {SCHEMA_VERSION}); upgrade asyncopt to open it"
        )
    known = version == SCHEMA_VERSION or version in _UPGRADES
    if not known or not {"asyncopt_studies", "asyncopt_trials"} <= tables:
        raise StorageError(f"{path} has an unknown asyncopt schema (version {version})")
    return version


def _upgrade(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file to `SCHEMA_VERSION` (inside a write transaction: once, whoever
    opens it first)."""
    version = _schema_version(conn, path)
    assert version is not None
    if version == SCHEMA_VERSION:
        return  # another process upgraded it while this one waited for the write lock
    while version < SCHEMA_VERSION:
        for statement in _UPGRADES[version]:
            conn.execute(statement)
        version += 1
    conn.execute(
        "UPDATE asyncopt_meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,)
    )


def _prepare(conn: sqlite3.Connection, path: str, synchronous: str | None) -> None:
    """Check the file, then (unless read-only: ``synchronous`` None) set it up for writing."""
    # Read before writing anything: a file that is not a database, is corrupted or comes
    # from a newer asyncopt is refused untouched.
    version = _schema_version(conn, path)
    if version is not None:
        conn.execute("SELECT count(*) FROM asyncopt_studies").fetchone()
    if synchronous is None:
        if version is None:
            raise StorageUnavailableError(f"{path} holds no asyncopt studies (no asyncopt tables)")
        if version < SCHEMA_VERSION:
            raise StorageError(
                f"{path} was written by an older asyncopt (schema version {version}; this "
                f"version reads {SCHEMA_VERSION}); open it once for writing to upgrade it"
            )
        return
    if version is None:
        # Small pages for a new file: a commit appends every page it touches to the WAL,
        # and a trial's row and index entries are small, so 1 KiB pages write (and later
        # checkpoint) a quarter of the bytes of the 4 KiB default. A page size can only
        # be chosen before the file's first write; an existing file keeps its own.
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if version is None:
        with _write(conn):
            if _schema_version(conn, path) is None:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO asyncopt_meta (key, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("seq_floor", 0)],
                )
    elif version < SCHEMA_VERSION:
        with _write(conn):
            _upgrade(conn, path)


# -- operations (each runs whole on the connection's thread) -----------------------------


def _next_seq(conn: sqlite3.Connection) -> int:
    """The next sequence number (inside a write transaction; the ones after it are free too)."""
    last: int = conn.execute(_SQL_LAST_SEQ).fetchone()[0]
    return last + 1


class _Ops:
    """The SQL of every operation; ``missing`` makes the error for an unknown study."""

    def __init__(self, missing: Callable[[str], StorageError]) -> None:
        self.missing = missing

    def study_row(self, conn: sqlite3.Connection, study: str) -> tuple[int, int, int, int]:
        """The study's id, number of trials, of budgeted trials, and the next seq."""
        row = conn.execute(_SQL_STUDY, (study,)).fetchone()
        if row is None:
            raise self.missing(study)
        study_id, n_trials, n_cancelled, last_seq = row
        return study_id, n_trials, n_trials - n_cancelled, last_seq + 1

    def study_id(self, conn: sqlite3.Connection, study: str) -> int:
        row = conn.execute("SELECT id FROM asyncopt_studies WHERE name = ?", (study,)).fetchone()
        if row is None:
            raise self.missing(study)
        study_id: int = row[0]
        return study_id

    # studies

    def create_study(self, conn: sqlite3.Connection, record: StudyRecord) -> StudyRecord:
        row = conn.execute(_SQL_STUDY_RECORD, (record.name,)).fetchone()
        if row is None:
            with _write(conn):
                row = conn.execute(_SQL_STUDY_RECORD, (record.name,)).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO asyncopt_studies (name, fingerprint, space, seed, "
                        "created_at) VALUES (?, ?, ?, ?, ?)",
                        (
                            record.name,
                            record.fingerprint,
                            to_json(record.space, "space description"),
                            encode_big_int(record.seed),
                            record.created_at,
                        ),
                    )
                    return record
        return _record(row)

    def get_study(self, conn: sqlite3.Connection, name: str) -> StudyRecord | None:
        row = conn.execute(_SQL_STUDY_RECORD, (name,)).fetchone()
        return None if row is None else _record(row)

    def list_studies(self, conn: sqlite3.Connection) -> list[StudyRecord]:
        rows = conn.execute(
            "SELECT name, fingerprint, space, seed, created_at FROM asyncopt_studies ORDER BY name"
        ).fetchall()
        return [_record(row) for row in rows]

    def delete_study(self, conn: sqlite3.Connection, name: str) -> bool:
        with _write(conn):
            row = conn.execute("SELECT id FROM asyncopt_studies WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False
            conn.execute(
                "UPDATE asyncopt_meta SET value = ? WHERE key = 'seq_floor'",
                (_next_seq(conn) - 1,),
            )
            conn.execute("DELETE FROM asyncopt_trials WHERE study_id = ?", (row[0],))
            conn.execute("DELETE FROM asyncopt_studies WHERE id = ?", (row[0],))
        return True

    # trials

    def batch(
        self, conn: sqlite3.Connection, study: str, request: BatchRequest
    ) -> Callable[[], Batch]:
        """Finish, create, then read, in one transaction (the write lock is held for a few
        statements: rows become trials after the commit)."""
        finishes, new, since, worker = request.finishes, request.new, request.since, request.worker
        refusals: list[TrialError | None] = []
        with _write(conn):
            study_id, n_trials, n_budgeted, seq = self.study_row(conn, study)
            now = time.time()
            for finish in finishes:
                updated = conn.execute(
                    _SQL_FINISH,
                    (
                        int(finish.state),
                        _loss_in(finish.loss),
                        finish.result_json,
                        finish.error,
                        finish.started_at,
                        now,
                        seq,
                        study_id,
                        finish.tid,
                        worker,
                    ),
                )
                if updated.rowcount == 1:
                    refusals.append(None)
                    seq += 1
                    if finish.state is TrialState.CANCELLED:
                        n_budgeted -= 1
                    continue
                # Not RUNNING for this worker: read it again to say why.
                row = conn.execute(_SQL_HOLDER, (study_id, finish.tid)).fetchone()
                refused = refusal(
                    study,
                    finish.tid,
                    worker,
                    None if row is None else TrialState(row[0]),
                    None if row is None else row[1],
                )
                assert refused is not None
                refusals.append(refused)
            left = room(request.budget, n_budgeted)
            created = [
                new_trial(
                    study,
                    n_trials + i,
                    TrialState.RUNNING,
                    n.assignment,
                    now=now,
                    seq=seq + i,
                    worker=worker,
                    lease=request.lease,
                    seed=n.seed,
                )
                for i, n in enumerate(new if left is None else new[:left])
            ]
            conn.executemany(_SQL_INSERT_TRIAL, [_row_of(study_id, t) for t in created])
            if since is not None:
                rows = conn.execute(_SQL_SINCE, (study_id, since)).fetchall()
            else:
                done = [f.tid for f, refused in zip(finishes, refusals) if refused is None]
                marks = ", ".join("?" * len(done))
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM asyncopt_trials "
                    f"WHERE study_id = ? AND tid IN ({marks})",
                    (study_id, *done),
                ).fetchall()
        # Rows become trials on the caller's thread (see `_batch_of`): the connection's
        # thread does as little Python work as it can, so it waits less for the GIL.
        return lambda: _batch_of(study, request, refusals, created, rows)

    def report(
        self, conn: sqlite3.Connection, study: str, tid: int, worker: str, step: int, value: float
    ) -> Trial:
        with _write(conn):
            study_id = self.study_id(conn, study)
            row = conn.execute(_SQL_TRIAL, (study_id, tid)).fetchone()
            trial = None if row is None else _trial(study, row)
            if not reportable(trial, worker, step):
                return unreported(study, tid, worker, trial)
            assert trial is not None
            trial = trial.evolve(
                intermediate={**trial.intermediate, step: value}, seq=_next_seq(conn)
            )
            conn.execute(
                "UPDATE asyncopt_trials SET intermediate = ?, seq = ? "
                "WHERE study_id = ? AND tid = ?",
                (intermediate_json(trial.intermediate), trial.seq, study_id, tid),
            )
        return trial

    def enqueue(
        self, conn: sqlite3.Connection, study: str, new: Sequence[NewTrial], budget: int | None
    ) -> list[Trial]:
        with _write(conn):
            study_id, n_trials, n_budgeted, first = self.study_row(conn, study)
            left = room(budget, n_budgeted)
            now = time.time()
            queued = [
                new_trial(
                    study,
                    n_trials + i,
                    TrialState.QUEUED,
                    n.assignment,
                    now=now,
                    seq=first + i,
                    seed=n.seed,
                )
                for i, n in enumerate(new if left is None else new[:left])
            ]
            conn.executemany(_SQL_INSERT_TRIAL, [_row_of(study_id, t) for t in queued])
        return queued

    def claim(
        self, conn: sqlite3.Connection, study: str, worker: str, lease: float, limit: int
    ) -> list[Trial]:
        # Look without the lock first: most calls find the queue empty.
        probe = conn.execute(
            f"SELECT 1 FROM asyncopt_trials INDEXED BY asyncopt_trials_queued "
            f"WHERE study_id = {_STUDY_ID} AND state = 0 LIMIT 1",
            (study,),
        ).fetchone()
        if probe is None:
            self.study_id(conn, study)
            return []
        with _write(conn):
            study_id, _, _, seq = self.study_row(conn, study)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM asyncopt_trials INDEXED BY asyncopt_trials_queued "
                "WHERE study_id = ? AND state = 0 ORDER BY tid LIMIT ?",
                (study_id, limit),
            ).fetchall()
            now = time.time()
            claimed = [
                _trial(study, row).evolve(
                    state=TrialState.RUNNING,
                    started_at=now,
                    lease_expires_at=now + lease,
                    worker=worker,
                    seq=seq + i,
                )
                for i, row in enumerate(rows)
            ]
            conn.executemany(
                "UPDATE asyncopt_trials SET state = ?, started_at = ?, lease_expires_at = ?, "
                "worker = ?, seq = ? WHERE study_id = ? AND tid = ?",
                [
                    (TrialState.RUNNING, now, now + lease, worker, t.seq, study_id, t.tid)
                    for t in claimed
                ],
            )
        return claimed

    def renew(
        self, conn: sqlite3.Connection, study: str, tids: list[int], worker: str, lease: float
    ) -> list[int]:
        if not tids:
            self.study_id(conn, study)
            return []
        with _write(conn):
            study_id = self.study_id(conn, study)
            held = []
            lost = []
            for tid in tids:
                row = conn.execute(_SQL_HOLDER, (study_id, tid)).fetchone()
                if row is not None and row[0] == TrialState.RUNNING and row[1] == worker:
                    held.append(tid)
                elif row is None or lease_lost(TrialState(row[0]), row[1], worker):
                    lost.append(tid)
            if held:
                expires = time.time() + lease
                first = _next_seq(conn)
                conn.executemany(
                    "UPDATE asyncopt_trials SET lease_expires_at = ?, seq = ? "
                    "WHERE study_id = ? AND tid = ?",
                    [(expires, first + i, study_id, tid) for i, tid in enumerate(held)],
                )
        return lost

    def reap(self, conn: sqlite3.Connection, study: str) -> list[Trial]:
        probe = conn.execute(
            f"SELECT 1 FROM asyncopt_trials INDEXED BY asyncopt_trials_leased "
            f"WHERE study_id = {_STUDY_ID} AND state = 1 "
            "AND lease_expires_at < ? LIMIT 1",
            (study, time.time()),
        ).fetchone()
        if probe is None:
            self.study_id(conn, study)
            return []
        reaped = []
        with _write(conn):
            study_id, n_trials, _, seq = self.study_row(conn, study)
            now = time.time()
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM asyncopt_trials INDEXED BY asyncopt_trials_leased "
                "WHERE study_id = ? AND state = 1 "
                "AND lease_expires_at < ? ORDER BY tid",
                (study_id, now),
            ).fetchall()
            for row in rows:
                trial = _trial(study, row)
                cancelled = trial.evolve(seq=seq, **reap_changes(trial.worker, now))
                seq += 1
                conn.execute(
                    "UPDATE asyncopt_trials SET state = ?, finished_at = ?, "
                    "lease_expires_at = NULL, error = ?, seq = ? WHERE study_id = ? AND tid = ?",
                    (cancelled.state, now, cancelled.error, cancelled.seq, study_id, trial.tid),
                )
                reaped.append(cancelled)
                if requeues(trial):
                    retry = new_trial(
                        study,
                        n_trials,
                        TrialState.QUEUED,
                        trial.assignment,
                        now=now,
                        seq=seq,
                        seed=trial.seed,
                        retry_of=trial.tid,
                    )
                    conn.execute(_SQL_INSERT_TRIAL, _row_of(study_id, retry))
                    n_trials += 1
                    seq += 1
        return reaped

    def get_trial(self, conn: sqlite3.Connection, study: str, tid: int) -> Trial | None:
        row = conn.execute(_SQL_TRIAL, (self.study_id(conn, study), tid)).fetchone()
        return None if row is None else _trial(study, row)

    def trials_since(self, conn: sqlite3.Connection, study: str, seq: int) -> list[Trial]:
        rows = conn.execute(_SQL_SINCE, (self.study_id(conn, study), seq)).fetchall()
        return [_trial(study, row) for row in rows]

    def count(self, conn: sqlite3.Connection, study: str, budgeted: bool) -> int:
        _, n_trials, n_budgeted, _ = self.study_row(conn, study)
        return n_budgeted if budgeted else n_trials


# -- the storage -------------------------------------------------------------------------


def _option(url: StorageURL, name: str, default: str, allowed: Sequence[str]) -> str:
    value = url.query.get(name, default).lower()
    if value not in allowed:
        raise StorageURLError(
            f"{url.redacted!r}: {name} must be one of {', '.join(allowed)}, got {value!r}"
        )
    return value


class SQLiteStorage(ConnectionStorage):
    """A `Storage` in one SQLite file, safe to share between processes on one machine.

    ``path`` is the database file (created if missing; its directory must exist).
    ``synchronous`` is ``"normal"`` (survives process crashes) or ``"full"`` (also power
    loss). ``timeout`` is how many seconds an operation waits for another process's write
    lock before giving up. ``read_only`` opens an existing file for reading only (on a
    read-only file system too); writes then raise. Open it with ``async with`` (or
    `open` / `aclose`); failures to open raise `asyncopt.errors.StorageUnavailableError`
    naming the file and the cause.
    """

    one_round_trip = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        timeout: float = 60.0,
        read_only: bool = False,
        url: str | None = None,
    ) -> None:
        path = os.fspath(path)
        if synchronous.lower() not in _SYNCHRONOUS:
            raise StorageURLError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
            raise StorageURLError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._path = path
        self._synchronous = synchronous.lower()
        self._retry = RetryPolicy(_FIRST_WAIT, _LONGEST_WAIT, float(timeout))
        self._read_only = bool(read_only)
        self._url = url if url is not None else f"sqlite:///{path}"
        self._ops = _Ops(self._no_study)
        self._thread: ConnectionThread | None = None
        self._identity: tuple[int, int] | None = None
        self._open_lock: anyio.Lock | None = None

    @classmethod
    def from_url(cls, url: StorageURL) -> SQLiteStorage:
        """An unopened storage for ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.

        Raises `asyncopt.errors.StorageURLError` for a host, a missing path, ``:memory:``
        (use ``memory://``) or an unknown query option.
        """
        shown = url.redacted
        if url.host or url.username or url.port is not None:
            raise StorageURLError(
                f"{shown!r}: SQLite URLs take no host; write sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        path = url.path[1:] if url.path.startswith("/") else url.path
        if path in ("", ":memory:") or path.startswith("file:"):
            raise StorageURLError(
                f"{shown!r} names no database file; write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (for an in-process storage that is not kept, "
                "use memory://)"
            )
        unknown = sorted(set(url.query) - set(_OPTIONS))
        if unknown:
            raise StorageURLError(
                f"{shown!r}: unknown option {unknown[0]!r} for sqlite:// "
                f"(known: {', '.join(_OPTIONS)})"
            )
        synchronous = _option(url, "synchronous", "normal", tuple(_SYNCHRONOUS))
        mode = _option(url, "mode", "rw", _MODES)
        timeout_text = url.query.get("timeout", "60")
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = math.nan
        if not (timeout > 0 and math.isfinite(timeout)):
            raise StorageURLError(
                f"{shown!r}: timeout must be a positive number of seconds, got {timeout_text!r}"
            )
        return cls(
            path,
            synchronous=synchronous,
            timeout=timeout,
            read_only=url.read_only or mode == "ro",
            url=url.raw,
        )

    @property
    def url(self) -> str:
        """The URL this storage was made from."""
        return self._url

    @property
    def path(self) -> str:
        """The absolute path of the database file (a relative one resolves when opened)."""
        return os.path.abspath(self._path)

    @property
    def synchronous(self) -> str:
        """The durability setting: ``"normal"`` or ``"full"``."""
        return self._synchronous

    @property
    def read_only(self) -> bool:
        """Whether the file is open for reading only."""
        return self._read_only

    def __repr__(self) -> str:
        return f"SQLiteStorage({self._path!r}{', read_only=True' if self._read_only else ''})"

    def _connect(self) -> sqlite3.Connection:
        # Runs on the connection's thread: resolving and checking the path touch the disk.
        path = self._path = os.path.abspath(self._path)
        _check_path(path, self._read_only)
        if not self._read_only:
            conn = self._connect_as(path, path, _SYNCHRONOUS[self._synchronous], uri=False)
        else:
            # A WAL file needs its shared-memory file; on a read-only file system that
            # cannot be made, and the file can then only be read as immutable.
            uri = f"file:{urllib.request.pathname2url(path)}?mode=ro"
            try:
                conn = self._connect_as(path, uri, None, uri=True)
            except StorageUnavailableError:
                conn = self._connect_as(path, f"{uri}&immutable=1", None, uri=True)
        self._identity = _identity(path)
        return conn

    def _connect_as(
        self, path: str, target: str, synchronous: str | None, *, uri: bool
    ) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, timeout=0, isolation_level=None, uri=uri)
        except sqlite3.Error as exc:
            raise translate(exc, ERRORS, path, str(exc)) from None
        try:
            _run(conn, lambda c: _prepare(c, path, synchronous), path, self._retry)
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        """Open the file, switch it to WAL mode and create the tables if needed. Idempotent.

        Raises `asyncopt.errors.StorageUnavailableError` when the file cannot be used
        (missing directory, permissions, not a database, corrupted) and
        `asyncopt.errors.StorageError` when it was written by a newer asyncopt.
        """
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._thread is not None:
                return
            with anyio.CancelScope(shield=True):
                thread = ConnectionThread()
                await thread.start(lambda: self._connect())
                self._thread = thread

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with anyio.CancelScope(shield=True):
                await thread.close()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        thread = self._thread
        if thread is None:
            raise StorageError(f"{self._url} is not open; use `async with` or `await open()`")
        path, retry, identity = self._path, self._retry, self._identity

        def operation(conn: sqlite3.Connection) -> T:
            result = _run(conn, fn, path, retry)
            # Checked after the transaction, so that a write into a file that is gone is
            # reported instead of its success.
            if _identity(path) != identity:
                raise StorageUnavailableError(
                    f"the SQLite database {path} was deleted or replaced while open; "
                    "what was written since is lost"
                )
            return result

        # Each call is one transaction; let it finish so its outcome is never lost to a
        # cancellation (the cancellation is delivered at the caller's next checkpoint).
        with anyio.CancelScope(shield=True):
            result = await thread.call(operation)
        return result

    # Rows are decoded into trials after the commit, off the connection thread.
    async def _batch(self, study: str, request: BatchRequest) -> Batch:
        decode: Callable[[], Batch] = await self._call(lambda c: self._ops.batch(c, study, request))
        return decode()
