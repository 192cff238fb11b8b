"""The MongoDB storage (``mongodb://`` and ``mongodb+srv://``): one study shared by many machines.

Under asyncio it talks to the server with PyMongo's async API (`pymongo.AsyncMongoClient`);
under trio it uses the synchronous `pymongo.MongoClient` on worker threads. Both run the
same query code: every operation is a generator that yields driver calls (collection,
method, arguments) and receives their results, and a thin adapter executes the calls.

Documents live in three collections of the database named by the URL path (default
``asyncopt``): ``studies`` (one per study, ``_id`` = name), ``trials`` (one per trial,
unique index on ``(study, tid)``) and ``counters`` (the storage-wide ``seq`` counter).
No operation needs a multi-document transaction, so a standalone ``mongod`` works as well
as a replica set.

Dense tids and the budget
    A new trial is inserted with ``tid = highest + 1``, where ``highest`` is a tid known
    to exist (the highest this storage has seen, or read from the index), after counting
    the trials that released their budget slot (CANCELLED ones, few). Trials
    ``0..highest`` all exist, so the study holds ``tid - released`` budgeted trials, and
    the insert happens only if that is below the budget. Any trial inserted concurrently
    takes the same tid, so the unique index makes every creator but one fail with a
    duplicate key; the losers try the next tid, counting again. A process that dies
    mid-create leaves either no trial or a whole one, so tids stay dense and the budget
    is never exceeded, however many machines create at once. (Deleting a study while
    other processes still work on it is not supported: they may add trials to it.)

Conditional updates
    Claims, outcomes, reported values, renewals and reaps are single-document updates.
    Their filters use only indexed equality (``_id``, or ``study`` and ``tid``) and carry
    the rest of the condition (state RUNNING, held by this worker, lease passed, step not
    reported yet) in an update pipeline (``$cond``), so that even a server with a simple
    query planner finds the document through an index; the operation token written with
    the update tells whether it applied. Reported values are a sub-document
    ``intermediate`` keyed by the step's decimal text (missing: none reported).

Reaping
    An expired RUNNING trial is moved to CANCELLED by one conditional update (so exactly
    one reaper wins). It keeps its budget slot (``budgeted``) until its retry is queued;
    then the slot passes to the retry. A unique partial index on ``(study, retry_of)``
    makes the retry impossible to queue twice, so a reap interrupted by a crash is simply
    finished by the next reaper.

Sequence numbers
    Each change to a trial is written first, unstamped (``seq: null``, tagged with a
    random operation token); then the writer takes the next ``seq`` from the
    counter document (``$inc``) and stamps the trial with it, if its token is still there.
    Seq numbers are taken after the write they stamp, but two writers can stamp out of
    order, so `MongoStorage.trials_since` reads the counter *before* reading trials and
    returns (a) every unstamped trial, reported with the counter's value, and (b) stamped
    trials with ``since < seq <= counter``. Every change whose seq is at most that counter
    value was written before the read, so a reader that passes the highest seq it has
    read never misses a change; it may receive a trial again (apply records idempotently).
    A trial left unstamped by a crashed writer is returned by every read until
    `MongoStorage.reap_expired` stamps it.

Failures
    Driver errors become `asyncopt.errors.StorageError` subclasses; the server being
    unreachable (or refusing the credentials) is `StorageUnavailableError`. A dropped
    connection or a network timeout mid-operation is retried with exponential back-off
    for up to ``retry_timeout`` seconds; a write whose acknowledgement was lost is
    recognised by its operation token on retry, so a finished trial's result is recorded
    exactly once. Passwords never appear in reprs or error messages.

Times (``created_at``, ``lease_expires_at``, ...) are each client's clock: keep the
machines' clocks synchronised (NTP) so that leases expire when they should.
"""

from __future__ import annotations

import contextlib
import random
import re
import secrets
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import attrs

from asyncopt.errors import (
    AsyncoptError,
    StorageError,
    StorageUnavailableError,
    StorageURLError,
    TrialError,
)
from asyncopt.storage.base import (
    Batch,
    BatchRequest,
    ErrorRule,
    NewTrial,
    RetryPolicy,
    Storage,
    StoredFinish,
    StudyRecord,
    Trial,
    TrialState,
    current_event_loop,
    lease_lost,
    reap_changes,
    refusal,
    requeues,
    translate,
    unreported,
)
from asyncopt.storage.urls import StorageURL
from asyncopt.trial import (
    decode_big_int,
    encode_big_int,
    reported_value,
    study_from_document,
    to_json,
    trial_from_document,
)

try:
    import pymongo
    from bson import ObjectId
    from bson.errors import BSONError
    from pymongo import IndexModel, ReturnDocument, UpdateOne
    from pymongo.errors import (
        AutoReconnect,
        BulkWriteError,
        ConfigurationError,
        DuplicateKeyError,
        OperationFailure,
        PyMongoError,
        ServerSelectionTimeoutError,
    )
    from pymongo.uri_parser import split_options
except ImportError as exc:  # pragma: no cover - the registry turns this into an install hint
    raise ImportError(f"the MongoDB storage needs pymongo ({exc})") from exc

__all__ = ["DEFAULT_DATABASE", "MongoStorage"]

#: The database used when the URL has no path.
DEFAULT_DATABASE = "asyncopt"

T = TypeVar("T")

_QUEUED = int(TrialState.QUEUED)
_RUNNING = int(TrialState.RUNNING)
_CANCELLED = int(TrialState.CANCELLED)
_SEQ_ID = "seq"
_INT64 = 2**63
# MongoDB's code for a failed authentication (also what SecantusDB answers).
_AUTH_FAILED = 18
_UNAUTHORIZED = 13
_TIMEOUT_CODES = frozenset({50, 262})  # MaxTimeMSExpired, ExceededTimeLimit


@attrs.frozen
class _Call:
    """One driver call: ``database[collection].method(*args, **kwargs)``.

    An empty ``collection`` calls the database itself (``command``). ``recover`` is run
    before retrying a call whose connection dropped: a non-None answer means the first
    attempt took effect, and is the call's result.
    """

    collection: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    recover: _Call | None = None


@attrs.frozen
class _Sleep:
    seconds: float


_Step = Generator["_Call | _Sleep", Any, T]


def _token() -> str:
    return secrets.token_hex(8)


def _encode_assignment(assignment: Mapping[str, int | float]) -> list[list[Any]]:
    # Pairs rather than a sub-document: labels may contain "." or start with "$".
    return [[label, value] for label, value in assignment.items()]


def _trial(doc: Mapping[str, Any], *, seq: int | None = None) -> Trial:
    """The trial of a stored document (``seq`` overrides the stored one)."""
    if seq is None:
        seq = doc.get("seq") or 0
    return trial_from_document(str(doc.get("study")), {**doc, "seq": seq})


def _study(doc: Mapping[str, Any]) -> StudyRecord:
    return study_from_document({**doc, "name": doc.get("_id")})


def _set_if(condition: Mapping[str, Any], fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An update pipeline that sets ``fields`` only where ``condition`` holds.

    Conditional updates filter on indexed equality only (``_id`` or ``study, tid``) and
    carry their other conditions here, so every server can use an index to find the
    document; whether the update applied shows in the ``op`` token of the result.
    """
    return [
        {
            "$set": {
                name: {"$cond": [condition, {"$literal": value}, f"${name}"]}
                for name, value in fields.items()
            }
        }
    ]


def _held_by(worker: str) -> dict[str, Any]:
    return {"$and": [{"$eq": ["$state", _RUNNING]}, {"$eq": ["$worker", {"$literal": worker}]}]}


def _is_retry_duplicate(exc: DuplicateKeyError) -> bool:
    details = exc.details or {}
    pattern = details.get("keyPattern") or {}
    return "retry_of" in pattern or "study_retry_of" in str(details.get("errmsg", exc))


def _attempt(call: _Call, retry: RetryPolicy | None) -> _Step[Any]:
    """One call, tried again after waits while the connection is down (``retry``)."""
    waits = None
    dropped = False
    while True:
        try:
            if dropped and call.recover is not None:
                landed = yield call.recover
                if landed is not None:
                    return landed
            return (yield call)
        except AutoReconnect:
            # Includes server selection and network timeouts: a server that was reachable
            # may come back (a replica set elects a new primary in seconds, a restarted
            # server in a few more).
            if retry is None:
                raise
            waits = waits or retry.waits()
            wait = next(waits, None)
            if wait is None:
                raise
            dropped = True
            yield _Sleep(wait)


def _with_retries(step: _Step[T], retry: RetryPolicy | None) -> _Step[T]:
    """The operation ``step`` with each of its calls made through `_attempt`.

    Duplicate-key errors go back to the operation, which decides what they mean.
    """
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            done, request = _resume(step, value, error)
            if done:
                result: T = request
                return result
            value, error = None, None
            if isinstance(request, _Sleep):
                yield request
                continue
            try:
                value = yield from _attempt(request, retry)
            except (DuplicateKeyError, BulkWriteError) as exc:
                error = exc
    finally:
        step.close()


def _target(database: Any, call: _Call) -> Any:
    return database[call.collection] if call.collection else database


def _resume(step: _Step[T], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Send ``value`` into ``step`` (or throw ``error``): (True, its result) once it ends,
    else (False, its next request)."""
    try:
        return False, (step.send(value) if error is None else step.throw(error))
    except StopIteration as stop:
        return True, stop.value


class _AsyncDriver:
    """Runs operations with an `AsyncMongoClient` on the asyncio loop."""

    def __init__(self, database: Any) -> None:
        self.database = database

    async def run(self, step: _Step[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            done, request = _resume(step, value, error)
            if done:
                result: T = request
                return result
            value, error = None, None
            if isinstance(request, _Sleep):
                await anyio.sleep(request.seconds)
                continue
            target = _target(self.database, request)
            try:
                if request.method == "find":
                    value = await target.find(*request.args, **request.kwargs).to_list(None)
                else:
                    value = await getattr(target, request.method)(*request.args, **request.kwargs)
            except PyMongoError as exc:
                error = exc


class _ThreadDriver:
    """Runs each whole operation with a synchronous `MongoClient` on one worker thread.

    One thread hop per storage call rather than per driver call: under trio this is what
    keeps a call's latency close to the asyncio client's.
    """

    def __init__(self, database: Any) -> None:
        self.database = database

    def _run(self, step: _Step[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            done, request = _resume(step, value, error)
            if done:
                result: T = request
                return result
            value, error = None, None
            if isinstance(request, _Sleep):
                _sleep_unless_cancelled(request.seconds)
                continue
            target = _target(self.database, request)
            try:
                value = getattr(target, request.method)(*request.args, **request.kwargs)
                if request.method == "find":
                    value = list(value)
            except PyMongoError as exc:
                error = exc

    async def run(self, step: _Step[T]) -> T:
        return await anyio.to_thread.run_sync(self._run, step)


def _sleep_unless_cancelled(seconds: float) -> None:
    """Sleep on a worker thread, in slices, raising if the awaiting task was cancelled."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        anyio.from_thread.check_cancelled()
        time.sleep(min(left, 0.05))
    anyio.from_thread.check_cancelled()


def _check_options(url: StorageURL) -> None:
    """Refuse unknown or invalid URL options up front (PyMongo would only warn)."""
    for option in filter(None, re.split("[&;]", url.raw_query)):
        try:
            split_options(option, validate=True, warn=False)
        except (ConfigurationError, ValueError, TypeError) as exc:
            name = option.partition("=")[0]
            raise StorageURLError(
                f"invalid option {name!r} in MongoDB URL {url.redacted}: {url.scrub(str(exc))}"
            ) from None


#: How long opening waits for a server unless the URL says (``serverSelectionTimeoutMS``).
SERVER_SELECTION_TIMEOUT = 5.0


def _client_options(url: StorageURL) -> dict[str, Any]:
    """What asyncopt asks of the client unless the URL's options say otherwise."""
    given = {name.lower() for name in url.query}
    options: dict[str, Any] = {"appname": "asyncopt"}
    if "serverselectiontimeoutms" not in given:
        options["serverSelectionTimeoutMS"] = int(SERVER_SELECTION_TIMEOUT * 1000)
    # Journaled writes: an acknowledged trial survives a crash of the server.
    if not given & {"journal", "w", "j"}:
        options["journal"] = True
    return options


def _selection_seconds(url: StorageURL | None) -> float:
    if url is None:
        return SERVER_SELECTION_TIMEOUT
    for name, value in url.query.items():
        if name.lower() == "serverselectiontimeoutms":
            return float(value) / 1000
    return SERVER_SELECTION_TIMEOUT


def _has_code(*codes: int) -> Any:
    return lambda exc: isinstance(exc, OperationFailure) and exc.code in codes


#: PyMongo errors → asyncopt errors; ``{where}`` is the redacted URL.
ERRORS = (
    ErrorRule(
        lambda exc: isinstance(exc, ServerSelectionTimeoutError),
        StorageUnavailableError,
        "cannot reach MongoDB at {where} (no server answered within the server selection "
        "timeout; set serverSelectionTimeoutMS in the URL to wait longer)",
    ),
    ErrorRule(
        lambda exc: isinstance(exc, AutoReconnect),
        StorageUnavailableError,
        "lost the connection to MongoDB at {where} and could not reconnect: {detail}",
    ),
    ErrorRule(
        # PyMongo's URI parser raises plain ValueError (an unescaped password, say).
        lambda exc: isinstance(exc, (ConfigurationError, ValueError, TypeError)),
        StorageURLError,
        "bad MongoDB configuration for {where}: {detail}",
    ),
    ErrorRule(
        lambda exc: isinstance(exc, DuplicateKeyError),
        StorageError,
        "duplicate key in MongoDB at {where}: {detail}",
    ),
    ErrorRule(
        _has_code(_AUTH_FAILED),
        StorageUnavailableError,
        "MongoDB at {where} refused the credentials (authentication failed)",
    ),
    ErrorRule(
        _has_code(_UNAUTHORIZED), StorageError, "not authorized on MongoDB at {where}: {detail}"
    ),
    ErrorRule(
        _has_code(*_TIMEOUT_CODES),
        StorageUnavailableError,
        "MongoDB at {where} timed out: {detail}",
    ),
    ErrorRule(
        lambda exc: isinstance(exc, BSONError),
        StorageError,
        "cannot encode a document for MongoDB at {where}: {detail}",
    ),
)


class MongoStorage(Storage):
    """A `Storage` in a MongoDB database, shared by any number of processes and machines.

    Build it from a URL (``mongodb://[user:password@]host[:port][,host...]/database?options``
    or ``mongodb+srv://...``; the database defaults to ``asyncopt``) or from a ready client:
    ``MongoStorage(client=pymongo.MongoClient(...), database="tuning")``. A synchronous
    ``MongoClient`` works under asyncio and trio; an ``AsyncMongoClient`` only under
    asyncio. A client you pass is yours to close. URL options go to PyMongo unchanged
    (``serverSelectionTimeoutMS``, ``authSource``, ``replicaSet``, ``tls``...); unless they
    say otherwise, writes are journaled (``journal=true``) and opening gives up after
    `SERVER_SELECTION_TIMEOUT` seconds without a server.

    ``retry_timeout`` bounds, in seconds, how long an operation keeps retrying after the
    connection drops before raising `StorageUnavailableError`.
    """

    def __init__(
        self,
        url: str | StorageURL | None = None,
        *,
        client: Any = None,
        database: str | None = None,
        retry_timeout: float = 30.0,
    ) -> None:
        if (url is None) == (client is None):
            raise StorageURLError("MongoStorage needs either a URL or a client (not both)")
        self._url: StorageURL | None = None
        if url is not None:
            parsed = url if isinstance(url, StorageURL) else StorageURL.parse(url)
            if parsed.scheme not in ("mongodb", "mongodb+srv"):
                raise StorageURLError(
                    f"{parsed.redacted!r} is not a MongoDB URL "
                    "(expected mongodb:// or mongodb+srv://)"
                )
            _check_options(parsed)
            self._url = parsed
            path_database = parsed.path.strip("/")
            if "/" in path_database:
                raise StorageURLError(
                    f"the path of {parsed.redacted!r} must be a single database name"
                )
            database = database or path_database or DEFAULT_DATABASE
        self._database_name = database or DEFAULT_DATABASE
        self._given_client = client
        self._client: Any = None
        self._driver: _AsyncDriver | _ThreadDriver | None = None
        self._retry = RetryPolicy(0.05, 2.0, float(retry_timeout), jitter=False)
        self._known_studies: set[str] = set()
        self._highest_tid: dict[str, int] = {}
        self._released: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: StorageURL) -> MongoStorage:
        """An unopened storage for a parsed ``mongodb://`` or ``mongodb+srv://`` URL."""
        return cls(url)

    @property
    def database(self) -> str:
        """The name of the database holding the collections."""
        return self._database_name

    @property
    def url(self) -> str:
        """The URL with secrets replaced by ``***`` (for a client: its seed hosts)."""
        if self._url is not None:
            return self._url.redacted
        hosts = ",".join(
            f"{host}:{port}"
            for host, port in self._given_client.topology_description.server_descriptions()
        )
        return f"mongodb://{hosts}/{self._database_name}"

    def __repr__(self) -> str:
        return f"MongoStorage({self.url!r})"

    # -- connection --------------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> StorageError:
        detail = str(exc)
        if self._url is not None:
            detail = self._url.scrub(detail)
        return translate(exc, ERRORS, self.url, detail)

    def _make_client(self, asynchronous: bool) -> Any:
        assert self._url is not None
        options = _client_options(self._url)
        try:
            if asynchronous:
                return pymongo.AsyncMongoClient(self._url.raw, **options)
            return pymongo.MongoClient(self._url.raw, **options)
        except (PyMongoError, ValueError, TypeError) as exc:
            raise self._translate(exc) from None

    async def open(self) -> None:
        """Connect, check the server answers, and create the indexes. Idempotent.

        Raises `StorageUnavailableError` when the server cannot be reached within the
        server selection timeout or refuses the credentials.
        """
        if self._driver is not None:
            return
        library = current_event_loop()
        client = self._given_client
        if client is not None:
            if isinstance(client, pymongo.AsyncMongoClient):
                if library != "asyncio":
                    raise StorageError(
                        "an AsyncMongoClient works only under asyncio; "
                        f"pass a pymongo.MongoClient to use MongoDB under {library}"
                    )
                driver: _AsyncDriver | _ThreadDriver = _AsyncDriver(client[self._database_name])
            else:
                driver = _ThreadDriver(client[self._database_name])
        elif library == "asyncio":
            # Built on a thread: the constructor reads the environment (files) and may
            # resolve DNS, which must not block the event loop.
            self._client = await anyio.to_thread.run_sync(self._make_client, True)
            driver = _AsyncDriver(self._client[self._database_name])
        else:
            self._client = await anyio.to_thread.run_sync(self._make_client, False)
            driver = _ThreadDriver(self._client[self._database_name])
        self._driver = driver
        try:
            await self._run(self._setup(), retry=False)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the client this storage created (a client you passed stays open). Idempotent."""
        client, self._client = self._client, None
        self._driver = None
        self._known_studies.clear()
        self._highest_tid.clear()
        self._released.clear()
        if client is None:
            return
        if isinstance(client, pymongo.AsyncMongoClient):
            await client.close()
        else:
            await anyio.to_thread.run_sync(client.close)

    def _setup(self) -> _Step[None]:
        yield _Call("", "command", ("ping",))
        yield _Call(
            "trials",
            "create_indexes",
            (
                [
                    IndexModel([("study", 1), ("tid", 1)], unique=True, name="study_tid"),
                    IndexModel([("study", 1), ("seq", 1)], name="study_seq"),
                    IndexModel([("study", 1), ("state", 1), ("tid", 1)], name="study_state"),
                    IndexModel(
                        [("study", 1), ("retry_of", 1)],
                        unique=True,
                        name="study_retry_of",
                        partialFilterExpression={"retry_of": {"$type": "number"}},
                    ),
                ],
            ),
        )
        # Another process may create the counter at the same moment.
        with contextlib.suppress(DuplicateKeyError):
            yield _Call(
                "counters",
                "update_one",
                ({"_id": _SEQ_ID}, {"$setOnInsert": {"value": 0}}),
                {"upsert": True},
            )

    # -- running operations ------------------------------------------------------------------

    async def _run(self, step: _Step[T], *, retry: bool = True) -> T:
        """Drive an operation: execute each call it yields, send back the result.

        With ``retry``, a call whose connection dropped is retried with back-off for up
        to ``retry_timeout`` seconds (opening does not retry: an unreachable server is
        reported at once).
        """
        driver = self._driver
        if driver is None:
            step.close()
            raise StorageError(f"{self!r} is not open; use `async with` or `await open()`")
        try:
            return await driver.run(_with_retries(step, self._retry if retry else None))
        except AsyncoptError:
            raise
        except (PyMongoError, BSONError) as exc:
            raise self._translate(exc) from None

    # -- studies -----------------------------------------------------------------------------

    def _require_study(self, name: str) -> _Step[None]:
        if name in self._known_studies:
            return
        doc = yield _Call("studies", "find_one", ({"_id": name}, {"_id": 1}))
        if doc is None:
            raise self._no_study(name)
        self._known_studies.add(name)

    async def _create_study(self, record: StudyRecord) -> StudyRecord:
        return await self._run(self._insert_study(record))

    def _insert_study(self, record: StudyRecord) -> _Step[StudyRecord]:
        doc = {
            "_id": record.name,
            "fingerprint": record.fingerprint,
            "space": to_json(record.space, "space description"),
            "seed": encode_big_int(record.seed),
            "created_at": record.created_at,
        }
        try:
            yield _Call("studies", "insert_one", (doc,))
        except DuplicateKeyError:
            existing = yield _Call("studies", "find_one", ({"_id": record.name},))
            if existing is None:  # deleted in between: try again from scratch
                return (yield from self._insert_study(record))
            record = _study(existing)
        self._known_studies.add(record.name)
        return record

    async def _get_study(self, name: str) -> StudyRecord | None:
        return await self._run(self._find_study(name))

    def _find_study(self, name: str) -> _Step[StudyRecord | None]:
        doc = yield _Call("studies", "find_one", ({"_id": name},))
        if doc is None:
            return None
        self._known_studies.add(name)
        return _study(doc)

    async def _list_studies(self) -> list[StudyRecord]:
        docs = await self._run(_one(_Call("studies", "find", ({},), {"sort": [("_id", 1)]})))
        return [_study(doc) for doc in docs]

    async def _delete_study(self, name: str) -> bool:
        return await self._run(self._remove_study(name))

    def _remove_study(self, name: str) -> _Step[bool]:
        yield _Call("trials", "delete_many", ({"study": name},))
        deleted = yield _Call("studies", "delete_one", ({"_id": name},))
        self._known_studies.discard(name)
        self._highest_tid.pop(name, None)
        self._released.pop(name, None)
        # A creator that read the study before it went may still have added a trial.
        yield _Call("trials", "delete_many", ({"study": name},))
        return bool(deleted.deleted_count)

    # -- sequence numbers --------------------------------------------------------------------

    def _stamp(self, docs: Sequence[Mapping[str, Any]]) -> _Step[list[int]]:
        """Give each freshly written (unstamped) document the next seq; returns them."""
        if not docs:
            return []
        count = len(docs)
        while True:
            try:
                counter = yield _Call(
                    "counters",
                    "find_one_and_update",
                    ({"_id": _SEQ_ID}, {"$inc": {"value": count}}),
                    {"upsert": True, "return_document": ReturnDocument.AFTER},
                )
                break
            except DuplicateKeyError:
                continue  # two first-ever upserts raced; the counter exists now
        first = int(counter["value"]) - count + 1
        seqs = list(range(first, first + count))
        updates = [
            ({"_id": doc["_id"]}, _set_if({"$eq": ["$op", doc["op"]]}, {"seq": seq}))
            for doc, seq in zip(docs, seqs)
        ]
        if count == 1:
            yield _Call("trials", "update_one", updates[0])
        else:
            requests = [UpdateOne(query, update) for query, update in updates]
            yield _Call("trials", "bulk_write", (requests,), {"ordered": False})
        return seqs

    def _saw_tid(self, study: str, tid: int) -> None:
        if tid > self._highest_tid.get(study, -1):
            self._highest_tid[study] = tid

    # -- creating trials ---------------------------------------------------------------------

    def _budgeted_below(self, study: str, tid: int, budget: int) -> _Step[int | None]:
        """The tid at which a trial may be created within ``budget`` (``tid`` normally), or
        None when the budget is spent.

        Trials 0..tid-1 exist unless a server crash lost one (a gap), so the study
        normally holds ``tid`` minus the trials that gave up their slot (CANCELLED: few,
        counted through the index); that count only grows, so an earlier count errs on
        the safe side and is read again only when it would refuse the trial. Before
        refusing, the trials that really exist are counted: if a write was lost, the
        lowest missing tid is reused, so the study still reaches its budget exactly.
        """
        released = self._released.get(study)
        if released is None or tid - released >= budget:
            released = yield from self._count_released(study)
            self._released[study] = released
        if tid - released < budget:
            return tid
        existing = yield _Call("trials", "count_documents", ({"study": study},))
        if existing >= tid or existing - released >= budget:
            return None
        docs = yield _Call(
            "trials", "find", ({"study": study}, {"tid": 1, "_id": 0}), {"sort": [("tid", 1)]}
        )
        present = {int(doc["tid"]) for doc in docs}
        return next(t for t in range(tid + 1) if t not in present)

    def _insert_trial(
        self,
        study: str,
        assignment: Mapping[str, int | float],
        state: TrialState,
        *,
        budget: int | None,
        worker: str | None = None,
        lease: float | None = None,
        seed: int | None = None,
        retry_of: int | None = None,
    ) -> _Step[Trial | None]:
        """Insert a trial with the next dense tid if the budget allows (None if not).

        A retry (``retry_of`` set) ignores the budget: it takes over the reaped trial's
        slot. It returns None if that trial's retry already exists.
        """
        collisions = 0
        encoded = _encode_assignment(assignment)
        # ``known`` is a tid known to be committed (so are all lower ones but lost
        # writes: tids are inserted in order). Starting from the highest one this storage
        # has seen saves reading the highest tid while it is current; a collision reads
        # it again.
        known = self._highest_tid.get(study)
        while True:
            if known is None:
                top = yield _Call(
                    "trials",
                    "find_one",
                    ({"study": study},),
                    {"sort": [("tid", -1)], "projection": {"tid": 1}},
                )
                known = -1 if top is None else int(top["tid"])
            tid = known + 1
            if budget is not None:
                allowed = yield from self._budgeted_below(study, tid, budget)
                if allowed is None:
                    return None
                tid = allowed
            now = time.time()
            running = state is TrialState.RUNNING
            doc: dict[str, Any] = {
                "_id": ObjectId(),
                "study": study,
                "tid": tid,
                "state": int(state),
                "assignment": encoded,
                "loss": None,
                "result": None,
                "error": None,
                "created_at": now,
                "started_at": now if running else None,
                "finished_at": None,
                "lease_expires_at": now + lease if running and lease is not None else None,
                "worker": worker if running else None,
                "seed": encode_big_int(seed),
                "retry_of": retry_of,
                "seq": None,
                "budgeted": True,
                "op": _token(),
            }
            attempt_started = time.monotonic()
            try:
                yield _Call(
                    "trials",
                    "insert_one",
                    (doc,),
                    recover=_Call("trials", "find_one", ({"_id": doc["_id"]},)),
                )
            except DuplicateKeyError as exc:
                if retry_of is not None and _is_retry_duplicate(exc):
                    return None
                # Someone committed ``tid``: try the next one. The other losers of this
                # round would try it at the same moment, so wait a random part of a
                # round trip first; after a few collisions read the highest tid afresh.
                self._saw_tid(study, tid)
                collisions += 1
                known = None if collisions % 4 == 0 else max(tid, known)
                round_trip = time.monotonic() - attempt_started
                yield _Sleep(random.uniform(0, min(round_trip * min(collisions, 4), 1.0)))
                continue
            self._saw_tid(study, tid)
            [seq] = yield from self._stamp([doc])
            return _trial(doc, seq=seq)

    async def _enqueue(
        self, study: str, new: Sequence[NewTrial], *, budget: int | None
    ) -> list[Trial]:
        return await self._run(self._insert_many(study, new, TrialState.QUEUED, budget))

    def _insert_many(
        self,
        study: str,
        new: Sequence[NewTrial],
        state: TrialState,
        budget: int | None,
        worker: str | None = None,
        lease: float | None = None,
    ) -> _Step[list[Trial]]:
        yield from self._require_study(study)
        created: list[Trial] = []
        for n in new:
            trial = yield from self._insert_trial(
                study, n.assignment, state, budget=budget, worker=worker, lease=lease, seed=n.seed
            )
            if trial is None:
                break
            created.append(trial)
        return created

    # -- changing trials ---------------------------------------------------------------------

    async def _claim(self, study: str, *, worker: str, lease: float, limit: int) -> list[Trial]:
        return await self._run(self._claim_many(study, worker, lease, limit))

    def _claim_many(self, study: str, worker: str, lease: float, limit: int) -> _Step[list[Trial]]:
        yield from self._require_study(study)
        claimed: list[Trial] = []
        while len(claimed) < limit:
            now = time.time()
            op = _token()
            doc = yield _Call(
                "trials",
                "find_one_and_update",
                (
                    {"study": study, "state": _QUEUED},
                    {
                        "$set": {
                            "state": _RUNNING,
                            "started_at": now,
                            "lease_expires_at": now + lease,
                            "worker": worker,
                            "seq": None,
                            "op": op,
                        }
                    },
                ),
                {"sort": [("tid", 1)], "return_document": ReturnDocument.AFTER},
                recover=_Call("trials", "find_one", ({"study": study, "op": op},)),
            )
            if doc is None:
                break
            [seq] = yield from self._stamp([doc])
            claimed.append(_trial(doc, seq=seq))
        return claimed

    async def _batch(self, study: str, request: BatchRequest) -> Batch:
        return await self._run(self._finish_and_create(study, request))

    def _finish_and_create(self, study: str, request: BatchRequest) -> _Step[Batch]:
        yield from self._require_study(study)
        finished: list[Trial | TrialError] = []
        for finish in request.finishes:
            finished.append((yield from self._finish(study, finish, request.worker)))
        created = yield from self._insert_many(
            study,
            request.new,
            TrialState.RUNNING,
            request.budget,
            worker=request.worker,
            lease=request.lease,
        )
        since = request.since
        changed = [] if since is None else (yield from self._read_since(study, since))
        return Batch(finished, created, changed)

    def _finish(self, study: str, finish: StoredFinish, worker: str) -> _Step[Trial | TrialError]:
        op = _token()
        fields = finish.changes(time.time())
        fields["state"] = int(finish.state)
        fields["result"] = finish.result_json
        # Retrying this after a lost acknowledgement is harmless: the first attempt's
        # token in the returned document shows that it applied.
        doc = yield _Call(
            "trials",
            "find_one_and_update",
            (
                {"study": study, "tid": finish.tid},
                _set_if(
                    _held_by(worker),
                    {
                        **fields,
                        "budgeted": finish.state is not TrialState.CANCELLED,
                        "seq": None,
                        "op": op,
                    },
                ),
            ),
            {"return_document": ReturnDocument.AFTER},
        )
        if doc is None and finish.tid <= self._highest_tid.get(study, -1):
            yield from self._record_lost(study, finish.tid, worker)
        if doc is None or doc.get("op") != op:
            refused = refusal(
                study,
                finish.tid,
                worker,
                None if doc is None else TrialState(doc["state"]),
                None if doc is None else doc.get("worker"),
            )
            assert refused is not None
            return refused
        [seq] = yield from self._stamp([doc])
        return _trial(doc, seq=seq)

    async def _report(self, study: str, tid: int, worker: str, step: int, value: float) -> Trial:
        return await self._run(self._record_report(study, tid, worker, step, value))

    def _record_report(
        self, study: str, tid: int, worker: str, step: int, value: float
    ) -> _Step[Trial]:
        yield from self._require_study(study)
        op = _token()
        field = f"intermediate.{step}"
        # A step already reported keeps its first value. Retrying after a lost
        # acknowledgement is harmless, as for `_finish`.
        unset = {"$eq": [{"$type": f"${field}"}, "missing"]}
        doc = yield _Call(
            "trials",
            "find_one_and_update",
            (
                {"study": study, "tid": tid},
                _set_if(
                    {"$and": [_held_by(worker), unset]},
                    {field: reported_value(value), "seq": None, "op": op},
                ),
            ),
            {"return_document": ReturnDocument.AFTER},
        )
        if doc is None or doc.get("op") != op:
            current = None if doc is None else (yield from self._as_read(doc))
            return unreported(study, tid, worker, current)
        [seq] = yield from self._stamp([doc])
        return _trial(doc, seq=seq)

    def _record_lost(self, study: str, tid: int, worker: str) -> _Step[None]:
        """Fill the place of trial ``tid``, which existed but is gone (a write a crashed
        server lost), with a CANCELLED record that holds no budget slot: tids stay dense,
        every reader learns the trial ended, and the budget counts what exists."""
        now = time.time()
        doc = {
            "_id": ObjectId(),
            "study": study,
            "tid": tid,
            "state": _CANCELLED,
            "assignment": [],
            "created_at": now,
            "finished_at": now,
            "error": f"lost by the storage (a server crash?); noticed by worker {worker}",
            "seq": None,
            "budgeted": False,
            "op": _token(),
        }
        try:
            yield _Call("trials", "insert_one", (doc,))
        except DuplicateKeyError:
            return  # another worker filled the place first
        self._released.pop(study, None)
        yield from self._stamp([doc])

    async def _renew(self, study: str, tids: list[int], *, worker: str, lease: float) -> list[int]:
        return await self._run(self._renew_many(study, tids, worker, lease))

    def _renew_many(
        self, study: str, tids: list[int], worker: str, lease: float
    ) -> _Step[list[int]]:
        yield from self._require_study(study)
        if not tids:
            return []
        op = _token()
        yield _Call(
            "trials",
            "update_many",
            (
                {"study": study, "state": _RUNNING, "tid": {"$in": tids}},
                _set_if(
                    {"$eq": ["$worker", {"$literal": worker}]},
                    {"lease_expires_at": time.time() + lease, "seq": None, "op": op},
                ),
            ),
        )
        current = yield _Call(
            "trials",
            "find",
            (
                {"study": study, "tid": {"$in": tids}},
                {"_id": 1, "op": 1, "tid": 1, "state": 1, "worker": 1},
            ),
        )
        renewed = [doc for doc in current if doc.get("op") == op]
        yield from self._stamp(sorted(renewed, key=lambda doc: doc["tid"]))
        held = {int(doc["tid"]) for doc in renewed}
        found = {int(doc["tid"]): doc for doc in current}
        return [
            tid
            for tid in tids
            if tid not in held
            and (
                tid not in found
                or lease_lost(TrialState(found[tid]["state"]), found[tid].get("worker"), worker)
            )
        ]

    async def _reap(self, study: str) -> list[Trial]:
        return await self._run(self._reap_all(study))

    def _reap_all(self, study: str) -> _Step[list[Trial]]:
        """Reap, and finish reaps interrupted by a crash, and stamp changes a crashed
        writer left without a seq."""
        yield from self._require_study(study)
        now = time.time()
        # Narrow indexed queries (RUNNING, CANCELLED, unstamped); the rest is filtered here.
        docs = []
        for query in (
            {"study": study, "state": _RUNNING},
            {"study": study, "state": _CANCELLED},
            {"study": study, "seq": None},
        ):
            docs.extend((yield _Call("trials", "find", (query,), {"sort": [("tid", 1)]})))
        reaped: list[Trial] = []
        unstamped: list[Mapping[str, Any]] = []
        seen: set[Any] = set()
        for doc in docs:
            if doc["_id"] in seen:
                continue
            seen.add(doc["_id"])
            state = doc["state"]
            expires = doc.get("lease_expires_at")
            if state == _RUNNING and expires is not None and expires < now:
                trial = yield from self._reap_one(doc, now)
                if trial is not None:
                    reaped.append(trial)
                continue
            if state == _CANCELLED and doc.get("budgeted"):
                yield from self._requeue(doc)
                continue
            if doc.get("seq") is None:
                unstamped.append(doc)
        yield from self._stamp(unstamped)
        return reaped

    def _reap_one(self, doc: Mapping[str, Any], now: float) -> _Step[Trial | None]:
        op = _token()
        requeue = requeues(_trial(doc))
        expired = {
            "$and": [
                {"$eq": ["$state", _RUNNING]},
                {"$gt": ["$lease_expires_at", None]},
                {"$lt": ["$lease_expires_at", now]},
            ]
        }
        fields = reap_changes(doc.get("worker"), now)
        fields["state"] = int(fields["state"])
        cancelled = yield _Call(
            "trials",
            "find_one_and_update",
            (
                {"_id": doc["_id"]},
                _set_if(
                    expired,
                    # The slot passes to the retry once it is queued.
                    {**fields, "budgeted": requeue, "seq": None, "op": op},
                ),
            ),
            {"return_document": ReturnDocument.AFTER},
        )
        if cancelled is None or cancelled.get("op") != op:
            return None  # renewed, finished or reaped by someone else meanwhile
        [seq] = yield from self._stamp([cancelled])
        if requeue:
            yield from self._requeue(cancelled)
        return _trial(cancelled, seq=seq)

    def _requeue(self, doc: Mapping[str, Any]) -> _Step[None]:
        """Queue the retry of a reaped trial (once), then release the reaped trial's slot."""
        yield from self._insert_trial(
            doc["study"],
            dict(doc["assignment"]),
            TrialState.QUEUED,
            budget=None,
            seed=decode_big_int(doc.get("seed")),
            retry_of=int(doc["tid"]),
        )
        yield _Call("trials", "update_one", ({"_id": doc["_id"]}, {"$set": {"budgeted": False}}))

    # -- reading trials ----------------------------------------------------------------------

    async def _get_trial(self, study: str, tid: int) -> Trial | None:
        return await self._run(self._find_trial(study, tid))

    def _find_trial(self, study: str, tid: int) -> _Step[Trial | None]:
        yield from self._require_study(study)
        doc = yield _Call("trials", "find_one", ({"study": study, "tid": tid},))
        return None if doc is None else (yield from self._as_read(doc))

    def _as_read(self, doc: Mapping[str, Any]) -> _Step[Trial]:
        """The trial of a document just read; a change not stamped yet is reported with
        the counter's value, as `_read_since` does."""
        if doc.get("seq") is not None:
            return _trial(doc)
        counter = yield _Call("counters", "find_one", ({"_id": _SEQ_ID},))
        return _trial(doc, seq=0 if counter is None else int(counter["value"]))

    async def _trials_since(self, study: str, seq: int) -> list[Trial]:
        """A trial may be returned again by a later call (see the module docstring); pass
        the highest ``seq`` you have read, and apply records idempotently."""
        return await self._run(self._read_since(study, seq, check=True))

    def _read_since(self, study: str, since: int, *, check: bool = False) -> _Step[list[Trial]]:
        if check:
            yield from self._require_study(study)
        counter = yield _Call("counters", "find_one", ({"_id": _SEQ_ID},))
        high = 0 if counter is None else int(counter["value"])
        # Unstamped first: one stamped while we read it is then caught by the second query.
        unstamped = yield _Call("trials", "find", ({"study": study, "seq": None},))
        changed = yield _Call(
            "trials",
            "find",
            ({"study": study, "seq": {"$gt": since, "$lte": high}},),
            {"sort": [("seq", 1)]},
        )
        latest: dict[int, Trial] = {}
        for doc in [*unstamped, *changed]:
            stamped = doc.get("seq") is not None
            # The later read wins; a change not stamped yet is reported at ``high``.
            trial = _trial(doc) if stamped else _trial(doc, seq=max(high, since))
            self._saw_tid(study, trial.tid)
            latest.pop(trial.tid, None)
            latest[trial.tid] = trial
        return sorted(latest.values(), key=lambda trial: (trial.seq, trial.tid))

    async def _count(self, study: str, *, budgeted: bool) -> int:
        return await self._run(self._count_trials(study, budgeted))

    def _count_released(self, study: str) -> _Step[int]:
        """Trials that gave up their budget slot (CANCELLED, retry queued if any)."""
        # Read the (few) CANCELLED trials through the (study, state) index and count here.
        cancelled = yield _Call(
            "trials", "find", ({"study": study, "state": _CANCELLED}, {"budgeted": 1})
        )
        return sum(1 for doc in cancelled if not doc.get("budgeted"))

    def _count_trials(self, study: str, budgeted: bool) -> _Step[int]:
        yield from self._require_study(study)
        total = yield _Call("trials", "count_documents", ({"study": study},))
        if budgeted:
            total -= yield from self._count_released(study)
        return int(total)


def _one(call: _Call) -> _Step[Any]:
    """An operation of one driver call."""
    return (yield call)
