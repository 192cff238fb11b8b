"""Guard: the trio half of the suite must really run."""

import importlib.util

import anyio
import anyio.lowlevel
import pytest


def test_trio_is_installed() -> None:
    assert importlib.util.find_spec("trio") is not None, "trio is a test dependency"


@pytest.mark.anyio
async def test_both_backends_run(anyio_backend: str) -> None:
    import sniffio

    assert sniffio.current_async_library() == anyio_backend
    await anyio.lowlevel.checkpoint()
