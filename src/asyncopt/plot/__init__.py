"""Figures of a study: history, slice, parallel coordinates, contour, importances, EDF,
timeline, intermediate values (learning curves).

matplotlib is optional (``pip install asyncopt[plot]``); it is imported only when a plot
is drawn. Each function returns a matplotlib ``Figure`` built on its own Agg canvas:
plotting never touches pyplot's global state or needs a display. Show one in a notebook
by leaving it as a cell's value; write one with `save_figure` (the extension picks the
format). Functions that read parameters take the study's compiled space (``study.space``,
``result.space``) to name choices' options and put log parameters on log axes; without it
they show raw stored values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from asyncopt._table import MissingDependencyError as MissingDependencyError
from asyncopt.plot._base import PlotFormatError as PlotFormatError
from asyncopt.plot._base import image_format as image_format
from asyncopt.plot._base import save_figure as save_figure
from asyncopt.plot._history import plot_edf as plot_edf
from asyncopt.plot._history import plot_history as plot_history
from asyncopt.plot._history import plot_intermediate as plot_intermediate
from asyncopt.plot._params import param_importances as param_importances
from asyncopt.plot._params import plot_contour as plot_contour
from asyncopt.plot._params import plot_importance as plot_importance
from asyncopt.plot._params import plot_parallel as plot_parallel
from asyncopt.plot._params import plot_slice as plot_slice
from asyncopt.plot._timeline import plot_timeline as plot_timeline
from asyncopt.trial import Trial

__all__ = [
    "KINDS",
    "MissingDependencyError",
    "PlotFormatError",
    "draw",
    "image_format",
    "param_importances",
    "plot_contour",
    "plot_edf",
    "plot_history",
    "plot_importance",
    "plot_intermediate",
    "plot_parallel",
    "plot_slice",
    "plot_timeline",
    "plot_trials",
    "save_figure",
    "save_plot",
]

#: The plot kinds of ``asyncopt plot --kind``, each a function name of this module.
KINDS = (
    "history",
    "slice",
    "parallel",
    "contour",
    "importance",
    "edf",
    "timeline",
    "intermediate",
)

#: The first plot of asyncopt, under its first name.
plot_trials = plot_history


def save_plot(
    trials: Sequence[Trial],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    log_scale: bool = False,
    dpi: int = 100,
) -> None:
    """Draw `plot_history` and write it to ``path`` (see `save_figure`)."""
    figure = plot_history(trials, title=title, log_scale=log_scale)
    save_figure(figure, path, dpi=dpi)


def draw(kind: str, studies: dict[str, Sequence[Trial]], space: Any, **options: Any) -> Any:
    """The figure of ``kind`` (one of `KINDS`) for the CLI: ``studies`` maps names to trials.

    Only ``edf`` compares several studies; the others draw the first. ``options`` may hold
    ``title``, ``log_scale`` and ``params``; those a kind does not take are ignored.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    title = options.get("title")
    log_scale = bool(options.get("log_scale", False))
    params = options.get("params")
    if kind == "edf":
        return plot_edf(studies, title=title, log_scale=log_scale)
    trials = next(iter(studies.values()))
    if kind == "history":
        return plot_history(trials, title=title, log_scale=log_scale)
    if kind == "timeline":
        return plot_timeline(trials, title=title)
    if kind == "intermediate":
        return plot_intermediate(trials, title=title, log_scale=log_scale)
    if kind == "slice":
        return plot_slice(trials, space, params=params, title=title, log_scale=log_scale)
    if kind == "parallel":
        return plot_parallel(trials, space, params=params, title=title)
    if kind == "contour":
        return plot_contour(trials, space, params=params, title=title)
    return plot_importance(trials, space, title=title)
