"""Storage URLs and the scheme → backend registry.

A scheme resolves through backends registered with `register_backend`, then the
built-in ones, then the ``asyncopt.storages`` entry-point group (``scheme = module:factory``).
A factory takes a `StorageURL` and returns an unopened `Storage`.
"""

from __future__ import annotations

import difflib
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

__all__ = ["StorageURL", "known_schemes", "open_storage", "register_backend", "resolve_backend"]

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


def _redact(url: str) -> str:
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


@attrs.frozen(repr=False)
class StorageURL:
    """A parsed storage URL; the password is kept but never shown."""

    raw: str = attrs.field(repr=False)
    scheme: str
    username: str | None
    password: str | None = attrs.field(repr=False)
    host: str | None
    port: int | None
    path: str
    query: Mapping[str, str] = attrs.field(eq=False)

    @classmethod
    def parse(cls, url: str) -> StorageURL:
        """Parse ``scheme://[user[:password]@]host[:port]/path?query``."""
        if not isinstance(url, str):
            raise StorageURLError(f"a storage URL must be a string, got {type(url).__name__}")
        match = _SCHEME.match(url)
        if match is None:
            raise StorageURLError(
                f"{_redact(url)!r} is not a storage URL (expected scheme://..., "
                f"one of {', '.join(known_schemes())})"
            )
        try:
            parts = urlsplit(url)
            # A host list (mongodb://h1:1,h2:2/db) keeps its ports in ``host``.
            hosts = parts.netloc.rpartition("@")[2]
            port = None if "," in hosts else parts.port
        except ValueError as exc:
            hint = " (for an in-process storage use memory://)" if ":memory:" in url else ""
            raise StorageURLError(f"malformed storage URL {_redact(url)!r}: {exc}{hint}") from None
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return cls(
            raw=url,
            scheme=match.group(1).lower(),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            host=hosts.lower() if "," in hosts else parts.hostname,
            port=port,
            path=unquote(parts.path),
            query=query,
        )

    @property
    def redacted(self) -> str:
        """The URL with the password replaced by ``***``."""
        return _redact(self.raw)

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


def storage_from_url(url: str) -> Storage:
    """An unopened storage for ``url``."""
    parsed = StorageURL.parse(url)
    return resolve_backend(parsed.scheme)(parsed)


@asynccontextmanager
async def open_storage(storage: str | Storage = "memory://") -> AsyncIterator[Storage]:
    """Open a storage by URL (or take a `Storage` instance) for the ``async with`` block.

    A URL's storage is opened here and closed at the end of the block. An instance is
    opened if needed and left open for its owner (``memory://`` instances keep their data
    between calls this way). Unknown schemes raise `StorageURLError`.
    """
    if isinstance(storage, str):
        # Resolving may import a backend and scan entry points: file I/O, off the loop.
        instance = await anyio.to_thread.run_sync(storage_from_url, storage)
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
