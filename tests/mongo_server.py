"""The MongoDB server the test suite runs against.

By default a SecantusDB server (a MongoDB-wire-compatible server from PyPI) is started as
a subprocess on a free loopback port, once per test session, with in-memory storage.
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
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


def _server_command(port: int) -> list[str]:
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
        ":memory:",
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


@pytest.fixture(scope="session")
def mongodb_server_url() -> Iterator[str]:
    """The URL of the test session's MongoDB server (no database in the path)."""
    with running_server() as url:
        yield url


@pytest.fixture
def mongodb_url(mongodb_server_url: str) -> Iterator[str]:
    """A URL naming a fresh, empty database on the test server; dropped after the test."""
    database = f"asyncopt_test_{uuid.uuid4().hex[:12]}"
    yield with_database(mongodb_server_url, database)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        mongodb_server_url, serverSelectionTimeoutMS=5000
    )
    try:
        client.drop_database(database)
    finally:
        client.close()
