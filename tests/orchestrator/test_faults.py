"""Faults of the objective and of the loop, provoked as a user would."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt._groups import BaseExceptionGroup
from asyncopt.storage.memory import MemoryStorage

SPACE = {"x": hp.uniform("x", 0, 1)}
SRC = str(Path(ao.__file__).resolve().parent.parent)


def run_script(
    tmp_path: Path, body: str, *args: str, limit: float = 60
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=limit,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        check=False,
    )


async def stored(url: str) -> list[ao.Trial]:
    async with ao.open_storage(url) as storage:
        return await storage.trials_since("default")


INTERRUPTING = """
    import sys, anyio, asyncopt as ao
    from asyncopt import hp

    kind, backend, style = sys.argv[1:4]

    def body(params):
        if kind == "exit":
            sys.exit(3)
        raise KeyboardInterrupt

    async def awaited(params):
        await anyio.sleep(0.01)
        body(params)

    async def main():
        await ao.minimize(
            body if style == "sync" else awaited, {"x": hp.uniform("x", 0, 1)},
            max_evals=5, concurrency=2, storage=sys.argv[4], algo=ao.rand.suggest,
        )

    anyio.run(main, backend=backend)
"""


@pytest.mark.parametrize("style", ["async", "sync"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(("kind", "status"), [("exit", 3), ("interrupt", 130)])
def test_an_objective_that_exits_or_interrupts_ends_the_process_with_its_trials_recorded(
    tmp_path: Path, kind: str, status: int, backend: str, style: str
) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    finished = run_script(tmp_path, INTERRUPTING, kind, backend, style, url)
    # An uncaught KeyboardInterrupt ends Python by SIGINT, which a shell reports as 130.
    allowed = {status} if kind == "exit" else {status, -signal.SIGINT}
    assert finished.returncode in allowed, finished.stderr
    trials = anyio.run(stored, url)
    assert trials, "the interrupted trial was not recorded"
    assert all(t.state.is_finished for t in trials)
    expected = ao.TrialState.FAIL if kind == "exit" else ao.TrialState.CANCELLED
    # With two calls in flight, either may be the one that ends the search.
    assert expected in {t.state for t in trials}


HANGING = """
    import sys, threading, anyio, asyncopt as ao
    from asyncopt import hp

    def hangs(params):
        threading.Event().wait()  # never returns

    async def main():
        result = await ao.minimize(
            hangs, {"x": hp.uniform("x", 0, 1)}, max_evals=3, concurrency=2,
            storage=sys.argv[2], algo=ao.rand.suggest,
            **({"trial_timeout": 0.2} if sys.argv[1] == "trial" else {"timeout": 0.3}),
        )
        print(sorted(t.state.name for t in result.trials))

    anyio.run(main, backend=sys.argv[3])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("which", ["trial", "search"])
def test_a_hanging_sync_objective_times_out_and_the_process_exits(
    tmp_path: Path, which: str, backend: str
) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    started = time.monotonic()
    finished = run_script(tmp_path, HANGING, which, url, backend, limit=30)
    assert finished.returncode == 0, finished.stderr
    assert time.monotonic() - started < 20
    if which == "trial":
        assert finished.stdout.strip() == "['FAIL', 'FAIL', 'FAIL']"
        trials = anyio.run(stored, url)
        assert all("exceeded trial_timeout=0.2s" in (t.error or "") for t in trials)
    else:
        # The two running trials, and on SQLite the one taken ahead for the next free slot.
        assert finished.stdout.strip() in (
            "['CANCELLED', 'CANCELLED']",
            "['CANCELLED', 'CANCELLED', 'CANCELLED']",
        )


async def test_a_timeout_error_raised_by_the_objective_is_an_ordinary_exception() -> None:
    async def objective(params: dict[str, Any]) -> float:
        raise TimeoutError("the remote API timed out")

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=2, trial_timeout=30, seed=1
    )
    for trial in result.trials:
        assert trial.state is ao.TrialState.FAIL
        assert trial.error is not None
        assert trial.error.startswith("TimeoutError: the remote API timed out")
        assert "trial_timeout" not in trial.error
        assert "Traceback" in trial.error
    with pytest.raises(TimeoutError, match="remote API"):
        await ao.minimize(objective, SPACE, algo=ao.rand.suggest, max_evals=2, catch=())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancelled_error_raised_by_the_objective_fails_its_trial() -> None:
    import asyncio

    async def objective(params: dict[str, Any]) -> float:
        if params["x"] < 0.5:
            raise asyncio.CancelledError
        return params["x"]

    result = await ao.minimize(objective, SPACE, algo=ao.rand.suggest, max_evals=20, seed=3)
    assert len(result.trials) == 20
    failed = [t for t in result.trials if t.state is ao.TrialState.FAIL]
    assert failed
    assert all(t.error is not None and t.error.startswith("CancelledError") for t in failed)
    assert all(t.state is not ao.TrialState.CANCELLED for t in result.trials)


async def test_several_objectives_failing_at_once_raise_one_asyncopt_error() -> None:
    storage = MemoryStorage()
    arrived = 0
    all_in = anyio.Event()

    async def objective(params: dict[str, Any]) -> float:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_in.set()
        await all_in.wait()
        raise ValueError(f"broken {params['x']:.3f}")

    with pytest.raises(ao.AsyncoptError, match="errors at once") as caught:
        await ao.minimize(
            objective,
            SPACE,
            algo=ao.rand.suggest,
            max_evals=10,
            concurrency=3,
            catch=(),
            storage=storage,
        )
    group = caught.value.__cause__
    assert isinstance(group, BaseExceptionGroup)
    # Under trio the first failure may cancel a sibling before it raises.
    raised = len(group.exceptions)
    assert raised >= 2
    assert [type(e) for e in group.exceptions] == [ValueError] * raised
    trials = await storage.trials_since("default")
    states = sorted(t.state for t in trials)
    # The rest (a sibling cancelled first, the trials taken one batch ahead) are CANCELLED.
    assert states == [ao.TrialState.FAIL] * raised + [ao.TrialState.CANCELLED] * (
        len(trials) - raised
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (10**400, "non-finite loss"),
        ({"loss": 10**400}, "loss is not finite"),
        ("deep", "nested too deeply"),
    ],
)
async def test_tell_with_a_value_it_cannot_store_records_a_fail(value: Any, reason: str) -> None:
    if value == "deep":
        value = inner = {"loss": 1.0}
        for _ in range(100_000):
            inner["next"] = {}
            inner = inner["next"]
    async with ao.open_study(MemoryStorage(), "s", SPACE, algo=ao.rand.suggest) as study:
        trial = await study.ask()
        assert trial is not None
        told = await study.tell(trial.tid, value)
        assert told.state is ao.TrialState.FAIL
        assert told.error is not None
        assert reason in told.error
        assert [t.state for t in await study.trials()] == [ao.TrialState.FAIL]
