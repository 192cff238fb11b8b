"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import blockbuster_ctx

# The session's MongoDB server and a fresh database per test (tests/ is on sys.path).
from mongo_server import (  # noqa: F401
    flaky_proxy,
    mongodb_server_url,
    mongodb_url,
    restartable_server,
)
from postgres_server import postgres_server_url, postgres_url  # noqa: F401


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both anyio backends; trio is a test dependency, so its runs cannot vanish."""
    backend: str = request.param
    return backend


@pytest.fixture(autouse=True)
def no_blocking_calls_in_asyncopt(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an async test when asyncopt's own code blocks the event loop (asyncio only).

    blockbuster raises on blocking calls (time.sleep, file and socket I/O, ...) made from
    the loop's thread with an asyncopt frame on the stack; worker threads are not checked.
    """
    if "anyio_backend" not in request.fixturenames:
        yield
        return
    with blockbuster_ctx("asyncopt") as buster:
        # The progress bar draws on the terminal from the loop, by design.
        for function in buster.functions.values():
            function.can_block_in("asyncopt/progress.py", {"__init__", "start", "update", "close"})
            # PyMongo's async client stats /.dockerenv once per pool for its handshake.
            function.can_block_in("pymongo/pool_options.py", {"get_container_env_info"})
        yield
