"""What a study of schema version 1 (before intermediate values) must give once upgraded.

The SQLite and PostgreSQL tests build such a study with the old tables (study "s": a
RUNNING trial 0 held by "w", an OK trial 1 with loss 0.5, a CANCELLED trial 2), open it,
and hand the storages to these checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from asyncopt.storage.base import Storage, Trial, TrialState


async def check_upgraded_study(storage: Storage) -> Trial:
    """The old trials read back with no reported values, and trial 0 takes reports and
    is pruned within the budget; returns the pruned trial."""
    trials = await storage.trials_since("s")
    assert [(t.tid, t.state, t.intermediate) for t in trials] == [
        (0, TrialState.RUNNING, {}),
        (1, TrialState.OK, {}),
        (2, TrialState.CANCELLED, {}),
    ]
    assert trials[1].loss == 0.5
    reported = await storage.report("s", 0, worker="w", step=1, value=0.25)
    assert reported.intermediate == {1: 0.25}
    assert reported.seq > max(t.seq for t in trials)
    pruned = await storage.finish_trial("s", 0, worker="w", state=TrialState.PRUNED, loss=0.25)
    assert pruned.intermediate == {1: 0.25}
    assert await storage.count_trials("s") == 2
    assert await storage.create_trial("s", {"x": 3}, budget=2, worker="w", lease=60) is None
    return pruned


async def check_opened_at_once(storages: Sequence[Storage]) -> None:
    """Open ``storages`` (all on one old study) at once; each then reports a step."""
    async with anyio.create_task_group() as group:
        for storage in storages:
            group.start_soon(storage.open)
    try:
        for step, storage in enumerate(storages):
            await storage.report("s", 0, worker="w", step=step, value=step / 2)
        trial = await storages[0].get_trial("s", 0)
        assert trial.intermediate == {step: step / 2 for step in range(len(storages))}
    finally:
        for storage in storages:
            await storage.aclose()
