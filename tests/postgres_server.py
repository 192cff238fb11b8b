"""The PostgreSQL server the test suite runs against.

By default a private server is started once per test session: ``initdb`` into a throwaway
data directory, then ``postgres`` listening on a free loopback port (and a Unix socket in
that directory). The binaries are the system's (Debian's ``/usr/lib/postgresql/N/bin``,
or ``pg_config --bindir``); on a machine without them, the build bundled in the
``pgserver`` wheel (a test dependency). PostgreSQL refuses to run as root, so when the
suite runs as root the server runs as an unprivileged user (``postgres`` if it exists,
else ``nobody``) that owns the data directory. A machine with neither binaries nor the
wheel fails these tests loudly: nothing is skipped.

With ``ASYNCOPT_TEST_POSTGRES_URL`` set (``postgresql://user:password@host:port/db``), the
tests use that server instead. Each test gets a schema of its own (the storage's
``schema=`` option), dropped afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
import pytest

ENV_URL = "ASYNCOPT_TEST_POSTGRES_URL"
USER = "asyncopt"
_STARTUP_TIMEOUT = 60.0
# Settings for a throwaway test server: nothing it holds must survive a power loss.
_FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binaries() -> Path:
    """The directory holding ``initdb`` and ``postgres``; RuntimeError if there is none."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            ).stdout.strip()
            candidates.append(bindir)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    # The build bundled in the pgserver wheel, found without importing it (its import
    # touches the user's runtime directory).
    bundled = importlib.util.find_spec("pgserver")
    if bundled is not None and bundled.origin is not None:
        candidates.append(str(Path(bundled.origin).parent / "pginstall" / "bin"))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    raise RuntimeError(
        "no PostgreSQL server binaries for the tests: install PostgreSQL (initdb, postgres), "
        "or `pip install pgserver`, or point ASYNCOPT_TEST_POSTGRES_URL at a server"
    )


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None for the current one, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and no unprivileged account (postgres, nobody)")


def _usable_by(account: pwd.struct_passwd | None, binaries: Path, workdir: Path) -> Path:
    """``binaries``, or a copy of their installation the account can execute."""
    if account is None:
        return binaries
    probe = subprocess.run(
        [str(binaries / "postgres"), "--version"],
        capture_output=True,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        check=False,
    )
    if probe.returncode == 0:
        return binaries
    # A bundled build inside root's home: copy the installation where the account can read.
    copy = workdir / "install"
    shutil.copytree(binaries.parent, copy, symlinks=True)
    for path in [copy, *copy.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o055)
    return copy / "bin"


class PostgresServer:
    """A private PostgreSQL server in a throwaway directory (see the module docstring)."""

    def __init__(self, *, fast: bool = True) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="asyncopt-pg-"))
        self.workdir.chmod(0o755)
        self.datadir = self.workdir / "data"
        self.account = _server_account()
        self._chown(self.workdir)  # the server writes its Unix socket here
        self.binaries = _usable_by(self.account, find_binaries(), self.workdir)
        self.password = secrets.token_hex(12)
        self.port = _free_port()
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.workdir),
            "max_connections": "200",
            **(_FAST if fast else {}),
        }
        self.log = self.workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._initdb()

    @property
    def url(self) -> str:
        """The server's URL (database ``postgres``, password authentication over TCP)."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _as_account(self) -> dict[str, object]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _initdb(self) -> None:
        self.datadir.mkdir(mode=0o700)
        self._chown(self.datadir)
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        done = subprocess.run(
            [
                str(self.binaries / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
            **self._as_account(),  # type: ignore[arg-type]
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers."""
        command = [str(self.binaries / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                **self._as_account(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the test PostgreSQL server exited with {self.process.returncode}:\n"
                    f"{self.log.read_text(errors='replace')[-4000:]}"
                )
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """Stop the server (SIGINT: fast shutdown, which ends every session at once)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(mode)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again, keeping the data and the port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running_server(*, fast: bool = True) -> Iterator[PostgresServer]:
    """A started private server, stopped and deleted afterwards."""
    server = PostgresServer(fast=fast)
    try:
        server.start()
        yield server
    finally:
        server.close()


def with_schema(url: str, schema: str) -> str:
    """``url`` with its ``schema=`` option set (other options kept)."""
    parts = urlsplit(url)
    query = "&".join(
        [q for q in parts.query.split("&") if q and not q.startswith("schema=")]
        + [urlencode({"schema": schema})]
    )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` (and everything in it) on the server of ``url``."""
    parts = urlsplit(url)
    with psycopg.connect(
        urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), autocommit=True
    ) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The URL of the session's PostgreSQL server (``ASYNCOPT_TEST_POSTGRES_URL`` if set)."""
    external = os.environ.get(ENV_URL)
    if external:
        psycopg.connect(external, connect_timeout=10).close()
        yield external
        return
    with running_server() as server:
        yield server.url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A URL naming a fresh, empty schema on the session's server; dropped after the test."""
    schema = f"asyncopt_test_{uuid.uuid4().hex[:12]}"
    yield with_schema(postgres_server_url, schema)
    drop_schema(postgres_server_url, schema)
