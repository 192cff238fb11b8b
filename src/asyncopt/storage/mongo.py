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
    Claims, outcomes, renewals and reaps are single-document updates. Their filters use
    only indexed equality (``_id``, or ``study`` and ``tid``) and carry the rest of the
    condition (state RUNNING, held by this worker, lease passed) in an update pipeline
    (``$cond``), so that even a server with a simple query planner finds the document
    through an index; the operation token written with the update tells whether it
    applied.

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
import json
import random
import secrets
import time
from collections.abc import Generator, Mapping, Sequence
from numbers import Integral
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.to_thread
import attrs

from asyncopt.errors import (
    AsyncoptError,
    LeaseLostError,
    StorageError,
    StorageUnavailableError,
    StorageURLError,
    StudyMismatchError,
    StudyNotFoundError,
    TrialNotFoundError,
    TrialStateError,
)
from asyncopt.storage.base import (
    StorageContext,
    StudyRecord,
    Trial,
    TrialState,
    checked_start,
    finishing_state,
)
from asyncopt.storage.urls import StorageURL

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


def _encode_int(value: int | None) -> int | str | None:
    # BSON integers are 64-bit; larger seeds are kept exactly as decimal strings.
    if value is None:
        return None
    value = int(value)
    return value if -_INT64 <= value < _INT64 else str(value)


def _decode_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _encode_number(value: Any) -> int | float:
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    return float(value)


def _encode_assignment(assignment: Mapping[str, int | float]) -> list[list[Any]]:
    # Pairs rather than a sub-document: labels may contain "." or start with "$".
    return [[str(label), _encode_number(value)] for label, value in assignment.items()]


def _encode_result(result: Mapping[str, Any] | None) -> str | None:
    if result is None:
        return None
    try:
        return json.dumps(dict(result))
    except (TypeError, ValueError) as exc:
        raise StorageError(f"a trial result must be JSON-serializable: {exc}") from None


def _trial(doc: Mapping[str, Any], *, seq: int | None = None) -> Trial:
    result = doc.get("result")
    return Trial(
        study=doc["study"],
        tid=int(doc["tid"]),
        state=TrialState(doc["state"]),
        assignment=dict(doc["assignment"]),
        loss=doc.get("loss"),
        result=None if result is None else json.loads(result),
        error=doc.get("error"),
        created_at=doc.get("created_at"),
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        lease_expires_at=doc.get("lease_expires_at"),
        worker=doc.get("worker"),
        seed=_decode_int(doc.get("seed")),
        retry_of=_decode_int(doc.get("retry_of")),
        seq=int(doc.get("seq") or 0) if seq is None else seq,
    )


def _study(doc: Mapping[str, Any]) -> StudyRecord:
    return StudyRecord(
        name=doc["_id"],
        fingerprint=doc["fingerprint"],
        space=json.loads(doc["space"]),
        seed=int(doc["seed"]),  # an int, or a decimal string beyond 64 bits
        created_at=float(doc["created_at"]),
    )


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


def _current_library() -> str:
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio depends on sniffio; without it, asyncio
        return "asyncio"
    return sniffio.current_async_library()


def _attempt(call: _Call, retry_timeout: float | None) -> _Step[Any]:
    """One call, retried with back-off while the connection is down (``retry_timeout``)."""
    delay = 0.05
    deadline = time.monotonic() + (retry_timeout or 0.0)
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
            # may come back (a replica set elects a new primary in seconds).
            if retry_timeout is None or time.monotonic() + delay > deadline:
                raise
            dropped = True
            yield _Sleep(delay)
            delay = min(delay * 2, 2.0)


def _with_retries(step: _Step[T], retry_timeout: float | None) -> _Step[T]:
    """The operation ``step`` with each of its calls made through `_attempt`.

    Duplicate-key errors go back to the operation, which decides what they mean.
    """
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                request = step.send(value) if error is None else step.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(request, _Sleep):
                yield request
                continue
            try:
                value = yield from _attempt(request, retry_timeout)
            except (DuplicateKeyError, BulkWriteError) as exc:
                error = exc
    finally:
        step.close()


def _target(database: Any, call: _Call) -> Any:
    return database[call.collection] if call.collection else database


class _AsyncDriver:
    """Runs operations with an `AsyncMongoClient` on the asyncio loop."""

    def __init__(self, database: Any) -> None:
        self.database = database

    async def run(self, step: _Step[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = step.send(value) if error is None else step.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(request, _Sleep):
                await anyio.sleep(request.seconds)
                continue
            target = _target(self.database, request)
            try:
                if request.method == "find":
                    cursor = target.find(*request.args, **request.kwargs)
                    value = await cursor.to_list(None)
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
            try:
                request = step.send(value) if error is None else step.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(request, _Sleep):
                _sleep_unless_cancelled(request.seconds)
                continue
            target = _target(self.database, request)
            try:
                if request.method == "find":
                    value = list(target.find(*request.args, **request.kwargs))
                else:
                    value = getattr(target, request.method)(*request.args, **request.kwargs)
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
    query = urlsplit(url.raw).query
    for option in filter(None, query.replace(";", "&").split("&")):
        try:
            split_options(option, validate=True, warn=False)
        except (ConfigurationError, ValueError, TypeError) as exc:
            name = option.partition("=")[0]
            raise StorageURLError(
                f"invalid option {name!r} in MongoDB URL {url.redacted}: {exc}"
            ) from None


def _default_client_options() -> dict[str, Any]:
    return {"appname": "asyncopt"}


class MongoStorage(StorageContext):
    """A `Storage` in a MongoDB database, shared by any number of processes and machines.

    Build it from a URL (``mongodb://[user:password@]host[:port][,host...]/database?options``
    or ``mongodb+srv://...``; the database defaults to ``asyncopt``) or from a ready client:
    ``MongoStorage(client=pymongo.MongoClient(...), database="tuning")``. A synchronous
    ``MongoClient`` works under asyncio and trio; an ``AsyncMongoClient`` only under
    asyncio. A client you pass is yours to close. URL options go to PyMongo unchanged
    (``serverSelectionTimeoutMS``, ``authSource``, ``replicaSet``, ``tls``...).

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
        self._retry_timeout = float(retry_timeout)
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
        """The URL with the password replaced by ``***`` (for a client: its seed hosts)."""
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

    def _scrub(self, text: str) -> str:
        password = self._url.password if self._url is not None else None
        if password:
            text = text.replace(password, "***")
        return text

    def _translate(self, exc: Exception) -> StorageError:
        where = self.url
        detail = self._scrub(str(exc))
        if isinstance(exc, ServerSelectionTimeoutError):
            return StorageUnavailableError(f"cannot reach MongoDB at {where}: {detail}")
        if isinstance(exc, AutoReconnect):
            return StorageUnavailableError(
                f"lost the connection to MongoDB at {where} and could not reconnect "
                f"within {self._retry_timeout:g} s: {detail}"
            )
        if isinstance(exc, ConfigurationError):
            return StorageURLError(f"bad MongoDB configuration for {where}: {detail}")
        if isinstance(exc, DuplicateKeyError):
            return StorageError(f"duplicate key in MongoDB at {where}: {detail}")
        if isinstance(exc, OperationFailure):
            if exc.code == _AUTH_FAILED:
                return StorageUnavailableError(
                    f"MongoDB at {where} refused the credentials (authentication failed)"
                )
            if exc.code == _UNAUTHORIZED:
                return StorageError(f"not authorized on MongoDB at {where}: {detail}")
            if exc.code in _TIMEOUT_CODES:
                return StorageUnavailableError(f"MongoDB at {where} timed out: {detail}")
        if isinstance(exc, BSONError):
            return StorageError(f"cannot encode a document for MongoDB at {where}: {detail}")
        return StorageError(f"MongoDB at {where} failed: {type(exc).__name__}: {detail}")

    def _make_client(self, asynchronous: bool) -> Any:
        assert self._url is not None
        options = _default_client_options()
        try:
            if asynchronous:
                return pymongo.AsyncMongoClient(self._url.raw, **options)
            return pymongo.MongoClient(self._url.raw, **options)
        except PyMongoError as exc:
            raise self._translate(exc) from None

    async def open(self) -> None:
        """Connect, check the server answers, and create the indexes. Idempotent.

        Raises `StorageUnavailableError` when the server cannot be reached within the
        URL's ``serverSelectionTimeoutMS`` or refuses the credentials.
        """
        if self._driver is not None:
            return
        library = _current_library()
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
            return await driver.run(_with_retries(step, self._retry_timeout if retry else None))
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
            raise StudyNotFoundError(f"no study named {name!r} in {self.url}")
        self._known_studies.add(name)

    async def create_study(
        self, name: str, *, fingerprint: str, space: Mapping[str, Any], seed: int
    ) -> StudyRecord:
        """Create the study, or load it if it exists; `StudyMismatchError` on another space."""
        return await self._run(self._create_study(name, fingerprint, space, seed))

    def _create_study(
        self, name: str, fingerprint: str, space: Mapping[str, Any], seed: int
    ) -> _Step[StudyRecord]:
        doc = {
            "_id": name,
            "fingerprint": fingerprint,
            "space": json.dumps(dict(space)),
            "seed": _encode_int(seed),
            "created_at": time.time(),
        }
        try:
            yield _Call("studies", "insert_one", (doc,))
        except DuplicateKeyError:
            existing = yield _Call("studies", "find_one", ({"_id": name},))
            if existing is None:  # deleted in between: try again from scratch
                return (yield from self._create_study(name, fingerprint, space, seed))
            record = _study(existing)
            if record.fingerprint != fingerprint:
                raise StudyMismatchError(
                    f"study {name!r} exists with a different space "
                    f"(fingerprint {record.fingerprint[:12]}, this space {fingerprint[:12]})"
                ) from None
            self._known_studies.add(name)
            return record
        self._known_studies.add(name)
        return _study(doc)

    async def get_study(self, name: str) -> StudyRecord:
        """The study; `StudyNotFoundError` if there is none."""
        return await self._run(self._get_study(name))

    def _get_study(self, name: str) -> _Step[StudyRecord]:
        doc = yield _Call("studies", "find_one", ({"_id": name},))
        if doc is None:
            raise StudyNotFoundError(f"no study named {name!r} in {self.url}")
        self._known_studies.add(name)
        return _study(doc)

    async def list_studies(self) -> list[StudyRecord]:
        """Every study, by name."""
        return await self._run(self._list_studies())

    def _list_studies(self) -> _Step[list[StudyRecord]]:
        docs = yield _Call("studies", "find", ({},), {"sort": [("_id", 1)]})
        return [_study(doc) for doc in docs]

    async def delete_study(self, name: str) -> None:
        """Delete the study and its trials; `StudyNotFoundError` if there is none."""
        await self._run(self._delete_study(name))

    def _delete_study(self, name: str) -> _Step[None]:
        yield _Call("trials", "delete_many", ({"study": name},))
        deleted = yield _Call("studies", "delete_one", ({"_id": name},))
        self._known_studies.discard(name)
        self._highest_tid.pop(name, None)
        self._released.pop(name, None)
        # A creator that read the study before it went may still have added a trial.
        yield _Call("trials", "delete_many", ({"study": name},))
        if deleted.deleted_count == 0:
            raise StudyNotFoundError(f"no study named {name!r} in {self.url}")

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
        # ``known`` is a tid known to be committed (so are all lower ones: tids are dense
        # and inserted in order). Starting from the highest one this storage has seen
        # saves reading the highest tid while it is current; a collision reads it again.
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
                # Trials 0..tid-1 exist, so the budgeted ones are tid minus those that
                # gave up their slot (CANCELLED: few, and counted through the index).
                # That count only grows, so an earlier count errs on the safe side; it
                # is read again only when it would refuse the trial.
                released = self._released.get(study)
                if released is None or tid - released >= budget:
                    released = yield from self._count_released(study)
                    self._released[study] = released
                if tid - released >= budget:
                    return None
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
                "seed": _encode_int(seed),
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
                known = None if collisions % 4 == 0 else tid
                round_trip = time.monotonic() - attempt_started
                yield _Sleep(random.uniform(0, min(round_trip * min(collisions, 4), 1.0)))
                continue
            self._saw_tid(study, tid)
            [seq] = yield from self._stamp([doc])
            return _trial(doc, seq=seq)

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
        return await self._run(self._create_trial(study, assignment, budget, worker, lease, seed))

    def _create_trial(
        self,
        study: str,
        assignment: Mapping[str, int | float],
        budget: int | None,
        worker: str,
        lease: float,
        seed: int | None,
    ) -> _Step[Trial | None]:
        yield from self._require_study(study)
        return (
            yield from self._insert_trial(
                study,
                assignment,
                TrialState.RUNNING,
                budget=budget,
                worker=worker,
                lease=lease,
                seed=seed,
            )
        )

    async def enqueue_trials(
        self,
        study: str,
        assignments: Sequence[Mapping[str, int | float]],
        *,
        budget: int | None,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Trial]:
        """Add QUEUED trials, in order, each only if the budget allows it."""
        return await self._run(self._enqueue(study, list(assignments), budget, seeds))

    def _enqueue(
        self,
        study: str,
        assignments: list[Mapping[str, int | float]],
        budget: int | None,
        seeds: Sequence[int | None] | None,
    ) -> _Step[list[Trial]]:
        yield from self._require_study(study)
        created: list[Trial] = []
        for i, assignment in enumerate(assignments):
            trial = yield from self._insert_trial(
                study,
                assignment,
                TrialState.QUEUED,
                budget=budget,
                seed=seeds[i] if seeds is not None else None,
            )
            if trial is None:
                break
            created.append(trial)
        return created

    # -- changing trials ---------------------------------------------------------------------

    async def claim_trial(self, study: str, *, worker: str, lease: float) -> Trial | None:
        """Atomically move the lowest-tid QUEUED trial to RUNNING for ``worker``, or None."""
        return await self._run(self._claim(study, worker, lease))

    def _claim(self, study: str, worker: str, lease: float) -> _Step[Trial | None]:
        yield from self._require_study(study)
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
            return None
        [seq] = yield from self._stamp([doc])
        return _trial(doc, seq=seq)

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

        Raises `TrialNotFoundError`, `TrialStateError` (not RUNNING) or `LeaseLostError`
        (held by another worker). A retry after a lost acknowledgement is recognised and
        returns the recorded trial.
        """
        state = finishing_state(state)
        encoded = _encode_result(result)
        started_at = checked_start(started_at)
        return await self._run(
            self._finish(study, tid, worker, state, loss, encoded, error, started_at)
        )

    def _finish(
        self,
        study: str,
        tid: int,
        worker: str,
        state: TrialState,
        loss: float | None,
        result: str | None,
        error: str | None,
        started_at: float | None,
    ) -> _Step[Trial]:
        yield from self._require_study(study)
        op = _token()
        # Retrying this after a lost acknowledgement is harmless: the first attempt's
        # token in the returned document shows that it applied.
        doc = yield _Call(
            "trials",
            "find_one_and_update",
            (
                {"study": study, "tid": tid},
                _set_if(
                    _held_by(worker),
                    {
                        "state": int(state),
                        "loss": None if loss is None else float(loss),
                        "result": result,
                        "error": error,
                        **({} if started_at is None else {"started_at": started_at}),
                        "finished_at": time.time(),
                        "lease_expires_at": None,
                        "budgeted": state is not TrialState.CANCELLED,
                        "seq": None,
                        "op": op,
                    },
                ),
            ),
            {"return_document": ReturnDocument.AFTER},
        )
        if doc is None:
            raise TrialNotFoundError(f"study {study!r} has no trial {tid}")
        if doc.get("op") != op:
            found = TrialState(doc["state"])
            if found is not TrialState.RUNNING:
                raise TrialStateError(
                    f"trial {tid} of study {study!r} is {found.name}, not RUNNING; "
                    "it cannot be finished"
                )
            raise LeaseLostError(
                f"trial {tid} of study {study!r} is held by another worker ({doc['worker']})"
            )
        [seq] = yield from self._stamp([doc])
        return _trial(doc, seq=seq)

    async def renew_leases(
        self, study: str, tids: Sequence[int], *, worker: str, lease: float
    ) -> list[int]:
        """Extend the leases of ``worker``'s RUNNING trials; returns the tids it no longer holds."""
        return await self._run(self._renew(study, list(tids), worker, lease))

    def _renew(self, study: str, tids: list[int], worker: str, lease: float) -> _Step[list[int]]:
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
            ({"study": study, "tid": {"$in": tids}}, {"_id": 1, "op": 1, "tid": 1}),
        )
        renewed = [doc for doc in current if doc.get("op") == op]
        yield from self._stamp(sorted(renewed, key=lambda doc: doc["tid"]))
        held = {int(doc["tid"]) for doc in renewed}
        return [tid for tid in tids if tid not in held]

    async def reap_expired(self, study: str) -> list[Trial]:
        """Mark CANCELLED every RUNNING trial whose lease has passed, queueing each retry once.

        Also finishes reaps interrupted by a crash and stamps changes a crashed writer
        left without a seq.
        """
        return await self._run(self._reap(study))

    def _reap(self, study: str) -> _Step[list[Trial]]:
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
        requeue = doc.get("retry_of") is None
        expired = {
            "$and": [
                {"$eq": ["$state", _RUNNING]},
                {"$gt": ["$lease_expires_at", None]},
                {"$lt": ["$lease_expires_at", now]},
            ]
        }
        cancelled = yield _Call(
            "trials",
            "find_one_and_update",
            (
                {"_id": doc["_id"]},
                _set_if(
                    expired,
                    {
                        "state": _CANCELLED,
                        "finished_at": now,
                        "lease_expires_at": None,
                        "error": f"lease expired: worker {doc.get('worker')} stopped renewing it",
                        # The slot passes to the retry once it is queued.
                        "budgeted": requeue,
                        "seq": None,
                        "op": op,
                    },
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
            seed=_decode_int(doc.get("seed")),
            retry_of=int(doc["tid"]),
        )
        yield _Call("trials", "update_one", ({"_id": doc["_id"]}, {"$set": {"budgeted": False}}))

    # -- reading trials ----------------------------------------------------------------------

    async def get_trial(self, study: str, tid: int) -> Trial:
        """One trial; `TrialNotFoundError` if there is none."""
        return await self._run(self._get_trial(study, tid))

    def _get_trial(self, study: str, tid: int) -> _Step[Trial]:
        yield from self._require_study(study)
        doc = yield _Call("trials", "find_one", ({"study": study, "tid": tid},))
        if doc is None:
            raise TrialNotFoundError(f"study {study!r} has no trial {tid}")
        return _trial(doc)

    async def trials_since(self, study: str, seq: int = 0) -> list[Trial]:
        """Trials changed after ``seq`` (all with 0), ordered by ``seq``.

        A trial may be returned again by a later call (see the module docstring); pass
        the highest ``seq`` you have read, and apply records idempotently.
        """
        return await self._run(self._trials_since(study, seq))

    def _trials_since(self, study: str, since: int) -> _Step[list[Trial]]:
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
            tid = int(doc["tid"])
            self._saw_tid(study, tid)
            # The later read wins; a change not stamped yet is reported at ``high``.
            latest.pop(tid, None)
            stamped = doc.get("seq") is not None
            latest[tid] = _trial(doc) if stamped else _trial(doc, seq=max(high, since))
        return sorted(latest.values(), key=lambda trial: (trial.seq, trial.tid))

    async def count_trials(self, study: str, *, budgeted: bool = True) -> int:
        """Number of budgeted trials (or of all trials with ``budgeted=False``)."""
        return await self._run(self._count(study, budgeted))

    def _count_released(self, study: str) -> _Step[int]:
        """Trials that gave up their budget slot (CANCELLED, retry queued if any)."""
        # Read the (few) CANCELLED trials through the (study, state) index and count here.
        cancelled = yield _Call(
            "trials", "find", ({"study": study, "state": _CANCELLED}, {"budgeted": 1})
        )
        return sum(1 for doc in cancelled if not doc.get("budgeted"))

    def _count(self, study: str, budgeted: bool) -> _Step[int]:
        yield from self._require_study(study)
        total = yield _Call("trials", "count_documents", ({"study": study},))
        if budgeted:
            total -= yield from self._count_released(study)
        return int(total)
