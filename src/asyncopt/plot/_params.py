"""How the loss depends on the parameters: slice, parallel coordinates, contour, importances."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from asyncopt.plot._base import Parameter, finite_ok, new_figure, no_data, parameters
from asyncopt.space.compile import CompiledSpace
from asyncopt.trial import Trial

__all__ = ["param_importances", "plot_contour", "plot_importance", "plot_parallel", "plot_slice"]

# Where a line crosses the axis of a parameter its trial did not use (axes run 0 to 1).
_INACTIVE = -0.12

# At most this many value bins per parameter in `param_importances`.
_MAX_BINS = 10


def _ok_losses(trials: Sequence[Trial]) -> tuple[list[Trial], np.ndarray]:
    ok = finite_ok(trials)
    return ok, np.array([float(t.loss) for t in ok if t.loss is not None], dtype=float)


def _pick(found: list[Parameter], names: Sequence[str] | None) -> list[Parameter]:
    if names is None:
        return found
    by_label = {p.label: p for p in found}
    unknown = [name for name in names if name not in by_label]
    if unknown:
        known = ", ".join(by_label) or "none"
        raise ValueError(f"no parameter {unknown[0]!r} in these trials (parameters: {known})")
    return [by_label[name] for name in names]


def _set_axis(ax: Any, parameter: Parameter, axis: str) -> None:
    """Category names as ticks, or a log scale, on ``axis`` ("x" or "y") of ``ax``."""
    if parameter.categories is not None:
        ticks = range(len(parameter.categories))
        if axis == "x":
            ax.set_xticks(ticks, parameter.categories, rotation=20, ha="right")
            ax.set_xlim(-0.5, len(parameter.categories) - 0.5)
        else:
            ax.set_yticks(ticks, parameter.categories)
            ax.set_ylim(-0.5, len(parameter.categories) - 0.5)
    elif parameter.log and np.nanmin(parameter.values, initial=math.inf) > 0:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def plot_slice(
    trials: Sequence[Trial],
    space: CompiledSpace | None = None,
    *,
    params: Sequence[str] | None = None,
    title: str | None = None,
    log_scale: bool = False,
) -> Any:
    """The loss of each OK trial against each parameter, one panel per parameter.

    A conditional parameter shows only the trials where it was active (its panel says in
    how many). Points are coloured by tid, so later trials stand out. ``space`` (the
    study's compiled space) gives choices their option names and log parameters a log
    axis; ``params`` picks and orders the panels. ``log_scale`` is for the loss axis.

    Args:
        trials: the study's trials, any order; only OK trials are drawn.
        space: the study's compiled space (``result.space``, ``study.space``), or None.
        params: the labels to show, in this order (default: all); ValueError for an
            unknown one.
        title: the figure's title.
        log_scale: a log loss axis, when every loss is positive.
    """
    ok, losses = _ok_losses(trials)
    found = _pick(parameters(ok, space), params)
    columns = max(1, min(3, len(found)))
    rows = max(1, math.ceil(len(found) / columns))
    figure = new_figure(figsize=(3.6 * columns + 1, 3.0 * rows + 0.6))
    figure.suptitle(title or "loss against each parameter", x=0.02, ha="left")
    if not found:
        no_data(figure.add_subplot(), "no successful trial yet")
        return figure
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    tids = np.array([t.tid for t in ok])
    drawn = None
    for ax, parameter in zip(axes, found):
        active = parameter.active
        drawn = ax.scatter(
            parameter.values[active],
            losses[active],
            c=tids[active],
            cmap="viridis",
            vmin=tids.min(),
            vmax=tids.max(),
            s=16,
            alpha=0.8,
        )
        _set_axis(ax, parameter, "x")
        if log_scale and losses.min() > 0:
            ax.set_yscale("log")
        where = "" if active.all() else f" (active in {int(active.sum())} of {len(ok)})"
        ax.set_title(parameter.label + where, fontsize="medium")
        ax.grid(True, alpha=0.3)
    for ax in axes[: len(found)][::columns]:
        ax.set_ylabel("loss")
    for ax in axes[len(found) :]:
        ax.set_visible(False)
    if drawn is not None:
        figure.colorbar(drawn, ax=list(axes[: len(found)]), label="trial (tid)", shrink=0.8)
    return figure


def _scaled(parameter: Parameter) -> tuple[np.ndarray, str, str]:
    """The values mapped to [0, 1] (NaN stays NaN) and the texts of the axis' two ends."""
    values = parameter.values
    if parameter.categories is not None:
        last = max(len(parameter.categories) - 1, 1)
        return values / last, parameter.categories[0], parameter.categories[-1]
    active = values[~np.isnan(values)]
    if active.size == 0:
        return values, "", ""
    use_log = parameter.log and active.min() > 0
    shown = np.log10(values) if use_log else values
    low, high = float(np.nanmin(shown)), float(np.nanmax(shown))
    scaled = (shown - low) / (high - low) if high > low else np.where(np.isnan(shown), shown, 0.5)
    return scaled, f"{active.min():.3g}", f"{active.max():.3g}"


def plot_parallel(
    trials: Sequence[Trial],
    space: CompiledSpace | None = None,
    *,
    params: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Parallel coordinates: each OK trial a line through one vertical axis per parameter
    and a last one for the loss, coloured by loss (the best on top, darkest).

    Each axis runs from the lowest value seen (bottom) to the highest (top); log
    parameters on a log scale, choices in option order. A line crosses the axis of a
    parameter that was not active in its trial below it, at "inactive".

    Args:
        trials: the study's trials, any order; only OK trials are drawn.
        space: the study's compiled space, or None for raw values.
        params: the labels of the axes, in this order (default: all).
        title: the figure's title.
    """
    from matplotlib.collections import LineCollection

    ok, losses = _ok_losses(trials)
    found = _pick(parameters(ok, space), params)
    figure = new_figure(figsize=(max(6.0, 1.4 * (len(found) + 1) + 2), 4.5))
    ax = figure.add_subplot()
    ax.set_title(title or "parallel coordinates (colour: loss)", loc="left")
    if not ok:
        no_data(ax, "no successful trial yet")
        return figure
    loss_axis = Parameter("loss", losses)
    columns = [_scaled(p) for p in (*found, loss_axis)]
    grid = np.column_stack([scaled for scaled, _, _ in columns])
    inactive = np.isnan(grid)
    grid[inactive] = _INACTIVE  # below the axis, so that every line stays whole
    order = np.argsort(-losses, kind="stable")  # the best drawn last, on top
    positions = np.arange(grid.shape[1], dtype=float)
    lines = LineCollection(
        [np.column_stack([positions, grid[i]]) for i in order],
        array=losses[order],
        cmap="viridis",
        linewidths=1.2,
        alpha=0.7,
    )
    ax.add_collection(lines)
    for j, (x, (_, low, high)) in enumerate(zip(positions, columns)):
        ax.plot([x, x], [0, 1], color="black", linewidth=0.8)
        ax.text(x + 0.04, 0, low, ha="left", va="center", fontsize="x-small")
        ax.text(x + 0.04, 1, high, ha="left", va="center", fontsize="x-small")
        if inactive[:, j].any():
            ax.plot([x], [_INACTIVE], marker="_", color="grey")
            ax.text(x + 0.04, _INACTIVE, "inactive", ha="left", va="center", fontsize="x-small")
    ax.set_xticks(positions, [p.label for p in (*found, loss_axis)], rotation=20, ha="right")
    ax.set_xlim(-0.3, positions[-1] + 0.5)
    ax.set_ylim(_INACTIVE - 0.06, 1.06)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    figure.colorbar(lines, ax=ax, label="loss")
    return figure


def param_importances(
    trials: Sequence[Trial], space: CompiledSpace | None = None
) -> dict[str, float]:
    """How much of the loss's variation each parameter explains on its own, most first.

    The method (numpy only, no model fitted): over the OK trials where the parameter was
    active, the losses are replaced by their ranks (so a few huge losses do not decide);
    the parameter's values are split into bins (one per category, or up to 10 quantile
    bins of a number, about sqrt(n)); the importance is epsilon squared, the share of the
    rank variance between the bins' means corrected for the number of bins:
    ``(SS_between - (k - 1) * MS_within) / SS_total``, floored at 0. A parameter with no
    effect scores about 0, one that decides the loss alone about 1. It measures each
    parameter's main effect: interactions are not credited. A parameter active in fewer
    than 4 OK trials scores 0.

    Args:
        trials: the study's trials; only OK trials with a finite loss count.
        space: the study's compiled space (categories from its choices), or None.
    """
    ok, losses = _ok_losses(trials)
    scores: dict[str, float] = {}
    for parameter in parameters(ok, space):
        active = parameter.active
        scores[parameter.label] = _epsilon_squared(parameter, losses, active)
    return dict(sorted(scores.items(), key=lambda item: -item[1]))


def _epsilon_squared(parameter: Parameter, losses: np.ndarray, active: np.ndarray) -> float:
    from scipy.stats import rankdata  # scipy.stats takes a while to import: only when used

    n = int(active.sum())
    if n < 4:
        return 0.0
    ranks = rankdata(losses[active])
    values = parameter.values[active]
    if parameter.categories is not None:
        groups = values.astype(int)
    else:
        bins = min(_MAX_BINS, max(2, int(math.sqrt(n))))
        edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
        groups = np.searchsorted(edges, values, side="right")
    labels, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    k = labels.size
    total = float(np.sum((ranks - ranks.mean()) ** 2))
    if k < 2 or n <= k or total == 0.0:
        return 0.0
    means = np.bincount(inverse, weights=ranks) / counts
    between = float(np.sum(counts * (means - ranks.mean()) ** 2))
    within_mean_square = (total - between) / (n - k)
    return max(0.0, (between - (k - 1) * within_mean_square) / total)


def plot_importance(
    trials: Sequence[Trial], space: CompiledSpace | None = None, *, title: str | None = None
) -> Any:
    """`param_importances` as horizontal bars, most important on top, each with its value.

    Args:
        trials: the study's trials.
        space: the study's compiled space, or None.
        title: the figure's title.
    """
    scores = param_importances(trials, space)
    figure = new_figure(figsize=(7, 1.0 + 0.45 * max(len(scores), 3)))
    ax = figure.add_subplot()
    ax.set_title(title or "parameter importance (epsilon squared of the loss ranks)", loc="left")
    if not finite_ok(trials):
        no_data(ax, "no successful trial yet")
        return figure
    labels = list(scores)[::-1]
    values = [scores[label] for label in labels]
    bars = ax.barh(labels, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize="small")
    ax.set_xlim(0, max(1.0, *values) * 1.1 if values else 1.0)
    ax.set_xlabel("share of the loss-rank variance explained alone")
    ax.grid(True, axis="x", alpha=0.3)
    return figure


def plot_contour(
    trials: Sequence[Trial],
    space: CompiledSpace | None = None,
    *,
    params: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """The loss over a pair of parameters: filled contours interpolated between the OK
    trials where both were active (linear on their triangulation), and the trials as dots.

    ``params`` names the pair; by default the two most important (`param_importances`).
    Log parameters are drawn on log10 axes. With fewer than 3 such trials, or trials on
    a line, only the dots are drawn and the figure says why.

    Args:
        trials: the study's trials.
        space: the study's compiled space, or None.
        params: the two labels (x, then y); ValueError for another count or an unknown one.
        title: the figure's title.
    """
    ok, losses = _ok_losses(trials)
    found = parameters(ok, space)
    if params is not None and len(params) != 2:
        raise ValueError(f"a contour plot needs two parameters, got {len(params)}")
    if params is None:
        ranked = list(param_importances(trials, space))
        params = ranked[:2]
    chosen = _pick(found, params) if len(params) == 2 else []
    figure = new_figure(figsize=(6.5, 5))
    ax = figure.add_subplot()
    if not chosen:
        ax.set_title(title or "contour", loc="left")
        why = "no successful trial yet" if not ok else "a contour needs two parameters"
        no_data(ax, why)
        return figure
    px, py = chosen
    ax.set_title(title or f"loss over {px.label} and {py.label}", loc="left")
    both = px.active & py.active
    xs, ys, zs = _coordinate(px)[both], _coordinate(py)[both], losses[both]
    ax.set_xlabel(_axis_name(px))
    ax.set_ylabel(_axis_name(py))
    note = _contour(figure, ax, xs, ys, zs)
    ax.scatter(xs, ys, s=12, color="black", alpha=0.7, label="trials")
    for parameter, axis in ((px, "x"), (py, "y")):
        if parameter.categories is not None:
            _set_axis(ax, parameter, axis)
    if note:
        ax.text(0.02, 0.98, note, transform=ax.transAxes, va="top", fontsize="small")
    return figure


def _coordinate(parameter: Parameter) -> np.ndarray:
    values = parameter.values
    if parameter.log and np.nanmin(values, initial=math.inf) > 0:
        logged: np.ndarray = np.log10(values)
        return logged
    return values


def _axis_name(parameter: Parameter) -> str:
    if parameter.log and np.nanmin(parameter.values, initial=math.inf) > 0:
        return f"log10({parameter.label})"
    return parameter.label


def _contour(figure: Any, ax: Any, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> str:
    """Draw filled contours of ``zs`` over the points; the reason when it cannot."""
    from matplotlib.tri import Triangulation

    if xs.size < 3:
        return f"{xs.size} trial(s) with both parameters: too few for contours"
    try:
        triangulation = Triangulation(xs, ys)
        filled = ax.tricontourf(triangulation, zs, levels=12, cmap="viridis")
    except (ValueError, RuntimeError):  # all points on a line: no triangle
        return "the trials lie on a line: no contours"
    figure.colorbar(filled, ax=ax, label="loss")
    return ""
