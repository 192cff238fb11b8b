"""Plots of a study's progress: each trial's loss and the running best.

matplotlib is optional (``pip install asyncopt[plot]``); it is imported only when a plot
is drawn. Figures are built with matplotlib's object-oriented API on the Agg canvas, so
plotting never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from asyncopt.errors import MissingDependencyError
from asyncopt.trial import Trial, TrialState

__all__ = ["MissingDependencyError", "plot_trials", "save_plot"]


def _figure_class() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"plotting needs matplotlib, which is not installed ({exc}); "
            "install it with `pip install asyncopt[plot]`"
        ) from None

    def make(**options: Any) -> Any:
        figure = Figure(**options)
        FigureCanvasAgg(figure)
        return figure

    return make


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def plot_trials(
    trials: Sequence[Trial], *, title: str | None = None, log_scale: bool = False
) -> Any:
    """A matplotlib ``Figure``: loss per trial (by tid), the running best, failures marked.

    OK trials are dots at their loss; the running best is a step line; FAIL trials are red
    crosses and CANCELLED trials grey ticks along the bottom edge (they have no loss).
    ``log_scale`` uses a log loss axis when every loss is positive. Raises
    `MissingDependencyError` when matplotlib is not installed.
    """
    make_figure = _figure_class()
    figure = make_figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.add_subplot()
    ordered = sorted(trials, key=lambda t: t.tid)
    ok = [t for t in ordered if t.state is TrialState.OK and t.loss is not None]
    failed = [t.tid for t in ordered if t.state is TrialState.FAIL]
    cancelled = [t.tid for t in ordered if t.state is TrialState.CANCELLED]

    if ok:
        tids = [t.tid for t in ok]
        losses = [float(t.loss) for t in ok if t.loss is not None]
        best: list[float] = []
        for loss in losses:
            best.append(loss if not best else min(best[-1], loss))
        ax.scatter(tids, losses, s=14, color="tab:blue", alpha=0.6, label="loss")
        last_tid = max(t.tid for t in ordered)
        ax.step(
            [*tids, last_tid],
            [*best, best[-1]],
            where="post",
            color="tab:orange",
            linewidth=2,
            label=f"best so far ({best[-1]:.6g})",
        )
        if log_scale and min(losses) > 0 and all(math.isfinite(x) for x in losses):
            ax.set_yscale("log")
    else:
        ax.text(
            0.5,
            0.5,
            "no successful trial yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="grey",
        )
    # Trials without a loss sit on the bottom edge: x in data units, y in axes units.
    edge = ax.get_xaxis_transform()
    if failed:
        ax.scatter(
            failed,
            [0.02] * len(failed),
            transform=edge,
            marker="x",
            color="tab:red",
            clip_on=False,
            label=f"failed ({len(failed)})",
        )
    if cancelled:
        ax.scatter(
            cancelled,
            [0.02] * len(cancelled),
            transform=edge,
            marker="|",
            color="grey",
            clip_on=False,
            label=f"cancelled ({len(cancelled)})",
        )
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel("trial (tid)")
    ax.set_ylabel("loss")
    ax.set_title(title or f"{len(ordered)} trials")
    ax.grid(True, alpha=0.3)
    if ok or failed or cancelled:
        ax.legend(loc="upper right", fontsize="small")
    return figure


def save_plot(
    trials: Sequence[Trial],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    log_scale: bool = False,
    dpi: int = 100,
) -> None:
    """Draw `plot_trials` and write it to ``path``; the extension picks the format (PNG, SVG, PDF).

    Raises `MissingDependencyError` without matplotlib, `OSError` if the file cannot be written.
    """
    figure = plot_trials(trials, title=title, log_scale=log_scale)
    figure.savefig(os.fspath(path), dpi=dpi)
