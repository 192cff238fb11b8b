"""Several OS processes run `minimize` on one study in one shared storage.

Each process is a fresh interpreter (``sys.executable -c``); they wait at a file barrier so
they really run at the same time. The storage must hand out exactly ``max_evals`` trials
with dense, unique tids, and no process may see a locking error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from asyncopt.storage.base import Trial, TrialState
from asyncopt.storage.urls import open_storage

# A worker process: argv = url study max_evals concurrency loop barrier_dir parties
# objective_seconds lease. It prints "START" when an objective call begins and one
# "TRIAL <tid>" line per finished trial.
WORKER = """
import signal, sys, time
from pathlib import Path
import anyio
import asyncopt as ao

# Interruptible like a worker started from a terminal, even when the tests themselves were
# started as a background job (which ignores SIGINT, and children inherit that).
signal.signal(signal.SIGINT, signal.default_int_handler)

url, study, max_evals, concurrency, loop, barrier, parties, pause, lease = sys.argv[1:10]
space = {
    "x": ao.hp.uniform("x", -5, 5),
    "kind": ao.hp.choice("kind", [{"a": 0}, {"b": ao.hp.loguniform("b", -3, 0)}]),
}

async def objective(params):
    print("START", flush=True)
    await anyio.sleep(float(pause))
    return params["x"] ** 2

def report(trial):
    print("TRIAL", trial.tid, flush=True)

async def main():
    if int(parties) > 1:
        Path(barrier, str(ao.__name__) + "-" + str(__import__("os").getpid())).touch()
        while len(list(Path(barrier).iterdir())) < int(parties):
            await anyio.sleep(0.01)
    result = await ao.minimize(
        objective, space, algo=ao.rand.suggest, max_evals=int(max_evals),
        concurrency=int(concurrency), storage=url, study=study, seed=7, lease=float(lease),
        callbacks=[report],
    )
    print("DONE", len(result.trials), flush=True)

anyio.run(main, backend=loop)
"""


def start_worker(
    url: str,
    *,
    study: str = "shared",
    max_evals: int,
    concurrency: int,
    loop: str = "asyncio",
    barrier: Path | None = None,
    parties: int = 1,
    pause: float = 0.01,
    lease: float = 30.0,
) -> subprocess.Popen[str]:
    """Start one worker process (stdout and stderr captured, text)."""
    args = [url, study, max_evals, concurrency, loop, barrier or ".", parties, pause, lease]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    """Wait for the process; its exit code and everything it printed."""
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout + stderr


def read_trials(url: str, study: str = "shared") -> list[Trial]:
    """Every trial of the study, by tid (read from this process, on its own event loop)."""

    async def read() -> list[Trial]:
        async with open_storage(url) as storage:
            return sorted(await storage.trials_since(study), key=lambda t: t.tid)

    return anyio.run(read)


def assert_no_lock_errors(outputs: Sequence[str]) -> None:
    for output in outputs:
        assert "database is locked" not in output.lower()
        assert "Traceback" not in output, output


@pytest.mark.slow
def test_four_processes_share_one_study_exactly(shared_url: str, tmp_path: Path) -> None:
    max_evals = 200
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    loops = ["asyncio", "trio", "asyncio", "trio"]
    processes = [
        start_worker(
            shared_url,
            max_evals=max_evals,
            concurrency=4,
            loop=loop,
            barrier=barrier,
            parties=len(loops),
            pause=0.05,
        )
        for loop in loops
    ]
    results = [finish(process) for process in processes]
    outputs = [output for _, output in results]
    assert [code for code, _ in results] == [0] * len(loops), outputs
    assert_no_lock_errors(outputs)

    trials = read_trials(shared_url)
    assert [t.tid for t in trials] == list(range(max_evals))
    assert all(t.state is TrialState.OK for t in trials)
    assert all(t.loss == pytest.approx(t.assignment["x"] ** 2) for t in trials)
    # The processes really shared the work, and each reported exactly the trials it held.
    pids = {str(process.pid) for process in processes}
    by_pid = {pid: sorted(t.tid for t in trials if f":{pid}:" in (t.worker or "")) for pid in pids}
    assert sum(bool(tids) for tids in by_pid.values()) >= 2, by_pid
    for process, (_, output) in zip(processes, results):
        reported = sorted(int(line.split()[1]) for line in output.splitlines() if "TRIAL" in line)
        assert reported == by_pid[str(process.pid)]


@pytest.mark.slow
def test_a_resumed_study_counts_the_earlier_trials(shared_url: str) -> None:
    code, output = finish(start_worker(shared_url, max_evals=30, concurrency=3, pause=0))
    assert code == 0, output
    code, output = finish(start_worker(shared_url, max_evals=50, concurrency=3, pause=0))
    assert code == 0, output
    assert_no_lock_errors([output])
    trials = read_trials(shared_url)
    assert [t.tid for t in trials] == list(range(50))
    assert all(t.state is TrialState.OK for t in trials)
    assert len({t.worker for t in trials}) == 2
    assert output.count("TRIAL") == 20


def wait_for_lines(process: subprocess.Popen[str], finished: int, in_flight: int = 0) -> None:
    """Read the worker's output until ``finished`` trials are done and ``in_flight`` run."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    done = started = 0
    while done < finished or started - done < in_flight:
        assert time.monotonic() < deadline, lines
        line = process.stdout.readline()
        assert line, f"the worker ended early: {lines}"
        lines.append(line)
        done += line.startswith("TRIAL")
        started += line.startswith("START")
