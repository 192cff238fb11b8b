"""Crashes and interrupts: a worker killed with SIGKILL or stopped with Ctrl-C mid-run.

The storage must stay consistent: the dead worker's trials are reaped once their lease
passes, requeued once, and a second run meets the budget with nothing left RUNNING.
"""

from __future__ import annotations

import signal
import sqlite3
import sys

import pytest
from test_multiprocess import (
    assert_no_lock_errors,
    finish,
    read_trials,
    start_worker,
    wait_for_lines,
)

from asyncopt.storage.base import Trial, TrialState

LEASE = 2.0


def assert_file_intact(url: str) -> None:
    """For a file-backed storage, SQLite's own integrity check passes."""
    if not url.startswith("sqlite:"):
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def assert_budget_met(trials: list[Trial], max_evals: int) -> None:
    assert [t.tid for t in trials] == list(range(len(trials)))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.QUEUED)]
    budgeted = [t for t in trials if t.state is not TrialState.CANCELLED]
    assert len(budgeted) == max_evals
    assert all(t.state is TrialState.OK for t in budgeted)


@pytest.mark.slow
def test_a_killed_worker_is_reaped_requeued_and_the_budget_met(shared_url: str) -> None:
    max_evals = 40
    victim = start_worker(shared_url, max_evals=max_evals, concurrency=4, pause=0.2, lease=LEASE)
    wait_for_lines(victim, finished=8, in_flight=2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    orphans = [t for t in read_trials(shared_url) if t.state is TrialState.RUNNING]
    assert orphans, "the worker was killed with trials in flight"

    code, output = finish(
        start_worker(shared_url, max_evals=max_evals, concurrency=4, pause=0.01, lease=LEASE)
    )
    assert code == 0, output
    assert_no_lock_errors([output])

    trials = read_trials(shared_url)
    assert_budget_met(trials, max_evals)
    for orphan in orphans:
        reaped = trials[orphan.tid]
        assert reaped.state is TrialState.CANCELLED
        assert reaped.error is not None
        assert "lease" in reaped.error
    # Every lost trial (the orphans, and any trial whose lease lapsed on a stalled machine)
    # was queued again exactly once, unless it was itself a retry.
    for lost in (t for t in trials if t.state is TrialState.CANCELLED):
        retries = [t for t in trials if t.retry_of == lost.tid]
        assert len(retries) == (0 if lost.retry_of is not None else 1), output
        for retry in retries:
            assert retry.assignment == lost.assignment
            assert retry.seed == lost.seed
            assert retry.tid > lost.tid
    assert_file_intact(shared_url)


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_ctrl_c_leaves_a_consistent_study_that_resumes(shared_url: str, loop: str) -> None:
    max_evals = 30
    worker = start_worker(shared_url, max_evals=max_evals, concurrency=4, pause=0.3, loop=loop)
    wait_for_lines(worker, finished=4, in_flight=2)
    worker.send_signal(signal.SIGINT)
    code, output = finish(worker)
    assert code != 0
    if sys.version_info >= (3, 11) or loop == "trio":
        assert "KeyboardInterrupt" in output
    else:  # before 3.11, anyio's asyncio runner reports a SIGINT as CancelledError
        assert "KeyboardInterrupt" in output or "CancelledError" in output
    assert "database is locked" not in output.lower()

    interrupted = read_trials(shared_url)
    assert not [t for t in interrupted if t.state is TrialState.RUNNING]
    cancelled = [t for t in interrupted if t.state is TrialState.CANCELLED]
    assert cancelled, "the interrupt caught trials in flight"
    assert all(t.finished_at is not None for t in cancelled)
    assert_file_intact(shared_url)

    code, output = finish(start_worker(shared_url, max_evals=max_evals, concurrency=4, pause=0))
    assert code == 0, output
    assert_no_lock_errors([output])
    assert_budget_met(read_trials(shared_url), max_evals)
    assert_file_intact(shared_url)
