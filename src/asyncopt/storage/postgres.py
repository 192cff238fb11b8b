"""The PostgreSQL storage (``postgresql://``, ``postgres://``): one study shared by many machines.

It talks to the server with psycopg 3: under asyncio with its asyncio connections on the
event loop, under trio with its synchronous ones, each whole operation on a worker thread.
Each operation is written once, as a generator of statements that either runner drives.
An operation is shielded from cancellation, so a transaction is never left half done by
a cancelled caller. Connections come from a small pool that grows on demand up to
``pool_size``; a process's storage calls are batched by the orchestrator, so a few
connections serve any concurrency.

Tables live in a schema of their own (``schema=`` in the URL, default ``asyncopt``),
created on first use with a schema version for later migrations: ``meta`` (the version),
``studies`` (one row per study, with its counters), ``trials`` (primary key
``(study_id, tid)``; a unique index on ``(study_id, retry_of)`` so that a reaped trial is queued
again at most once) and the sequence ``seq``. A schema that exists but holds anything
else, or a newer version, is refused and left untouched; an older version is upgraded in
place by the first open for writing (a read-only open refuses it until then).

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
- claims pick the lowest queued tids with ``FOR UPDATE SKIP LOCKED``, and reaps read the
  expired leases after taking the lock: every read-modify-write sees the latest rows.

The orchestrator's hot path, a batch (record the outcomes of a process's finished
workers, create their next trials), is one round trip: two statements sent together
(pipeline mode) and run as one transaction, the first the lock, the finishes, the budget
count, the inserts and the counters, the second the read of the changes (a statement of
its own: it must see what committed while the lock was awaited). Statements are planned
once per connection: a batch took longer to plan than to run.

Failures
    Driver errors become `asyncopt.errors.StorageError` subclasses, passwords never
    shown. Opening fails at once (within ``connect_timeout``, default 5 s) with
    `StorageUnavailableError` when the server cannot be reached or refuses the
    credentials. Later, a server that goes away (restarts, fails over) is waited for, and
    serialization failures and deadlocks are retried, with jittered exponential back-off
    for up to ``retry_timeout`` seconds (default 30). A transaction whose connection
    dropped while its COMMIT (or its one statement) was in flight may or may not have been
    recorded: that one is not retried but raised as `StorageUnavailableError` (leases
    then sort it out).

URL options (query string): ``schema``, ``pool_size`` (default 4), ``retry_timeout``,
``synchronous_commit`` (``off``: commits that do not wait for the disk, at the risk of
losing the last moments' trials if the server crashes), and any libpq connection
parameter (``connect_timeout``, ``sslmode``, ``application_name``, ...). Times are each
client's clock: keep the machines' clocks synchronised (NTP).
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import anyio
import anyio.to_thread

from asyncopt.errors import (
    StorageError,
    StorageUnavailableError,
    StorageURLError,
    TrialError,
)
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
    current_event_loop,
    lease_lost,
    reap_changes,
    refusal,
    requeues,
    room,
    translate,
    unreported,
)
from asyncopt.storage.urls import StorageURL
from asyncopt.trial import (
    STORED_FIELDS,
    intermediate_json,
    study_from_document,
    to_json,
    trial_from_document,
)

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.errors
except ImportError as exc:  # pragma: no cover - the registry turns this into an install hint
    raise ImportError(f"the PostgreSQL storage needs psycopg 3 ({exc})") from exc

__all__ = ["DEFAULT_SCHEMA", "ERRORS", "SCHEMA_VERSION", "PostgresStorage"]

T = TypeVar("T")

#: The schema holding the tables when the URL names none.
DEFAULT_SCHEMA = "asyncopt"

SCHEMA_VERSION = 2
"""The layout of the tables this version of asyncopt reads and writes."""

_OPTIONS = ("schema", "pool_size", "retry_timeout", "synchronous_commit")
_SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TABLES = ("meta", "studies", "trials")

# SQLSTATEs after which the transaction was certainly rolled back by the server, and
# which pass: another attempt may succeed.
_PASSING = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown (a restart ended the session)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up or shutting down)
        "53300",  # too_many_connections
    }
)
_CREDENTIALS = frozenset({"28P01", "28000"})
# The statements are the same every time but for their values, and a batch takes longer
# to plan than to run: plan each once (psycopg prepares a statement from its fifth use).
_PLAN_ONCE = "SET plan_cache_mode = force_generic_plan"


def _state(*states: str) -> Callable[[BaseException], bool]:
    return lambda exc: getattr(exc, "sqlstate", None) in states


def _refused_credentials(exc: BaseException) -> bool:
    return _state(*_CREDENTIALS)(exc) or "authentication failed" in str(exc)


#: psycopg errors → asyncopt errors; ``{where}`` is the redacted URL.
ERRORS = (
    ErrorRule(
        _refused_credentials,
        StorageUnavailableError,
        "PostgreSQL at {where} refused the credentials (check the user and password): {detail}",
    ),
    ErrorRule(_state("3D000"), StorageUnavailableError, "PostgreSQL at {where}: {detail}"),
    ErrorRule(
        lambda exc: isinstance(exc, psycopg.errors.InsufficientPrivilege),
        StorageUnavailableError,
        "PostgreSQL at {where} refused: {detail}",
    ),
    ErrorRule(
        lambda exc: isinstance(exc, psycopg.errors.ReadOnlySqlTransaction),
        StorageError,
        "{where} was opened for reading only: {detail}",
    ),
    ErrorRule(
        lambda exc: isinstance(exc, psycopg.OperationalError) or _state(*_PASSING)(exc),
        StorageUnavailableError,
        "cannot reach PostgreSQL at {where}: {detail}",
    ),
    ErrorRule(lambda exc: True, StorageError, "PostgreSQL error at {where}: {detail}"),
)

_FIELDS = STORED_FIELDS
# Seeds are numeric (beyond 64 bits); read as text, the form the record codec takes.
_COLUMNS = ", ".join("seed::text" if f == "seed" else f for f in _FIELDS)
_T_COLUMNS = ", ".join("t.seed::text" if f == "seed" else f"t.{f}" for f in _FIELDS)
_TID, _SEQ = _FIELDS.index("tid"), _FIELDS.index("seq")
_STUDY_COLUMNS = "name, fingerprint, space, seed::text, created_at"

# The schema, each statement with {s} for the quoted schema name.
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
        intermediate jsonb NOT NULL DEFAULT '{{}}',
        PRIMARY KEY (study_id, tid)
    )""",
    # A reaped trial is queued again at most once. Partial, like the indexes below: a
    # commit writes an entry in every index a row is in, and most trials are in few.
    "CREATE UNIQUE INDEX trials_retry ON {s}.trials (study_id, retry_of) "
    "WHERE retry_of IS NOT NULL",
    "CREATE INDEX trials_by_seq ON {s}.trials (study_id, seq)",
    "CREATE INDEX trials_queued ON {s}.trials (study_id, tid) WHERE state = 0",
    "CREATE INDEX trials_leased ON {s}.trials (study_id, lease_expires_at) WHERE state = 1",
)

# What brings a schema of each older version to the next one (in the transaction that
# opens it). Version 2 adds the reported values (step -> value; NaN as null).
_UPGRADES = {
    1: ("ALTER TABLE {s}.trials ADD COLUMN intermediate jsonb NOT NULL DEFAULT '{{}}'",),
}


def _one_line(text: str) -> str:
    """A driver's (multi-line) message on one line."""
    return " ".join(text.split())


def _tid(trial: Trial) -> int:
    return trial.tid


def _trial(study: str, row: Sequence[Any]) -> Trial:
    return trial_from_document(study, dict(zip(_FIELDS, row)))


def _record(row: Sequence[Any]) -> StudyRecord:
    return study_from_document(
        dict(zip(("name", "fingerprint", "space", "seed", "created_at"), row))
    )


class _Retry(Exception):
    """An attempt that did not take effect and may be made again; carries the error to
    raise once the retry timeout has passed."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


class _Query(NamedTuple):
    """One statement. ``commits``: its end commits a transaction (a COMMIT, or a statement
    that is a transaction of its own), so a connection lost while it is in flight leaves
    the outcome unknown."""

    sql: str
    params: Sequence[Any] | Mapping[str, Any] = ()
    commits: bool = False


_BEGIN = _Query("BEGIN")
_COMMIT = _Query("COMMIT", commits=True)

# An operation, written once for both drivers: a generator that yields a query and is
# sent back its rows, or yields a tuple of queries (sent together, one round trip, run
# as one transaction) and is sent back each one's rows. What it returns is the result.
_Op = Generator["_Query | tuple[_Query, ...]", Any, T]


def _one(sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> _Op[tuple[Any, ...] | None]:
    """The first row of one statement (None if it returned none)."""
    rows = yield _Query(sql, params)
    return rows[0] if rows else None


def _commits(request: _Query | tuple[_Query, ...]) -> bool:
    # A _Query is itself a tuple: test for it first.
    return request.commits if isinstance(request, _Query) else any(q.commits for q in request)


def _has_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    result = cursor.pgresult
    return result is not None and result.status == psycopg.pq.ExecStatus.TUPLES_OK


def _rows(cursor: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
    return cursor.fetchall() if _has_rows(cursor) else []


async def _rows_async(cursor: psycopg.AsyncCursor[Any]) -> list[tuple[Any, ...]]:
    return await cursor.fetchall() if _has_rows(cursor) else []


def _execute(conn: psycopg.Connection[Any], request: _Query | tuple[_Query, ...]) -> Any:
    if isinstance(request, _Query):
        return _rows(conn.execute(request.sql, request.params))
    with conn.pipeline():
        cursors = [conn.execute(q.sql, q.params) for q in request]
    return [_rows(cursor) for cursor in cursors]


async def _execute_async(
    conn: psycopg.AsyncConnection[Any], request: _Query | tuple[_Query, ...]
) -> Any:
    if isinstance(request, _Query):
        return await _rows_async(await conn.execute(request.sql, request.params))
    async with conn.pipeline():
        cursors = [await conn.execute(q.sql, q.params) for q in request]
    return [await _rows_async(cursor) for cursor in cursors]


def _in_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn`` is usable and inside a transaction (that an operation left open
    by failing or returning early: the runner rolls it back)."""
    idle = psycopg.pq.TransactionStatus.IDLE
    return not (conn.closed or conn.broken) and conn.info.transaction_status != idle


# -- the SQL of every operation -----------------------------------------------------------


class _Ops:
    """Every operation as an `_Op`; ``missing`` makes the error for an unknown study,
    ``where`` names the storage. The operations called through `ConnectionStorage` take
    first the connection argument it passes, unused: they yield their queries instead."""

    def __init__(self, schema: str, where: str, missing: Callable[[str], StorageError]) -> None:
        self.schema = schema
        self.where = where
        self.missing = missing
        s = self.s = f'"{schema}"'
        self.sql_lock = (
            f"SELECT id, n_trials, n_released FROM {s}.studies WHERE name = %s FOR NO KEY UPDATE"
        )
        self.sql_study_id = f"SELECT id FROM {s}.studies WHERE name = %s"
        self.sql_record = f"SELECT {_STUDY_COLUMNS} FROM {s}.studies WHERE name = %s"
        self.sql_counters = f"UPDATE {s}.studies SET n_trials = %s, n_released = %s WHERE id = %s"
        self.sql_insert = (
            f"INSERT INTO {s}.trials (study_id, tid, state, assignment, created_at, started_at, "
            "lease_expires_at, worker, seed, retry_of, seq) "
            "SELECT %s, t.tid, t.state, t.assignment, %s, t.started_at, t.lease_expires_at, "
            f"t.worker, t.seed, t.retry_of, nextval('{s}.seq') FROM unnest("
            "%s::bigint[], %s::smallint[], %s::text[], %s::float8[], %s::float8[], %s::text[], "
            "%s::numeric[], %s::bigint[]) WITH ORDINALITY "
            "AS t(tid, state, assignment, started_at, lease_expires_at, worker, seed, retry_of, i) "
            f"ORDER BY t.i RETURNING {_COLUMNS}"
        )
        # A whole batch in one statement (its own transaction): lock the study's row,
        # finish the listed trials RUNNING for the worker, then create as many new trials
        # as the budget leaves room for (after the finishes: a CANCELLED one gives its
        # slot back), advancing the counters. Rows: (1, finished trial) and (2, created).
        # Every CTE that touches trials joins the locked row, so its seqs are taken under
        # the lock; the finishes' conditions are checked again on the latest committed
        # rows (PostgreSQL re-evaluates an UPDATE's WHERE on a row changed meanwhile).
        self.sql_batch = (
            "WITH s AS ("
            f"SELECT id, n_trials, n_released FROM {s}.studies WHERE name = %(study)s "
            "FOR NO KEY UPDATE), "
            f"f AS (UPDATE {s}.trials t SET state = o.state, loss = o.loss, "
            "result = o.result, error = o.error, "
            "started_at = COALESCE(o.started_at, t.started_at), finished_at = %(now)s, "
            f"lease_expires_at = NULL, seq = nextval('{s}.seq') "
            "FROM s, jsonb_to_recordset(%(finishes)s::jsonb) AS o(tid bigint, state smallint, "
            "loss float8, result text, error text, started_at float8) "
            "WHERE t.study_id = s.id AND t.tid = o.tid AND t.state = 1 "
            f"AND t.worker = %(worker)s RETURNING {_T_COLUMNS}), "
            "k AS (SELECT s.id, s.n_trials AS first, "
            "s.n_released + (SELECT count(*) FROM f WHERE f.state = 4) AS released FROM s), "
            "r AS (SELECT k.*, LEAST(%(n_new)s::bigint, GREATEST(0, coalesce("
            "%(budget)s::bigint - (k.first - k.released), %(n_new)s::bigint))) AS added FROM k), "
            f"c AS (UPDATE {s}.studies SET n_trials = r.first + r.added, n_released = r.released "
            "FROM r WHERE studies.id = r.id AND (r.added > 0 OR r.released > studies.n_released) "
            "RETURNING 1), "
            f"i AS (INSERT INTO {s}.trials (study_id, tid, state, assignment, created_at, "
            "started_at, lease_expires_at, worker, seed, seq) "
            "SELECT r.id, r.first + u.i - 1, 1, u.assignment, %(now)s, %(now)s, %(expires)s, "
            f"%(worker)s, u.seed, nextval('{s}.seq') FROM r, "
            "ROWS FROM (jsonb_to_recordset(%(new)s::jsonb) AS (assignment text, seed numeric)) "
            f"WITH ORDINALITY AS u(assignment, seed, i) WHERE u.i <= r.added RETURNING {_COLUMNS}) "
            f"SELECT 1, * FROM f UNION ALL SELECT 2, * FROM i "
            "UNION ALL SELECT 3, count(*), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
            "NULL, NULL, NULL, NULL, NULL, NULL FROM c"
        )
        # Record a reported value: under the study's lock (seqs commit in order), on a
        # RUNNING trial held by the worker, at a step not reported yet.
        self.sql_report = (
            f"WITH s AS (SELECT id FROM {s}.studies WHERE name = %(study)s FOR NO KEY UPDATE) "
            f"UPDATE {s}.trials t SET intermediate = t.intermediate || %(value)s::jsonb, "
            f"seq = nextval('{s}.seq') FROM s WHERE t.study_id = s.id AND t.tid = %(tid)s "
            "AND t.state = 1 AND t.worker = %(worker)s AND NOT (t.intermediate ? %(step)s) "
            f"RETURNING {_T_COLUMNS}"
        )
        self.sql_holders = (
            f"SELECT tid, state, worker FROM {s}.trials WHERE study_id = %s AND tid = ANY(%s)"
        )
        self.sql_since = (
            f"SELECT {_COLUMNS} FROM {s}.trials WHERE study_id = ({self.sql_study_id}) "
            "AND seq > %s ORDER BY seq"
        )

    def lock(self, study: str) -> _Op[tuple[int, int, int]]:
        """Lock the study's row (to the commit); its id and counters as last committed."""
        row = yield from _one(self.sql_lock, (study,))
        if row is None:
            raise self.missing(study)
        return row[0], row[1], row[2]

    def study_id(self, study: str) -> _Op[int]:
        row = yield from _one(self.sql_study_id, (study,))
        if row is None:
            raise self.missing(study)
        study_id: int = row[0]
        return study_id

    def insert(
        self,
        study: str,
        study_id: int,
        first_tid: int,
        state: TrialState,
        new: Sequence[NewTrial],
        *,
        worker: str | None = None,
        lease: float | None = None,
        retry_of: Sequence[int] | None = None,
    ) -> _Op[list[Trial]]:
        """Insert trials with tids from ``first_tid`` (RUNNING for ``worker``, or QUEUED)."""
        n = len(new)
        if n == 0:
            return []
        now = time.time()
        running = state is TrialState.RUNNING
        rows = yield _Query(
            self.sql_insert,
            (
                study_id,
                now,
                list(range(first_tid, first_tid + n)),
                [int(state)] * n,
                [to_json(t.assignment, "assignment") for t in new],
                [now if running else None] * n,
                [now + lease if running and lease is not None else None] * n,
                [worker if running else None] * n,
                [t.seed for t in new],
                list(retry_of) if retry_of is not None else [None] * n,
            ),
        )
        return [_trial(study, row) for row in rows]

    # the schema

    def prepare(self, _: object, read_only: bool) -> _Op[None]:
        """Check the schema is ours (or absent: then create it), touching nothing else."""
        yield _BEGIN
        if not read_only:
            # Creators of this schema in other processes wait here (until the commit).
            yield _Query("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"asyncopt:{self.schema}",))
        exists = yield _Query("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        rows = yield _Query(
            "SELECT c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            (self.schema,),
        )
        tables = {row[0] for row in rows}
        if tables:
            version = yield from self._check_version(tables)
            if version < SCHEMA_VERSION:
                yield from self._upgrade(version, read_only)
        elif read_only:
            raise StorageUnavailableError(
                f"{self.where} holds no asyncopt studies (no schema {self.schema!r})"
            )
        else:
            if not exists:
                yield _Query(f"CREATE SCHEMA {self.s}")
            for statement in _SCHEMA:
                yield _Query(statement.format(s=self.s))
            yield _Query(
                f"INSERT INTO {self.s}.meta (key, value) VALUES ('schema_version', %s)",
                (str(SCHEMA_VERSION),),
            )
        yield _COMMIT

    def _upgrade(self, version: int, read_only: bool) -> _Op[None]:
        """Bring the schema from ``version`` to `SCHEMA_VERSION` (the caller holds the
        schema's advisory lock, so one opener does it)."""
        if read_only:
            raise StorageError(
                f"schema {self.schema!r} at {self.where} was written by an older asyncopt "
                f"(schema version {version}; this version reads {SCHEMA_VERSION}); "
                "open it once for writing to upgrade it"
            )
        while version < SCHEMA_VERSION:
            for statement in _UPGRADES[version]:
                yield _Query(statement.format(s=self.s))
            version += 1
        yield _Query(
            f"UPDATE {self.s}.meta SET value = %s WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION),),
        )

    def _check_version(self, tables: set[str]) -> _Op[int]:
        foreign = f"schema {self.schema!r} at {self.where}"
        if "meta" not in tables:
            raise StorageError(
                f"{foreign} holds tables that are not asyncopt's; not touching it "
                "(name another schema with ?schema=...)"
            )
        row = yield from _one(f"SELECT value FROM {self.s}.meta WHERE key = 'schema_version'")
        if row is None or not str(row[0]).isdigit():
            raise StorageError(f"{foreign} has no asyncopt schema version; not touching it")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{foreign} was written by a newer asyncopt (schema version {version}; this "
                f"version knows {SCHEMA_VERSION}); upgrade asyncopt to open it"
            )
        known = version == SCHEMA_VERSION or version in _UPGRADES
        if not known or not set(_TABLES) <= tables:
            raise StorageError(f"{foreign} has an unknown asyncopt schema (version {version})")
        return version

    # studies

    def create_study(self, _: object, record: StudyRecord) -> _Op[StudyRecord]:
        inserted = yield _Query(
            f"INSERT INTO {self.s}.studies (name, fingerprint, space, seed, created_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING 1",
            (
                record.name,
                record.fingerprint,
                to_json(record.space, "space description"),
                record.seed,
                record.created_at,
            ),
        )
        if inserted:
            return record
        found = yield from self.get_study(_, record.name)
        if found is None:  # deleted between the two statements
            raise self.missing(record.name)
        return found

    def get_study(self, _: object, name: str) -> _Op[StudyRecord | None]:
        row = yield from _one(self.sql_record, (name,))
        return None if row is None else _record(row)

    def list_studies(self, _: object) -> _Op[list[StudyRecord]]:
        rows = yield _Query(
            f'SELECT {_STUDY_COLUMNS} FROM {self.s}.studies ORDER BY name COLLATE "C"'
        )
        return [_record(row) for row in rows]

    def delete_study(self, _: object, name: str) -> _Op[bool]:
        yield _BEGIN
        row = yield from _one(self.sql_lock, (name,))
        if row is None:
            return False  # the runner rolls back what is left open
        yield _Query(f"DELETE FROM {self.s}.trials WHERE study_id = %s", (row[0],))
        yield _Query(f"DELETE FROM {self.s}.studies WHERE id = %s", (row[0],))
        yield _COMMIT
        return True

    # trials

    def batch(self, _: object, study: str, request: BatchRequest) -> _Op[Batch]:
        """Finish and create in one statement, and read the changes in a second one: one
        round trip and one transaction (the read sees what committed while the first
        awaited the lock)."""
        finishes, new, since = request.finishes, request.new, request.since
        worker, budget, lease = request.worker, request.budget, request.lease
        now = time.time()
        write = _Query(
            self.sql_batch,
            {
                "study": study,
                "now": now,
                "expires": now + lease,
                "worker": worker,
                "finishes": json.dumps(
                    [
                        {
                            "tid": f.tid,
                            "state": int(f.state),
                            # As text: the server reads it exactly, and JSON has no inf.
                            "loss": None if f.loss is None else repr(f.loss),
                            "result": f.result_json,
                            "error": f.error,
                            "started_at": f.started_at,
                        }
                        for f in finishes
                    ]
                ),
                "n_new": len(new),
                "budget": budget,
                "new": json.dumps(
                    [
                        {"assignment": to_json(n.assignment, "assignment"), "seed": n.seed}
                        for n in new
                    ]
                ),
            },
            commits=True,
        )
        if since is None:
            rows, read = (yield write), None
        else:
            rows, read = yield (write, _Query(self.sql_since, (study, since)))
        done = {row[1]: _trial(study, row[1:]) for row in rows if row[0] == 1}
        created = sorted((_trial(study, row[1:]) for row in rows if row[0] == 2), key=_tid)
        # The read returns this batch's own trials again: decoded once.
        mine = {(t.tid, t.seq): t for t in (*done.values(), *created)}
        study_id: int | None = None
        if not done and not created and not read:
            study_id = yield from self.study_id(study)  # the study exists: nothing was due
        finished: list[Trial | TrialError] = []
        if len(done) < len(finishes):
            # Why the others were refused, as of now. A tid given twice in one call is
            # finished once; the second time it is finished already.
            holders = {tid: (t.state, t.worker) for tid, t in done.items()}
            refused = [f.tid for f in finishes if f.tid not in done]
            if study_id is None:
                study_id = yield from self.study_id(study)
            for tid, state, holder in (yield _Query(self.sql_holders, (study_id, refused))):
                holders.setdefault(tid, (TrialState(state), holder))
            for f in finishes:
                trial = done.pop(f.tid, None)
                if trial is None:
                    state, holder = holders.get(f.tid, (None, None))
                    why = refusal(study, f.tid, worker, state, holder)
                    assert why is not None  # the statement found it not finishable
                    finished.append(why)
                else:
                    finished.append(trial)
        else:
            finished = [done[f.tid] for f in finishes]
        changed = [mine.get((row[_TID], row[_SEQ])) or _trial(study, row) for row in (read or ())]
        return Batch(finished, created, changed)

    def report(
        self, _: object, study: str, tid: int, worker: str, step: int, value: float
    ) -> _Op[Trial]:
        # Its own transaction, and safe to retry when the connection drops mid-statement:
        # an attempt that landed leaves the step reported, so the next changes nothing.
        row = yield from _one(
            self.sql_report,
            {
                "study": study,
                "tid": tid,
                "worker": worker,
                "step": str(step),
                "value": intermediate_json({step: value}),
            },
        )
        if row is not None:
            return _trial(study, row)
        trial = yield from self.get_trial(_, study, tid)
        return unreported(study, tid, worker, trial)

    def enqueue(
        self, _: object, study: str, new: Sequence[NewTrial], budget: int | None
    ) -> _Op[list[Trial]]:
        yield _BEGIN
        study_id, n_trials, n_released = yield from self.lock(study)
        left = room(budget, n_trials - n_released)
        queued = yield from self.insert(
            study, study_id, n_trials, TrialState.QUEUED, new if left is None else new[:left]
        )
        if queued:
            yield _Query(self.sql_counters, (n_trials + len(queued), n_released, study_id))
        yield _COMMIT
        return queued

    def claim(
        self, _: object, study: str, worker: str, lease: float, limit: int
    ) -> _Op[list[Trial]]:
        # Look without a lock first: most calls find the queue empty.
        probe = yield _Query(
            f"SELECT 1 FROM {self.s}.trials WHERE study_id = ({self.sql_study_id}) "
            "AND state = 0 LIMIT 1",
            (study,),
        )
        if not probe:
            yield from self.study_id(study)
            return []
        yield _BEGIN
        study_id = (yield from self.lock(study))[0]
        now = time.time()
        # The picked tids are materialized: a plan that ran the LIMIT subquery again
        # per updated row would pick the next queued trial each time.
        rows = yield _Query(
            f"WITH picked AS MATERIALIZED (SELECT tid FROM {self.s}.trials "
            "WHERE study_id = %s AND state = 0 ORDER BY tid LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"UPDATE {self.s}.trials t SET state = 1, started_at = %s, "
            f"lease_expires_at = %s, worker = %s, seq = nextval('{self.s}.seq') "
            "FROM picked WHERE t.study_id = %s AND t.tid = picked.tid "
            f"RETURNING {_T_COLUMNS}",
            (study_id, limit, now, now + lease, worker, study_id),
        )
        yield _COMMIT
        return sorted((_trial(study, row) for row in rows), key=_tid)

    def renew(
        self, _: object, study: str, tids: list[int], worker: str, lease: float
    ) -> _Op[list[int]]:
        if not tids:
            yield from self.study_id(study)
            return []
        yield _BEGIN
        study_id = (yield from self.lock(study))[0]
        rows = yield _Query(
            f"UPDATE {self.s}.trials SET lease_expires_at = %s, "
            f"seq = nextval('{self.s}.seq') WHERE study_id = %s AND tid = ANY(%s) "
            "AND state = 1 AND worker = %s RETURNING tid",
            (time.time() + lease, study_id, tids, worker),
        )
        held = {row[0] for row in rows}
        others = [tid for tid in tids if tid not in held]
        found: dict[int, tuple[TrialState, str | None]] = {}
        if others:
            for tid, state, holder in (yield _Query(self.sql_holders, (study_id, others))):
                found[tid] = (TrialState(state), holder)
        yield _COMMIT
        return [
            tid
            for tid in others
            if tid not in found or lease_lost(found[tid][0], found[tid][1], worker)
        ]

    def reap(self, _: object, study: str) -> _Op[list[Trial]]:
        probe = yield _Query(
            f"SELECT 1 FROM {self.s}.trials WHERE study_id = ({self.sql_study_id}) "
            "AND state = 1 AND lease_expires_at < %s LIMIT 1",
            (study, time.time()),
        )
        if not probe:
            yield from self.study_id(study)
            return []
        yield _BEGIN
        study_id, n_trials, n_released = yield from self.lock(study)
        now = time.time()
        rows = yield _Query(
            f"SELECT {_COLUMNS} FROM {self.s}.trials WHERE study_id = %s AND state = 1 "
            "AND lease_expires_at < %s ORDER BY tid",
            (study_id, now),
        )
        expired = [_trial(study, row) for row in rows]
        reaped = []
        for trial in expired:
            changes = reap_changes(trial.worker, now)
            [seq] = (
                yield from _one(
                    f"UPDATE {self.s}.trials SET state = %s, finished_at = %s, "
                    f"lease_expires_at = NULL, error = %s, seq = nextval('{self.s}.seq') "
                    "WHERE study_id = %s AND tid = %s RETURNING seq",
                    (int(changes["state"]), now, changes["error"], study_id, trial.tid),
                )
            ) or (None,)
            reaped.append(trial.evolve(seq=seq, **changes))
        retried = [t for t in expired if requeues(t)]
        yield from self.insert(
            study,
            study_id,
            n_trials,
            TrialState.QUEUED,
            [NewTrial(t.assignment, t.seed) for t in retried],
            retry_of=[t.tid for t in retried],
        )
        if reaped:
            yield _Query(
                self.sql_counters, (n_trials + len(retried), n_released + len(reaped), study_id)
            )
        yield _COMMIT
        return reaped

    def get_trial(self, _: object, study: str, tid: int) -> _Op[Trial | None]:
        study_id = yield from self.study_id(study)
        row = yield from _one(
            f"SELECT {_COLUMNS} FROM {self.s}.trials WHERE study_id = %s AND tid = %s",
            (study_id, tid),
        )
        return None if row is None else _trial(study, row)

    def trials_since(self, _: object, study: str, seq: int) -> _Op[list[Trial]]:
        rows = yield _Query(self.sql_since, (study, seq))
        if not rows:
            yield from self.study_id(study)
        return [_trial(study, row) for row in rows]

    def count(self, _: object, study: str, budgeted: bool) -> _Op[int]:
        row = yield from _one(
            f"SELECT n_trials, n_released FROM {self.s}.studies WHERE name = %s", (study,)
        )
        if row is None:
            raise self.missing(study)
        return int(row[0] - row[1]) if budgeted else int(row[0])


# -- connections -------------------------------------------------------------------------


_Connection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


def _is_stale(conn: _Connection) -> bool:
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


def _close(conn: _Connection) -> None:
    """Close a connection of either kind (libpq's close waits for nothing: no await)."""
    conn.pgconn.finish()


class _Pool:
    """Up to ``size`` connections, made on demand; an operation holds one at a time.

    ``asynchronous``: psycopg's asyncio connections (under asyncio), else its synchronous
    ones, each operation run whole on a worker thread (under trio).
    """

    def __init__(self, size: int, *, asynchronous: bool) -> None:
        self.asynchronous = asynchronous
        self._idle: list[Any] = []
        self._lock = threading.Lock()  # under trio, worker threads share the idle list
        self.slots = anyio.Semaphore(size)
        self._closed = False

    def reuse(self) -> Any:
        """An idle healthy connection, or None (then the caller makes one)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or not _is_stale(conn):
                return conn
            _close(conn)

    def give_back(self, conn: _Connection) -> None:
        """Keep ``conn`` for the next operation, unless it is unusable or the pool closed."""
        if self._closed or _in_transaction(conn) or conn.closed or conn.broken:
            _close(conn)
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)


# -- the storage -------------------------------------------------------------------------


def _positive(url: StorageURL, name: str, default: float, *, integer: bool = False) -> float:
    text = url.query.get(name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        kind = "a positive integer" if integer else "a positive number of seconds"
        raise StorageURLError(f"{url.redacted!r}: {name} must be {kind}, got {text!r}")
    return value


class PostgresStorage(ConnectionStorage):
    """A `Storage` in a PostgreSQL database, shared by any number of processes and machines.

    Made from ``postgresql://user:password@host:port/dbname?options`` by `from_url` (or
    `asyncopt.open_storage`); the module docstring lists the options. Open it with
    ``async with``: failures to connect raise `asyncopt.errors.StorageUnavailableError`
    within ``connect_timeout`` seconds; a schema that is not asyncopt's, or is newer,
    raises `asyncopt.errors.StorageError` and is left untouched.
    """

    one_round_trip = True

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
        self._schema = schema
        self._pool_size = pool_size
        self._retry = RetryPolicy(0.05, 2.0, retry_timeout)
        self._ops = _Ops(schema, url.redacted, self._no_study)
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
        base = re.sub(r"^[A-Za-z]+", "postgresql", url.raw.split("?", 1)[0])
        libpq = {k: v for k, v in url.query.items() if k not in _OPTIONS}
        libpq.setdefault("connect_timeout", "5")
        settings = []
        synchronous_commit = url.query.get("synchronous_commit")
        if synchronous_commit is not None:
            if synchronous_commit not in _SYNCHRONOUS_COMMIT:
                raise StorageURLError(
                    f"{shown!r}: synchronous_commit must be one of "
                    f"{', '.join(_SYNCHRONOUS_COMMIT)}, got {synchronous_commit!r}"
                )
            settings.append(f"-c synchronous_commit={synchronous_commit}")
        if url.read_only:
            settings.append("-c default_transaction_read_only=on")
        if settings:
            libpq["options"] = " ".join([libpq.get("options", ""), *settings]).strip()
        try:
            conninfo = psycopg.conninfo.make_conninfo(base, **libpq)
        except psycopg.ProgrammingError as exc:
            raise StorageURLError(f"{shown!r}: {_one_line(url.scrub(str(exc)))}") from None
        return cls(
            conninfo, url=url, schema=schema, pool_size=pool_size, retry_timeout=retry_timeout
        )

    @property
    def url(self) -> str:
        """The URL, with the password (and any secret option) replaced by ``***``."""
        return self._url.redacted

    @property
    def schema(self) -> str:
        """The schema holding this storage's tables."""
        return self._schema

    def __repr__(self) -> str:
        return f"PostgresStorage({self.url!r})"

    # -- connections -------------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> StorageError:
        detail = _one_line(self._url.scrub(str(exc)))
        return translate(exc, ERRORS, self.url, detail)

    def _connect_failure(self, exc: psycopg.Error) -> Exception:
        """What a failed connection attempt raises: `_Retry` if the server may come back."""
        error = self._translate(exc)
        if not isinstance(error, StorageUnavailableError) or _refused_credentials(exc):
            return error
        return error if exc.sqlstate == "3D000" else _Retry(error)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            conn.execute(_PLAN_ONCE)
            return conn
        except psycopg.Error as exc:
            raise self._connect_failure(exc) from None

    async def _connect_async(self) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            await conn.execute(_PLAN_ONCE)
            return conn
        except psycopg.Error as exc:
            raise self._connect_failure(exc) from None

    def _failure(self, exc: psycopg.Error, committing: bool) -> Exception:
        """What a failed attempt raises: `_Retry` when it certainly did not take effect."""
        error = self._translate(exc)
        if exc.sqlstate in _PASSING:
            return _Retry(error)
        if isinstance(exc, psycopg.OperationalError) and not committing:
            # The connection dropped: the server rolls back what was not committed. Only
            # a transaction whose commit was in flight has an unknown outcome.
            return _Retry(error)
        return error

    async def open(self) -> None:
        """Connect, check the schema is ours and create it if needed. Idempotent."""
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._pool is not None:
                return
            pool = _Pool(self._pool_size, asynchronous=current_event_loop() == "asyncio")
            read_only = self._url.read_only
            with anyio.CancelScope(shield=True):
                try:
                    # No retries: an unreachable server is reported at once.
                    await self._attempt(pool, lambda _: self._ops.prepare(_, read_only))
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
            pool.close()

    def _run(self, pool: _Pool, fn: Callable[[object], _Op[T]]) -> T:
        """One attempt of the operation ``fn(None)`` on a synchronous connection (on a
        worker thread). Raises `_Retry` when the attempt certainly did not take effect."""
        conn = pool.reuse() or self._connect()
        op, value, committing = fn(None), None, False
        try:
            while True:
                try:
                    request = op.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                committing = _commits(request)
                value = _execute(conn, request)
                committing = False
        except psycopg.Error as exc:
            raise self._failure(exc, committing) from None
        finally:
            op.close()
            if _in_transaction(conn):
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            pool.give_back(conn)

    async def _run_async(self, pool: _Pool, fn: Callable[[object], _Op[T]]) -> T:
        """`_run` on an asyncio connection, on the event loop."""
        conn = pool.reuse() or await self._connect_async()
        op, value, committing = fn(None), None, False
        try:
            while True:
                try:
                    request = op.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                committing = _commits(request)
                value = await _execute_async(conn, request)
                committing = False
        except psycopg.Error as exc:
            raise self._failure(exc, committing) from None
        finally:
            op.close()
            if _in_transaction(conn):
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
            pool.give_back(conn)

    async def _attempt(self, pool: _Pool, fn: Callable[[object], _Op[T]]) -> T:
        async with pool.slots:
            if pool.asynchronous:
                return await self._run_async(pool, fn)
            return await anyio.to_thread.run_sync(self._run, pool, fn)

    async def _call(self, fn: Callable[[Any], Any]) -> Any:
        """The operation ``fn(None)`` (an `_Op`), retried as the retry policy says."""
        pool = self._pool
        if pool is None:
            raise StorageError(f"{self.url} is not open; use `async with` or `await open()`")
        waits: Iterator[float] | None = None
        # Each call is one transaction; let it finish so its outcome is never lost to a
        # cancellation (the cancellation is delivered at the caller's next checkpoint).
        with anyio.CancelScope(shield=True):
            while True:
                try:
                    result = await self._attempt(pool, fn)
                    break
                except _Retry as retry:
                    waits = waits or self._retry.waits()
                    wait = next(waits, None)
                    if wait is None:
                        raise retry.error from None
                await anyio.sleep(wait)
        return result
