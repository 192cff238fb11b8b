"""Running a search to its end from blocking code, also inside a running event loop."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import sniffio

__all__ = ["run_blocking"]


def _inside_event_loop() -> bool:
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True


def run_blocking(function: Callable[[], Awaitable[None]], backend: str = "asyncio") -> None:
    """Run ``function`` in a new event loop and block until it ends (Hyperopt's calls block).

    Inside a running event loop (a Jupyter notebook runs cells in one) the new loop runs on
    a helper thread while this one waits, blocked: ``fmin`` there behaves as in a script.
    An interrupt (KeyboardInterrupt) while waiting cancels the helper's run, waits for it
    to record its trials as cancelled, and is raised.
    """
    if not _inside_event_loop():
        anyio.run(function, backend=backend)
        return
    started, finished = threading.Event(), threading.Event()
    handle: dict[str, Any] = {}

    async def cancellable() -> None:
        with anyio.CancelScope() as scope:
            handle["scope"], handle["token"] = scope, anyio.lowlevel.current_token()
            started.set()
            await function()

    def target() -> None:
        try:
            anyio.run(cancellable, backend=backend)
        except BaseException as exc:  # handed to the waiting thread, raised there
            handle["error"] = exc
        finally:
            started.set()
            finished.set()

    threading.Thread(target=target, name="asyncopt-blocking-run", daemon=True).start()
    try:
        # An event, not Thread.join: CPython's join, interrupted by KeyboardInterrupt,
        # can mark the still running thread as stopped, and a second join would not wait.
        finished.wait()
    except KeyboardInterrupt:
        started.wait()
        if "scope" in handle and not finished.is_set():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                anyio.from_thread.run_sync(handle["scope"].cancel, token=handle["token"])
        finished.wait()
        raise
    if "error" in handle:
        raise handle["error"]
