"""Predicted losses for pending trials (the TPE "believer") and the trial distances it uses.

Plain array functions: the history is passed as per-group columns, as TPE keeps them
(``active``: which trials have the group active; ``units``: numeric columns on the unit
axes, shape (trials, numeric params); ``indices``: category codes, shape (trials,
categorical params)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BELIEVED_CLIP_FACTOR", "believed_below", "believed_losses", "distances"]

# A pending trial's loss is predicted from this many nearest OK trials, by a Gaussian
# process of this kernel length (on the unit axes) and nugget. Measured on Branin and
# Hartmann-6 with 16 pending (docs/benchmarks.md), it predicts better than their mean.
_BELIEVER_NEIGHBOURS = 40
_BELIEVER_LENGTH = 0.3
_BELIEVER_NUGGET = 1e-4
# Places of the below group taken by a believed trial predicted to beat every finished
# one. Measured on Branin and Hartmann-6 with 16 pending (100 seeds, paired): 4 brought
# Hartmann-6's parallel regret from 2.2x to 1.3x the sequential one (2 and 8: 1.5x and
# 1.9x), Branin's within noise of 1 place.
_IMPROVEMENT_PLACES = 4
# While trials are believed, the multivariate l's magic clip counts this many times the
# evidence of a sequential suggestion (narrower kernels allowed in l). Measured with 16
# pending (100 seeds, paired; factors 0.5, 1.5, 2, 3, 4 tried): 2 took Branin's parallel
# regret from 1.6x to 0.67x the sequential one and Hartmann-6's from 1.32x to 1.16x
# (within noise), confirmed on 100 held-out seeds.
BELIEVED_CLIP_FACTOR = 2
# Entries of one block of pending-to-finished distances.
_DISTANCE_CELLS = 1 << 20


def believed_losses(
    losses: np.ndarray,
    ok: np.ndarray,
    pending: np.ndarray,
    active: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    indices: Sequence[np.ndarray],
) -> np.ndarray:
    """A copy of ``losses`` with each pending trial's predicted from its nearest OK trials.

    ``ok`` and ``pending`` are masks over the trials. The prediction is the posterior mean
    of a Gaussian process fitted to the ``_BELIEVER_NEIGHBOURS`` nearest OK trials: their
    mean loss as the prior mean, a squared-exponential kernel of length
    ``_BELIEVER_LENGTH`` and a small nugget, kept within one range of the neighbours'
    losses beyond their lowest and highest. Where that cannot be computed (non-finite
    losses or distances), the mean loss of the 3 nearest is used. Distances are those of
    `distances`. Needs at least one OK trial.
    """
    known = np.flatnonzero(ok)
    asked = np.flatnonzero(pending)
    k = min(_BELIEVER_NEIGHBOURS, len(known))
    known_losses = losses[known]
    result: np.ndarray = losses.copy()
    # Pending trials in chunks, so that the distance arrays stay small.
    step = max(1, _DISTANCE_CELLS // max(len(known), k * k))
    for start in range(0, len(asked), step):
        rows = asked[start : start + step]
        apart = distances(active, units, indices, rows, known)
        apart = np.where(np.isnan(apart), np.inf, apart)
        if k < len(known):
            nearest = np.argpartition(apart, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(len(known)), (len(rows), len(known)))
        near = np.take_along_axis(apart, nearest, axis=1)
        order = np.argsort(near, axis=1, kind="stable")
        nearest = np.take_along_axis(nearest, order, axis=1)
        near = np.take_along_axis(near, order, axis=1)
        y = known_losses[nearest]
        fallback = y[:, :3].mean(axis=1)
        among = _among(active, units, indices, known, nearest)
        scale = 2.0 * _BELIEVER_LENGTH**2
        gram = np.exp(-among / scale) + _BELIEVER_NUGGET * np.eye(k)
        centre = y.mean(axis=1, keepdims=True)
        usable = np.isfinite(y).all(axis=1) & np.isfinite(gram).all(axis=(1, 2))
        usable &= np.isfinite(near).all(axis=1)
        predicted = fallback
        if usable.any():
            residuals = (y[usable] - centre[usable])[:, :, None]
            try:
                weights = np.linalg.solve(gram[usable], residuals)[:, :, 0]
            except np.linalg.LinAlgError:  # the nugget keeps the Gram matrix regular
                weights = np.zeros(residuals.shape[:2])
            cross = np.exp(-near[usable] / scale)
            gp = centre[usable, 0] + (cross * weights).sum(axis=1)
            # A prediction may leave the neighbours' range (downhill of them, say), but
            # by no more than that range: close, noisy neighbours cannot send it far off.
            low, high = y[usable].min(axis=1), y[usable].max(axis=1)
            gp = np.clip(gp, 2.0 * low - high, 2.0 * high - low)
            predicted[usable] = np.where(np.isfinite(gp), gp, fallback[usable])
        result[rows] = predicted
    return result


def believed_below(losses: np.ndarray, believed: np.ndarray, count: int) -> np.ndarray:
    """Mask of the below group among OK and believed trials, with ``count`` places.

    Trials enter in order of loss (ties and NaNs as in a stable sort), each while fewer
    than ``count`` places are taken; a finished trial takes one place, a believed trial
    predicted to beat every finished one ``_IMPROVEMENT_PLACES``. So a few predicted
    improvements make the whole below group (the finished trials then weigh in the
    above group), rather than a crowd of pending guesses sharing it with the best
    finished trials. The rule is empirical (see ``_IMPROVEMENT_PLACES``). Without such
    a prediction this is the ``count`` smallest.
    """
    best = np.fmin.reduce(losses[~believed], initial=np.inf)
    order = np.argsort(losses, kind="stable")
    places = np.where(believed[order] & (losses[order] < best), _IMPROVEMENT_PLACES, 1)
    taken = np.cumsum(places) - places
    chosen = np.zeros(len(losses), dtype=bool)
    chosen[order[taken < count]] = True
    return chosen


def _among(
    active: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    indices: Sequence[np.ndarray],
    known: np.ndarray,
    nearest: np.ndarray,
) -> np.ndarray:
    """Distances among each row's neighbours ``known[nearest]``, shape ``(p, k, k)``.

    Neighbour sets of nearby pending trials overlap: when their union is small, one
    table over it, then gathered, costs less than a block per pending trial.
    """
    p, k = nearest.shape
    union, local = np.unique(nearest, return_inverse=True)
    if len(union) ** 2 >= p * k * k:
        return distances(active, units, indices, known[nearest], known[nearest])
    local = local.reshape(p, k)
    table = distances(active, units, indices, known[union], known[union])
    among: np.ndarray = table[local[:, :, None], local[:, None, :]]
    return among


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
    """
    result = np.zeros(a.shape + b.shape[-1:])
    for group_active, group_units, group_indices in zip(active, units, indices, strict=True):
        mine = group_active[a][..., :, None]
        theirs = group_active[b][..., None, :]
        both = mine & theirs
        everywhere = bool(both.all())
        if not everywhere:
            result += (group_units.shape[1] + group_indices.shape[1]) * (mine != theirs)
        if group_units.shape[1]:
            left = np.where(mine, group_units[a], 0.0)
            right = np.where(theirs.swapaxes(-1, -2), group_units[b], 0.0)
            squared = (left * left).sum(axis=-1)[..., :, None]
            squared = squared + (right * right).sum(axis=-1)[..., None, :]
            squared -= 2.0 * (left @ right.swapaxes(-1, -2))
            np.maximum(squared, 0.0, out=squared)
            result += squared if everywhere else np.where(both, squared, 0.0)
        for j in range(group_indices.shape[1]):
            codes = group_indices[:, j]
            result += both & (codes[a][..., :, None] != codes[b][..., None, :])
    return result
