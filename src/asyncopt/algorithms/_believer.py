"""Predicted losses for pending trials (the TPE "believer") and the trial distances it uses.

Plain array functions over per-group columns, as TPE keeps them: ``active`` (which trials
have the group active), ``units`` (numeric columns on the unit axes, shape (trials,
numeric params)) and ``indices`` (category codes, shape (trials, categorical params)).
The values of the constants were chosen on benchmarks (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BELIEVED_CLIP_FACTOR", "believed_below", "believed_losses", "distances"]

# A pending trial's loss is predicted from this many nearest OK trials by a Gaussian
# process with this kernel length (on the unit axes) and nugget.
_NEIGHBOURS = 40
_LENGTH = 0.3
_NUGGET = 1e-4
# Places of the below group taken by a believed trial predicted to beat every finished one.
_IMPROVEMENT_PLACES = 4
# While trials are believed, the multivariate l's magic clip counts this many times the
# evidence of a sequential suggestion (narrower kernels allowed in l).
BELIEVED_CLIP_FACTOR = 2
# Pending trials per block of distances: the block holds this many times N entries, and
# its distances among neighbours (this many times 40 x 40) stay in the processor's cache.
_BLOCK = 16


def believed_losses(
    losses: np.ndarray,
    ok: np.ndarray,
    asked: np.ndarray,
    active: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    indices: Sequence[np.ndarray],
) -> np.ndarray:
    """The predicted loss of each trial of rows ``asked``, from the OK trials (mask ``ok``).

    The prediction is the posterior mean of a Gaussian process fitted to the
    ``_NEIGHBOURS`` nearest OK trials: their mean loss as the prior mean, a
    squared-exponential kernel of length ``_LENGTH`` and a small nugget, kept within one
    range of the neighbours' losses beyond their lowest and highest. Where that cannot be
    computed (non-finite losses or distances), the mean loss of the 3 nearest is used.
    Each prediction depends on its own trial and the OK trials only (not on the other
    pending trials), so predictions can be kept while no result arrives. Needs at least
    one OK trial.
    """
    known = np.flatnonzero(ok)
    k = min(_NEIGHBOURS, len(known))
    predicted = np.empty(len(asked))
    for start in range(0, len(asked), _BLOCK):
        rows = asked[start : start + _BLOCK]
        apart = distances(active, units, indices, rows, known)
        apart = np.where(np.isnan(apart), np.inf, apart)
        nearest = _nearest(apart, k)
        near = np.take_along_axis(apart, nearest, axis=1)
        y = losses[known[nearest]]
        fallback = y[:, :3].mean(axis=1)
        neighbours = known[nearest]
        among = distances(active, units, indices, neighbours, neighbours)
        scale = 2.0 * _LENGTH**2
        gram = np.exp(-among / scale) + _NUGGET * np.eye(k)
        centre = y.mean(axis=1, keepdims=True)
        usable = np.isfinite(y).all(axis=1) & np.isfinite(gram).all(axis=(1, 2))
        usable &= np.isfinite(near).all(axis=1)
        guess = fallback.copy()
        if usable.any():
            residuals = (y[usable] - centre[usable])[:, :, None]
            weights = np.linalg.solve(gram[usable], residuals)[:, :, 0]
            gp = centre[usable, 0] + (np.exp(-near[usable] / scale) * weights).sum(axis=1)
            # A prediction may leave the neighbours' range (downhill of them, say), but by
            # no more than that range: close, noisy neighbours cannot send it far off.
            low, high = y[usable].min(axis=1), y[usable].max(axis=1)
            gp = np.clip(gp, 2.0 * low - high, 2.0 * high - low)
            guess[usable] = np.where(np.isfinite(gp), gp, fallback[usable])
        predicted[start : start + len(rows)] = guess
    return predicted


def _nearest(apart: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of its ``k`` smallest entries in order, ties by position: the
    first ``k`` of a stable argsort (`_nearest_plain`, the oracle), without sorting the
    whole row. No entry may be NaN."""
    if k >= apart.shape[1] or k == 0:
        return _nearest_plain(apart, k)
    kth = np.partition(apart, k - 1, axis=1)[:, k - 1 : k]
    below = apart < kth
    ties = apart == kth
    room = k - np.count_nonzero(below, axis=1)[:, None]
    chosen = below | (ties & (np.cumsum(ties, axis=1) <= room))
    columns = np.nonzero(chosen)[1].reshape(len(apart), k)
    order = np.argsort(np.take_along_axis(apart, columns, axis=1), axis=1, kind="stable")
    nearest: np.ndarray = np.take_along_axis(columns, order, axis=1)
    return nearest


def _nearest_plain(apart: np.ndarray, k: int) -> np.ndarray:
    nearest: np.ndarray = np.argsort(apart, axis=1, kind="stable")[:, :k]
    return nearest


def believed_below(losses: np.ndarray, believed: np.ndarray, count: int) -> np.ndarray:
    """Mask of the below group among OK and believed trials, with ``count`` places.

    Trials enter in order of loss (ties and NaNs as in a stable sort), each while fewer
    than ``count`` places are taken; a finished trial takes one place, a believed trial
    predicted to beat every finished one ``_IMPROVEMENT_PLACES``: a few predicted
    improvements make the whole below group rather than sharing it with the best
    finished trials. Without such a prediction this is the ``count`` smallest.
    """
    best = np.fmin.reduce(losses[~believed], initial=np.inf)
    order = np.argsort(losses, kind="stable")
    places = np.where(believed[order] & (losses[order] < best), _IMPROVEMENT_PLACES, 1)
    taken = np.cumsum(places) - places
    chosen = np.zeros(len(losses), dtype=bool)
    chosen[order[taken < count]] = True
    return chosen


def distances(
    active: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    indices: Sequence[np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
) -> np.ndarray:
    """Squared distances between the trials of rows ``a`` and of rows ``b``.

    ``a`` has shape ``S + (m,)`` and ``b`` ``S + (n,)``; the result ``S + (m, n)``. On the
    unit axes: a numeric axis counts its squared difference, a categorical axis 1 when
    the categories differ, and a parameter active in only one of the two trials counts 1.
    Each entry is computed from its own pair of trials alone.
    """
    result = np.zeros(a.shape + b.shape[-1:])
    for group_active, group_units, group_indices in zip(active, units, indices, strict=True):
        mine = group_active[a][..., :, None]
        theirs = group_active[b][..., None, :]
        apart = np.zeros(result.shape)
        for column in group_units.T:
            gap = column[a][..., :, None] - column[b][..., None, :]
            gap *= gap
            apart += gap
        for codes in group_indices.T:
            apart += codes[a][..., :, None] != codes[b][..., None, :]
        both = mine & theirs
        if both.all():
            result += apart
        else:
            result += np.where(both, apart, 0.0)
            result += (group_units.shape[1] + group_indices.shape[1]) * (mine != theirs)
    return result
