"""Optimization history, and the empirical distribution of the loss across studies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from asyncopt.plot._base import STATE_COLOURS, finite_ok, new_figure, no_data
from asyncopt.trial import Trial, TrialState

__all__ = ["plot_edf", "plot_history", "plot_intermediate"]

# Height (in axes units) of the row along the bottom that holds trials without a loss.
_EDGE = 0.03


def _place_legend(figure: Any, ax: Any) -> None:
    """Put the legend above the axes, outside them, so it hides no point."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        figure.legend(
            handles,
            labels,
            loc="outside upper center",
            ncols=min(len(handles), 4),
            fontsize="small",
            frameon=False,
        )


def plot_history(
    trials: Sequence[Trial], *, title: str | None = None, log_scale: bool = False
) -> Any:
    """Each trial's loss by tid, the best loss so far, and the trials that have none.

    OK trials are dots; the running best is a step line to the last tid; FAIL trials are
    red crosses and CANCELLED trials grey ticks in a row along the bottom (they have no
    loss). ``log_scale`` uses a log loss axis when every loss is positive (otherwise the
    axis stays linear and says so). Works with no OK trial. Returns a matplotlib
    ``Figure``; raises `MissingDependencyError` without matplotlib.

    Args:
        trials: the study's trials (``result.trials``, ``await study.trials()``), any order.
        title: the figure's title (default: the number of trials).
        log_scale: a log loss axis, when every loss is positive.
    """
    figure = new_figure(figsize=(8, 4.5))
    ax = figure.add_subplot()
    ordered = sorted(trials, key=lambda t: t.tid)
    ok = finite_ok(ordered)
    failed = [t.tid for t in ordered if t.state is TrialState.FAIL]
    cancelled = [t.tid for t in ordered if t.state is TrialState.CANCELLED]
    ax.set_title(title or f"{len(ordered)} trials", loc="left")
    ax.set_xlabel("trial (tid)")
    if ok:
        tids = [t.tid for t in ok]
        losses = np.array([float(t.loss) for t in ok if t.loss is not None])
        best = np.minimum.accumulate(losses)
        ax.scatter(tids, losses, s=14, color=STATE_COLOURS[TrialState.OK], alpha=0.6, label="loss")
        last_tid = ordered[-1].tid
        ax.step(
            [*tids, last_tid],
            [*best, best[-1]],
            where="post",
            color="tab:orange",
            linewidth=2,
            label=f"best so far ({best[-1]:.6g})",
        )
        ax.set_ylabel("loss")
        if log_scale:
            if losses.min() > 0:
                ax.set_yscale("log")
            else:
                ax.set_ylabel("loss (linear: a log axis needs positive losses)")
        # Room at the bottom for the row of trials without a loss.
        if failed or cancelled:
            low, high = ax.get_ylim()
            if ax.get_yscale() == "log":
                ax.set_ylim(low / (high / low) ** 0.08, high)
            else:
                ax.set_ylim(low - 0.08 * (high - low), high)
    else:
        counts = f"{len(failed)} failed, {len(cancelled)} cancelled" if ordered else "no trials"
        no_data(ax, f"no successful trial yet ({counts})")
        ax.set_ylabel("loss")
    # Trials without a loss sit in a row along the bottom: x in data units, y in axes units.
    edge = ax.get_xaxis_transform()
    for tids, marker, state, name in (
        (failed, "x", TrialState.FAIL, "failed"),
        (cancelled, "|", TrialState.CANCELLED, "cancelled"),
    ):
        if tids:
            ax.scatter(
                tids,
                [_EDGE] * len(tids),
                transform=edge,
                marker=marker,
                color=STATE_COLOURS[state],
                label=f"{name} ({len(tids)})",
            )
    if ordered:
        # Set by hand: points placed in axes units do not take part in autoscaling.
        ax.set_xlim(ordered[0].tid - 0.5, ordered[-1].tid + 0.5)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    _place_legend(figure, ax)
    return figure


def plot_edf(
    studies: Mapping[str, Sequence[Trial]] | Sequence[Trial],
    *,
    title: str | None = None,
    log_scale: bool = False,
) -> Any:
    """The empirical distribution of the loss: the share of OK trials at or below each loss.

    ``studies`` maps study names to their trials (one curve each), or is one study's
    trials. A curve further left and steeper belongs to the better search. Studies
    without an OK trial are listed in the legend with "no successful trial".

    Args:
        studies: study name → its trials, or one study's trials.
        title: the figure's title.
        log_scale: a log loss axis, when every loss is positive.
    """
    if isinstance(studies, Mapping):
        named = dict(studies)
    else:
        named = {"study": list(studies)}
    figure = new_figure(figsize=(8, 4.5))
    ax = figure.add_subplot()
    ax.set_title(title or "empirical distribution of the loss", loc="left")
    drawn = 0
    positive = True
    for name, trials in named.items():
        losses = np.sort([float(t.loss) for t in finite_ok(trials) if t.loss is not None])
        if losses.size == 0:
            ax.plot([], [], color="grey", label=f"{name} (no successful trial)")
            continue
        drawn += 1
        positive = positive and bool(losses[0] > 0)
        share = np.arange(1, losses.size + 1) / losses.size
        ax.step(losses, share, where="post", label=f"{name} ({losses.size} ok)")
    if not drawn:
        no_data(ax, "no successful trial yet")
    else:
        ax.set_xlabel("loss")
        ax.set_ylabel("share of OK trials with this loss or less")
        ax.set_ylim(0, 1.02)
        if log_scale and positive:
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    _place_legend(figure, ax)
    return figure


def plot_intermediate(
    trials: Sequence[Trial], *, title: str | None = None, log_scale: bool = False
) -> Any:
    """Learning curves: each trial's reported values by step, pruned trials marked.

    A line per trial that reported values; a PRUNED trial's line is drawn in its state's
    colour and ends in a cross at the step where it stopped. Trials that reported
    nothing are left out (the title counts them).

    Args:
        trials: the study's trials, any order.
        title: the figure's title (default: how many trials reported, how many pruned).
        log_scale: a log value axis, when every reported value is positive.
    """
    figure = new_figure(figsize=(8, 4.5))
    ax = figure.add_subplot()
    curves = sorted((t for t in trials if t.intermediate), key=lambda t: t.tid)
    pruned = [t for t in curves if t.state is TrialState.PRUNED]
    ax.set_title(title or f"{len(curves)} trials reported values, {len(pruned)} pruned", loc="left")
    if not curves:
        no_data(ax, "no trial reported an intermediate value")
        return figure
    positive = True
    for trial in curves:
        steps = np.array(sorted(trial.intermediate))
        values = np.array([trial.intermediate[int(s)] for s in steps])
        positive = positive and bool(np.all(values[np.isfinite(values)] > 0))
        colour = STATE_COLOURS.get(trial.state, "tab:blue")
        ax.plot(steps, values, color=colour, alpha=0.5, linewidth=1)
    if pruned:
        ax.scatter(
            [t.last_step for t in pruned],
            [t.last_value for t in pruned],
            marker="x",
            color=STATE_COLOURS[TrialState.PRUNED],
            label=f"pruned ({len(pruned)})",
            zorder=3,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("reported value")
    if log_scale and positive:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    _place_legend(figure, ax)
    return figure
