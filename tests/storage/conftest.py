"""The storage fixtures the conformance suite runs against, one parameter per backend.

To add a backend, add an entry to `BACKENDS` (and to `SHARED_BACKENDS` if separate OS
processes can share it): a function of the pytest request and a temporary directory that
returns either a URL (every `connect` opens a new connection to the same storage) or a
`Storage` instance (every `connect` hands back that same instance).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from asyncopt.storage.base import Storage
from asyncopt.storage.memory import MemoryStorage
from asyncopt.storage.urls import open_storage

Target = str | Storage
Connect = Callable[[], AbstractAsyncContextManager[Storage]]


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return MemoryStorage()


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return f"sqlite:///{tmp_path / 'conformance.db'}"


def _mongodb(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    # A fresh database on the session's test server (tests/mongo_server.py).
    url: str = request.getfixturevalue("mongodb_url")
    return url


def _postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    # A fresh schema on the session's test server (tests/postgres_server.py).
    url: str = request.getfixturevalue("postgres_url")
    return url


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Target]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "mongodb": _mongodb,
    "postgresql": _postgresql,
}
"""Every backend the conformance suite runs against: name → storage target factory."""

SHARED_BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite": lambda request, tmp_path: f"sqlite:///{tmp_path / 'shared.db'}",
    "mongodb": lambda request, tmp_path: _mongodb(request, tmp_path),  # type: ignore[return-value]
    "postgresql": lambda request, tmp_path: _postgresql(request, tmp_path),  # type: ignore[return-value]
}
"""Backends several OS processes can share: name → URL factory (multi-process, crash tests)."""


@pytest.fixture(params=list(BACKENDS))
def storage_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """A fresh, empty storage of each backend, as a URL or an instance."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def connect(storage_target: Target) -> Connect:
    """Opens another connection to the test's storage (the same instance for memory)."""
    return lambda: open_storage(storage_target)


@pytest.fixture
async def storage(connect: Connect) -> AsyncIterator[Storage]:
    """An open connection to a fresh, empty storage of each backend."""
    async with connect() as opened:
        yield opened


@pytest.fixture(params=list(SHARED_BACKENDS))
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a fresh storage that separate processes can share."""
    return SHARED_BACKENDS[request.param](request, tmp_path)
