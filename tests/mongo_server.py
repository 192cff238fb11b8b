"""The MongoDB server the test suite runs against.

By default a SecantusDB server (a MongoDB-wire-compatible server from PyPI) is started as
a subprocess on a free loopback port, once per test session, with in-memory storage and
the durability of a production server: a journaled write is synced before it is
acknowledged (``--sync-on-commit``), as mongod does for ``j: true``. `Server` starts one
on a storage path of its own, which a test may kill (SIGKILL) and start again.
With ``ASYNCOPT_TEST_MONGODB_URL`` set (e.g. ``mongodb://127.0.0.1:27017``), the tests use
that server instead. Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest

ENV_URL = "ASYNCOPT_TEST_MONGODB_URL"
_STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, database: str) -> str:
    """``url`` with its path replaced by ``/database`` (options and credentials kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def _server_command(port: int, storage_path: str = ":memory:") -> list[str]:
    executable = Path(sys.executable).with_name("secantusd-py")
    program = [str(executable)] if executable.exists() else [sys.executable, "-m", "secantus"]
    found = shutil.which("secantusd-py")
    if not executable.exists() and found:
        program = [found]
    return [
        *program,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        storage_path,
        "--sync-on-commit",
        "--log-level",
        "WARNING",
    ]


def _wait_until_ready(url: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"the test MongoDB server exited with {process.returncode}:\n"
                f"{log.read_text(errors='replace')[-4000:]}"
            )
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            url, serverSelectionTimeoutMS=500, connectTimeoutMS=500
        )
        try:
            client.admin.command("ping")
            return
        except pymongo.errors.PyMongoError as exc:
            last_error = exc
        finally:
            client.close()
        time.sleep(0.1)
    raise RuntimeError(f"the test MongoDB server at {url} did not answer: {last_error}")


@contextmanager
def running_server() -> Iterator[str]:
    """Start a SecantusDB server on a free loopback port; yields its URL, stops it after.

    With ``ASYNCOPT_TEST_MONGODB_URL`` set, yields that URL instead (after a ping).
    """
    external = os.environ.get(ENV_URL)
    if external:
        _wait_until_ready(external, None, Path(os.devnull))
        yield external
        return
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="asyncopt-mongo-"))
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _server_command(port), stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
    url = f"mongodb://127.0.0.1:{port}/"
    try:
        _wait_until_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


class Server:
    """A SecantusDB server with a persistent storage path, killed and restarted at will."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start (or restart) it on the same port and data, and wait until it answers."""
        self.starts += 1
        log = self.workdir / f"server-{self.starts}.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                _server_command(self.port, str(self.workdir / "data")),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        _wait_until_ready(self.url, self.process, log)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what was not synced is lost."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def restartable_server(tmp_path: Path) -> Iterator[Server]:
    """A started `Server` on a storage path under ``tmp_path``, stopped after the test."""
    server = Server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongodb_server_url() -> Iterator[str]:
    """The URL of the test session's MongoDB server (no database in the path)."""
    with running_server() as url:
        yield url


@pytest.fixture
def mongodb_url(mongodb_server_url: str) -> Iterator[str]:
    """A URL naming a fresh, empty database on the test server.

    On a server named by ``ASYNCOPT_TEST_MONGODB_URL`` the database is dropped after the
    test; the session's own in-memory server is simply discarded at the end.
    """
    database = f"asyncopt_test_{uuid.uuid4().hex[:12]}"
    yield with_database(mongodb_server_url, database)
    if not os.environ.get(ENV_URL):
        return
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        mongodb_server_url, serverSelectionTimeoutMS=5000
    )
    try:
        client.drop_database(database)
    finally:
        client.close()


class FlakyProxy:
    """A TCP proxy in front of a MongoDB server that can cut connections on demand.

    ``cut()`` closes every open connection and refuses new ones until ``restore()``;
    ``drop_reply_to(b"findAndModify")`` forwards the next such command to the server but
    closes the connection instead of returning its reply (a lost acknowledgement).
    """

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        host_port = parts.netloc.rpartition("@")[2]
        host, _, port = host_port.rpartition(":")
        self._target = (host or "127.0.0.1", int(port or 27017))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._refusing = False
        self._drop_reply_to: bytes | None = None
        self._closed = False
        self.dropped_replies = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str, options: str = "") -> str:
        """A URL that reaches the server through this proxy (direct connection)."""
        query = "directConnection=true" + (f"&{options}" if options else "")
        return f"mongodb://127.0.0.1:{self.port}/{database}?{query}"

    def cut(self) -> None:
        with self._lock:
            self._refusing = True
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._refusing = False

    def drop_reply_to(self, command: bytes) -> None:
        with self._lock:
            self._drop_reply_to = command

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            doomed = threading.Event()
            threading.Thread(
                target=self._pump, args=(client, upstream, doomed, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, doomed, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, doomed: threading.Event, requests: bool
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if requests:
                    with self._lock:
                        if self._drop_reply_to is not None and self._drop_reply_to in data:
                            self._drop_reply_to = None
                            doomed.set()
                elif doomed.is_set():
                    self.dropped_replies += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def flaky_proxy(mongodb_server_url: str) -> Iterator[FlakyProxy]:
    """A `FlakyProxy` to the session's server, closed after the test."""
    proxy = FlakyProxy(mongodb_server_url)
    try:
        yield proxy
    finally:
        proxy.close()
