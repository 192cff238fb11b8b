"""Storage URLs and the scheme → backend registry.

A scheme resolves through backends registered with `register_backend`, then the
built-in ones, then the ``asyncopt.storages`` entry-point group (``scheme = module:factory``).
A factory takes a `StorageURL` and returns an unopened `Storage`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import anyio.to_thread
import attrs

from asyncopt.errors import StorageURLError
from asyncopt.storage.base import Storage

__all__ = [
    "StorageURL",
    "known_schemes",
    "open_storage",
    "redact",
    "register_backend",
    "resolve_backend",
    "scrub",
]

StorageFactory = Callable[["StorageURL"], Storage]

_BUILTIN: dict[str, str] = {
    "memory": "asyncopt.storage.memory:MemoryStorage.from_url",
    "sqlite": "asyncopt.storage.sqlite:SQLiteStorage.from_url",
    "mongodb": "asyncopt.storage.mongo:MongoStorage.from_url",
    "mongodb+srv": "asyncopt.storage.mongo:MongoStorage.from_url",
    "postgresql": "asyncopt.storage.postgres:PostgresStorage.from_url",
    "postgres": "asyncopt.storage.postgres:PostgresStorage.from_url",
}
_EXTRAS = {
    "mongodb": "mongo",
    "mongodb+srv": "mongo",
    "postgresql": "postgres",
    "postgres": "postgres",
}
_REGISTERED: dict[str, StorageFactory] = {}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


# Query options whose value is a secret (matched in the lowercased option name).
_SECRET_WORDS = ("pass", "secret", "token", "key")


@attrs.frozen
class _Parts:
    scheme: str
    userinfo: str | None
    hosts: str
    path: str
    query: str


def _split(url: str) -> _Parts:
    """``scheme://[userinfo@]hosts[/path][?query]``, the user-info ending at the LAST ``@``.

    A password may hold unescaped ``/``, ``@`` or ``:``; an ``@`` inside the query options
    (after a ``?`` and an ``=``) does not end the user-info.
    """
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@")
    query_start = rest.find("?")
    while at != -1 and query_start != -1 and query_start < at and "=" in rest[query_start:at]:
        at = rest.rfind("@", 0, query_start)
    userinfo = rest[:at] if at != -1 else None
    location = rest[at + 1 :]
    location, _, query = location.partition("?")
    hosts, slash, path = location.partition("/")
    return _Parts(scheme, userinfo, hosts, slash + path, query)


def _is_secret(option: str) -> bool:
    name = option.lower()
    return any(word in name for word in _SECRET_WORDS)


def redact(url: str) -> str:
    """``url`` with the password and every secret query option replaced by ``***``.

    Parsed, not pattern-matched: the user-info ends at the last ``@`` (so a password with
    unescaped ``/`` or ``@`` is hidden whole), and an option whose name contains
    ``pass``, ``secret``, ``token`` or ``key`` has its value hidden.
    """
    if "://" not in url:
        return url
    parts = _split(url)
    shown = f"{parts.scheme}://"
    if parts.userinfo is not None:
        user, colon, _ = parts.userinfo.partition(":")
        shown += f"{user}:***@" if colon else f"{user}@"
    shown += parts.hosts + parts.path
    if parts.query:
        options = []
        for option in re.split("([&;])", parts.query):
            name, equals, value = option.partition("=")
            if equals and _is_secret(name):
                option = f"{name}=***"
            elif equals:
                option = f"{name}={_redact_properties(value)}"
            options.append(option)
        shown += "?" + "".join(options)
    return shown


def _properties(value: str) -> list[tuple[str, str]]:
    """The ``KEY:value`` pairs of an option like ``authMechanismProperties``."""
    pairs = []
    for item in unquote(value).split(","):
        key, colon, inner = item.partition(":")
        if colon:
            pairs.append((key, inner))
    return pairs


def _redact_properties(value: str) -> str:
    """``value`` with the secret ``KEY:value`` pairs (``AWS_SESSION_TOKEN:...``) hidden."""
    secret = [inner for key, inner in _properties(value) if _is_secret(key) and inner]
    if not secret:
        return value
    return ",".join(
        f"{key}:***" if colon and _is_secret(key) else item
        for item in unquote(value).split(",")
        for key, colon, _ in [item.partition(":")]
    )


def secrets_of(url: str) -> list[str]:
    """The secret parts of ``url`` (password, secret option values), raw and unescaped,
    longest first: what `scrub` removes from a driver's messages."""
    if "://" not in url:
        return []
    parts = _split(url)
    found = []
    if parts.userinfo is not None and ":" in parts.userinfo:
        found.append(parts.userinfo.partition(":")[2])
    for name, value in parse_qsl(parts.query.replace(";", "&"), keep_blank_values=True):
        if _is_secret(name):
            found.append(value)
    for option in re.split("[&;]", parts.query):
        name, _, value = option.partition("=")
        if _is_secret(name):
            found.append(value)
        found += [inner for key, inner in _properties(value) if _is_secret(key)]
    found += [unquote(secret) for secret in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with the URL's secrets replaced by ``***``."""
    text = text.replace(url, redact(url))
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


@attrs.frozen(repr=False)
class StorageURL:
    """A parsed storage URL; the password and secret options are kept but never shown.

    ``read_only`` asks the backend to open the storage for reading only (see
    `open_storage`).
    """

    raw: str = attrs.field(repr=False)
    scheme: str
    username: str | None
    password: str | None = attrs.field(repr=False)
    host: str | None
    port: int | None
    path: str
    query: Mapping[str, str] = attrs.field(eq=False, repr=False)
    read_only: bool = False

    @classmethod
    def parse(cls, url: str, *, read_only: bool = False) -> StorageURL:
        """Parse ``scheme://[user[:password]@]host[:port]/path?query``."""
        if not isinstance(url, str):
            raise StorageURLError(f"a storage URL must be a string, got {type(url).__name__}")
        match = _SCHEME.match(url)
        if match is None:
            raise StorageURLError(
                f"{redact(url)!r} is not a storage URL (expected scheme://..., "
                f"one of {', '.join(known_schemes())})"
            )
        parts = _split(url)
        username = password = None
        if parts.userinfo is not None:
            user, colon, secret = parts.userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        hosts = parts.hosts
        host: str | None = hosts.lower() or None
        port = None
        # A host list (mongodb://h1:1,h2:2/db) keeps its ports in ``host``.
        if "," not in hosts:
            try:
                split = urlsplit(f"//{hosts}")
                host, port = split.hostname, split.port
            except ValueError as exc:
                hint = " (for an in-process storage use memory://)" if ":memory:" in url else ""
                raise StorageURLError(
                    f"malformed storage URL {redact(url)!r}: {exc}{hint}"
                ) from None
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return cls(
            raw=url,
            scheme=match.group(1).lower(),
            username=username,
            password=password,
            host=host,
            port=port,
            path=unquote(parts.path),
            query=query,
            read_only=read_only,
        )

    @property
    def raw_query(self) -> str:
        """The query string as written (secrets included: never show it)."""
        return _split(self.raw).query

    @property
    def redacted(self) -> str:
        """The URL with the password and secret options replaced by ``***``."""
        return redact(self.raw)

    def scrub(self, text: str) -> str:
        """``text`` with this URL's secrets replaced by ``***``."""
        return scrub(text, self.raw)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"StorageURL({self.redacted!r})"


def register_backend(scheme: str, factory: StorageFactory) -> None:
    """Make ``scheme://`` URLs open storages built by ``factory``."""
    _REGISTERED[scheme.lower()] = factory


def known_schemes() -> list[str]:
    """Every scheme that resolves to a backend."""
    schemes = set(_REGISTERED) | set(_BUILTIN)
    schemes.update(ep.name for ep in entry_points(group="asyncopt.storages"))
    return sorted(schemes)


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_backend(scheme: str) -> StorageFactory:
    """The factory for ``scheme``; `StorageURLError` with suggestions if unknown."""
    scheme = scheme.lower()
    if scheme in _REGISTERED:
        return _REGISTERED[scheme]
    if scheme in _BUILTIN:
        try:
            factory: StorageFactory = _load(_BUILTIN[scheme])
        except ImportError as exc:
            extra = _EXTRAS.get(scheme)
            hint = f"; install it with `pip install asyncopt[{extra}]`" if extra else ""
            raise StorageURLError(
                f"the {scheme}:// storage needs a driver that is not installed ({exc}){hint}"
            ) from None
        return factory
    for ep in entry_points(group="asyncopt.storages"):
        if ep.name.lower() == scheme:
            loaded: StorageFactory = ep.load()
            return loaded
    known = known_schemes()
    close = difflib.get_close_matches(scheme, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise StorageURLError(f"unknown storage scheme {scheme!r} (known: {', '.join(known)}){hint}")


def storage_from_url(url: str, *, read_only: bool = False) -> Storage:
    """An unopened storage for ``url`` (for reading only with ``read_only``)."""
    parsed = StorageURL.parse(url, read_only=read_only)
    return resolve_backend(parsed.scheme)(parsed)


@asynccontextmanager
async def open_storage(
    storage: str | Storage = "memory://", *, read_only: bool = False
) -> AsyncIterator[Storage]:
    """Open a storage by URL (or take a `Storage` instance) for the ``async with`` block.

    A URL's storage is opened here and closed at the end of the block. An instance is
    opened if needed and left open for its owner (``memory://`` instances keep their data
    between calls this way). With ``read_only``, a backend that can opens the storage for
    reading only (SQLite: the file must exist, nothing is created or written, a read-only
    file system is fine).

    Args:
        storage: a URL (``memory://``, ``sqlite:///file.db``, ``mongodb://host/db``,
            ``postgresql://user:password@host/db``) or a `Storage` instance.
        read_only: open for reading only where the backend can.

    Raises:
        StorageURLError: an unknown scheme (with the known ones) or a malformed URL.
        StorageError: the storage cannot be opened (the message names it, without
            its password).
    """
    if isinstance(storage, str):
        # Resolving may import a backend and scan entry points: file I/O, off the loop.
        instance = await anyio.to_thread.run_sync(
            functools.partial(storage_from_url, storage, read_only=read_only)
        )
        await instance.open()
        try:
            yield instance
        finally:
            # Close even when the caller was cancelled, so files and sockets are released.
            with anyio.CancelScope(shield=True):
                await instance.aclose()
    else:
        if not isinstance(storage, Storage):
            raise StorageURLError(
                f"storage must be a URL string or a Storage, got {type(storage).__name__}"
            )
        await storage.open()
        yield storage
