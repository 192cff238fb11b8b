"""The two ways the SQLite backend reaches its connection: one worker thread either way.

Under asyncio the connection lives on aiosqlite's thread; under trio, the standard
``sqlite3`` connection lives on a dedicated thread of its own (it is made on a worker
thread, hence ``check_same_thread=False``). Both run
a whole storage operation (a function of the ``sqlite3.Connection``) in one hop, so a
transaction is never split across awaits and a cancelled caller cannot leave one open.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

__all__ = ["Runner", "open_runner"]


class Runner(Protocol):
    """Runs functions of the connection on the connection's thread, one at a time."""

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def close(self) -> None: ...


def _current_library() -> str:
    try:
        import sniffio
    except ImportError:  # trio requires sniffio, so without it only asyncio can be running
        return "asyncio"
    return sniffio.current_async_library()


class _AiosqliteRunner:
    def __init__(self, connection: object, raw: sqlite3.Connection) -> None:
        self._connection = connection
        self._raw = raw

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # aiosqlite's public calls run one statement per hop; its queue runner takes any
        # function, which lets a whole transaction run on its thread without interruption.
        result: T = await self._connection._execute(fn, self._raw)  # type: ignore[attr-defined]
        return result

    async def close(self) -> None:
        await self._connection.close()  # type: ignore[attr-defined]


@functools.cache
def _trio_call() -> Callable[..., Awaitable[Any]]:
    """The coroutine that hands a job to the thread and sleeps until trio is told it is done.

    It is protected from KeyboardInterrupt: trio may raise that in any unprotected code,
    and a task interrupted between queueing the job and going to sleep would later be
    woken by the job's result at some unrelated await.
    """
    import trio

    @trio.lowlevel.enable_ki_protection
    async def call(jobs: queue.SimpleQueue[Any], fn: Callable[[sqlite3.Connection], Any]) -> Any:
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(result: Any) -> None:
            # If the run ended meanwhile (it crashed), there is nobody left to tell.
            with contextlib.suppress(trio.RunFinishedError, OSError):
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        jobs.put((fn, deliver))
        # The operation runs to its end whatever happens to the caller: it cannot be aborted.
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    return call


class _TrioRunner:
    """One dedicated thread for the connection; results go back through trio's token."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Any] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="asyncopt-sqlite", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        import outcome

        while (job := self._jobs.get()) is not None:
            fn, deliver = job
            deliver(outcome.capture(fn, self._raw))

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await _trio_call()(self._jobs, fn)
        return result

    async def close(self) -> None:
        await self.call(lambda conn: conn.close())
        self._jobs.put(None)


async def open_runner(connect: Callable[[], sqlite3.Connection]) -> Runner:
    """Connect with ``connect`` on a worker thread, then drive it for the running event loop.

    The connection is made (and any failure raised) before aiosqlite is involved: its
    failure path leaves a worker thread reporting to a loop that may be closed by then.
    """
    raw = await anyio.to_thread.run_sync(connect)
    if _current_library() != "asyncio":
        return _TrioRunner(raw)
    import aiosqlite

    connection = aiosqlite.Connection(lambda: raw, 64)
    try:
        await connection
    except BaseException:
        raw.close()
        raise
    return _AiosqliteRunner(connection, raw)
