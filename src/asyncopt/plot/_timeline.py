"""The timeline: each trial as a bar from its start to its end, in its concurrency slot."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from asyncopt.plot._base import STATE_COLOURS, new_figure, no_data
from asyncopt.trial import Trial, TrialState

__all__ = ["plot_timeline", "slots"]


def slots(trials: Sequence[Trial], now: float) -> list[tuple[str, int, Trial, float, float]]:
    """``(worker, slot, trial, start, end)`` for each started trial, slots numbered per worker.

    A worker's trials go to the lowest slot free at their start (interval partitioning),
    so a worker uses as many slots as it ran trials at once. A trial still running ends
    at ``now``.
    """
    placed: list[tuple[str, int, Trial, float, float]] = []
    started = sorted(
        (t for t in trials if t.started_at is not None), key=lambda t: (t.started_at, t.tid)
    )
    free_at: dict[str, list[float]] = {}
    for trial in started:
        assert trial.started_at is not None
        start = trial.started_at
        end = trial.finished_at if trial.finished_at is not None else max(now, start)
        worker = trial.worker or "unknown worker"
        ends = free_at.setdefault(worker, [])
        slot = next((i for i, free in enumerate(ends) if free <= start), len(ends))
        if slot == len(ends):
            ends.append(end)
        else:
            ends[slot] = end
        placed.append((worker, slot, trial, start, end))
    return placed


def plot_timeline(
    trials: Sequence[Trial], *, title: str | None = None, now: float | None = None
) -> Any:
    """Each started trial as a bar from start to end, one row per worker's concurrency slot.

    Bars are coloured by state (OK blue, FAIL red, CANCELLED grey, RUNNING orange, drawn
    up to ``now``, default the current time). The title gives how busy the slots were:
    the trials' total time over the rows' total time from the first start to the last end.

    Args:
        trials: the study's trials; those not started yet (QUEUED) are left out.
        title: the figure's title (default: trials, workers and slots counted).
        now: Unix time up to which RUNNING trials are drawn (default: the current time).
    """
    figure = new_figure(figsize=(9, 4.5))
    ax = figure.add_subplot()
    placed = slots(trials, time.time() if now is None else now)
    if not placed:
        no_data(ax, "no trial has started yet")
        ax.set_title(title or "timeline", loc="left")
        return figure
    rows = sorted({(worker, slot) for worker, slot, *_ in placed})
    row_of = {row: i for i, row in enumerate(rows)}
    origin = min(start for *_, start, _ in placed)
    span = max(end for *_, end in placed) - origin
    for state in TrialState:
        bars = [p for p in placed if p[2].state is state]
        if not bars:
            continue
        ax.barh(
            [row_of[(worker, slot)] for worker, slot, *_ in bars],
            [end - start for *_, start, end in bars],
            left=[start - origin for *_, start, _ in bars],
            height=0.8,
            color=STATE_COLOURS[state],
            edgecolor="white",
            linewidth=0.3,
            label=f"{state.name} ({len(bars)})",
        )
    busy = sum(end - start for *_, start, end in placed)
    workers = sorted({worker for worker, _ in rows})
    short = {worker: _short(worker, i) for i, worker in enumerate(workers)}
    ax.set_yticks(range(len(rows)), [f"{short[w]} #{slot}" for w, slot in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first trial started")
    share = busy / (span * len(rows)) if span > 0 else 1.0
    ax.set_title(
        title or f"{len(placed)} trials on {len(workers)} worker(s), {len(rows)} slot(s)",
        loc="left",
    )
    ax.text(
        1.0,
        1.01,
        f"slots busy {share:.0%} of the time",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize="small",
    )
    ax.grid(True, axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize="small")
    return figure


def _short(worker: str, index: int) -> str:
    """A worker id (host:pid:random) cut to host:pid, which is enough to tell them apart."""
    parts = worker.split(":")
    return ":".join(parts[:2]) if len(parts) >= 2 else worker or f"worker {index}"
