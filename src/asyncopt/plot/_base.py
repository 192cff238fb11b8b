"""What every plot shares: making a figure off pyplot, saving it, reading trials as columns."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from asyncopt._table import MissingDependencyError, choice_nodes
from asyncopt.errors import AsyncoptError
from asyncopt.space.compile import CompiledSpace
from asyncopt.space.expressions import DictNode
from asyncopt.trial import Trial, TrialState

__all__ = [
    "STATE_COLOURS",
    "Parameter",
    "PlotFormatError",
    "finite_ok",
    "image_format",
    "new_figure",
    "no_data",
    "parameters",
    "save_figure",
]

#: The colour of each trial state, the same in every plot.
STATE_COLOURS = {
    TrialState.OK: "tab:blue",
    TrialState.FAIL: "tab:red",
    TrialState.CANCELLED: "tab:gray",
    TrialState.PRUNED: "tab:purple",
    TrialState.RUNNING: "tab:orange",
    TrialState.QUEUED: "tab:olive",
}


class PlotFormatError(AsyncoptError, ValueError):
    """The file name's extension is not an image format matplotlib can write."""


def new_figure(**options: Any) -> Any:
    """A matplotlib ``Figure`` on its own Agg canvas (pyplot's figure list is left alone).

    Raises `MissingDependencyError` naming the ``plot`` extra when matplotlib is missing.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"plotting needs matplotlib, which is not installed ({exc}); "
            "install it with `pip install asyncopt[plot]`"
        ) from None
    options.setdefault("layout", "constrained")
    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def image_format(path: str | os.PathLike[str]) -> str:
    """The image format ``path``'s extension names (``"png"``, ``"svg"``, ...).

    Raises `PlotFormatError` listing the formats matplotlib writes when the extension is
    missing or unknown, `MissingDependencyError` without matplotlib.
    """
    new_figure()  # the check that matplotlib is there
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    text = os.fspath(path)
    extension = os.path.splitext(text)[1].lower().lstrip(".")
    supported = FigureCanvasAgg.get_supported_filetypes()
    if extension not in supported:
        known = ", ".join(f".{name}" for name in sorted(supported))
        what = f"extension .{extension}" if extension else "no extension"
        raise PlotFormatError(
            f"cannot write {text}: {what} is not an image format; use one of {known}"
        )
    return extension


def save_figure(figure: Any, path: str | os.PathLike[str], *, dpi: int = 100) -> None:
    """Write ``figure`` to ``path``; the extension picks the format (``.png``, ``.svg``, ...).

    Raises `PlotFormatError` listing the formats when the extension is missing or unknown
    (before anything is written), `OSError` when the file cannot be written.

    Args:
        figure: a figure from this module (or any matplotlib ``Figure``).
        path: the file to write; its extension names the format.
        dpi: dots per inch of raster formats (PNG: 100 dpi makes an 8-inch figure 800 px).
    """
    figure.savefig(os.fspath(path), dpi=dpi, format=image_format(path))


def no_data(ax: Any, message: str) -> None:
    """Say in the middle of ``ax`` why nothing is drawn, and hide its meaningless ticks."""
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def finite_ok(trials: Sequence[Trial]) -> list[Trial]:
    """The OK trials with a finite loss, by tid."""
    return sorted(
        (
            t
            for t in trials
            if t.state is TrialState.OK and t.loss is not None and math.isfinite(t.loss)
        ),
        key=lambda t: t.tid,
    )


@attrs.frozen
class Parameter:
    """One parameter as plots show it: its values over some trials, on a scale.

    ``values`` holds one number per trial, NaN where the parameter was inactive; a
    categorical parameter's number is its category position (0, 1, ...), named by
    ``categories``. ``log`` is set for the log-scaled distributions.
    """

    label: str
    values: np.ndarray
    log: bool = False
    categories: tuple[str, ...] | None = None

    @property
    def active(self) -> np.ndarray:
        """Where the parameter has a value."""
        mask: np.ndarray = ~np.isnan(self.values)
        return mask


def _option_name(option: Any, index: int) -> str:
    if option is None or isinstance(option, (str, int, float, bool)):
        return str(option)
    if isinstance(option, DictNode):
        constants = [
            f"{key}={value}"
            for key, value in option.items
            if isinstance(key, str) and isinstance(value, (str, int, float, bool))
        ]
        if constants:
            return ", ".join(constants)
    return f"option {index}"


def parameters(trials: Sequence[Trial], space: CompiledSpace | None = None) -> list[Parameter]:
    """Each parameter over ``trials`` (in that order): the space's labels first, then others.

    Without ``space``, every stored label is a linear number (a choice shows its index).
    """
    seen = {label for trial in trials for label in trial.assignment}
    labels = [] if space is None else [label for label in space.labels if label in seen]
    labels += sorted(seen.difference(labels))
    choices = {} if space is None else choice_nodes(space)
    found = []
    for label in labels:
        raw = np.array(
            [float(t.assignment.get(label, math.nan)) for t in trials], dtype=float
        ).reshape(len(trials))
        spec = space[label] if space is not None and label in space else None
        if spec is None:
            found.append(Parameter(label, raw))
            continue
        dist = spec.dist
        if dist.is_categorical:
            if label in choices:
                names = tuple(
                    _option_name(option, i) for i, option in enumerate(choices[label].options)
                )
            else:
                names = tuple(str(dist.offset + i) for i in range(dist.size))
            found.append(Parameter(label, raw - dist.offset, categories=names))
        else:
            found.append(Parameter(label, raw, log=dist.log))
    return found
