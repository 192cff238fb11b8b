"""The tree-structured Parzen estimator (TPE): suggestions from models of good and bad trials.

The OK trials are split by loss into a small "below" group (the best ``n_below``) and the
rest ("above"). Each group gets an adaptive Parzen estimator, ``l`` and ``g`` (one
`Mixture` each); candidates are drawn from ``l`` and the one with the largest
``log l(x) - log g(x)`` is proposed (Bergstra et al., 2011, 2013).

Two families of behaviour, one model:

- **Multivariate** (the default, `suggest`): parameters that are active together (they
  share one activation condition) form a group, modelled by one joint mixture of product
  kernels; candidates are drawn and scored jointly. Groups are decided parents first, so
  a choice is made before the parameters of its branches. Each group is split on its
  own: ``n_below = min(ceil(gamma * N), max_below)`` with ``N`` the OK trials where the
  group is active; ``gamma=0.1``, ``n_startup=10``. Kernel widths come from neighbour
  gaps per axis (`gap_bandwidths`, rule "optuna"), clipped by the magic clip to
  ``[1/min(100, n+2), 1]`` of the prior's width; for ``l``, ``n`` is the geometric mean
  of its own count and of all the group's observations (divided among the proposals of
  one call), so ``l`` sharpens as evidence accumulates. Without conditional parameters
  and with that clip left at ``l``'s own count, the densities are Optuna 5's
  multivariate ones (tests/algorithms/test_golden.py).
- **Hyperopt** (``configure(preset="hyperopt")``, the same as
  ``configure(multivariate=False)``): Hyperopt's algorithm, the same mixture applied to
  each parameter alone, modelled only from the trials where it is active; one global
  split with ``n_below = min(ceil(0.25 * sqrt(N)), 25)``; ``n_startup=20``; the prior
  inserted among the neighbours when computing widths; categorical pseudo-counts of
  ``prior_weight`` per category; each 1-D mixture renormalized inside its bounds as a
  whole (Hyperopt's rejection sampler). Where it departs from Hyperopt 0.3.0, and why,
  is in docs/concepts.md.

Both families:

- **Startup**: while fewer than ``n_startup`` trials are OK, proposals are prior draws.
- **Pending trials** (QUEUED or RUNNING), when ``constant_liar`` is on (the default), are
  *believed*: each is given a loss predicted from its nearest OK trials (while no trial
  is OK, from its nearest pruned ones, at their ranks below;
  `_believer.believed_losses`) and then takes part in the split like an OK trial. In
  the multivariate split believed trials do not count in ``N``; they compete for its
  ``n_below`` places, one predicted to beat every finished trial taking several
  (`_believer.believed_below`), and while any is believed the clip of ``l`` counts
  `_believer.BELIEVED_CLIP_FACTOR` times its evidence. The Hyperopt preset counts them
  in ``N``, as it counts failed trials. While no trial is OK or pruned yet (only with
  ``n_startup=0``) pending trials join ``g`` as *lies*: kernels as narrow as the clip
  allows, of weight ``liar_weight``. With ``constant_liar=False`` they are ignored.
- **Pruned trials** are observations, ranked after every OK trial and among themselves
  by `History.pruned_order` (the later the step they stopped at, the better; then their
  last value), as Optuna ranks them: they count in ``N`` and in ``n_startup`` and fill
  the below group's places that OK trials leave. With a pruner, no trial may be OK long
  after startup, and the trials still running are then often the best so far: they are
  believed from the pruned trials rather than lied about (lies would push proposals away
  from them).
- **Failed trials** join ``g`` (a region that fails is a bad region), as Hyperopt does by
  giving them an infinite loss; the Hyperopt preset also counts them in ``N``.
- ``n > 1``: one model is fitted and the ``n`` proposals are drawn from it one after
  another, each earlier one joining ``g`` of the later ones as a lie; a repeat is drawn
  again, from the model and then from the prior, so proposals are distinct whenever the
  space allows.
- **State**: `TPE.new_state` makes the object a study keeps between suggestions (its
  parameter groups and the predicted losses of pending trials, kept until a new result
  arrives). Passing it changes no proposal; ``state=None`` computes everything afresh.
- Categorical parameters are ``choice``, ``pchoice`` and ``randint``; ``uniformint`` is a
  quantized numeric parameter. A categorical with more than 256 categories (a ``randint``
  over seeds, say) is modelled over the categories seen so far plus one bucket for all
  the others.
- Numerics: every density is computed on unit axes, so extreme bounds, tiny widths and
  huge sigmas neither overflow nor raise; no floating-point error escapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from asyncopt.algorithms._believer import BELIEVED_CLIP_FACTOR, believed_below, believed_losses
from asyncopt.algorithms._parzen import (
    Axes,
    Mixture,
    Points,
    categorical_table,
    clip_floor,
    gap_bandwidths,
    linear_forgetting_weights,
)
from asyncopt.history import History
from asyncopt.space.compile import CompiledSpace, Condition, ParamSpec
from asyncopt.space.evaluate import Assignment, sample_assignments
from asyncopt.trial import TrialState

__all__ = ["TPE", "TPEState", "configure", "suggest"]

_GAMMA_RULES = ("linear", "sqrt")
_OK, _FAIL, _PRUNED = int(TrialState.OK), int(TrialState.FAIL), int(TrialState.PRUNED)
_QUEUED, _RUNNING = int(TrialState.QUEUED), int(TrialState.RUNNING)
_PRESETS = ("default", "hyperopt")
# Categorical parameters with more categories than this are modelled over the categories
# seen in the history plus one bucket for all the others.
_DENSE_CATEGORIES = 256
# Grid cells narrower than this (in prior widths) are scored by the density at the grid
# point: far below every clipped kernel width, the mass is the density times a width
# shared by l and g.
_FINE_CELL = 1e-6
# The lies of a call are evaluated at the candidates of this many coming proposals at once.
_LIE_WINDOW = 16

_COMMON: dict[str, Any] = {
    "max_below": 25,
    "n_candidates": 24,
    "prior_weight": 1.0,
    "linear_forgetting": 25,
    "magic_clip": True,
    "constant_liar": True,
    "liar_weight": 1.0,
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "default": {"multivariate": True, "gamma": 0.1, "gamma_rule": "linear", "n_startup": 10,
                **_COMMON},
    "hyperopt": {"multivariate": False, "gamma": 0.25, "gamma_rule": "sqrt", "n_startup": 20,
                 **_COMMON},
}  # fmt: skip


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_bool(name: str) -> Any:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"tpe option {name} must be True or False, got {value!r}")

    return check


def _check_count(name: str, minimum: int) -> Any:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not _is_int(value):
            raise TypeError(f"tpe option {name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"tpe option {name} must be >= {minimum}, got {value!r}")

    return check


def _check_positive(name: str) -> Any:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not _is_real(value):
            raise TypeError(f"tpe option {name} must be a number, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"tpe option {name} must be a finite number > 0, got {value!r}")

    return check


def _check_forgetting(instance: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise TypeError(f"tpe option linear_forgetting must be an int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"tpe option linear_forgetting must be >= 1, got {value!r}")


def _check_gamma_rule(instance: Any, attribute: Any, value: Any) -> None:
    if value not in _GAMMA_RULES:
        raise ValueError(f"tpe option gamma_rule must be one of {_GAMMA_RULES}, got {value!r}")


@attrs.frozen
class TPE:
    """A configured TPE suggest function; build it with `configure`.

    Call it like `suggest`: ``tpe(space, history, rng, n=1, state=None)``.
    """

    multivariate: bool = attrs.field(validator=_check_bool("multivariate"))
    gamma: float = attrs.field(validator=_check_positive("gamma"))
    gamma_rule: str = attrs.field(validator=_check_gamma_rule)
    max_below: int = attrs.field(validator=_check_count("max_below", 1))
    n_startup: int = attrs.field(validator=_check_count("n_startup", 0))
    n_candidates: int = attrs.field(validator=_check_count("n_candidates", 1))
    prior_weight: float = attrs.field(validator=_check_positive("prior_weight"))
    linear_forgetting: int | None = attrs.field(validator=_check_forgetting)
    magic_clip: bool = attrs.field(validator=_check_bool("magic_clip"))
    constant_liar: bool = attrs.field(validator=_check_bool("constant_liar"))
    liar_weight: float = attrs.field(validator=_check_positive("liar_weight"))

    def n_below(self, n: int) -> int:
        """How many of ``n`` OK trials form the "below" (good) group."""
        if n <= 0:
            return 0
        scale = float(n) if self.gamma_rule == "linear" else math.sqrt(n)
        return min(math.ceil(self.gamma * scale), self.max_below, n)

    def new_state(self) -> TPEState:
        """A fresh state for one study: pass it to every suggestion of that study."""
        return TPEState()

    def __call__(
        self,
        space: CompiledSpace,
        history: History,
        rng: np.random.Generator,
        n: int = 1,
        *,
        state: TPEState | None = None,
    ) -> list[Assignment]:
        """``n`` distinct proposals for ``space`` given ``history`` (see the module docstring).

        ``state`` (from `new_state`, one per study) keeps work between suggestions; the
        proposals are the same with or without it.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return []
        counts = np.bincount(history.states, minlength=len(TrialState))
        if int(counts[_OK] + counts[_PRUNED]) < self.n_startup or not space.params:
            return sample_assignments(space, rng, n)
        with np.errstate(all="ignore"):
            return _Suggestion(self, state or TPEState(), space, history, rng).propose(n)


def configure(**options: Any) -> TPE:
    """A TPE suggest function with ``options``; invalid options raise here.

    Defaults are given as (default preset / hyperopt preset).

    Args:
        **options: any of:
            ``preset``: ``"default"`` (multivariate TPE) or ``"hyperopt"`` (Hyperopt's
            TPE); ``multivariate=False`` without a preset means the Hyperopt preset.
            ``gamma`` (0.1 / 0.25) and ``gamma_rule`` (``"linear"`` / ``"sqrt"``):
            ``n_below = min(ceil(gamma * N), max_below)``, with ``sqrt(N)`` for ``"sqrt"``.
            ``max_below`` (25): the cap on ``n_below``.
            ``n_startup`` (10 / 20): prior draws until this many trials are OK.
            ``n_candidates`` (24): candidates drawn from ``l`` per proposal (per group).
            ``prior_weight`` (1.0): weight of the prior kernel.
            ``linear_forgetting`` (25): observations older than the newest this-many
            weigh less; None turns forgetting off.
            ``magic_clip`` (True): clip kernel widths to ``[1/min(100, n+2), 1]`` of the
            prior's.
            ``constant_liar`` (True): each pending trial gets a loss predicted from its
            nearest OK trials (pruned ones while none is OK) and is modelled with it;
            False ignores pending trials.
            ``liar_weight`` (1.0): the weight of a lie in ``g``: an earlier proposal of
            the same call (``n > 1``), or a pending trial while no trial is OK or pruned.

    Raises:
        TypeError: an unknown option or a value of the wrong type.
        ValueError: a value out of range.
    """
    preset = options.pop("preset", None)
    if preset is None:
        preset = "hyperopt" if options.get("multivariate", True) is False else "default"
    if preset not in _PRESETS:
        raise ValueError(f"tpe option preset must be one of {_PRESETS}, got {preset!r}")
    defaults = _DEFAULTS[preset]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(
            f"unknown tpe option(s) {unknown}; the options are {sorted(defaults)} and preset"
        )
    return TPE(**{**defaults, **options})


#: The default (multivariate) TPE: ``suggest(space, history, rng, n=1, *, state=None)``.
suggest = configure()


class TPEState:
    """What one study keeps between TPE suggestions; make it with `TPE.new_state`.

    It holds the parameter groups of the last space seen, the history's columns on the
    unit axes (extended by the trials stored since the last suggestion) and the predicted
    losses of pending trials, which are kept while the OK trials stay the same. Nothing
    in it changes a proposal: it only saves recomputing. Never share one between studies.
    """

    def __init__(self) -> None:
        self._groups: tuple[tuple[str, bool], list[_Group]] | None = None
        self._columns: _KeptColumns | None = None
        self._beliefs: tuple[bytes, dict[int, float]] | None = None

    def groups(self, space: CompiledSpace, multivariate: bool) -> list[_Group]:
        """The parameter groups of ``space``, parents first."""
        key = (space.fingerprint, multivariate)
        if self._groups is None or self._groups[0] != key:
            self._groups = (key, _build_groups(space))
        return self._groups[1]

    def columns(self, groups: list[_Group], history: History) -> _Columns:
        """`_columns` of ``history``: the rows stored before are kept, not converted again."""
        holder, stored = history.stored_rows()
        kept = self._columns
        if holder is None:
            return _columns(groups, history, slice(None))
        if kept is None or kept.holder is not holder or kept.groups is not groups:
            kept = self._columns = _KeptColumns(holder, groups)
        if kept.size < stored or kept.buffers is None:
            kept.extend(_columns(groups, history, slice(kept.size, stored)))
        # (An older snapshot of the holder reads fewer of the kept rows.)
        if stored == len(history):
            return kept.view(stored)
        # Rows not stored (proposals made but not yet saved): converted for this call only.
        extra = _columns(groups, history, slice(stored, None))
        active, units, indices = (
            [np.concatenate([a, b]) for a, b in zip(old, new)]
            for old, new in zip(kept.view(stored), extra)
        )
        return active, units, indices

    def beliefs(
        self, key: bytes, tids: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """Predicted losses of trials ``tids``: kept ones while ``key`` (the OK trials) is
        unchanged, the others from ``predict`` (given their positions in ``tids``)."""
        known: dict[int, float] = {}
        if self._beliefs is not None and self._beliefs[0] == key:
            known = self._beliefs[1]
        wanted = tids.tolist()
        missing = np.asarray([i for i, tid in enumerate(wanted) if tid not in known], dtype=int)
        if missing.size:
            known = {**known, **dict(zip([wanted[i] for i in missing], predict(missing).tolist()))}
            self._beliefs = (key, known)
        return np.asarray([known[tid] for tid in wanted], dtype=float)


@attrs.frozen(eq=False)
class _Group:
    """Parameters active together: numeric ones on unit axes, then categorical ones (with
    their prior probabilities, None for a large one, see `_compress_categories`; and
    the offset and the last code of their stored values)."""

    condition: Condition
    numeric: tuple[ParamSpec, ...]
    categorical: tuple[ParamSpec, ...]
    axes: Axes
    priors: tuple[np.ndarray | None, ...]
    offsets: np.ndarray
    last_codes: np.ndarray

    @property
    def first(self) -> str:
        return (self.numeric or self.categorical)[0].label


def _build_groups(space: CompiledSpace) -> list[_Group]:
    members: dict[Condition, list[ParamSpec]] = {}
    for spec in space.params:
        members.setdefault(spec.condition, []).append(spec)
    groups = []
    for condition, specs in members.items():
        numeric = tuple(s for s in specs if not s.dist.is_categorical)
        categorical = tuple(s for s in specs if s.dist.is_categorical)
        priors = tuple(
            s.dist.probabilities if s.dist.size <= _DENSE_CATEGORIES else None for s in categorical
        )
        offsets = np.array([s.dist.offset for s in categorical], dtype=float)
        last_codes = np.array([s.dist.size - 1 for s in categorical], dtype=float)
        axes = Axes([s.dist for s in numeric])
        groups.append(_Group(condition, numeric, categorical, axes, priors, offsets, last_codes))
    return groups


# Observations of one group: unit rows, category codes and which rows are lies.
_Observations = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Part:
    """``l`` and ``g`` over some columns of a group (all of them, or one in the Hyperopt
    preset; slices of its numeric and of its categorical columns): the two segments of
    one `Mixture`, evaluated together; and the lies added to ``g`` by the earlier
    proposals of the call."""

    def __init__(
        self,
        numeric: slice,
        categorical: slice,
        model: Mixture,
        above_weight: float,
        lie: tuple[float, float, list[np.ndarray], float],
    ) -> None:
        self.numeric, self.categorical = numeric, categorical
        self.model = model
        self.above_weight = above_weight
        # (lie width, share of the prior in a lie's category rows, priors, lie weight)
        self.lie = lie
        self.lies: list[tuple[np.ndarray, np.ndarray]] = []

    def score(
        self, candidates: _Candidates, k: int, rows: slice, below: np.ndarray, above: np.ndarray
    ) -> np.ndarray:
        """``log l - log g`` at candidates ``rows`` (of part ``k``) given their densities
        ``below`` and ``above`` (without the lies), the lies added to ``g``; NaN ranks last."""
        if self.lies:
            lie_sum = candidates.lie_sum(k, self, rows)
            weight = self.lie[3]
            lied = weight * len(self.lies)
            above = np.logaddexp(
                math.log(self.above_weight) + above, math.log(weight) + lie_sum
            ) - math.log(self.above_weight + lied)
        ratio = below - above
        score: np.ndarray = np.where(np.isnan(ratio), -np.inf, ratio)
        return score

    def lie_mixture(self, lies: list[tuple[np.ndarray, np.ndarray]]) -> Mixture:
        """The lies as a mixture of equal weights."""
        width, share, priors, _ = self.lie
        units = np.asarray([u for u, _ in lies]).reshape(len(lies), -1)
        codes = np.asarray([c for _, c in lies], dtype=np.intp).reshape(len(lies), -1)
        tables = [categorical_table(codes[:, j], prior, share) for j, prior in enumerate(priors)]
        return Mixture(np.ones(len(units)), units, np.full(units.shape, width),
                       self.model.lows, self.model.highs, tables)  # fmt: skip

    def add_lie(self, unit: np.ndarray, codes: np.ndarray) -> None:
        self.lies.append((unit[self.numeric], codes[self.categorical]))


class _Candidates:
    """Candidates drawn from the ``l`` of each part of one group for the coming proposals,
    with their densities under ``l`` and ``g`` (computed for all of them at once)."""

    def __init__(self, group: _Group, parts: list[_Part], rng: np.random.Generator, m: int) -> None:
        axes = group.axes
        points = np.empty((m, len(axes)))
        self.categories = np.empty((m, len(group.categorical)), dtype=np.intp)
        for part in parts:
            points[:, part.numeric], self.categories[:, part.categorical] = part.model.sample(
                rng, m
            )
        self.raw = axes.from_unit(points)
        cells, exact = None, axes.quantized
        if axes.any_quantized:
            cells = axes.cells(self.raw)
            fine = exact & ((cells[1] - cells[0]).max(axis=0) < _FINE_CELL)
            exact = exact & ~fine
            points = np.where(fine, 0.5 * (cells[0] + cells[1]), points)
        self.used = 0
        # Per part: its columns of the candidates, prepared once for l, g and the lies.
        self.points: list[Points] = []
        for part in parts:
            columns = part.numeric
            ends = None if cells is None else (cells[0][:, columns], cells[1][:, columns])
            categories = self.categories[:, part.categorical]
            self.points.append(Points(points[:, columns], ends, categories, exact[columns]))
        self.densities = [part.model.log_pdf(at) for part, at in zip(parts, self.points)]
        # Per part: how many of its lies are counted in the log of their summed densities
        # at the candidates of the coming proposals, up to which row, and those logs.
        self.lie_sums = [(0, 0, np.full(m, -np.inf)) for _ in parts]

    def lie_sum(self, k: int, part: _Part, rows: slice) -> np.ndarray:
        """Log of the summed densities of part ``k``'s lies at the candidates ``rows``.

        Lies are evaluated for the candidates of `_LIE_WINDOW` coming proposals at once
        (every lie so far, in one mixture), then each new lie at the rest of that window.
        """
        counted, stop, sums = self.lie_sums[k]
        if rows.stop > stop:
            counted, stop = 0, min(len(sums), rows.start + _LIE_WINDOW * (rows.stop - rows.start))
            sums[rows.start : stop] = -np.inf
        if counted < len(part.lies):
            new = part.lies[counted:]
            window = slice(rows.start, stop)
            density = part.lie_mixture(new).log_pdf(self.points[k], window)[0] + math.log(len(new))
            sums[window] = np.logaddexp(sums[window], density)
        self.lie_sums[k] = (len(part.lies), stop, sums)
        return sums[rows]


class _Suggestion:
    """One call: the history on the unit axes, its split, and the models fitted to it."""

    def __init__(
        self,
        tpe: TPE,
        state: TPEState,
        space: CompiledSpace,
        history: History,
        rng: np.random.Generator,
    ) -> None:
        self.tpe, self.space, self.rng = tpe, space, rng
        self.groups = state.groups(space, tpe.multivariate)
        self.active, self.units, self.indices = state.columns(self.groups, history)
        states = history.states
        counts = np.bincount(states, minlength=len(TrialState))
        ok, bad = states == _OK, states == _FAIL
        self.losses = np.array(history.losses, dtype=float)
        self.believed = self.lied = np.zeros(len(history), dtype=bool)
        self.any_believed = False
        n_ok, n_failed = int(counts[_OK]), int(counts[_FAIL])
        pruned = history.pruned_order() if counts[_PRUNED] else _NO_ROWS
        known = ok
        if pruned.size and not n_ok:
            # No OK trial yet: pending trials are believed from the pruned ones, at their
            # ranks. With a pruner, the trials still running are often the best so far;
            # as lies in g they would push the proposals away from them.
            self.losses[pruned] = _ranked_after(self.losses[ok], len(pruned))
            known = history.pruned
        if tpe.constant_liar and (counts[_QUEUED] or counts[_RUNNING]):
            pending = (states == _QUEUED) | (states == _RUNNING)
            if known.any():
                rows = np.flatnonzero(pending)
                key = b"".join([space.fingerprint.encode(), history.tids[known].tobytes(),
                                self.losses[known].tobytes()])  # fmt: skip
                self.losses[rows] = state.beliefs(
                    key,
                    history.tids[rows],
                    lambda at: believed_losses(
                        self.losses, known, rows[at], self.active, self.units, self.indices
                    ),
                )
                self.believed, ok = pending, ok | pending
                self.any_believed = True
            else:
                self.lied, bad = pending, bad | pending
        if pruned.size:
            if n_ok:
                self.losses[pruned] = _ranked_after(self.losses[ok], len(pruned))
            ok[pruned] = True
        self.ok_rows, self.bad_rows = np.flatnonzero(ok), np.flatnonzero(bad)
        if not tpe.multivariate:
            # Hyperopt's split is global; its N counts failed trials (and here believed ones).
            n_global = n_ok + n_failed + int(np.count_nonzero(self.believed)) + len(pruned)
            best = _smallest(self.losses[self.ok_rows], tpe.n_below(n_global))
            self.global_best = np.zeros(len(history), dtype=bool)
            self.global_best[self.ok_rows[best]] = True
        self.models: dict[int, tuple[list[_Part], list[np.ndarray | None]]] = {}
        self.candidates: dict[int, _Candidates] = {}
        # Proposals asked of this call, and made so far.
        self.n = 1
        self.made = 0

    def propose(self, n: int) -> list[Assignment]:
        self.n = n
        proposals: list[Assignment] = []
        seen: set[tuple[tuple[str, float], ...]] = set()
        for i in range(n):
            # A repeat is retried from the model, then from the prior, then accepted (a
            # finite space can run out of new points).
            for attempt in range(8):
                proposal, rows = self._one(from_prior=attempt >= 3)
                key = tuple(sorted(proposal.items())) if n > 1 else ()
                if key not in seen:
                    break
            seen.add(key)
            proposals.append(proposal)
            self.made += 1
            if i < n - 1:
                for index, (raw, codes) in rows.items():
                    unit = self.groups[index].axes.to_unit(raw[None, :])[0]
                    parts, observed = self._model(index)
                    for part in parts:
                        part.add_lie(unit, _compressed(codes, observed))
        return proposals

    def _one(self, from_prior: bool) -> tuple[Assignment, dict[int, tuple[np.ndarray, np.ndarray]]]:
        # One proposal, and per active group its raw numeric values and category codes.
        assignment: Assignment = {}
        rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if from_prior:
            (assignment,) = sample_assignments(self.space, self.rng, 1)
        for index, group in enumerate(self.groups):
            if not group.condition.holds(assignment):
                continue
            if not from_prior:
                rows[index] = self._decide(index, assignment)
                continue
            raw = np.asarray([assignment[s.label] for s in group.numeric], dtype=float)
            codes = [assignment[s.label] - s.dist.offset for s in group.categorical]
            rows[index] = (raw, np.asarray(codes, dtype=np.intp))
        return assignment, rows

    def _decide(self, index: int, assignment: Assignment) -> tuple[np.ndarray, np.ndarray]:
        """Take the next candidates of the group, keep the best of each part, write them."""
        group = self.groups[index]
        parts, observed = self._model(index)
        axes, m = group.axes, self.tpe.n_candidates
        candidates = self.candidates.get(index)
        if candidates is None or candidates.used >= len(candidates.raw):
            # Enough for the rest of the call: l and g are evaluated once for all of them.
            batch = m * max(1, self.n - self.made)
            candidates = self.candidates[index] = _Candidates(group, parts, self.rng, batch)
        rows = slice(candidates.used, candidates.used + m)
        candidates.used += m
        raw, categories = candidates.raw[rows], candidates.categories[rows]
        chosen = np.empty(len(axes))
        codes = np.empty(len(group.categorical), dtype=np.intp)
        for k, (part, (below, above)) in enumerate(zip(parts, candidates.densities)):
            best = int(np.argmax(part.score(candidates, k, rows, below[rows], above[rows])))
            chosen[part.numeric] = raw[best, part.numeric]
            codes[part.categorical] = categories[best, part.categorical]
        for spec, value in zip(group.numeric, chosen.tolist()):
            assignment[spec.label] = int(value) if spec.dist.is_integer else value
        for j, spec in enumerate(group.categorical):
            seen = observed[j]
            if seen is not None:
                codes[j] = _decompress(int(codes[j]), seen, spec.dist.size, self.rng)
            assignment[spec.label] = int(codes[j]) + spec.dist.offset
        return chosen, codes

    def _model(self, index: int) -> tuple[list[_Part], list[np.ndarray | None]]:
        """The parts of group ``index`` (fitted once per call) and its compressed categories."""
        if index not in self.models:
            group = self.groups[index]
            below_rows, above_rows = self._split(index)
            below, above = (
                self._observations(index, below_rows),
                self._observations(index, above_rows),
            )
            priors, observed = _compress_categories(group, below[1], above[1])
            fit = self._joint if self.tpe.multivariate else self._per_parameter
            self.models[index] = (fit(group, below, above, priors), observed)
        return self.models[index]

    def _split(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the below group and of the above group (OK and bad), all active."""
        active = self.active[index]
        rows = self.ok_rows[active[self.ok_rows]]
        if self.tpe.multivariate and self.any_believed:
            # Believed trials compete for the below places but do not count in N.
            believed = self.believed[rows]
            count = self.tpe.n_below(len(rows) - int(np.count_nonzero(believed)))
            good = believed_below(self.losses[rows], believed, count)
        elif self.tpe.multivariate:
            good = _smallest(self.losses[rows], self.tpe.n_below(len(rows)))
        else:
            good = self.global_best[rows]
        above = rows[~good]
        if self.bad_rows.size:
            above = np.sort(np.concatenate([above, self.bad_rows[active[self.bad_rows]]]))
        return rows[good], above

    def _observations(self, index: int, rows: np.ndarray) -> _Observations:
        return self.units[index][rows], self.indices[index][rows], self.lied[rows]

    def _weights(self, lied: np.ndarray, prior: float) -> np.ndarray:
        """Observation weights (forgetting over finished trials, lies ``liar_weight``),
        then the prior kernel's."""
        weights = np.empty(len(lied) + 1)
        weights[-1] = prior
        finished = ~lied
        weights[:-1][finished] = linear_forgetting_weights(
            int(np.count_nonzero(finished)), self.tpe.linear_forgetting
        )
        weights[:-1][lied] = self.tpe.liar_weight
        return weights

    def _widths(
        self, axes: Axes, units: np.ndarray, lied: np.ndarray, rule: str, clip: int | None = None
    ) -> np.ndarray:
        """Kernel widths of observations, a lie's as narrow as the usual clip allows.

        ``clip`` (the multivariate ``l``): the clip count. On a grid ``l`` then keeps the
        usual clip, so that neighbouring grid values stay in reach (a kernel narrower
        than a cell never leaves its cell).
        """
        narrowest = 1.0 / min(100.0, len(units) + 2.0)
        least = None if clip is None else axes.quantized * narrowest
        sigmas = gap_bandwidths(units, prior_mu=axes.prior_mu, low=axes.low, high=axes.high,
                                rule=rule, magic_clip=self.tpe.magic_clip, clip_count=clip,
                                least=least)  # fmt: skip
        sigmas[lied] = narrowest
        return sigmas

    def _joint(
        self, group: _Group, below: _Observations, above: _Observations, priors: list[np.ndarray]
    ) -> list[_Part]:
        """The multivariate model: one part over every column of the group."""
        axes, prior_weight = group.axes, self.tpe.prior_weight
        # l's clip counts the geometric mean of its own observations and of all the group's
        # finished ones, the latter shared among the proposals of this call (proposals
        # drawn from one sharp l would crowd one spot).
        n_below = len(below[0])
        finished = n_below + len(above[0]) - int(np.count_nonzero(above[2]))
        evidence = max(1, finished // self.n)
        clip = max(n_below, math.isqrt(max(1, n_below) * evidence))
        if self.any_believed:
            clip *= BELIEVED_CLIP_FACTOR
        segments = []
        for (units, codes, lied), clip_count in ((below, clip), (above, None)):
            share = prior_weight / (len(units) + 1)
            tables = [categorical_table(codes[:, j], p, share) for j, p in enumerate(priors)]
            sigmas = self._widths(axes, units, lied, "optuna", clip_count)
            segments.append((self._weights(lied, prior_weight), units, sigmas, tables))
        model = _with_prior(segments, axes.prior_mu, priors, axes.low, axes.high)
        lie = (clip_floor(len(above[0]) + 1, True), prior_weight / (len(above[0]) + 1), priors,
               self.tpe.liar_weight)  # fmt: skip
        return [_Part(_ALL, _ALL, model, float(segments[1][0].sum()), lie)]

    def _per_parameter(
        self, group: _Group, below: _Observations, above: _Observations, priors: list[np.ndarray]
    ) -> list[_Part]:
        """Hyperopt's model: a 1-D mixture per parameter, renormalized inside its bounds."""
        axes, prior_weight, liar = group.axes, self.tpe.prior_weight, self.tpe.liar_weight
        parts = []
        widths = [self._widths(axes, units, lied, "hyperopt") for units, lied in
                  ((below[0], below[2]), (above[0], above[2]))]  # fmt: skip
        weights = [self._weights(lied, prior_weight) for _, _, lied in (below, above)]
        lie: tuple[float, float, list[np.ndarray], float] = (
            clip_floor(len(above[0]) + 1, True), 0.0, [], liar
        )  # fmt: skip
        for j in range(len(axes)):
            axis = slice(j, j + 1)
            segments: list[_Segment] = [
                (w, units[:, axis], sigmas[:, axis], [])
                for w, (units, _, _), sigmas in zip(weights, (below, above), widths)
            ]
            model = _with_prior(segments, axes.prior_mu[axis], [], axes.low[axis],
                                axes.high[axis], truncation=True)  # fmt: skip
            parts.append(_Part(slice(j, j + 1), _NONE, model, float(weights[1].sum()), lie))
        for j, (spec, prior) in enumerate(zip(group.categorical, priors)):
            # Pseudo-counts: prior_weight per category (in proportion to the prior).
            segments = []
            for _, codes, lied in (below, above):
                no_axes = np.empty((len(codes), 0))
                table = categorical_table(codes[:, j], prior, 0.0)
                segments.append(
                    (self._weights(lied, prior_weight * spec.dist.size), no_axes, no_axes, [table])
                )
            model = _with_prior(segments, np.empty(0), [prior], np.empty(0), np.empty(0))
            parts.append(_Part(_NONE, slice(j, j + 1), model, float(segments[1][0].sum()),
                               (1.0, 0.0, [prior], liar)))  # fmt: skip
        return parts


# A segment of a model: observation weights (then the prior kernel's), the observations'
# centres and widths on the unit axes, and their probability rows per categorical axis.
_Segment = tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]


def _with_prior(
    segments: list[_Segment],
    prior_mu: np.ndarray,
    priors: list[np.ndarray],
    low: np.ndarray,
    high: np.ndarray,
    truncation: bool = False,
) -> Mixture:
    """One `Mixture` of ``segments`` (``l`` then ``g``), each ending with the prior kernel:
    centre ``prior_mu``, width 1, the ``priors`` as its category rows."""
    centre, width = prior_mu[None, :], np.ones((1, len(prior_mu)))
    return Mixture(
        np.concatenate([weights for weights, _, _, _ in segments]),
        np.concatenate([a for _, mus, _, _ in segments for a in (mus, centre)]),
        np.concatenate([a for _, _, sigmas, _ in segments for a in (sigmas, width)]),
        low,
        high,
        [np.concatenate([a for *_, tables in segments for a in (tables[j], prior[None, :])])
         for j, prior in enumerate(priors)],
        sizes=[len(weights) for weights, _, _, _ in segments],
        mixture_truncation=truncation,
    )  # fmt: skip


_NO_ROWS = np.empty(0, dtype=np.intp)
_NO_ROWS.flags.writeable = False
# The columns of a part: all of a group's, or none.
_ALL, _NONE = slice(None), slice(0, 0)


# Per group: where it is active, its numeric columns on the unit axes and its codes.
_Columns = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]


def _columns(groups: list[_Group], history: History, rows: slice) -> _Columns:
    """`_Columns` of the trials ``rows`` of ``history``."""
    active, units, indices = [], [], []
    size = len(range(*rows.indices(len(history))))
    values = history.values
    for group in groups:
        active.append(~np.isnan(values[group.first][rows]))
        raw = np.empty((size, len(group.numeric)))
        for j, spec in enumerate(group.numeric):
            raw[:, j] = values[spec.label][rows]
        units.append(group.axes.to_unit(raw))
        stored = np.empty((size, len(group.categorical)))
        for j, spec in enumerate(group.categorical):
            stored[:, j] = values[spec.label][rows]
        # Clipped so that a stray stored value cannot index outside the categories.
        codes = np.minimum(np.maximum(stored - group.offsets, 0), group.last_codes)
        indices.append(np.where(np.isnan(codes), 0, codes).astype(np.intp))
    return active, units, indices


class _KeptColumns:
    """`_Columns` of the first ``size`` stored rows of one holder's history (see
    `History.stored_rows`), in buffers with room to grow. Rows once handed out are never
    written again (a full buffer is copied into a larger one)."""

    def __init__(self, holder: object, groups: list[_Group]) -> None:
        self.holder, self.groups, self.size = holder, groups, 0
        self.buffers: list[list[np.ndarray]] | None = None

    def extend(self, new: _Columns) -> None:
        """Append the columns of the next stored rows."""
        added = len(new[0][0]) if new[0] else 0
        if self.buffers is None:
            self.buffers, self.size = [list(columns) for columns in new], added
            return
        for buffers, columns in zip(self.buffers, new):
            for k, column in enumerate(columns if added else ()):
                if self.size + added > len(buffers[k]):
                    grown = np.empty((2 * (self.size + added), *column.shape[1:]), column.dtype)
                    grown[: self.size] = buffers[k][: self.size]
                    buffers[k] = grown
                buffers[k][self.size : self.size + added] = column
        self.size += added

    def view(self, size: int) -> _Columns:
        """The columns of the first ``size`` rows (at most `size`)."""
        assert self.buffers is not None
        assert size <= self.size
        active, units, indices = ([b[:size] for b in buffers] for buffers in self.buffers)
        return active, units, indices


def _smallest(losses: np.ndarray, count: int) -> np.ndarray:
    """Mask of the ``count`` smallest ``losses``; ties (and NaNs, last) by position."""
    chosen = np.zeros(len(losses), dtype=bool)
    if count >= len(losses):
        chosen[:] = True
    elif count > 0 and len(losses) <= 256:
        chosen[np.argsort(losses, kind="stable")[:count]] = True
    elif count > 0:
        # The threshold from a partition, then ties by position (a stable sort's order).
        threshold = np.partition(losses, count - 1)[count - 1]
        below = losses < threshold if not np.isnan(threshold) else ~np.isnan(losses)
        chosen[below] = True
        ties = np.flatnonzero(losses == threshold if not np.isnan(threshold) else np.isnan(losses))
        chosen[ties[: count - int(np.count_nonzero(below))]] = True
    return chosen


def _ranked_after(losses: np.ndarray, n: int) -> np.ndarray:
    """``n`` increasing losses, each above every finite one of ``losses`` (0 if none)."""
    finite = losses[np.isfinite(losses)]
    top = float(finite.max()) if finite.size else 0.0
    return top + np.arange(1, n + 1) * (max(abs(top), 1.0) / (n + 1))


def _compress_categories(
    group: _Group, below: np.ndarray, above: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Prior per categorical axis, remapping ``below``/``above`` codes of large ones in place.

    A large axis keeps its observed categories (uniform prior ``1/size`` each) and one
    last bucket holding the prior mass of all unobserved ones; the bucket's share per
    category is the same in ``l`` and ``g``, so scores are unchanged by the compression.
    """
    priors: list[np.ndarray] = []
    seen: list[np.ndarray | None] = []
    for j, spec in enumerate(group.categorical):
        size, prior = spec.dist.size, group.priors[j]
        if prior is not None:
            priors.append(prior)
            seen.append(None)
            continue
        observed = np.unique(np.concatenate([below[:, j], above[:, j]]))
        below[:, j] = np.searchsorted(observed, below[:, j])
        above[:, j] = np.searchsorted(observed, above[:, j])
        priors.append(np.append(np.full(len(observed), 1.0 / size), 1.0 - len(observed) / size))
        seen.append(observed)
    return priors, seen


def _compressed(codes: np.ndarray, observed: list[np.ndarray | None]) -> np.ndarray:
    """Category codes in the compressed coding of `_compress_categories`."""
    result: np.ndarray = codes.copy()
    for j, seen in enumerate(observed):
        if seen is not None:
            at = int(np.searchsorted(seen, codes[j]))
            result[j] = at if at < len(seen) and seen[at] == codes[j] else len(seen)
    return result


def _decompress(code: int, observed: np.ndarray, size: int, rng: np.random.Generator) -> int:
    if code < len(observed):
        return int(observed[code])
    # The "unobserved" bucket: a uniform draw among categories not seen yet.
    while True:
        draw = int(rng.integers(size))
        position = int(np.searchsorted(observed, draw))
        if position == len(observed) or observed[position] != draw:
            return draw
