"""Driving a study from the shell: create-study, ask, tell, export, worker --space, and the
command line's manners (--version, options after the command, closed pipes, log levels,
terminal width). Every test runs against a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import asyncopt as ao
from asyncopt import cli
from asyncopt.cli import main

MODULE = """
import time

from asyncopt import hp

space = {
    "x": hp.uniform("x", -5, 5),
    "model": hp.choice("model", ["a", {"kind": "b", "c": hp.loguniform("c", -3, 0)}]),
}
other_space = {"y": hp.uniform("y", 0, 1)}

def objective(params):
    time.sleep(SLEEP)
    if params["x"] > 3.5:
        raise RuntimeError("x too large\\nsecond line")
    return {"loss": (params["x"] - 1) ** 2, "accuracy": 1 / (1 + abs(params["x"]))}
"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stored(url: str, study: str) -> list[ao.Trial]:
    async def read() -> list[ao.Trial]:
        async with ao.open_storage(url) as storage:
            return sorted(await storage.trials_since(study, 0), key=lambda t: t.tid)

    return anyio.run(read)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'drive.db'}"


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write the user module into the (new) current directory; returns its unique name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []

    def write(*, sleep: float = 0.0) -> str:
        name = f"drive_{tmp_path.name.replace('-', '_')}_{len(names)}"
        (tmp_path / f"{name}.py").write_text(f"SLEEP = {sleep}\n" + textwrap.dedent(MODULE))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out == f"asyncopt {ao.__version__}\n"


def test_create_ask_tell_from_the_shell(
    url: str, capsys: pytest.CaptureFixture[str], module: Callable[..., str]
) -> None:
    name = module()
    code, out, err = run_cli(
        capsys, "create-study", url, "shell", "--space", f"{name}:space", "--seed", "5"
    )
    assert code == 0, err
    assert out.startswith("created study 'shell' in ")
    assert "(3 parameters, seed 5)" in out

    code, _, err = run_cli(capsys, "create-study", url, "shell", "--space", f"{name}:space")
    assert code == 2
    assert "already exists" in err
    assert "--skip-if-exists" in err
    code, out, _ = run_cli(
        capsys, "create-study", url, "shell", "--space", f"{name}:space", "--skip-if-exists"
    )
    assert code == 0
    assert "unchanged" in out
    code, _, err = run_cli(
        capsys, "create-study", url, "shell", "--space", f"{name}:other_space", "--skip-if-exists"
    )
    assert code == 2
    assert "with another space" in err

    code, out, err = run_cli(capsys, "ask", url, "shell")
    assert code == 0, err
    asked = json.loads(out)
    assert asked["study"] == "shell"
    assert asked["tid"] == 0
    assert set(asked["params"]) == {"x", "model"}
    assert asked["assignment"]["x"] == asked["params"]["x"]
    # The trial stays RUNNING after `ask` exits, for `tell` to finish.
    (running,) = stored(url, "shell")
    assert running.state is ao.TrialState.RUNNING
    assert running.worker is not None
    assert running.worker.startswith("shell:")

    code, out, err = run_cli(capsys, "tell", url, "shell", "0", "0.25")
    assert code == 0, err
    assert out == "trial 0 of study 'shell': OK, loss 0.25\n"
    code, out, _ = run_cli(capsys, "ask", url, "shell", "--event-loop", "trio")
    assert code == 0
    assert json.loads(out)["tid"] == 1
    code, out, _ = run_cli(capsys, "tell", url, "shell", "1", "--fail", "OOM on node 3")
    assert code == 0
    assert out == "trial 1 of study 'shell': FAIL, OOM on node 3\n"
    ok, failed = stored(url, "shell")
    assert (ok.state, ok.loss) == (ao.TrialState.OK, 0.25)
    assert (failed.state, failed.error) == (ao.TrialState.FAIL, "OOM on node 3")

    code, out, _ = run_cli(capsys, "best", url, "shell", "--format", "json")
    assert code == 0
    assert json.loads(out)["tid"] == 0

    # Error paths: told twice, unknown tid, neither or both of LOSS and --fail, a budget.
    code, _, err = run_cli(capsys, "tell", url, "shell", "0", "1.0")
    assert code == 2
    assert "trial 0 of study 'shell' is OK, not RUNNING" in err
    code, _, err = run_cli(capsys, "tell", url, "shell", "7", "1.0")
    assert code == 2
    assert err.startswith("asyncopt: error: ")
    assert "7" in err
    code, _, err = run_cli(capsys, "tell", url, "shell", "0")
    assert (code, err) == (
        2,
        "asyncopt: error: tell needs a LOSS or --fail MESSAGE (one of them)\n",
    )
    code, _, err = run_cli(capsys, "tell", url, "shell", "0", "1", "--fail", "x")
    assert code == 2
    code, _, err = run_cli(capsys, "tell", url, "shell", "0", "abc")
    assert code == 2
    assert "not a number: 'abc'" in err
    code, _, err = run_cli(capsys, "ask", url, "shell", "--max-evals", "2")
    assert code == 2
    assert "already has 2 trials" in err
    assert len(stored(url, "shell")) == 2


def test_tell_refuses_a_trial_a_worker_runs(
    url: str, capsys: pytest.CaptureFixture[str], module: Callable[..., str]
) -> None:
    name = module()
    run_cli(capsys, "create-study", url, "busy", "--space", f"{name}:space")

    async def start_as_a_worker() -> None:
        async with ao.open_storage(url) as storage:
            created = await storage.create_trial(
                "busy", {"x": 0.5, "model": 0}, budget=None, worker="node7:42:beef", lease=600
            )
            assert created is not None

    anyio.run(start_as_a_worker)
    code, _, err = run_cli(capsys, "tell", url, "busy", "0", "0.5")
    assert code == 2
    assert "is being run by worker node7:42:beef" in err
    assert stored(url, "busy")[0].state is ao.TrialState.RUNNING


def test_a_non_finite_loss_is_told_as_a_failure(
    url: str, capsys: pytest.CaptureFixture[str], module: Callable[..., str]
) -> None:
    name = module()
    run_cli(capsys, "create-study", url, "nan", "--space", f"{name}:space")
    run_cli(capsys, "ask", url, "nan")
    code, out, _ = run_cli(capsys, "tell", url, "nan", "0", "nan")
    assert code == 0
    assert out.startswith("trial 0 of study 'nan': FAIL, ")
    assert stored(url, "nan")[0].state is ao.TrialState.FAIL


@pytest.fixture
def finished(url: str, capsys: pytest.CaptureFixture[str], module: Callable[..., str]) -> str:
    """A study 'done' of 12 trials run by a worker that created it, some failed."""
    name = module()
    code, out, err = run_cli(
        capsys, "worker", url, "done", f"{name}:objective", "--space", f"{name}:space",
        "--max-evals", "12", "--algo", "rand",
    )  # fmt: skip
    assert code == 0, err
    assert "creating study 'done'" in err
    assert out.startswith("worker done: ran 12 trials; study 'done' has 12 trials")
    return name


def test_worker_says_why_it_ran_nothing(
    url: str, finished: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "worker", url, "done", f"{finished}:objective", "--max-evals", "12"
    )
    assert code == 0
    assert out.startswith("worker done: ran 0 trials")
    assert (
        "asyncopt: ran nothing: the study's budget is already spent (12 trials, --max-evals 12)"
        in err
    )


def test_worker_trial_timeout(
    url: str, capsys: pytest.CaptureFixture[str], module: Callable[..., str]
) -> None:
    name = module(sleep=0.5)
    code, out, err = run_cli(
        capsys, "worker", url, "slow", f"{name}:objective", "--space", f"{name}:space",
        "--max-evals", "2", "--trial-timeout", "0.05",
    )  # fmt: skip
    assert code == 0, err
    trials = stored(url, "slow")
    assert [t.state for t in trials] == [ao.TrialState.FAIL] * 2
    assert all("trial_timeout=0.05" in (t.error or "") for t in trials)
    assert "(0 ok, 2 failed" in out
    assert "failed: TimeoutError" in err  # logged at WARNING, shown by default


def test_trials_table_shows_extras_and_columns_pick(
    url: str, finished: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trials = stored(url, "done")
    code, out, _ = run_cli(capsys, "trials", url, "done", "--columns", "tid,result_accuracy,loss")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["tid", "result_accuracy", "loss"]
    for line, trial in zip(lines[1:], trials):
        cells = line.split()
        assert cells[0] == str(trial.tid)
        if trial.state is ao.TrialState.OK:
            assert trial.result is not None
            assert cells[1] == f"{trial.result['accuracy']:.6g}"
        else:
            assert cells == [str(trial.tid)]
    code, out, _ = run_cli(capsys, "trials", url, "done")
    assert "result_accuracy" in out.splitlines()[0].split()
    code, _, err = run_cli(capsys, "trials", url, "done", "--columns", "tid,nope")
    assert code == 2
    assert "no column 'nope'" in err
    assert "result_accuracy" in err  # the columns there are listed


def test_trials_table_fits_the_terminal(
    url: str, finished: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "terminal_width", lambda out: 40)
    code, out, err = run_cli(capsys, "trials", url, "done")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 40
    header = out.splitlines()[0].split()
    assert header[:3] == ["tid", "state", "loss"]
    assert "more columns do not fit the terminal" in err
    assert "--columns" in err
    assert "error" in err.split("terminal: ")[1]  # the hidden ones are named
    monkeypatch.setattr(cli, "terminal_width", lambda out: None)
    run_cli(capsys, "trials", url, "done")
    _, err = capsys.readouterr()
    assert err == ""


@pytest.mark.parametrize("extension", [".csv", ".jsonl", ".parquet"])
def test_export(
    url: str, finished: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, extension: str
) -> None:
    import pandas as pd

    target = tmp_path / f"trials{extension}"
    code, out, err = run_cli(capsys, "export", url, "done", "-o", str(target))
    assert code == 0, err
    assert out.startswith(f"wrote {target} (12 trials, ")
    trials = stored(url, "done")
    if extension == ".csv":
        rows = list(csv.DictReader(io.StringIO(target.read_text())))
        frame = pd.DataFrame(rows)
        assert rows[0]["started_at"].endswith("+00:00")  # ISO 8601
        losses = [float(r["loss"]) if r["loss"] else None for r in rows]
    elif extension == ".jsonl":
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        frame = pd.DataFrame(rows)
        losses = [r["loss"] for r in rows]
    else:
        frame = pd.read_parquet(target)
        losses = [None if pd.isna(v) else float(v) for v in frame["loss"]]
        assert str(frame["started_at"].dtype).startswith("datetime64")
    assert list(frame.columns[:3]) == ["tid", "state", "loss"]
    assert {"params_x", "params_model", "params_model_index", "result_accuracy"} <= set(frame)
    assert losses == [t.loss for t in trials]


def test_export_to_an_unknown_format(
    url: str, finished: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "export", url, "done", "-o", str(tmp_path / "t.xlsx"))
    assert code == 2
    assert "extension .xlsx; use one of .csv, .jsonl, .ndjson, .parquet" in err
    assert not (tmp_path / "t.xlsx").exists()


def test_global_options_before_or_after_the_command(
    url: str, finished: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = run_cli(capsys, "--event-loop", "trio", "trials", url, "done", "--format", "csv")
    after = run_cli(capsys, "trials", url, "done", "--format", "csv", "--event-loop", "trio")
    plain = run_cli(capsys, "trials", url, "done", "--format", "csv")
    assert before == after == plain
    assert before[0] == 0
    code, _, err = run_cli(capsys, "trials", url, "done", "--event-loop", "twisted")
    assert code == 2
    assert "invalid choice: 'twisted'" in err


def test_log_level_info_shows_every_trial(
    url: str,
    capsys: pytest.CaptureFixture[str],
    module: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = module()
    caplog.set_level(logging.INFO, logger="asyncopt")
    code, _, err = run_cli(
        capsys, "worker", url, "logged", f"{name}:objective", "--space", f"{name}:space",
        "--max-evals", "6", "--log-level", "info", "--algo", "rand",
    )  # fmt: skip
    assert code == 0
    shown = [line for line in err.splitlines() if line.startswith("[INFO ")]
    ok = [t for t in stored(url, "logged") if t.state is ao.TrialState.OK]
    assert len(shown) == len(ok)
    assert logging.getLogger("asyncopt").handlers == []  # the command's handler is gone


def _run(cwd: Path, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncopt", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("argv", [("trials", "{url}", "done"), ("studies", "{url}")])
def test_closed_pipe_ends_quietly(
    url: str, finished: str, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    process = _run(tmp_path, *(arg.format(url=url) for arg in argv))
    assert process.stdout is not None
    process.stdout.close()  # like `| head -0`: the reader is gone before the first write
    _, err = process.communicate(timeout=60)
    assert err == b""
    assert process.returncode == 141  # 128 + SIGPIPE, as for a program the pipe killed


def test_closed_pipe_after_the_first_line(url: str, finished: str, tmp_path: Path) -> None:
    shell = f"{sys.executable} -m asyncopt trials {url} done | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert done.stdout.decode().split()[:3] == ["tid", "state", "loss"]
    assert done.stderr == b""
    assert done.returncode in (0, 141)  # 0 when all the output fit in the pipe first
