"""Hyperopt's plots of a `Trials`, drawn with matplotlib on the current figure.

As in Hyperopt, each function draws with ``matplotlib.pyplot`` and shows the figure
when ``do_show`` is true. matplotlib is imported on first use (``pip install
asyncopt[plot]``).
"""

from __future__ import annotations

import math
from typing import Any

from asyncopt.hyperopt.base import (
    STATUS_FAIL,
    STATUS_NEW,
    STATUS_OK,
    STATUS_RUNNING,
    Trials,
)

__all__ = ["default_status_colors", "main_plot_histogram", "main_plot_history", "main_plot_vars"]

default_status_colors = {
    STATUS_NEW: "k",
    STATUS_RUNNING: "g",
    STATUS_OK: "b",
    STATUS_FAIL: "r",
}

_LOG_DISTRIBUTIONS = {"loguniform", "qloguniform", "lognormal", "qlognormal"}


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is in the test extra
        raise ImportError("plotting needs matplotlib: pip install asyncopt[plot]") from exc
    return plt


def _with_loss(trials: Trials) -> list[tuple[float, str]]:
    return [
        (float(loss), str(status))
        for loss, status in zip(trials.losses(), trials.statuses())
        if loss is not None
    ]


def main_plot_history(
    trials: Trials,
    do_show: bool = True,
    status_colors: dict[str, str] | None = None,
    title: str = "Loss History",
) -> None:
    """Each trial's loss in the order they ran, colored by status, and a line at the best."""
    plt = _pyplot()
    colors = default_status_colors if status_colors is None else status_colors
    points = _with_loss(trials)
    plt.scatter(
        range(len(points)),
        [loss for loss, _ in points],
        c=[colors.get(status, "k") for _, status in points],
    )
    plt.xlabel("time")
    plt.ylabel("loss")
    if any(status == STATUS_OK for status in trials.statuses()):
        plt.axhline(trials.average_best_error(), c="g")
    plt.title(title)
    if do_show:
        plt.show()


def main_plot_histogram(
    trials: Trials, do_show: bool = True, title: str = "Loss Histogram"
) -> None:
    """A histogram of the trials' losses."""
    plt = _pyplot()
    plt.hist([loss for loss, _ in _with_loss(trials)])
    plt.xlabel("loss")
    plt.ylabel("frequency")
    plt.title(title)
    if do_show:
        plt.show()


def main_plot_vars(
    trials: Trials,
    do_show: bool = True,
    fontsize: int = 10,
    colorize_best: int | None = None,
    columns: int = 5,
    arrange_by_loss: bool = False,
) -> None:
    """One panel per hyperparameter: its value in each trial where it was active.

    The x axis is the trial id (the loss with ``arrange_by_loss``); points go from black
    (best) to light grey (worst), white for trials without a loss; the ``colorize_best``
    best trials are green. Log-scaled hyperparameters get a log y axis.
    """
    plt = _pyplot()
    idxs, vals = trials.idxs_vals
    loss_by_tid = dict(zip(trials.tids, trials.losses()))
    finite = sorted(
        float(loss) for loss in loss_by_tid.values() if loss is not None and math.isfinite(loss)
    )
    if not finite:
        raise ValueError("no trial has a finite loss to plot")
    low, high = finite[0], finite[-1]
    best_below = finite[min(colorize_best, len(finite) - 1)] if colorize_best else -math.inf

    def color(loss: float | None) -> tuple[float, float, float]:
        if loss is None or not math.isfinite(loss):
            return (1.0, 1.0, 1.0)
        shade = (loss - low) / (high - low + 1e-4)
        if loss < best_below:
            return (0.0, 1.0 - shade, 0.0)
        return (shade, shade, shade)

    space = trials.space
    labels = sorted(idxs)
    width = max(1, min(columns, len(labels)))
    rows = max(1, math.ceil(len(labels) / width))
    for number, label in enumerate(labels, start=1):
        axes = plt.subplot(rows, width, number)
        axes.set_title(label, fontsize=fontsize)
        points = [
            (loss_by_tid[tid] if arrange_by_loss else tid, value, color(loss_by_tid[tid]))
            for tid, value in zip(idxs[label], vals[label])
            if not arrange_by_loss or loss_by_tid[tid] is not None
        ]
        if points:
            x, y, colors = zip(*points)
            axes.scatter(x, y, c=list(colors))
        if space is not None and label in space and space[label].dist.name in _LOG_DISTRIBUTIONS:
            axes.set_yscale("log")
    if do_show:
        plt.show()
