"""Secrets in storage URLs never show: in redacted URLs, reprs, library errors and the CLI."""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Iterator

import pytest

from asyncopt.cli import main
from asyncopt.errors import StorageError
from asyncopt.storage.urls import StorageURL, open_storage, redact, scrub, storage_from_url

# (URL, the secrets it holds, what the redacted form must keep showing)
SHAPES = [
    ("mongodb://alice:hunter2@127.0.0.1:1/db", ["hunter2"], "alice:***@127.0.0.1:1/db"),
    ("mongodb://alice:pa/ss@127.0.0.1:1/db", ["pa/ss", "ss@127"], "alice:***@127.0.0.1:1/db"),
    ("mongodb://alice:p@ss@127.0.0.1:1/db", ["p@ss"], "alice:***@127.0.0.1:1/db"),
    ("mongodb://alice:a@b/c:d@127.0.0.1:1/db", ["a@b/c:d", "b/c:d"], "alice:***@127.0.0.1:1/db"),
    ("mongodb://alice:p%40ss%2F@127.0.0.1:1/db", ["p%40ss%2F", "p@ss/"], "alice:***@127.0.0.1:1"),
    (
        "mongodb://127.0.0.1:1/db?tls=true&tlsCertificateKeyFilePassword=k3yPass",
        ["k3yPass"],
        "tlsCertificateKeyFilePassword=***",
    ),
    ("mongodb://127.0.0.1:1/db?apiSecret=s3cr3t&appname=x", ["s3cr3t"], "appname=x"),
    ("mongodb://127.0.0.1:1/db?token=T0k3n;appname=y", ["T0k3n"], "appname=y"),
    (
        "mongodb://127.0.0.1:1/db?authMechanismProperties=AWS_SESSION_TOKEN:Aws5ecret",
        ["Aws5ecret"],
        "AWS_SESSION_TOKEN:***",
    ),
    ("mongodb://bob:pw@h1:1,h2:2/db?appname=a@b", ["pw"], "bob:***@h1:1,h2:2/db"),
    ("postgresql://alice:hunter2@127.0.0.1:1/db", ["hunter2"], "alice:***@127.0.0.1:1/db"),
    ("postgres://alice:p@ss@127.0.0.1:1/db?sslpassword=k3y", ["p@ss", "k3y"], "127.0.0.1:1/db"),
]
IDS = [f"shape{i}" for i in range(len(SHAPES))]


@pytest.fixture(autouse=True)
def collect_dropped_sockets() -> Iterator[None]:
    """PyMongo's monitor can drop the socket it is connecting when a client that never
    reached a server closes (a driver bug); collect it before it warns in a later test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _hidden(text: str, secrets: list[str]) -> bool:
    return not any(secret in text for secret in secrets)


@pytest.mark.parametrize(("url", "secrets", "kept"), SHAPES, ids=IDS)
def test_redaction_hides_every_secret_and_keeps_the_rest(
    url: str, secrets: list[str], kept: str
) -> None:
    shown = redact(url)
    assert _hidden(shown, secrets), shown
    assert kept in shown
    parsed = StorageURL.parse(url)
    for text in (str(parsed), repr(parsed), parsed.redacted):
        assert _hidden(text, secrets)
    # A driver's message quoting the URL, or the bare password, is scrubbed too.
    assert _hidden(scrub(f"driver said: {url} / {secrets[0]}", url), secrets)


def test_a_password_with_a_slash_or_an_at_is_parsed_whole() -> None:
    parsed = StorageURL.parse("mongodb://alice:a@b/c:d@db.example:27017/tuning")
    assert (parsed.username, parsed.password) == ("alice", "a@b/c:d")
    assert (parsed.host, parsed.port, parsed.path) == ("db.example", 27017, "/tuning")


@pytest.mark.parametrize(("url", "secrets", "kept"), SHAPES, ids=IDS)
def test_storages_never_show_a_secret(url: str, secrets: list[str], kept: str) -> None:
    assert _hidden(_shown(url), secrets)


def _shown(url: str) -> str:
    """What a storage for ``url`` shows of itself, or its error if it refuses the URL."""
    try:
        storage = storage_from_url(url)
    except StorageError as exc:  # an option PyMongo does not know
        return str(exc)
    return f"{storage.url} {storage!r}"


@pytest.mark.parametrize(("url", "secrets", "kept"), SHAPES, ids=IDS)
async def test_library_errors_never_show_a_secret(url: str, secrets: list[str], kept: str) -> None:
    separator = ";" if "token=" in url else "&"
    quick = f"{url}{separator if '?' in url else '?'}serverSelectionTimeoutMS=200"
    with pytest.raises(StorageError) as info:
        async with open_storage(quick):
            pass
    message = str(info.value)
    assert _hidden(message, secrets), message
    assert "\n" not in message
    assert info.value.__cause__ is None


async def test_an_unreachable_server_fails_in_seconds_with_one_line_naming_the_host() -> None:
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        async with open_storage("mongodb://alice:hunter2@127.0.0.1:1/db"):
            pass
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "hunter2" not in message
    assert "\n" not in message
    assert len(message) < 300


CLI_COMMANDS = [
    ["studies"],
    ["trials", "s"],
    ["best", "s"],
    ["delete", "s", "--yes"],
    ["plot", "s", "-o", "plot.png"],
    ["worker", "s", "math:sqrt", "--max-evals", "1"],
]


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(("url", "secrets", "kept"), SHAPES, ids=IDS)
def test_every_cli_command_prints_one_line_without_a_secret(
    capsys: pytest.CaptureFixture[str], url: str, secrets: list[str], kept: str, command: list[str]
) -> None:
    separator = ";" if "token=" in url else "&"
    quick = f"{url}{separator if '?' in url else '?'}serverSelectionTimeoutMS=200"
    status = main([command[0], quick, *command[1:]])
    out, err = capsys.readouterr()
    assert status == 2
    assert _hidden(out + err, secrets), err
    assert err.startswith("asyncopt: error: ")
    assert err.count("\n") == 1
