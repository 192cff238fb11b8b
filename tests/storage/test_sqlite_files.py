"""SQLite: a study file deleted or replaced while open, and read-only opens."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import asyncopt as ao
from asyncopt.errors import StorageError, StorageUnavailableError
from asyncopt.storage.sqlite import SQLiteStorage
from asyncopt.storage.urls import open_storage

SPACE = {"x": ao.hp.uniform("x", -1, 1)}
FINGERPRINT = "f" * 64


async def _slow(params: dict[str, float]) -> float:
    await anyio.sleep(0.005)
    return params["x"] ** 2


@pytest.mark.parametrize("with_sidecars", [True, False], ids=["all-files", "main-file"])
async def test_a_file_deleted_mid_run_stops_the_run_with_an_error(
    tmp_path: Path, with_sidecars: bool
) -> None:
    path = tmp_path / "study.db"

    def delete() -> None:
        for suffix in ("", "-wal", "-shm") if with_sidecars else ("",):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    async def delete_at_the_30th(trial: ao.Trial) -> None:
        if trial.tid == 30:
            await anyio.to_thread.run_sync(delete)

    with pytest.raises(StorageError) as info:
        await ao.minimize(
            _slow,
            SPACE,
            algo=ao.rand.suggest,
            max_evals=300,
            concurrency=4,
            storage=f"sqlite:///{path}",
            callbacks=[delete_at_the_30th],
            seed=1,
        )
    assert str(path) in str(info.value)
    assert "deleted or replaced" in str(info.value)


async def test_a_file_replaced_while_open_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    async with SQLiteStorage(path) as storage:
        await storage.create_study("s", fingerprint=FINGERPRINT, space={}, seed=1)
        copy = tmp_path / "copy.db"
        shutil.copy(path, copy)
        os.replace(copy, path)
        with pytest.raises(StorageUnavailableError, match="deleted or replaced"):
            await storage.create_trial("s", {"x": 1}, budget=None, worker="w", lease=60)


async def _study_file(path: Path, trials: int = 5) -> None:
    await ao.minimize(
        lambda p: p["x"] ** 2,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=trials,
        storage=f"sqlite:///{path}",
        study="s",
        seed=1,
    )


async def test_read_only_opens_read_and_refuse_writes(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    await _study_file(path)
    before = path.read_bytes()
    async with open_storage(f"sqlite:///{path}", read_only=True) as storage:
        assert isinstance(storage, SQLiteStorage)
        assert storage.read_only
        assert len(await storage.trials_since("s")) == 5
        with pytest.raises(StorageUnavailableError, match=re.escape(str(path))):
            await storage.create_trial("s", {"x": 0.5}, budget=None, worker="w", lease=60)
    assert path.read_bytes() == before


async def test_a_missing_path_in_read_only_mode_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mistyped.db"
    with pytest.raises(StorageUnavailableError, match=r"mistyped\.db") as info:
        async with open_storage(f"sqlite:///{path}?mode=ro"):
            pass
    assert "creates nothing" in str(info.value)
    assert os.listdir(tmp_path) == []


def _cli(
    *args: str, preexec: object = None, wrap: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "asyncopt", *args]
    return subprocess.run(
        [*(wrap or []), *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=preexec,  # type: ignore[arg-type]
    )


READ_COMMANDS = [["studies"], ["trials", "s"], ["best", "s"]]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_the_cli_reads_a_read_only_file_without_root_rights(
    tmp_path: Path, command: list[str]
) -> None:
    from test_sqlite import _without_root_file_access

    directory = tmp_path / "ro"
    directory.mkdir()
    path = directory / "study.db"
    anyio.run(_study_file, path)
    path.chmod(0o444)
    directory.chmod(0o555)
    try:
        result = _cli(
            command[0], f"sqlite:///{path}", *command[1:], preexec=_without_root_file_access
        )
    finally:
        directory.chmod(0o755)
        path.chmod(0o644)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["study.db"]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_the_cli_reads_a_study_on_a_read_only_file_system(
    tmp_path: Path, command: list[str]
) -> None:
    directory = tmp_path / "mounted"
    directory.mkdir()
    path = directory / "study.db"
    anyio.run(_study_file, path)
    cli = " ".join(
        [sys.executable, "-m", "asyncopt", command[0], f"sqlite:///{path}", *command[1:]]
    )
    # A private mount namespace: the directory becomes a read-only file system there.
    script = f"mount --bind -o ro {directory} {directory} && touch {directory}/probe; {cli}"
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Read-only file system" in result.stderr  # the probe could not be written
    assert result.returncode == 0, result.stderr
    assert "asyncopt: error" not in result.stderr
    assert result.stdout


def test_the_cli_names_a_missing_path_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = _cli("trials", f"sqlite:///{path}", "s")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert str(path) in result.stderr
    assert not path.exists()


# -- tampered rows ------------------------------------------------------------------------------

TAMPERED = [
    ("assignment", "'{not json'"),
    ("assignment", "'[1, 2]'"),
    ("state", "9"),
    ("loss", "'cheap'"),
    ("result", "'{\"a\": '"),
    ("seed", "'many'"),
    ("worker", "x'00ff'"),
]


@pytest.mark.parametrize(("field", "value"), TAMPERED, ids=lambda v: str(v))
async def test_a_tampered_row_is_a_storage_error_naming_study_tid_and_field(
    tmp_path: Path, field: str, value: str
) -> None:
    path = tmp_path / "study.db"
    await _study_file(path)

    def tamper() -> None:
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute(f"UPDATE asyncopt_trials SET {field} = {value} WHERE tid = 3")
        conn.close()

    await anyio.to_thread.run_sync(tamper)
    async with open_storage(f"sqlite:///{path}") as storage:
        with pytest.raises(StorageError) as info:
            await storage.trials_since("s")
    message = str(info.value)
    assert "trial 3" in message
    assert "'s'" in message
    assert repr(field) in message
    assert info.value.__cause__ is None


def test_the_cli_prints_a_tampered_row_as_one_line(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "study.db"
    anyio.run(_study_file, path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE asyncopt_trials SET assignment = '{oops' WHERE tid = 2")
    conn.close()
    for command in (["trials", "s"], ["best", "s"], ["studies"]):
        result = _cli(command[0], f"sqlite:///{path}", *command[1:])
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "trial 2 of study 's'" in result.stderr
        assert "'assignment'" in result.stderr
