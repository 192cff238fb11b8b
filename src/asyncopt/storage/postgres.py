"""The PostgreSQL storage (``postgresql://``, ``postgres://``): one study shared by many machines.

It talks to the server with psycopg 3's synchronous API, each whole operation (one
transaction) on a worker thread, under asyncio and trio alike: a transaction is never
split across awaits, a cancelled caller cannot leave one open, and one round trip of the
synchronous driver costs less than half of its asyncio one. Connections come from a small
pool that grows on demand up to ``pool_size``; a process's storage calls are batched by
the orchestrator, so a few connections serve any concurrency.

Tables live in a schema of their own (``schema=`` in the URL, default ``asyncopt``),
created on first use with a schema version for later migrations: ``meta`` (the version),
``studies`` (one row per study, with its counters), ``trials`` (primary key
``(study_id, tid)``; a unique ``(study_id, retry_of)`` so that a reaped trial is queued
again at most once) and the sequence ``seq``. A schema that exists but holds anything
else, or a newer version, is refused and left untouched.

Every change to a study's trials runs in a transaction that first locks the study's row
(``SELECT ... FOR NO KEY UPDATE``, which returns the row as the previous holder committed
it). So, per study:

- tids are dense and the budget exact: the row's counters (``n_trials``, the next tid,
  and ``n_released``, the trials that gave their budget slot back) are read and advanced
  under the lock;
- ``seq`` numbers (from the storage-wide sequence, so they also increase across studies)
  are taken under the lock and the lock is held to the commit, so a study's changes
  commit in ``seq`` order, and a reader that passes the highest ``seq`` it has read never
  misses a change;
- claims pick the lowest queued tid with ``FOR UPDATE SKIP LOCKED``, reaps pick expired
  leases with ``FOR UPDATE``: every read-modify-write sees the latest committed rows.

Failures
    Driver errors become `asyncopt.errors.StorageError` subclasses, passwords never
    shown. Opening fails at once (within ``connect_timeout``, default 5 s) with
    `StorageUnavailableError` when the server cannot be reached or refuses the
    credentials. Later, a server that goes away (restarts, fails over) is waited for, and
    serialization failures and deadlocks are retried, with jittered exponential back-off
    for up to ``retry_timeout`` seconds (default 30). A transaction whose connection
    dropped while its COMMIT was in flight may or may not have been recorded: that one is
    not retried but raised as `StorageUnavailableError` (leases then sort it out).

URL options (query string): ``schema``, ``pool_size`` (default 4), ``retry_timeout``,
and any libpq connection parameter (``connect_timeout``, ``sslmode``, ``application_name``,
...). Times are each client's clock: keep the machines' clocks synchronised (NTP).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

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
from asyncopt.storage.base import (
    Handover,
    StorageContext,
    StudyRecord,
    Trial,
    TrialState,
    checked_start,
    finishing_state,
)
from asyncopt.storage.sqlite import _dumps
from asyncopt.storage.urls import StorageURL

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.errors
except ImportError as exc:  # pragma: no cover - the registry turns this into an install hint
    raise ImportError(f"the PostgreSQL storage needs psycopg 3 ({exc})") from exc

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresStorage"]

T = TypeVar("T")

#: The schema holding the tables when the URL names none.
DEFAULT_SCHEMA = "asyncopt"

SCHEMA_VERSION = 1
"""The layout of the tables this version of asyncopt reads and writes."""

_OPTIONS = ("schema", "pool_size", "retry_timeout")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TABLES = ("meta", "studies", "trials")

_QUEUED, _RUNNING, _CANCELLED = (int(s) for s in (TrialState.QUEUED, TrialState.RUNNING, 4))
# SQLSTATEs worth another attempt: the transaction was rolled back by the server.
_RETRY_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown (a restart ended the session)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up or shutting down)
        "53300",  # too_many_connections
    }
)
_AUTH_STATES = frozenset({"28P01", "28000"})
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0

_COLUMNS = (
    "tid, state, assignment, loss, result, error, created_at, started_at, finished_at, "
    "lease_expires_at, worker, seed, retry_of, seq"
)

# The schema, each statement a string with {s} for the quoted schema name.
_SCHEMA = (
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
        PRIMARY KEY (study_id, tid),
        UNIQUE (study_id, retry_of)
    )""",
    "CREATE INDEX trials_by_seq ON {s}.trials (study_id, seq)",
    "CREATE INDEX trials_queued ON {s}.trials (study_id, tid) WHERE state = 0",
    "CREATE INDEX trials_leased ON {s}.trials (study_id, lease_expires_at) WHERE state = 1",
)


# -- values in and out -------------------------------------------------------------------


def _int_out(value: Any) -> int | None:
    return None if value is None else int(value)


def _trial(study: str, row: Sequence[Any]) -> Trial:
    return Trial(
        study=study,
        tid=row[0],
        state=TrialState(row[1]),
        assignment=json.loads(row[2]),
        loss=row[3],
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


def _record(row: Sequence[Any]) -> StudyRecord:
    return StudyRecord(row[0], row[1], json.loads(row[2]), int(row[3]), row[4])


def _refusal(study: str, tid: int, worker: str, found: tuple[int, str] | None) -> TrialError:
    """Why trial ``tid`` (its state and worker, or None) could not be finished by ``worker``."""
    if found is None:
        return TrialNotFoundError(f"study {study!r} has no trial {tid}")
    state = TrialState(found[0])
    if state is not TrialState.RUNNING:
        return TrialStateError(
            f"trial {tid} of study {study!r} is {state.name}, not RUNNING; it cannot be finished"
        )
    return LeaseLostError(f"trial {tid} of study {study!r} is held by another worker ({found[1]})")


# What `_Ops.finish` records of a trial: its tid, state, loss, result (JSON text), error
# and start time (None keeps the stored one).
_Outcome = tuple[int, TrialState, "float | None", "str | None", "str | None", "float | None"]


def _outcome_of(
    tid: int,
    state: TrialState,
    loss: float | None,
    result: Mapping[str, Any] | None,
    error: str | None,
    started_at: float | None,
) -> _Outcome:
    """A finish's arguments, checked and encoded before any SQL runs."""
    text = None if result is None else _dumps(dict(result), "result")
    return (
        int(tid),
        finishing_state(state),
        None if loss is None else float(loss),
        text,
        error,
        checked_start(started_at),
    )


# -- errors ------------------------------------------------------------------------------


class _Retry(Exception):
    """An attempt that did not take effect and may be made again; carries the error to
    raise once the retry timeout has passed."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


def _message(exc: BaseException, password: str | None) -> str:
    text = str(exc).strip().replace("\n", " ")
    if password:
        text = text.replace(password, "***")
    return text


def _translate(exc: psycopg.Error, where: str, password: str | None) -> StorageError:
    """The asyncopt error for a psycopg error (the one table for this driver)."""
    message = _message(exc, password)
    state = exc.sqlstate
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StorageUnavailableError(f"PostgreSQL at {where} refused: {message}")
    if state in _AUTH_STATES or "authentication failed" in message:
        return StorageUnavailableError(
            f"PostgreSQL at {where} refused the credentials (check the user and password): "
            f"{message}"
        )
    if state == "3D000":
        return StorageUnavailableError(f"PostgreSQL at {where}: {message}")
    if isinstance(exc, psycopg.OperationalError) or state in _RETRY_STATES:
        return StorageUnavailableError(f"cannot reach PostgreSQL at {where}: {message}")
    return StorageError(f"PostgreSQL error at {where}: {message}")


# -- the SQL of every operation (each runs whole on a worker thread) ----------------------


class _Session:
    """A connection for one operation; remembers whether a COMMIT was sent."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.committing = False

    def execute(self, query: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(query, params)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction: committed at the end of the block, rolled back on an error."""
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            if not (self.conn.closed or self.conn.broken):
                self.conn.execute("ROLLBACK")
            raise
        self.committing = True
        self.conn.execute("COMMIT")
        self.committing = False


class _Ops:
    """Every operation as a function of a connection; ``where`` names the storage."""

    def __init__(self, schema: str, where: str) -> None:
        self.where = where
        s = f'"{schema}"'
        self.schema = schema
        self.lock_study = (
            f"SELECT id, n_trials, n_released FROM {s}.studies WHERE name = %s FOR NO KEY UPDATE"
        )
        self.study_id = f"(SELECT id FROM {s}.studies WHERE name = %s)"
        self.study_record = (
            f"SELECT name, fingerprint, space, seed, created_at FROM {s}.studies WHERE name = %s"
        )
        self.set_counters = f"UPDATE {s}.studies SET n_trials = %s, n_released = %s WHERE id = %s"
        self.insert = (
            f"INSERT INTO {s}.trials (study_id, tid, state, assignment, created_at, started_at, "
            "lease_expires_at, worker, seed, retry_of, seq) "
            "SELECT %s, t.tid, t.state, t.assignment, %s, t.started_at, t.lease_expires_at, "
            f"t.worker, t.seed, t.retry_of, nextval('{s}.seq') FROM unnest("
            "%s::bigint[], %s::smallint[], %s::text[], %s::float8[], %s::float8[], %s::text[], "
            "%s::numeric[], %s::bigint[]) WITH ORDINALITY "
            "AS t(tid, state, assignment, started_at, lease_expires_at, worker, seed, retry_of, i) "
            f"ORDER BY t.i RETURNING {_COLUMNS}"
        )
        self.sql_finish = (
            f"UPDATE {s}.trials t SET state = o.state, loss = o.loss, result = o.result, "
            "error = o.error, started_at = COALESCE(o.started_at, t.started_at), "
            f"finished_at = %s, lease_expires_at = NULL, seq = nextval('{s}.seq') "
            "FROM unnest(%s::bigint[], %s::smallint[], %s::float8[], %s::text[], %s::text[], "
            "%s::float8[]) AS o(tid, state, loss, result, error, started_at) "
            "WHERE t.study_id = %s AND t.tid = o.tid AND t.state = 1 AND t.worker = %s "
            f"RETURNING {', '.join('t.' + c for c in _COLUMNS.split(', '))}"
        )
        self.since = (
            f"SELECT {_COLUMNS} FROM {s}.trials WHERE study_id = %s AND seq > %s ORDER BY seq"
        )
        self.s = s

    def _missing(self, study: str) -> StudyNotFoundError:
        return StudyNotFoundError(f"no study named {study!r} in {self.where}")

    def _lock(self, conn: _Session, study: str) -> tuple[int, int, int]:
        """Lock the study's row (to the commit); its id and counters as last committed."""
        row = conn.execute(self.lock_study, (study,)).fetchone()
        if row is None:
            raise self._missing(study)
        return row[0], row[1], row[2]

    def _check_study(self, conn: _Session, study: str) -> int:
        row = conn.execute(f"SELECT id FROM {self.s}.studies WHERE name = %s", (study,)).fetchone()
        if row is None:
            raise self._missing(study)
        study_id: int = row[0]
        return study_id

    def _insert(
        self,
        conn: _Session,
        study: str,
        study_id: int,
        first_tid: int,
        state: TrialState,
        assignments: Sequence[str],
        seeds: Sequence[int | None],
        *,
        worker: str | None = None,
        lease: float | None = None,
        retry_of: Sequence[int | None] | None = None,
    ) -> list[Trial]:
        n = len(assignments)
        if n == 0:
            return []
        now = time.time()
        running = state is TrialState.RUNNING
        rows = conn.execute(
            self.insert,
            (
                study_id,
                now,
                list(range(first_tid, first_tid + n)),
                [int(state)] * n,
                list(assignments),
                [now if running else None] * n,
                [now + lease if running and lease is not None else None] * n,
                [worker if running else None] * n,
                [None if seed is None else int(seed) for seed in seeds],
                list(retry_of) if retry_of is not None else [None] * n,
            ),
        ).fetchall()
        return [_trial(study, row) for row in rows]

    # schema

    def prepare(self, conn: _Session) -> None:
        """Check the schema is ours (or absent), creating it if needed, touching nothing else."""
        with conn.transaction():
            # Serialize creators of this schema across processes (released at commit).
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"asyncopt:{self.schema}",))
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                    (self.schema,),
                )
            }
            if tables:
                self._check_version(conn, tables)
                return
            if exists is None:
                conn.execute(f"CREATE SCHEMA {self.s}")
            for statement in _SCHEMA:
                conn.execute(statement.format(s=self.s))
            conn.execute(
                f"INSERT INTO {self.s}.meta (key, value) VALUES ('schema_version', %s)",
                (str(SCHEMA_VERSION),),
            )

    def _check_version(self, conn: _Session, tables: set[str]) -> None:
        foreign = f"schema {self.schema!r} at {self.where}"
        if "meta" not in tables:
            raise StorageError(
                f"{foreign} holds tables that are not asyncopt's; not touching it "
                "(name another schema with ?schema=...)"
            )
        row = conn.execute(
            f"SELECT value FROM {self.s}.meta WHERE key = 'schema_version'"
        ).fetchone()
        if row is None or not str(row[0]).isdigit():
            raise StorageError(f"{foreign} has no asyncopt schema version; not touching it")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{foreign} was written by a newer asyncopt (schema version {version}; this "
                f"version knows {SCHEMA_VERSION}); upgrade asyncopt to open it"
            )
        if version < SCHEMA_VERSION or not set(_TABLES) <= tables:
            raise StorageError(f"{foreign} has an unknown asyncopt schema (version {version})")

    # studies

    def create_study(
        self, conn: _Session, name: str, fingerprint: str, space: str, seed: int
    ) -> StudyRecord:
        row = conn.execute(
            f"INSERT INTO {self.s}.studies (name, fingerprint, space, seed, created_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING "
            "RETURNING name, fingerprint, space, seed, created_at",
            (name, fingerprint, space, seed, time.time()),
        ).fetchone()
        if row is None:
            row = conn.execute(self.study_record, (name,)).fetchone()
            if row is None:  # deleted between the two statements
                raise self._missing(name)
        record = _record(row)
        if record.fingerprint != fingerprint:
            raise StudyMismatchError(
                f"study {name!r} exists with a different space "
                f"(fingerprint {record.fingerprint[:12]}, this space {fingerprint[:12]})"
            )
        return record

    def get_study(self, conn: _Session, name: str) -> StudyRecord:
        row = conn.execute(self.study_record, (name,)).fetchone()
        if row is None:
            raise self._missing(name)
        return _record(row)

    def list_studies(self, conn: _Session) -> list[StudyRecord]:
        rows = conn.execute(
            f"SELECT name, fingerprint, space, seed, created_at FROM {self.s}.studies "
            'ORDER BY name COLLATE "C"'
        ).fetchall()
        return [_record(row) for row in rows]

    def delete_study(self, conn: _Session, name: str) -> None:
        with conn.transaction():
            study_id = self._lock(conn, name)[0]
            conn.execute(f"DELETE FROM {self.s}.trials WHERE study_id = %s", (study_id,))
            conn.execute(f"DELETE FROM {self.s}.studies WHERE id = %s", (study_id,))

    # trials

    def create_trial(
        self,
        conn: _Session,
        study: str,
        assignment: str,
        budget: int | None,
        worker: str,
        lease: float,
        seed: int | None,
    ) -> Trial | None:
        with conn.transaction():
            study_id, n_trials, n_released = self._lock(conn, study)
            if budget is not None and n_trials - n_released >= budget:
                return None
            [trial] = self._insert(
                conn,
                study,
                study_id,
                n_trials,
                TrialState.RUNNING,
                [assignment],
                [seed],
                worker=worker,
                lease=lease,
            )
            conn.execute(self.set_counters, (n_trials + 1, n_released, study_id))
        return trial

    def enqueue_trials(
        self,
        conn: _Session,
        study: str,
        assignments: list[str],
        budget: int | None,
        seeds: list[int | None],
    ) -> list[Trial]:
        with conn.transaction():
            study_id, n_trials, n_released = self._lock(conn, study)
            count = len(assignments)
            if budget is not None:
                count = max(0, min(count, budget - (n_trials - n_released)))
            if count == 0:
                return []
            trials = self._insert(
                conn,
                study,
                study_id,
                n_trials,
                TrialState.QUEUED,
                assignments[:count],
                seeds[:count],
            )
            conn.execute(self.set_counters, (n_trials + count, n_released, study_id))
        return trials

    def claim_trial(self, conn: _Session, study: str, worker: str, lease: float) -> Trial | None:
        # Look without a lock first: most calls find the queue empty.
        probe = conn.execute(
            f"SELECT 1 FROM {self.s}.trials WHERE study_id = {self.study_id} AND state = 0 LIMIT 1",
            (study,),
        ).fetchone()
        if probe is None:
            self._check_study(conn, study)
            return None
        with conn.transaction():
            study_id = self._lock(conn, study)[0]
            now = time.time()
            row = conn.execute(
                f"UPDATE {self.s}.trials SET state = 1, started_at = %s, lease_expires_at = %s, "
                f"worker = %s, seq = nextval('{self.s}.seq') "
                "WHERE study_id = %s AND tid = ("
                f"SELECT tid FROM {self.s}.trials WHERE study_id = %s AND state = 0 "
                "ORDER BY tid LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {_COLUMNS}",
                (now, now + lease, worker, study_id, study_id),
            ).fetchone()
        return None if row is None else _trial(study, row)

    def finish(
        self,
        conn: _Session,
        study: str,
        worker: str,
        outcomes: Sequence[_Outcome],
        since: int | None,
        then_create: Sequence[tuple[str, int | None]] = (),
        budget: int | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Trial | TrialError], list[Trial], list[Trial | None]]:
        """Finish trials, then read the changes and create the following trials, at once.

        A refused finish gives its `TrialError` in its place. With ``since``, the changes
        after it are read; with ``then_create`` (one per outcome), the trial that follows
        each finished one is created for ``worker`` within ``budget`` (after the read, so
        it is not among the changes).
        """
        with conn.transaction():
            study_id, n_trials, n_released = self._lock(conn, study)
            rows = conn.execute(
                self.sql_finish,
                (
                    time.time(),
                    [o[0] for o in outcomes],
                    [int(o[1]) for o in outcomes],
                    [o[2] for o in outcomes],
                    [o[3] for o in outcomes],
                    [o[4] for o in outcomes],
                    [o[5] for o in outcomes],
                    study_id,
                    worker,
                ),
            ).fetchall()
            done = {row[0]: _trial(study, row) for row in rows}
            cancelled = sum(1 for t in done.values() if t.state is TrialState.CANCELLED)
            n_released += cancelled
            # Why the others were refused: their state and worker as of now (a tid given
            # twice in one call is finished once; the second time it is finished already).
            found = {tid: (int(t.state), t.worker or "") for tid, t in done.items()}
            refused = [o[0] for o in outcomes if o[0] not in done]
            if refused:
                for row in conn.execute(
                    f"SELECT tid, state, worker FROM {self.s}.trials "
                    "WHERE study_id = %s AND tid = ANY(%s)",
                    (study_id, refused),
                ):
                    found[row[0]] = (row[1], row[2])
            finished: list[Trial | TrialError] = []
            for o in outcomes:
                trial = done.pop(o[0], None)
                finished.append(trial or _refusal(study, o[0], worker, found.get(o[0])))
            changed = []
            if since is not None:
                changed = [
                    _trial(study, row) for row in conn.execute(self.since, (study_id, since))
                ]
            creating = [
                new
                for new, result in zip(then_create, finished)
                if not isinstance(result, TrialError)
            ]
            if budget is not None:
                del creating[max(0, budget - (n_trials - n_released)) :]
            new_trials = self._insert(
                conn,
                study,
                study_id,
                n_trials,
                TrialState.RUNNING,
                [new[0] for new in creating],
                [new[1] for new in creating],
                worker=worker,
                lease=lease,
            )
            if new_trials or cancelled:
                conn.execute(self.set_counters, (n_trials + len(new_trials), n_released, study_id))
        pending = iter(new_trials)
        created = [
            None if isinstance(result, TrialError) else next(pending, None) for result in finished
        ]
        return finished, changed, created

    def renew_leases(
        self, conn: _Session, study: str, tids: list[int], worker: str, lease: float
    ) -> list[int]:
        if not tids:
            self._check_study(conn, study)
            return []
        with conn.transaction():
            study_id = self._lock(conn, study)[0]
            held = {
                row[0]
                for row in conn.execute(
                    f"UPDATE {self.s}.trials SET lease_expires_at = %s, "
                    f"seq = nextval('{self.s}.seq') WHERE study_id = %s AND tid = ANY(%s) "
                    "AND state = 1 AND worker = %s RETURNING tid",
                    (time.time() + lease, study_id, tids, worker),
                )
            }
        return [tid for tid in tids if tid not in held]

    def reap_expired(self, conn: _Session, study: str) -> list[Trial]:
        expired = (
            f"FROM {self.s}.trials WHERE study_id = %s AND state = 1 AND lease_expires_at < %s"
        )
        probe = conn.execute(
            f"SELECT 1 FROM {self.s}.trials WHERE study_id = {self.study_id} AND state = 1 "
            "AND lease_expires_at < %s LIMIT 1",
            (study, time.time()),
        ).fetchone()
        if probe is None:
            self._check_study(conn, study)
            return []
        with conn.transaction():
            study_id, n_trials, n_released = self._lock(conn, study)
            now = time.time()
            rows = conn.execute(
                f"UPDATE {self.s}.trials SET state = 4, finished_at = %s, lease_expires_at = NULL, "
                "error = 'lease expired: worker ' || coalesce(worker, '?') "
                f"|| ' stopped renewing it', seq = nextval('{self.s}.seq') "
                f"WHERE (study_id, tid) IN (SELECT study_id, tid {expired} FOR UPDATE) "
                f"RETURNING {_COLUMNS}",
                (now, study_id, now),
            ).fetchall()
            reaped = sorted((_trial(study, row) for row in rows), key=lambda t: t.tid)
            retried = [t for t in reaped if t.retry_of is None]
            self._insert(
                conn,
                study,
                study_id,
                n_trials,
                TrialState.QUEUED,
                [_dumps(dict(t.assignment), "assignment") for t in retried],
                [t.seed for t in retried],
                retry_of=[t.tid for t in retried],
            )
            if reaped:
                conn.execute(
                    self.set_counters,
                    (n_trials + len(retried), n_released + len(reaped), study_id),
                )
        return reaped

    def get_trial(self, conn: _Session, study: str, tid: int) -> Trial:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM {self.s}.trials WHERE study_id = {self.study_id} AND tid = %s",
            (study, tid),
        ).fetchone()
        if row is None:
            self._check_study(conn, study)
            raise TrialNotFoundError(f"study {study!r} has no trial {tid}")
        return _trial(study, row)

    def trials_since(self, conn: _Session, study: str, seq: int) -> list[Trial]:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM {self.s}.trials WHERE study_id = {self.study_id} "
            "AND seq > %s ORDER BY seq",
            (study, seq),
        ).fetchall()
        if not rows:
            self._check_study(conn, study)
        return [_trial(study, row) for row in rows]

    def count_trials(self, conn: _Session, study: str, budgeted: bool) -> int:
        row = conn.execute(
            f"SELECT n_trials, n_released FROM {self.s}.studies WHERE name = %s", (study,)
        ).fetchone()
        if row is None:
            raise self._missing(study)
        return int(row[0] - row[1]) if budgeted else int(row[0])


# -- connections -------------------------------------------------------------------------


def _is_stale(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection was closed (or told something) by the server meanwhile.

    An idle session has nothing to read; a restart sends it a FATAL message and closes it.
    Noticing here, before anything is sent, lets the operation run on a fresh connection
    instead of failing with an outcome it cannot know.
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _Pool:
    """Up to ``size`` connections, made on demand; an operation holds one at a time."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], size: int) -> None:
        self._connect = connect
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()  # the idle list is touched from worker threads
        self.slots = anyio.Semaphore(size)
        self._closed = False

    def take(self) -> psycopg.Connection[Any]:
        """An idle healthy connection, or a new one (call on a worker thread)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not _is_stale(conn):
                return conn
            conn.close()

    def give_back(self, conn: psycopg.Connection[Any]) -> None:
        """Keep ``conn`` for the next operation, unless it is unusable or the pool closed."""
        if self._closed or conn.closed or conn.broken or conn.info.transaction_status != 0:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# -- the storage -------------------------------------------------------------------------


def _positive(url: StorageURL, name: str, default: float, *, integer: bool = False) -> float:
    text = url.query.get(name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        kind = "a positive integer" if integer else "a positive number of seconds"
        raise StorageURLError(f"{url.redacted!r}: {name} must be {kind}, got {text!r}")
    return value


class PostgresStorage(StorageContext):
    """A `Storage` in a PostgreSQL database, shared by any number of processes and machines.

    Make it with `from_url` (or `asyncopt.open_storage`) from
    ``postgresql://user:password@host:port/dbname?options``; see the module docstring for
    the options. Open it with ``async with``; failures to connect raise
    `asyncopt.errors.StorageUnavailableError` within seconds.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        url: StorageURL,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = 4,
        retry_timeout: float = 30.0,
    ) -> None:
        self._conninfo = conninfo
        self._url = url
        self._password = url.password
        self._where = f"{url.host or 'localhost'}:{url.port or 5432}{url.path or '/'}"
        self._schema = schema
        self._pool_size = pool_size
        self._retry_timeout = retry_timeout
        self._ops = _Ops(schema, url.redacted)
        self._pool: _Pool | None = None
        self._open_lock: anyio.Lock | None = None

    @classmethod
    def from_url(cls, url: StorageURL) -> PostgresStorage:
        """An unopened storage for ``postgresql://...`` (or ``postgres://...``).

        Raises `asyncopt.errors.StorageURLError` for an invalid schema name, option value
        or libpq parameter.
        """
        shown = url.redacted
        schema = url.query.get("schema", DEFAULT_SCHEMA)
        if not _IDENTIFIER.match(schema):
            raise StorageURLError(
                f"{shown!r}: schema must be a lower-case SQL name (letters, digits, _), "
                f"got {schema!r}"
            )
        pool_size = int(_positive(url, "pool_size", 4, integer=True))
        retry_timeout = _positive(url, "retry_timeout", 30.0)
        if url.path.strip("/").count("/"):
            raise StorageURLError(f"{shown!r}: the path names one database, as /dbname")
        # Everything else goes to libpq, which knows its own parameters.
        raw = re.sub(r"^[A-Za-z]+", "postgresql", url.raw.split("?", 1)[0])
        libpq = {k: v for k, v in url.query.items() if k not in _OPTIONS}
        libpq.setdefault("connect_timeout", "5")
        try:
            conninfo = psycopg.conninfo.make_conninfo(raw, **libpq)
        except psycopg.ProgrammingError as exc:
            raise StorageURLError(f"{shown!r}: {_message(exc, url.password)}") from None
        return cls(
            conninfo, url=url, schema=schema, pool_size=pool_size, retry_timeout=retry_timeout
        )

    @property
    def url(self) -> str:
        """The URL, with any password replaced by ``***``."""
        return self._url.redacted

    @property
    def schema(self) -> str:
        """The schema holding this storage's tables."""
        return self._schema

    def __repr__(self) -> str:
        return f"PostgresStorage({self.url!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            error = _translate(exc, self._where, self._password)
            if exc.sqlstate in _AUTH_STATES or exc.sqlstate == "3D000":
                raise error from None
            raise _Retry(error) from None

    async def open(self) -> None:
        """Connect, check the schema is ours and create it if needed. Idempotent.

        Raises `asyncopt.errors.StorageUnavailableError` when the server cannot be
        reached or refuses the credentials, and `asyncopt.errors.StorageError` when the
        schema holds something else or was written by a newer asyncopt (nothing changed).
        """
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._pool is not None:
                return
            pool = _Pool(self._connect, self._pool_size)
            with anyio.CancelScope(shield=True):
                try:
                    await self._attempt(pool, self._ops.prepare, write=True)
                except _Retry as retry:
                    pool.close()
                    raise retry.error from None
                except BaseException:
                    pool.close()
                    raise
            self._pool = pool

    async def aclose(self) -> None:
        """Close the connections. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.close)

    async def _attempt(self, pool: _Pool, fn: Callable[[_Session], T], *, write: bool) -> T:
        """One attempt of ``fn`` on a pooled connection, on a worker thread.

        Raises `_Retry` when the attempt certainly did not take effect (or only read).
        """

        def attempt() -> T:
            conn = pool.take()
            session = _Session(conn)
            try:
                return fn(session)
            except psycopg.Error as exc:
                error = _translate(exc, self._where, self._password)
                if exc.sqlstate in _RETRY_STATES:
                    raise _Retry(error) from None
                if isinstance(exc, psycopg.OperationalError) and not (write and session.committing):
                    # The connection dropped: the server rolls back what was not committed.
                    # Only a write whose COMMIT was in flight has an unknown outcome.
                    raise _Retry(error) from None
                raise error from None
            finally:
                pool.give_back(conn)

        async with pool.slots:
            return await anyio.to_thread.run_sync(attempt)

    async def _call(self, fn: Callable[[_Session], T], *, write: bool = True) -> T:
        pool = self._pool
        if pool is None:
            raise StorageError(f"{self.url} is not open; use `async with` or `await open()`")
        delay = _FIRST_BACKOFF
        deadline = time.monotonic() + self._retry_timeout
        # Each call is one transaction; let it finish so its outcome is never lost to a
        # cancellation (the cancellation is delivered at the caller's next checkpoint).
        with anyio.CancelScope(shield=True):
            while True:
                try:
                    result = await self._attempt(pool, fn, write=write)
                    break
                except _Retry as retry:
                    if time.monotonic() + delay > deadline:
                        raise retry.error from None
                await anyio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, _MAX_BACKOFF)
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
        return await self._call(lambda c: self._ops.get_study(c, name), write=False)

    async def list_studies(self) -> list[StudyRecord]:
        """Every study, by name."""
        return await self._call(self._ops.list_studies, write=False)

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
        outcomes: list[_Outcome | TrialStateError] = []
        for h in handovers:
            try:
                outcomes.append(
                    _outcome_of(h.tid, h.state, h.loss, h.result, h.error, h.started_at)
                )
            except TrialStateError as exc:
                outcomes.append(exc)
        valid = [o for o in outcomes if not isinstance(o, TrialStateError)]
        then_create = [
            (_dumps(dict(h.assignment), "assignment"), h.seed)
            for h, o in zip(handovers, outcomes)
            if not isinstance(o, TrialStateError)
        ]
        finished, changed, created = await self._call(
            lambda c: self._ops.finish(c, study, worker, valid, since, then_create, budget, lease)
        )
        done = iter(zip(finished, created))
        results: list[tuple[Trial, Trial | None] | TrialError] = []
        for o in outcomes:
            if isinstance(o, TrialStateError):
                results.append(o)
                continue
            trial, new = next(done)
            results.append(trial if isinstance(trial, TrialError) else (trial, new))
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
        return await self._call(lambda c: self._ops.get_trial(c, study, tid), write=False)

    async def trials_since(self, study: str, seq: int = 0) -> list[Trial]:
        """Trials changed after sequence number ``seq`` (all with 0), ordered by ``seq``."""
        return await self._call(lambda c: self._ops.trials_since(c, study, seq), write=False)

    async def count_trials(self, study: str, *, budgeted: bool = True) -> int:
        """Number of budgeted trials (or of all trials with ``budgeted=False``)."""
        return await self._call(lambda c: self._ops.count_trials(c, study, budgeted), write=False)
