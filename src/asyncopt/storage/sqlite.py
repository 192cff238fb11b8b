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

Every ``sqlite3`` error is translated into an `asyncopt.errors.StorageError` subclass that
names the file; a database written by a newer asyncopt is refused, never rewritten.
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import anyio

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
from asyncopt.storage._sqlite_conn import Runner, open_runner
from asyncopt.storage.base import (
    Handover,
    StorageContext,
    StudyRecord,
    Trial,
    TrialState,
    checked_start,
    finishing_state,
)
from asyncopt.storage.urls import StorageURL

__all__ = ["SCHEMA_VERSION", "SQLiteStorage"]

T = TypeVar("T")

SCHEMA_VERSION = 1
"""The layout of the tables this version of asyncopt reads and writes."""

_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
_OPTIONS = ("synchronous", "timeout")
_FIRST_BACKOFF = 0.0002
_MAX_BACKOFF = 0.005
_INT64 = range(-(2**63), 2**63)

_PAGE_SIZE = 1024

# SQLite primary result codes (the low byte of an extended code).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT = 3, 5, 6, 8, 10, 11
_FULL, _CANTOPEN, _NOTADB = 13, 14, 26

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

_COLUMNS = (
    "tid, state, assignment, loss, result, error, created_at, started_at, finished_at, "
    "lease_expires_at, worker, seed, retry_of, seq"
)
_STUDY_ID = "(SELECT id FROM asyncopt_studies WHERE name = ?)"
# The last seq given out. Deleting a study records its highest seq as a floor, so seqs
# never go back.
_LAST_SEQ = (
    "max(coalesce((SELECT max(seq) FROM asyncopt_trials), 0), "
    "(SELECT value FROM asyncopt_meta WHERE key = 'seq_floor'))"
)


def _since_of(study_id: str) -> str:
    return (
        f"SELECT {_COLUMNS} FROM asyncopt_trials INDEXED BY asyncopt_trials_by_seq "
        f"WHERE study_id = {study_id} AND seq > ? ORDER BY seq"
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
# Trials changed after a seq, of the study named ? or of the study with id ?.
_SQL_SINCE = _since_of(_STUDY_ID)
_SQL_SINCE_BY_ID = _since_of("?")
# Finish a RUNNING trial held by a worker: (state, loss, result, error, started_at or NULL
# to keep it, finished_at, seq, study id, tid, worker).
_SQL_FINISH = (
    "UPDATE asyncopt_trials SET state = ?, loss = ?, result = ?, error = ?, "
    "started_at = COALESCE(?, started_at), finished_at = ?, lease_expires_at = NULL, seq = ? "
    "WHERE study_id = ? AND tid = ? AND state = 1 AND worker = ?"
)
_SQL_TRIAL_BY_ID = f"SELECT {_COLUMNS} FROM asyncopt_trials WHERE study_id = ? AND tid = ?"
_SQL_STUDY_RECORD = (
    "SELECT name, fingerprint, space, seed, created_at FROM asyncopt_studies WHERE name = ?"
)
_SQL_INSERT_TRIAL = (
    "INSERT INTO asyncopt_trials (study_id, tid, state, assignment, created_at, started_at, "
    "lease_expires_at, worker, seed, retry_of, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_LAST_SEQ = f"SELECT {_LAST_SEQ}"

# What `_Ops.finish` records of a trial: its tid, state, loss, result (JSON text), error
# and start time (None keeps the stored one).
_Outcome = tuple[
    int, "TrialState | int", "float | None", "str | None", "str | None", "float | None"
]
# What `_Ops.finish` needs to create the next trial: the assignment as JSON text, the seed.
_NewTrial = tuple[str, "int | None"]


# -- values in and out -------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"cannot store the {what}: {exc}") from None


def _outcome_of(
    tid: int,
    state: TrialState,
    loss: float | None,
    result: Mapping[str, Any] | None,
    error: str | None,
    started_at: float | None,
) -> _Outcome:
    """A finish's arguments as `_Ops.finish` takes them (checked before any SQL runs)."""
    text = None if result is None else _dumps(dict(result), "result")
    return tid, state, loss, text, error, checked_start(started_at)


def _int_in(value: int | None) -> int | str | None:
    # Seeds may exceed SQLite's 64-bit integers; those are kept as decimal text.
    if value is None:
        return None
    value = int(value)
    return value if value in _INT64 else str(value)


def _int_out(value: int | str | None) -> int | None:
    return None if value is None else int(value)


def _loss_in(loss: float | None) -> float | str | None:
    # SQLite stores NaN as NULL; it is kept as text (the column has no type affinity, which
    # also keeps -0.0 a float) so it reads back as NaN.
    if loss is None:
        return None
    loss = float(loss)
    return "NaN" if math.isnan(loss) else loss


def _loss_out(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def _trial(study: str, row: Sequence[Any]) -> Trial:
    return Trial(
        study=study,
        tid=row[0],
        state=TrialState(row[1]),
        assignment=json.loads(row[2]),
        loss=_loss_out(row[3]),
        result=None if row[4] is None else json.loads(row[4]),
        error=row[5],
        created_at=row[6],
        started_at=row[7],
        finished_at=row[8],
        lease_expires_at=row[9],
        worker=row[10],
        seed=_int_out(row[11]),
        retry_of=row[12],
        seq=row[13],
    )


def _refusal(study: str, tid: int, worker: str, row: Sequence[Any] | None) -> TrialError | None:
    """Why trial ``tid`` (its row, or None) cannot be finished by ``worker``, if it cannot."""
    if row is None:
        return TrialNotFoundError(f"study {study!r} has no trial {tid}")
    state = TrialState(row[1])
    if state is not TrialState.RUNNING:
        return TrialStateError(
            f"trial {tid} of study {study!r} is {state.name}, not RUNNING; it cannot be finished"
        )
    if row[10] != worker:
        return LeaseLostError(
            f"trial {tid} of study {study!r} is held by another worker ({row[10]})"
        )
    return None


def _trials_by_tid(n: int) -> str:
    """The query of ``n`` trials of the study with id ?, by tid."""
    marks = ", ".join("?" * n)
    return f"SELECT {_COLUMNS} FROM asyncopt_trials WHERE study_id = ? AND tid IN ({marks})"


def _new_row(
    study_id: int, tid: int, assignment: str, worker: str, lease: float, seed: int | None, seq: int
) -> tuple[Any, ...]:
    """The parameters of `_SQL_INSERT_TRIAL` for a new RUNNING trial."""
    now = time.time()
    return (
        study_id,
        tid,
        TrialState.RUNNING,
        assignment,
        now,
        now,
        now + lease,
        worker,
        _int_in(seed),
        None,
        seq,
    )


def _created(study: str, row: Sequence[Any]) -> Trial:
    """The trial of a row of `_SQL_INSERT_TRIAL`'s parameters."""
    _, tid, state, assignment, created_at, started_at, expires, worker, seed, retry_of, seq = row
    return Trial(
        study=study,
        tid=tid,
        state=state,
        assignment=json.loads(assignment),
        created_at=created_at,
        started_at=started_at,
        lease_expires_at=expires,
        worker=worker,
        seed=_int_out(seed),
        retry_of=retry_of,
        seq=seq,
    )


def _record(row: Sequence[Any]) -> StudyRecord:
    return StudyRecord(row[0], row[1], json.loads(row[2]), int(row[3]), row[4])


# -- errors ------------------------------------------------------------------------------


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    code = _code(exc)
    if code is not None:
        return code in (_BUSY, _LOCKED)
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _translate(exc: sqlite3.Error, path: str) -> StorageError:
    """The asyncopt error for a sqlite3 error on ``path``."""
    code = _code(exc)
    message = str(exc)
    lowered = message.lower()
    if code == _NOTADB or "not a database" in lowered:
        return StorageUnavailableError(
            f"{path} is not an SQLite database (or is encrypted): {message}"
        )
    if code == _CORRUPT or "malformed" in lowered:
        return StorageUnavailableError(
            f"the SQLite database {path} is corrupted ({message}); restore it from a backup"
        )
    if code == _READONLY or "readonly" in lowered:
        return StorageUnavailableError(
            f"cannot write to the SQLite database {path} ({message}); "
            "the file and its directory must be writable"
        )
    if code in (_CANTOPEN, _PERM) or "unable to open" in lowered:
        return StorageUnavailableError(f"cannot open the SQLite database {path}: {message}")
    if code in (_IOERR, _FULL) or "disk" in lowered:
        return StorageUnavailableError(f"I/O error on the SQLite database {path}: {message}")
    return StorageError(f"SQLite error on {path}: {message}")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _run(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], path: str, timeout: float
) -> T:
    """Run ``fn`` (one whole transaction) on the connection's thread; retry while busy.

    SQLite's own busy handler sleeps whole milliseconds, far longer than a commit here
    takes, so the wait is done here with a short jittered exponential backoff.
    """
    backoff = _FIRST_BACKOFF
    deadline: float | None = None
    while True:
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            _rollback(conn)
            if not _is_busy(exc):
                raise _translate(exc, path) from None
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            if now >= deadline:
                raise StorageUnavailableError(
                    f"gave up after waiting {timeout:g} s for the write lock of {path}; "
                    "another process kept it (raise ?timeout= in the URL to wait longer)"
                ) from None
            time.sleep(min(backoff * random.uniform(0.5, 1.5), deadline - now))
            backoff = min(backoff * 2, _MAX_BACKOFF)
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


# -- opening -----------------------------------------------------------------------------


def _check_path(path: str) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StorageUnavailableError(
            f"cannot open the SQLite database {path}: directory {directory} does not exist"
        )
    if os.path.isdir(path):
        raise StorageUnavailableError(f"cannot open the SQLite database {path}: it is a directory")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StorageUnavailableError(
            f"cannot open the SQLite database {path}: permission denied "
            "(the file must be readable and writable)"
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
    if version < SCHEMA_VERSION or not {"asyncopt_studies", "asyncopt_trials"} <= tables:
        raise StorageError(f"{path} has an unknown asyncopt schema (version {version})")
    return version


def _prepare(conn: sqlite3.Connection, path: str, synchronous: str) -> None:
    # Read before writing anything: a file that is not a database, is corrupted or comes
    # from a newer asyncopt is refused untouched.
    version = _schema_version(conn, path)
    if version is not None:
        conn.execute("SELECT count(*) FROM asyncopt_studies").fetchone()
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


# -- operations (each runs whole on the connection's thread) -----------------------------


def _next_seq(conn: sqlite3.Connection) -> int:
    """The next sequence number (inside a write transaction; the ones after it are free too)."""
    last: int = conn.execute(_SQL_LAST_SEQ).fetchone()[0]
    return last + 1


class _Ops:
    """The SQL of every operation; ``where`` names the storage in error messages."""

    def __init__(self, where: str) -> None:
        self.where = where

    def _missing(self, study: str) -> StudyNotFoundError:
        return StudyNotFoundError(f"no study named {study!r} in {self.where}")

    def study_row(self, conn: sqlite3.Connection, study: str) -> tuple[int, int, int, int]:
        """The study's id, number of trials, of budgeted trials, and the next seq."""
        row = conn.execute(_SQL_STUDY, (study,)).fetchone()
        if row is None:
            raise self._missing(study)
        study_id, n_trials, n_cancelled, last_seq = row
        return study_id, n_trials, n_trials - n_cancelled, last_seq + 1

    def _check_study(self, conn: sqlite3.Connection, study: str) -> None:
        if (
            conn.execute("SELECT 1 FROM asyncopt_studies WHERE name = ?", (study,)).fetchone()
            is None
        ):
            raise self._missing(study)

    # studies

    def create_study(
        self, conn: sqlite3.Connection, name: str, fingerprint: str, space: str, seed: int
    ) -> StudyRecord:
        row = conn.execute(_SQL_STUDY_RECORD, (name,)).fetchone()
        if row is None:
            with _write(conn):
                row = conn.execute(_SQL_STUDY_RECORD, (name,)).fetchone()
                if row is None:
                    created_at = time.time()
                    conn.execute(
                        "INSERT INTO asyncopt_studies (name, fingerprint, space, seed, "
                        "created_at) VALUES (?, ?, ?, ?, ?)",
                        (name, fingerprint, space, _int_in(seed), created_at),
                    )
                    return StudyRecord(name, fingerprint, json.loads(space), seed, created_at)
        record = _record(row)
        if record.fingerprint != fingerprint:
            raise StudyMismatchError(
                f"study {name!r} exists with a different space "
                f"(fingerprint {record.fingerprint[:12]}, this space {fingerprint[:12]})"
            )
        return record

    def get_study(self, conn: sqlite3.Connection, name: str) -> StudyRecord:
        row = conn.execute(_SQL_STUDY_RECORD, (name,)).fetchone()
        if row is None:
            raise self._missing(name)
        return _record(row)

    def list_studies(self, conn: sqlite3.Connection) -> list[StudyRecord]:
        rows = conn.execute(
            "SELECT name, fingerprint, space, seed, created_at FROM asyncopt_studies ORDER BY name"
        ).fetchall()
        return [_record(row) for row in rows]

    def delete_study(self, conn: sqlite3.Connection, name: str) -> None:
        with _write(conn):
            study_id = self.study_row(conn, name)[0]
            conn.execute(
                "UPDATE asyncopt_meta SET value = ? WHERE key = 'seq_floor'",
                (_next_seq(conn) - 1,),
            )
            conn.execute("DELETE FROM asyncopt_trials WHERE study_id = ?", (study_id,))
            conn.execute("DELETE FROM asyncopt_studies WHERE id = ?", (study_id,))

    # trials

    def create_trial(
        self,
        conn: sqlite3.Connection,
        study: str,
        assignment: str,
        budget: int | None,
        worker: str,
        lease: float,
        seed: int | None,
    ) -> Trial | None:
        with _write(conn):
            study_id, n_trials, n_budgeted, seq = self.study_row(conn, study)
            if budget is not None and n_budgeted >= budget:
                return None
            row = _new_row(study_id, n_trials, assignment, worker, lease, seed, seq)
            conn.execute(_SQL_INSERT_TRIAL, row)
        return _created(study, row)

    def enqueue_trials(
        self,
        conn: sqlite3.Connection,
        study: str,
        assignments: list[str],
        budget: int | None,
        seeds: list[int | None],
    ) -> list[Trial]:
        with _write(conn):
            study_id, n_trials, n_budgeted, first = self.study_row(conn, study)
            count = len(assignments)
            if budget is not None:
                count = max(0, min(count, budget - n_budgeted))
            if count == 0:
                return []
            now = time.time()
            conn.executemany(
                _SQL_INSERT_TRIAL,
                [
                    (
                        study_id,
                        n_trials + i,
                        TrialState.QUEUED,
                        assignments[i],
                        now,
                        None,
                        None,
                        None,
                        _int_in(seeds[i]),
                        None,
                        first + i,
                    )
                    for i in range(count)
                ],
            )
        return [
            Trial(
                study=study,
                tid=n_trials + i,
                state=TrialState.QUEUED,
                assignment=json.loads(assignments[i]),
                created_at=now,
                seed=seeds[i],
                seq=first + i,
            )
            for i in range(count)
        ]

    def claim_trial(
        self, conn: sqlite3.Connection, study: str, worker: str, lease: float
    ) -> Trial | None:
        # Look without the lock first: most calls find the queue empty.
        probe = conn.execute(
            f"SELECT 1 FROM asyncopt_trials INDEXED BY asyncopt_trials_queued "
            f"WHERE study_id = {_STUDY_ID} AND state = 0 LIMIT 1",
            (study,),
        ).fetchone()
        if probe is None:
            self._check_study(conn, study)
            return None
        with _write(conn):
            study_id, _, _, seq = self.study_row(conn, study)
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM asyncopt_trials INDEXED BY asyncopt_trials_queued "
                "WHERE study_id = ? AND state = 0 "
                "ORDER BY tid LIMIT 1",
                (study_id,),
            ).fetchone()
            if row is None:
                return None
            trial = _trial(study, row)
            now = time.time()
            conn.execute(
                "UPDATE asyncopt_trials SET state = ?, started_at = ?, lease_expires_at = ?, "
                "worker = ?, seq = ? WHERE study_id = ? AND tid = ?",
                (TrialState.RUNNING, now, now + lease, worker, seq, study_id, trial.tid),
            )
        return Trial(
            study=study,
            tid=trial.tid,
            state=TrialState.RUNNING,
            assignment=trial.assignment,
            created_at=trial.created_at,
            started_at=now,
            lease_expires_at=now + lease,
            worker=worker,
            seed=trial.seed,
            retry_of=trial.retry_of,
            seq=seq,
        )

    def finish(
        self,
        conn: sqlite3.Connection,
        study: str,
        worker: str,
        outcomes: Sequence[_Outcome],
        since: int | None,
        then_create: Sequence[_NewTrial] = (),
        budget: int | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Trial | TrialError], list[Trial], list[Trial | None]]:
        """Finish trials, then read and create in the same transaction.

        A refused finish (also one into an unfinished state) gives its `TrialError` in
        its place. With ``since``, the changes after it are read; with ``then_create``
        (one per outcome), the trial that follows each finished one is created for
        ``worker`` within ``budget`` (after the read, so it is not among the changes).
        The write lock is held for a few statements: rows become trials after the commit.
        A trial the update does not find RUNNING for ``worker`` is read again, to say why.
        """
        refusals: list[TrialError | None] = []
        new_rows: list[tuple[Any, ...] | None] = []
        with _write(conn):
            study_id, n_trials, n_budgeted, seq = self.study_row(conn, study)
            for tid, state, loss, result, error, started_at in outcomes:
                try:
                    state = finishing_state(state)
                except TrialStateError as exc:
                    refusals.append(exc)
                    continue
                done = conn.execute(
                    _SQL_FINISH,
                    (
                        state,
                        _loss_in(loss),
                        result,
                        error,
                        started_at,
                        time.time(),
                        seq,
                        study_id,
                        tid,
                        worker,
                    ),
                )
                if done.rowcount == 1:
                    refusals.append(None)
                    seq += 1
                    if state is TrialState.CANCELLED:
                        n_budgeted -= 1
                    continue
                row = conn.execute(_SQL_TRIAL_BY_ID, (study_id, tid)).fetchone()
                refusals.append(_refusal(study, tid, worker, row))
            if since is not None:
                rows = conn.execute(_SQL_SINCE_BY_ID, (study_id, since)).fetchall()
            else:
                tids = [o[0] for o, refused in zip(outcomes, refusals) if refused is None]
                rows = conn.execute(_trials_by_tid(len(tids)), (study_id, *tids)).fetchall()
            for refused, (assignment, new_seed) in zip(refusals, then_create):
                if refused is not None or (budget is not None and n_budgeted >= budget):
                    new_rows.append(None)
                    continue
                new_rows.append(
                    _new_row(study_id, n_trials, assignment, worker, lease, new_seed, seq)
                )
                n_trials += 1
                n_budgeted += 1
                seq += 1
            conn.executemany(_SQL_INSERT_TRIAL, [row for row in new_rows if row is not None])
        changed = [_trial(study, row) for row in rows]
        by_tid = {trial.tid: trial for trial in changed}
        finished = [
            by_tid[o[0]] if refused is None else refused for o, refused in zip(outcomes, refusals)
        ]
        created = [None if row is None else _created(study, row) for row in new_rows]
        return finished, changed if since is not None else [], created

    def renew_leases(
        self, conn: sqlite3.Connection, study: str, tids: list[int], worker: str, lease: float
    ) -> list[int]:
        if not tids:
            self._check_study(conn, study)
            return []
        with _write(conn):
            study_id = self.study_row(conn, study)[0]
            held = []
            lost = []
            for tid in tids:
                row = conn.execute(
                    "SELECT state, worker FROM asyncopt_trials WHERE study_id = ? AND tid = ?",
                    (study_id, tid),
                ).fetchone()
                if row is None or row[0] != TrialState.RUNNING or row[1] != worker:
                    lost.append(tid)
                else:
                    held.append(tid)
            if held:
                expires = time.time() + lease
                first = _next_seq(conn)
                conn.executemany(
                    "UPDATE asyncopt_trials SET lease_expires_at = ?, seq = ? "
                    "WHERE study_id = ? AND tid = ?",
                    [(expires, first + i, study_id, tid) for i, tid in enumerate(held)],
                )
        return lost

    def reap_expired(self, conn: sqlite3.Connection, study: str) -> list[Trial]:
        probe = conn.execute(
            f"SELECT 1 FROM asyncopt_trials INDEXED BY asyncopt_trials_leased "
            f"WHERE study_id = {_STUDY_ID} AND state = 1 "
            "AND lease_expires_at < ? LIMIT 1",
            (study, time.time()),
        ).fetchone()
        if probe is None:
            self._check_study(conn, study)
            return []
        reaped = []
        with _write(conn):
            study_id, n_trials, _, _ = self.study_row(conn, study)
            now = time.time()
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM asyncopt_trials INDEXED BY asyncopt_trials_leased "
                "WHERE study_id = ? AND state = 1 "
                "AND lease_expires_at < ? ORDER BY tid",
                (study_id, now),
            ).fetchall()
            for row in rows:
                trial = _trial(study, row)
                error = f"lease expired: worker {trial.worker} stopped renewing it"
                seq = _next_seq(conn)
                conn.execute(
                    "UPDATE asyncopt_trials SET state = ?, finished_at = ?, "
                    "lease_expires_at = NULL, error = ?, seq = ? WHERE study_id = ? AND tid = ?",
                    (TrialState.CANCELLED, now, error, seq, study_id, trial.tid),
                )
                reaped.append(
                    trial.evolve(
                        state=TrialState.CANCELLED,
                        error=error,
                        finished_at=now,
                        lease_expires_at=None,
                        seq=seq,
                    )
                )
                if trial.retry_of is None:
                    conn.execute(
                        _SQL_INSERT_TRIAL,
                        (
                            study_id,
                            n_trials,
                            TrialState.QUEUED,
                            row[2],
                            now,
                            None,
                            None,
                            None,
                            row[11],
                            trial.tid,
                            _next_seq(conn),
                        ),
                    )
                    n_trials += 1
        return reaped

    def get_trial(self, conn: sqlite3.Connection, study: str, tid: int) -> Trial:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM asyncopt_trials WHERE study_id = {_STUDY_ID} AND tid = ?",
            (study, tid),
        ).fetchone()
        if row is None:
            self._check_study(conn, study)
            raise TrialNotFoundError(f"study {study!r} has no trial {tid}")
        return _trial(study, row)

    def trials_since(self, conn: sqlite3.Connection, study: str, seq: int) -> list[Trial]:
        rows = conn.execute(_SQL_SINCE, (study, seq)).fetchall()
        if not rows:
            self._check_study(conn, study)
        return [_trial(study, row) for row in rows]

    def count_trials(self, conn: sqlite3.Connection, study: str, budgeted: bool) -> int:
        _, n_trials, n_budgeted, _ = self.study_row(conn, study)
        return n_budgeted if budgeted else n_trials


# -- the storage -------------------------------------------------------------------------


class SQLiteStorage(StorageContext):
    """A `Storage` in one SQLite file, safe to share between processes on one machine.

    ``path`` is the database file (created if missing; its directory must exist).
    ``synchronous`` is ``"normal"`` (survives process crashes) or ``"full"`` (also power
    loss). ``timeout`` is how many seconds an operation waits for another process's write
    lock before giving up. Open it with ``async with`` (or `open` / `aclose`); failures
    to open raise `asyncopt.errors.StorageUnavailableError` naming the file and the cause.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        timeout: float = 60.0,
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
        self._timeout = float(timeout)
        self._url = url if url is not None else f"sqlite:///{path}"
        self._ops = _Ops(self._url)
        self._runner: Runner | None = None
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
        synchronous = url.query.get("synchronous", "normal")
        if synchronous.lower() not in _SYNCHRONOUS:
            raise StorageURLError(
                f"{shown!r}: synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
                f"got {synchronous!r}"
            )
        timeout_text = url.query.get("timeout", "60")
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = math.nan
        if not (timeout > 0 and math.isfinite(timeout)):
            raise StorageURLError(
                f"{shown!r}: timeout must be a positive number of seconds, got {timeout_text!r}"
            )
        return cls(path, synchronous=synchronous, timeout=timeout, url=url.raw)

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

    def __repr__(self) -> str:
        return f"SQLiteStorage({self._path!r})"

    def _connect(self) -> sqlite3.Connection:
        # Runs on the connection's thread: resolving and checking the path touch the disk.
        path = self._path = os.path.abspath(self._path)
        _check_path(path)
        try:
            conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _translate(exc, path) from None
        try:
            _run(
                conn,
                lambda c: _prepare(c, path, _SYNCHRONOUS[self._synchronous]),
                path,
                self._timeout,
            )
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
            if self._runner is not None:
                return
            with anyio.CancelScope(shield=True):
                self._runner = await open_runner(self._connect)

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            with anyio.CancelScope(shield=True):
                await runner.close()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        runner = self._runner
        if runner is None:
            raise StorageError(f"{self._url} is not open; use `async with` or `await open()`")
        path, timeout = self._path, self._timeout

        def operation(conn: sqlite3.Connection) -> T:
            return _run(conn, fn, path, timeout)

        # Each call is one transaction; let it finish so its outcome is never lost to a
        # cancellation (the cancellation is delivered at the caller's next checkpoint).
        with anyio.CancelScope(shield=True):
            result = await runner.call(operation)
        return result

    # -- studies ---------------------------------------------------------------------------

    async def create_study(
        self, name: str, *, fingerprint: str, space: Mapping[str, Any], seed: int
    ) -> StudyRecord:
        """Create the study, or load it; `StudyMismatchError` if its space differs."""
        text = _dumps(dict(space), "space description")
        seed = int(seed)
        return await self._call(lambda c: self._ops.create_study(c, name, fingerprint, text, seed))

    async def get_study(self, name: str) -> StudyRecord:
        """The study; `StudyNotFoundError` if there is none."""
        return await self._call(lambda c: self._ops.get_study(c, name))

    async def list_studies(self) -> list[StudyRecord]:
        """Every study, by name."""
        return await self._call(self._ops.list_studies)

    async def delete_study(self, name: str) -> None:
        """Delete the study and its trials; `StudyNotFoundError` if there is none."""
        await self._call(lambda c: self._ops.delete_study(c, name))

    # -- trials ----------------------------------------------------------------------------

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
        """Atomically create a RUNNING trial with the next tid, if the budget allows."""
        text = _dumps(dict(assignment), "assignment")
        return await self._call(
            lambda c: self._ops.create_trial(c, study, text, budget, worker, lease, seed)
        )

    async def enqueue_trials(
        self,
        study: str,
        assignments: Sequence[Mapping[str, int | float]],
        *,
        budget: int | None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Trial]:
        """Atomically add QUEUED trials, in order, as many as the budget allows."""
        texts = [_dumps(dict(a), "assignment") for a in assignments]
        seed_list: list[int | None] = [None] * len(texts) if seeds is None else list(seeds)
        return await self._call(
            lambda c: self._ops.enqueue_trials(c, study, texts, budget, seed_list)
        )

    async def claim_trial(self, study: str, *, worker: str, lease: float) -> Trial | None:
        """Atomically move the lowest-tid QUEUED trial to RUNNING for ``worker``, or None."""
        return await self._call(lambda c: self._ops.claim_trial(c, study, worker, lease))

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
        """Record the outcome of a RUNNING trial held by ``worker``.

        Raises `TrialNotFoundError`, `TrialStateError` or `LeaseLostError`.
        """
        outcome = _outcome_of(tid, state, loss, result, error, started_at)
        trial, _ = await self._finish_one(study, worker, outcome, None)
        return trial

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
        """`finish_trial` then `trials_since(study, since)` in one transaction."""
        outcome = _outcome_of(tid, state, loss, result, error, started_at)
        return await self._finish_one(study, worker, outcome, since)

    async def _finish_one(
        self, study: str, worker: str, outcome: _Outcome, since: int | None
    ) -> tuple[Trial, list[Trial]]:
        finished, changed, _ = await self._call(
            lambda c: self._ops.finish(c, study, worker, [outcome], since)
        )
        trial = finished[0]
        if isinstance(trial, TrialError):
            raise trial
        return trial, changed

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
        """Finish, read and create the following trials, all in one transaction.

        See `StorageContext.finish_and_create_many`.
        """
        outcomes = [
            _outcome_of(h.tid, h.state, h.loss, h.result, h.error, h.started_at) for h in handovers
        ]
        then_create = [(_dumps(dict(h.assignment), "assignment"), h.seed) for h in handovers]
        finished, changed, created = await self._call(
            lambda c: self._ops.finish(
                c, study, worker, outcomes, since, then_create, budget, lease
            )
        )
        results: list[tuple[Trial, Trial | None] | TrialError] = [
            trial if isinstance(trial, TrialError) else (trial, new)
            for trial, new in zip(finished, created)
        ]
        return results, changed

    async def renew_leases(
        self, study: str, tids: Sequence[int], *, worker: str, lease: float
    ) -> list[int]:
        """Extend ``worker``'s leases; returns the tids it no longer holds."""
        tid_list = [int(tid) for tid in tids]
        return await self._call(lambda c: self._ops.renew_leases(c, study, tid_list, worker, lease))

    async def reap_expired(self, study: str) -> list[Trial]:
        """Cancel RUNNING trials whose lease passed; queue each non-retry once again."""
        return await self._call(lambda c: self._ops.reap_expired(c, study))

    async def get_trial(self, study: str, tid: int) -> Trial:
        """One trial; `TrialNotFoundError` if there is none."""
        return await self._call(lambda c: self._ops.get_trial(c, study, tid))

    async def trials_since(self, study: str, seq: int = 0) -> list[Trial]:
        """Trials changed after sequence number ``seq`` (all with 0), ordered by ``seq``."""
        return await self._call(lambda c: self._ops.trials_since(c, study, seq))

    async def count_trials(self, study: str, *, budgeted: bool = True) -> int:
        """Number of budgeted trials (or of all trials with ``budgeted=False``)."""
        return await self._call(lambda c: self._ops.count_trials(c, study, budgeted))
