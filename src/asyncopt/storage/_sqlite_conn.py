"""The SQLite connection's own thread, used the same way by asyncio and trio.

The standard ``sqlite3`` connection is made on, and only ever used from, one dedicated
thread. A storage operation is a whole function of the connection (one transaction),
handed to that thread in one hop; the caller's event loop is woken with its result. So a
transaction is never split across awaits and a cancelled caller cannot leave one open.
aiosqlite's public API runs one statement per hop (a transaction of several statements
would take several hops and could be interrupted between them), so it is not used.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asyncopt.storage.base import current_event_loop

T = TypeVar("T")

__all__ = ["ConnectionThread"]

# A job: the function of the connection, and how to deliver its value or its exception.
_Deliver = Callable[[Any, BaseException | None], None]
_Job = tuple[Callable[[Any], Any], _Deliver]


@functools.cache
def _trio_call() -> Callable[..., Awaitable[Any]]:
    """The coroutine that hands a job to the thread and sleeps until trio is told it is done.

    It is protected from KeyboardInterrupt: trio may raise that in any unprotected code,
    and a task interrupted between queueing the job and going to sleep would later be
    woken by the job's result at some unrelated await.
    """
    import outcome
    import trio

    @trio.lowlevel.enable_ki_protection
    async def call(jobs: queue.SimpleQueue[_Job | None], fn: Callable[[Any], Any]) -> Any:
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(value: Any, error: BaseException | None) -> None:
            result = outcome.Value(value) if error is None else outcome.Error(error)
            # If the run ended meanwhile (it crashed), there is nobody left to tell.
            with contextlib.suppress(trio.RunFinishedError, OSError):
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        jobs.put((fn, deliver))
        # The operation runs to its end whatever happens to the caller: it cannot be aborted.
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    return call


async def _asyncio_call(jobs: queue.SimpleQueue[_Job | None], fn: Callable[[Any], Any]) -> Any:
    import asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled by asyncio itself
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    def deliver(value: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, value, error)

    jobs.put((fn, deliver))
    return await future


class ConnectionThread:
    """Runs functions of one ``sqlite3`` connection on its own thread, one at a time.

    `start` makes the connection there (with ``connect``); `call` runs a function of it;
    `close` closes it and ends the thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None
        self._hand_over: Callable[..., Awaitable[Any]] = _asyncio_call
        self._thread = threading.Thread(target=self._work, name="asyncopt-sqlite", daemon=True)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, deliver = job
            try:
                value = fn(self._connection)
            except BaseException as exc:  # delivered to the caller, who re-raises it
                deliver(None, exc)
            else:
                deliver(value, None)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` run on the connection's thread (from the loop that started it)."""
        result: T = await self._hand_over(self._jobs, fn)
        return result

    async def start(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and connect there; a failure to connect ends the thread."""
        trio = current_event_loop() == "trio"
        self._hand_over = _trio_call() if trio else _asyncio_call
        self._thread.start()

        def connect_here(_: Any) -> None:
            self._connection = connect()

        try:
            await self.call(connect_here)
        except BaseException:
            self._jobs.put(None)
            raise

    async def close(self) -> None:
        """Close the connection and end the thread."""

        def close_here(connection: sqlite3.Connection | None) -> None:
            if connection is not None:
                connection.close()

        try:
            await self.call(close_here)
        finally:
            self._jobs.put(None)
