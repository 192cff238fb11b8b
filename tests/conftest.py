"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest

# The session's MongoDB server and a fresh database per test (tests/ is on sys.path).
from mongo_server import flaky_proxy, mongodb_server_url, mongodb_url  # noqa: F401


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
