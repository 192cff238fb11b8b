"""The tree-structured Parzen estimator (TPE): suggestions from models of good and bad trials.

The OK trials are split by loss into a small "below" group (the best ``n_below``) and the
rest ("above"). Each group gets an adaptive Parzen estimator, ``l`` and ``g``;
candidates are drawn from ``l`` and the one with the largest ``log l(x) - log g(x)`` is
proposed (Bergstra et al., 2011, 2013).

Two families of behaviour:

- **Multivariate** (the default, `suggest`): parameters that are active together (they
  share one activation condition) form a group, modelled by one joint mixture of product
  kernels; candidates are drawn and scored jointly. Groups are decided parents first, so a
  choice is made before the parameters of its branches. Each group is split on its own:
  ``n_below = min(ceil(gamma * N), max_below)`` with ``N`` the OK trials where the group is
  active; ``gamma=0.1``, ``n_startup=10``. Kernel widths come from neighbour gaps per axis
  (the prior kernel sits at the centre with the prior's width), clipped by the magic clip
  to ``[1/min(100, n+2), 1]`` of the prior's width; for ``l``, ``n`` is the geometric
  mean of its own count and of all the group's observations (divided among the
  proposals of one call), so ``l`` sharpens as evidence accumulates. Without conditional
  parameters this is Optuna's multivariate TPE (the densities match Optuna 5's to
  rounding) with that sharper ``l``.
- **Hyperopt** (``configure(preset="hyperopt")``, the same as
  ``configure(multivariate=False)``): Hyperopt's algorithm. One independent 1-D model
  per parameter (computed in one batch for parameters active together), modelled only
  from the trials where it is active; one global split with
  ``n_below = min(ceil(0.25 * sqrt(N)), 25)``; ``n_startup=20``; the prior inserted among
  the neighbours when computing widths; categorical pseudo-counts of ``prior_weight`` per
  category; each 1-D mixture renormalized inside its bounds as a whole (Hyperopt's
  rejection sampler). One deliberate difference: truncated log-uniform densities are
  normalized (Hyperopt forgets to).

Both families:

- **Startup**: while fewer than ``n_startup`` trials are OK, proposals are prior draws.
- **Pending trials** (QUEUED or RUNNING), when ``constant_liar`` is on (the default), are
  *believed*: each is given a predicted loss and then takes part in the split like an
  OK trial, with an ordinary kernel in ``l`` or ``g``. The prediction is the posterior
  mean of a Gaussian process fitted to its 40 nearest OK trials (prior mean: their mean
  loss; squared-exponential kernel of length 0.3 on the unit axes; nugget 1e-4), kept
  within one range of their losses beyond their lowest and highest. Distances are
  Euclidean on the unit axes; a differing category, or a parameter active in only one
  of the two trials, counts 1. A pending trial predicted to be good thus joins ``l`` and
  concurrent suggestions search around it as a sequential run would once it reported,
  while one predicted to be bad weighs in ``g``. Believed trials do not count in ``N``
  for the multivariate split: they compete for its ``n_below`` places, and one
  predicted to beat every finished trial takes 4 of them (a few predicted
  improvements then make the whole "below" group; `_believer.believed_below`). The
  Hyperopt preset counts them, as it counts failed trials. While trials are believed,
  the magic clip of the multivariate ``l`` counts `_believer.BELIEVED_CLIP_FACTOR` (2)
  times its usual evidence, so ``l`` may grow sharper (the delay slows the refinement
  of the best region). While no trial is OK yet (possible
  only with ``n_startup=0``), pending trials join the "above" group as lies instead: a
  kernel as narrow as the magic clip allows, of weight ``liar_weight``. With
  ``constant_liar=False`` pending trials are ignored: the suggestion is the one made
  from the history without them. (Measured on Branin and Hartmann-6 with 16 trials
  pending at every suggestion, the believer beats both a liar that puts pending trials
  in ``g`` and ignoring them; docs/benchmarks.md.)
- **Failed trials** join the "above" group too (a region that fails is a bad region), as
  Hyperopt does by giving them an infinite loss. The Hyperopt preset also counts them in
  ``N`` as Hyperopt does; the default does not (as Optuna, which leaves them out of ``N``).
- ``n > 1`` returns ``n`` proposals made one after another, each earlier one joining the
  "above" group of the next as a lie (narrow kernel, weight ``liar_weight``) whatever
  ``constant_liar`` says; a repeat is drawn again, from the model and then from the
  prior, so proposals are distinct whenever the space allows.
- Categorical parameters are ``choice``, ``pchoice`` and ``randint``; ``uniformint`` is a
  quantized numeric parameter. A categorical with more than 256 categories (a
  ``randint`` over seeds, say) is modelled over the categories seen so far plus one bucket
  for all the others.
- Numerics: every density is computed on unit axes, so extreme bounds, tiny widths and
  huge sigmas neither overflow nor raise; no floating-point error escapes.
"""

from __future__ import annotations

import bisect
import functools
import math
from typing import Any

import attrs
import numpy as np

from asyncopt.algorithms._believer import BELIEVED_CLIP_FACTOR, believed_below, believed_losses
from asyncopt.algorithms._parzen import (
    Axes,
    GridEnds,
    IndependentMixtures,
    ProductMixture,
    categorical_pair,
    clip_floor,
    false_flags,
    gap_bandwidths,
    linear_forgetting_weights,
)
from asyncopt.history import History
from asyncopt.space.compile import CompiledSpace, Condition, ParamSpec
from asyncopt.space.evaluate import Assignment, sample_assignments
from asyncopt.trial import TrialState

__all__ = ["TPE", "configure", "suggest"]

_GAMMA_RULES = ("linear", "sqrt")
_SUM = np.add.reduce
_OK, _FAIL = int(TrialState.OK), int(TrialState.FAIL)
_QUEUED, _RUNNING = int(TrialState.QUEUED), int(TrialState.RUNNING)
_PRESETS = ("default", "hyperopt")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "default": {
        "multivariate": True,
        "gamma": 0.1,
        "gamma_rule": "linear",
        "max_below": 25,
        "n_startup": 10,
        "n_candidates": 24,
        "prior_weight": 1.0,
        "linear_forgetting": 25,
        "magic_clip": True,
        "constant_liar": True,
        "liar_weight": 1.0,
    },
    "hyperopt": {
        "multivariate": False,
        "gamma": 0.25,
        "gamma_rule": "sqrt",
        "max_below": 25,
        "n_startup": 20,
        "n_candidates": 24,
        "prior_weight": 1.0,
        "linear_forgetting": 25,
        "magic_clip": True,
        "constant_liar": True,
        "liar_weight": 1.0,
    },
}


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

    Call it like `suggest`: ``tpe(space, history, rng, n=1)``.
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

    def __call__(
        self, space: CompiledSpace, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Assignment]:
        """``n`` proposals for ``space`` given ``history`` (see the module docstring)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return []
        # Trials per state (QUEUED, RUNNING, OK, FAIL, CANCELLED), in one pass.
        counts = np.bincount(history.states, minlength=5)
        if int(counts[_OK]) < self.n_startup or not space.params:
            return sample_assignments(space, rng, n)
        with np.errstate(all="ignore"):
            return _Proposer(self, space, history, rng, counts).propose(n)


def configure(**options: Any) -> TPE:
    """A TPE suggest function with ``options``; invalid options raise here.

    ``preset`` picks the family and its defaults: ``"default"`` (multivariate TPE) or
    ``"hyperopt"`` (Hyperopt's TPE). ``multivariate=False`` without a preset means the
    Hyperopt preset. The other options and their defaults (default / hyperopt):

    - ``gamma`` (0.1 / 0.25) and ``gamma_rule`` (``"linear"`` / ``"sqrt"``):
      ``n_below = min(ceil(gamma * N), max_below)``, with ``sqrt(N)`` for ``"sqrt"``;
    - ``max_below`` (25): the cap on ``n_below``;
    - ``n_startup`` (10 / 20): prior draws until this many trials are OK;
    - ``n_candidates`` (24): candidates drawn from ``l`` per proposal (per group);
    - ``prior_weight`` (1.0): weight of the prior kernel;
    - ``linear_forgetting`` (25): observations older than the newest this-many weigh less;
      None turns forgetting off;
    - ``magic_clip`` (True): clip kernel widths to ``[1/min(100, n+2), 1]`` of the prior's;
    - ``constant_liar`` (True): each pending trial gets a loss predicted from its
      nearest OK trials and is modelled with it (see the module docstring); False
      ignores pending trials;
    - ``liar_weight`` (1.0): the weight of a lie in ``g``: an earlier proposal of the
      same call (``n > 1``), or a pending trial while no trial is OK.

    Raises TypeError for an unknown option or a value of the wrong type, ValueError for
    a value out of range.
    """
    preset = options.pop("preset", None)
    if preset is None:
        multivariate = options.get("multivariate", True)
        preset = "hyperopt" if multivariate is False else "default"
    if preset not in _PRESETS:
        raise ValueError(f"tpe option preset must be one of {_PRESETS}, got {preset!r}")
    defaults = _DEFAULTS[preset]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(
            f"unknown tpe option(s) {unknown}; the options are {sorted(defaults)} and preset"
        )
    return TPE(**{**defaults, **options})


_DEFAULT = configure()


def suggest(
    space: CompiledSpace, history: History, rng: np.random.Generator, n: int = 1
) -> list[Assignment]:
    """``n`` proposals of the default (multivariate) TPE; see `configure` for variants."""
    return _DEFAULT(space, history, rng, n)


# -- implementation -------------------------------------------------------------------


@attrs.frozen(eq=False)
class _Group:
    condition: Condition
    numeric: tuple[ParamSpec, ...]
    axes: Axes
    categorical: tuple[ParamSpec, ...]
    # Per categorical axis: code offsets, highest codes and (all small) the priors.
    offsets: np.ndarray
    top_codes: np.ndarray
    dense_priors: list[np.ndarray] | None
    # (label, is integer) of each numeric parameter, for writing assignments.
    numeric_out: tuple[tuple[str, bool], ...] = ()
    # Whether the group is active in every trial (its condition always holds).
    always: bool = False
    # What suggestions keep for the next one (`_Proposer._below_widths`, `_above_widths`):
    # l's last widths ("below") and g's last size and widths ("above").
    memo: dict[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def first(self) -> str:
        return (self.numeric or self.categorical)[0].label


# Groups depend only on the compiled table, which the fingerprint identifies; building
# them costs more than a whole suggestion on small histories, so they are memoized.
_GROUP_CACHE: dict[tuple[str, bool], list[_Group]] = {}


def _groups(space: CompiledSpace, multivariate: bool) -> list[_Group]:
    key = (space.fingerprint, multivariate)
    groups = _GROUP_CACHE.get(key)
    if groups is None:
        if len(_GROUP_CACHE) > 64:
            _GROUP_CACHE.clear()
        groups = _GROUP_CACHE[key] = _build_groups(space, multivariate)
    return groups


def _build_groups(space: CompiledSpace, multivariate: bool) -> list[_Group]:
    members: dict[Any, list[ParamSpec]] = {}
    for spec in space.params:
        key = spec.condition
        members.setdefault(key, []).append(spec)
    groups = []
    for specs in members.values():
        numeric = tuple(s for s in specs if not s.dist.is_categorical)
        categorical = tuple(s for s in specs if s.dist.is_categorical)
        axes = Axes([s.dist for s in numeric])
        offsets = np.asarray([s.dist.offset for s in categorical], dtype=float)
        top_codes = np.asarray([s.dist.size - 1 for s in categorical], dtype=float)
        dense = all(s.dist.size <= _DENSE_CATEGORIES for s in categorical)
        priors = [_probabilities(s.dist) for s in categorical] if dense else None
        groups.append(
            _Group(
                specs[0].condition,
                numeric,
                axes,
                categorical,
                offsets,
                top_codes,
                priors,
                tuple((s.label, s.dist.is_integer) for s in numeric),
                specs[0].condition.is_always,
            )
        )
    return groups


class _Proposer:
    """State of one suggest call: history columns on the unit axes, and the proposals so far."""

    def __init__(
        self,
        tpe: TPE,
        space: CompiledSpace,
        history: History,
        rng: np.random.Generator,
        counts: np.ndarray | None = None,
    ) -> None:
        self.tpe = tpe
        self.space = space
        self.rng = rng
        self.groups = _groups(space, tpe.multivariate)
        states = history.states
        values = history.values
        self._values = values
        self._active: list[np.ndarray] | None = None
        # Groups active in every trial (the unconditional one, usually) need no row masks.
        # (A column's sum is NaN when a value is, and without one only if two are
        # infinite: one reduction settles the usual case.)
        self.everywhere = [
            not math.isnan(_SUM(values[g.first])) or not np.isnan(values[g.first]).any()
            for g in self.groups
        ]
        # Unit columns are kept axis-major (Fortran order): per-axis constants then
        # broadcast along contiguous memory, several times faster on long histories.
        size = len(history)
        self.units: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []
        for g in self.groups:
            # A group's numeric and category columns in one block (one gather).
            columns = _columns_of(values, g.numeric + g.categorical, size)
            dn = len(g.numeric)
            self.units.append(
                g.axes.to_unit(columns[:, :dn], fresh=True) if dn else np.empty((size, 0))
            )
            self.indices.append(
                # Clipped so that a stray stored value cannot index outside the categories.
                np.minimum(np.maximum(columns[:, dn:] - g.offsets, 0.0), g.top_codes)
                if g.categorical
                else np.empty((size, 0))
            )
        # Proposals of this call, per group: unit rows and category rows (kept only when
        # a later proposal of the call will read them).
        self.extra: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in self.groups]
        self.keep_rows = True
        if counts is None:
            counts = np.bincount(states, minlength=5)
        n_ok = int(counts[_OK])
        n_failed = int(counts[_FAIL])
        # (Every trial OK, as in a sequential run: no mask needed for the rows.)
        ok = None if n_ok == size else states == _OK
        self.losses = history.losses
        # Pending trials taken as observations with a predicted loss, and pending trials
        # that join the above group as lies (only when nothing has finished to predict from).
        # (Read only when any are set.)
        self.believed = self.lies = _NO_FLAGS
        self.any_believed = self.any_lies = False
        bad = states == _FAIL if n_failed else None
        if ok is not None and tpe.constant_liar and counts[_QUEUED] + counts[_RUNNING]:
            pending = (states == _QUEUED) | (states == _RUNNING)
            if n_ok:
                self.losses = believed_losses(
                    self.losses, ok, pending, self.active, self.units, self.indices
                )
                self.believed = pending
                self.any_believed = True
                ok = ok | pending
            else:
                self.lies = pending
                self.any_lies = True
                bad = pending if bad is None else bad | pending
        # (``nonzero`` of a 1-D mask: the rows, without np.flatnonzero's wrapper calls.)
        self.ok_rows = _first_rows(size) if ok is None else ok.nonzero()[0]
        self.bad_rows = _NO_ROWS if bad is None else bad.nonzero()[0]
        # Whether every trial is an OK (or believed) observation.
        self.all_ok = len(self.ok_rows) == size
        n_global = n_ok
        if not tpe.multivariate:
            # Hyperopt's N counts failed trials; the preset counts believed ones too (its
            # below group is so small that without a slot of their own they would crowd
            # out the best finished trials).
            n_global += n_failed + int(np.count_nonzero(self.believed))
        # Hyperopt's split is global: the best global_below OK rows.
        self.global_best = _NO_FLAGS
        if not tpe.multivariate:
            self.global_below = tpe.n_below(n_global)
            self.global_best = np.zeros(len(history), dtype=bool)
            self.global_best[self.ok_rows] = _smallest(self.losses[self.ok_rows], self.global_below)

    @property
    def active(self) -> list[np.ndarray]:
        """Per group, which trials it is active in (made when first read)."""
        if self._active is None:
            self._active = [~np.isnan(self._values[g.first]) for g in self.groups]
        return self._active

    def propose(self, n: int) -> list[Assignment]:
        if n == 1:
            # A lone proposal cannot repeat an earlier one, and nothing reads its rows.
            self.keep_rows = False
            return [self._one()[0]]
        proposals: list[Assignment] = []
        seen: set[tuple[tuple[str, float], ...]] = set()
        for i in range(n):
            # The unit rows of a proposal only serve the proposals after it.
            self.keep_rows = i < n - 1
            # A repeat is retried from the model, then from the prior, then accepted
            # (a finite space can run out of new points).
            for attempt in range(8):
                proposal, internal = self._one(from_prior=attempt >= 3)
                key = tuple(sorted(proposal.items()))
                if key not in seen:
                    break
            seen.add(key)
            proposals.append(proposal)
            for index, row in internal.items():
                self.extra[index].append(row)
        return proposals

    def _one(
        self, from_prior: bool = False
    ) -> tuple[Assignment, dict[int, tuple[np.ndarray, np.ndarray]]]:
        assignment: Assignment = {}
        internal: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if from_prior:
            (assignment,) = sample_assignments(self.space, self.rng, 1)
        for index, group in enumerate(self.groups):
            if not (group.always or group.condition.holds(assignment)):
                continue
            if not from_prior:
                internal[index] = self._decide(index, assignment)
                continue
            raw = np.asarray([[assignment[s.label] for s in group.numeric]], dtype=float)
            unit = group.axes.to_unit(raw.reshape(1, len(group.numeric)))[0]
            codes = [assignment[s.label] - s.dist.offset for s in group.categorical]
            internal[index] = (unit, np.asarray(codes, dtype=float))
        return assignment, internal

    def _split(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the below group and of the above group (OK and bad), all active."""
        everywhere = self.everywhere[index]
        active = _NO_FLAGS if everywhere else self.active[index]
        ok_active = self.ok_rows if everywhere else self.ok_rows[active[self.ok_rows]]
        if self.tpe.multivariate:
            # Believed pending trials compete for the below group (see `believed_below`)
            # but do not count in N.
            n = len(ok_active)
            if self.any_believed:
                n -= int(np.count_nonzero(self.believed[ok_active]))
            plain = everywhere and self.all_ok
            losses = self.losses if plain else self.losses[ok_active]
            count = self.tpe.n_below(n)
            if self.any_believed:
                believed = self.believed if plain else self.believed[ok_active]
                good = believed_below(losses, believed, count)
                below, above = ok_active[good], ok_active[~good]
            elif 0 < count < len(losses) <= 256:
                # `_smallest` sorts short rows anyway: the sorted order gives both groups
                # (each in row order) without masks.
                order = losses.argsort(kind="stable")
                below, above = order[:count].copy(), order[count:].copy()
                below.sort()
                above.sort()
                if not plain:
                    below, above = ok_active[below], ok_active[above]
            else:
                good = _smallest(losses, count)
                below, above = ok_active[good], ok_active[~good]
        else:
            good = self.global_best[ok_active]
            below, above = ok_active[good], ok_active[~good]
        if not len(self.bad_rows):
            return below, above
        bad = self.bad_rows if everywhere else self.bad_rows[active[self.bad_rows]]
        return below, np.sort(np.concatenate([above, bad])) if len(bad) else above

    def _observations(
        self, index: int, rows: np.ndarray, with_extra: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit rows, category rows and which rows are lies (pending trials)."""
        numeric = self.units[index].T.take(rows, axis=1).T
        categorical = self.indices[index][rows]
        lied = self.lies[rows] if self.any_lies else false_flags(len(rows))
        if with_extra and self.extra[index]:
            numeric = np.concatenate([numeric, [u for u, _ in self.extra[index]]])
            categorical = np.concatenate([categorical, [c for _, c in self.extra[index]]])
            lied = np.concatenate([lied, np.ones(len(self.extra[index]), dtype=bool)])
        return numeric, categorical.astype(np.intp), lied

    def _weights(self, lied: np.ndarray, extra: float | None = None) -> np.ndarray:
        """Observation weights: forgetting ranks finished trials; lies weigh liar_weight.

        ``extra`` appends one more weight (the prior kernel's).
        """
        n_lied = _count_lies(lied)
        n_true = len(lied) - n_lied
        if not n_lied:
            return _plain_weights(n_true, self.tpe.linear_forgetting, extra)
        weights = np.empty(len(lied) + (extra is not None))
        if extra is not None:
            weights[-1] = extra
        if n_lied:
            body = weights[: len(lied)]
            body[~lied] = linear_forgetting_weights(n_true, self.tpe.linear_forgetting)
            body[lied] = self.tpe.liar_weight
        else:
            weights[:n_true] = linear_forgetting_weights(n_true, self.tpe.linear_forgetting)
        return weights

    def _independent(
        self, axes: Axes, numeric: np.ndarray, lied: np.ndarray
    ) -> IndependentMixtures:
        n = len(numeric)
        sigmas = gap_bandwidths(
            numeric,
            prior_mu=axes.prior_mu,
            low=axes.low,
            high=axes.high,
            rule="hyperopt",
            magic_clip=self.tpe.magic_clip,
        )
        if _any_lie(lied):
            sigmas[lied] = 1.0 / min(100.0, n + 2.0)
        return IndependentMixtures(
            self._weights(lied, self.tpe.prior_weight),
            np.concatenate([numeric, axes.prior_mu[None, :]], axis=0),
            np.concatenate([sigmas, np.ones((1, len(axes)))], axis=0),
            axes.low,
            axes.high,
            axes.quantized,
        )

    def _pseudo_counts(
        self, codes: np.ndarray, lied: np.ndarray, prior: np.ndarray, size: int
    ) -> np.ndarray:
        """Hyperopt's categorical posterior: weighted counts plus prior_weight per category."""
        counts = np.bincount(codes, weights=self._weights(lied), minlength=len(prior))
        pseudo = counts + self.tpe.prior_weight * size * prior
        normalized: np.ndarray = pseudo / pseudo.sum()
        return normalized

    def _decide_independent(
        self, index: int, assignment: Assignment
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hyperopt's TPE: each parameter of the group decided by its own 1-D model."""
        group = self.groups[index]
        m = self.tpe.n_candidates
        below_rows, above_rows = self._split(index)
        below_numeric, below_codes, below_lied = self._observations(index, below_rows, False)
        above_numeric, above_codes, above_lied = self._observations(index, above_rows, True)
        priors, seen = _compress_categories(group, below_codes, above_codes)
        axes = group.axes
        unit = np.empty(len(axes))
        if len(axes):
            below = self._independent(axes, below_numeric, below_lied)
            above = self._independent(axes, above_numeric, above_lied)
            points = below.sample(self.rng, m)
            raw = axes.from_unit(points)
            cells = None
            exact = axes.quantized
            if exact.any():
                cells = axes.cells(raw)
                fine = (cells[1] - cells[0]).max(axis=0, initial=0.0) < 1e-6
                exact = exact & ~fine
                points = np.where(fine, 0.5 * (cells[0] + cells[1]), points)
            score = below.log_pdf(points, cells, exact) - above.log_pdf(points, cells, exact)
            score = np.where(np.isnan(score), -np.inf, score)
            chosen = raw[np.argmax(score, axis=0), np.arange(len(axes))]
            for j, spec in enumerate(group.numeric):
                value = float(chosen[j])
                assignment[spec.label] = int(value) if spec.dist.is_integer else value
            unit = axes.to_unit(chosen[None, :])[0] if self.keep_rows else _NO_ROW
        codes = np.empty(len(group.categorical))
        for j, spec in enumerate(group.categorical):
            size = spec.dist.size
            p_below = self._pseudo_counts(below_codes[:, j], below_lied, priors[j], size)
            p_above = self._pseudo_counts(above_codes[:, j], above_lied, priors[j], size)
            cumulative = np.cumsum(p_below)
            candidates = np.searchsorted(cumulative, self.rng.random(m) * cumulative[-1], "right")
            candidates = np.minimum(candidates, len(p_below) - 1)
            score = np.log(p_below[candidates]) - np.log(p_above[candidates])
            code = int(candidates[int(np.argmax(score))])
            observed = seen[j]
            if observed is not None:
                code = _decompress(code, observed, size, self.rng)
            codes[j] = code
            assignment[spec.label] = code + spec.dist.offset
        return unit, codes

    def _widths(
        self,
        axes: Axes,
        numeric: np.ndarray,
        lied: np.ndarray,
        clip_count: int | None = None,
        order_out: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Kernel widths of the multivariate model's observations (l's with ``clip_count``).

        ``order_out``: see `gap_bandwidths`.
        """
        n = len(numeric)
        least = None
        if clip_count is not None and axes.any_quantized:
            # On a grid, l keeps the usual clip so that neighbouring grid values stay in
            # reach (a kernel narrower than a cell never leaves its cell). (Widths are
            # positive: the zero floor of the other axes changes nothing.)
            least = axes.quantized * (1.0 / min(100.0, n + 2.0))
        sigmas = gap_bandwidths(
            numeric,
            prior_mu=axes.prior_mu,
            low=axes.low,
            high=axes.high,
            rule="optuna",
            magic_clip=self.tpe.magic_clip,
            clip_count=clip_count,
            least=least,
            order_out=order_out,
        )
        if _any_lie(lied):
            # A lie only marks a spot as taken: its kernel is as narrow as the clip allows,
            # so it repels candidates near it without reshaping g elsewhere.
            sigmas[lied] = 1.0 / min(100.0, n + 2.0)
        return sigmas

    def _above_widths(self, group: _Group, numeric: np.ndarray, lied: np.ndarray) -> np.ndarray:
        """`_widths` of g. Between the suggestions of a run g usually gains one trial
        and keeps the others: the widths of the last call per group are then updated
        where the new observation changes them (`_GrownWidths`), the same numbers."""
        axes = group.axes
        n = len(numeric)
        if n < _GROW_FROM or axes.any_quantized or not len(axes) or _any_lie(lied):
            # (Grid axes are full of ties, which `_GrownWidths` declines anyway.)
            return self._widths(axes, numeric, lied)
        floor = clip_floor(n, self.tpe.magic_clip)
        # g's size at the last call and what an update needs, kept only while g grows by
        # one observation per call (a history suggested from again and again never pays
        # for it). (Taken out while it is updated in place: a suggestion running at the
        # same time in another thread finds none and computes the widths afresh.)
        last: tuple[int, _GrownWidths | None] | None = group.memo.pop("above", None)
        growing = False
        if last is not None:
            size, state = last
            grown = None if state is None else state.grown(numeric, floor)
            if grown is not None:
                group.memo["above"] = (n, state)
                return grown
            growing = size == n - 1
        order: list[np.ndarray] | None = [] if growing else None
        sigmas = self._widths(axes, numeric, lied, order_out=order)
        sigmas.flags.writeable = False
        # (While the clip floor still changes with each observation, no update applies.)
        state = None
        if order is not None and clip_floor(n + 1, self.tpe.magic_clip) == floor:
            state = _GrownWidths(numeric, sigmas, floor, *order)
        group.memo["above"] = (n, state)
        return sigmas

    def _below_widths(
        self, group: _Group, numeric: np.ndarray, lied: np.ndarray, clip_count: int
    ) -> np.ndarray:
        """`_widths` of l, remembered per group: between the suggestions of a run (one
        more trial, which usually joins g) l's observations and clip rarely change.

        The remembered widths are used only for the very same observations and clip.
        """
        if _any_lie(lied):
            return self._widths(group.axes, numeric, lied, clip_count)
        clip = (self.tpe.magic_clip, clip_count)
        found: tuple[tuple[bool, int], np.ndarray, np.ndarray] | None = group.memo.get("below")
        if (
            found is not None
            and found[0] == clip
            and found[1].shape == numeric.shape
            and bool((found[1] == numeric).all())
        ):
            return found[2]
        sigmas = self._widths(group.axes, numeric, lied, clip_count)
        sigmas.flags.writeable = False
        # (The clip, the observations, the widths.)
        group.memo["below"] = (clip, numeric.copy(), sigmas)
        return sigmas

    def _mixtures(
        self,
        group: _Group,
        below: tuple[np.ndarray, np.ndarray, np.ndarray],
        above: tuple[np.ndarray, np.ndarray, np.ndarray],
        priors: list[np.ndarray],
        clip_count: int,
    ) -> tuple[ProductMixture, ProductMixture]:
        """The multivariate l and g as one kernel set: ``(both, l)`` (`ProductMixture.pair`).

        ``below`` and ``above`` are (unit rows, category rows, lies) of the observations.
        """
        (below_numeric, below_codes, below_lied) = below
        (above_numeric, above_codes, above_lied) = above
        prior_weight = self.tpe.prior_weight
        axes = group.axes
        prior_mu = axes.prior_mu[None, :]
        mus = np.concatenate((below_numeric, prior_mu, above_numeric, prior_mu))
        sigmas = np.concatenate(
            (
                self._below_widths(group, below_numeric, below_lied, clip_count),
                axes.prior_sigma,
                self._above_widths(group, above_numeric, above_lied),
                axes.prior_sigma,
            )
        )
        tables = [
            categorical_pair(below_codes[:, j], above_codes[:, j], prior, prior_weight=prior_weight)
            for j, prior in enumerate(priors)
        ]
        return ProductMixture.pair(
            self._weights(below_lied, prior_weight),
            self._weights(above_lied, prior_weight),
            mus,
            sigmas,
            axes.low,
            axes.high,
            axes.quantized,
            tables,
            # Widths of `gap_bandwidths` (floored at 1e-12 at least), 1 for the prior
            # kernels, the clip floor for lies.
            floored=True,
        )

    def _decide(self, index: int, assignment: Assignment) -> tuple[np.ndarray, np.ndarray]:
        if not self.tpe.multivariate:
            return self._decide_independent(index, assignment)
        group = self.groups[index]
        below_rows, above_rows = self._split(index)
        below_numeric, below_codes, below_lied = self._observations(index, below_rows, False)
        above_numeric, above_codes, above_lied = self._observations(index, above_rows, True)
        priors, seen = _compress_categories(group, below_codes, above_codes)
        # The multivariate l may grow sharper than its own few kernels allow: its magic
        # clip counts the geometric mean of the good observations and all the group's
        # observations, the latter shared among the proposals of this call (proposals
        # drawn from one sharp l would crowd one spot). Pending trials do not divide it:
        # the believer models them, and without the liar they are ignored.
        in_flight = 1 + len(self.extra[index])
        finished = len(below_rows) + len(above_rows) - _count_lies(above_lied)
        evidence = max(1, finished // in_flight)
        clip_count = max(len(below_rows), math.isqrt(max(1, len(below_rows)) * evidence))
        if self.any_believed:
            # The delay of pending trials slows the refinement of the best region: with
            # trials believed, l may grow sharper still (empirical; see the constant).
            clip_count *= BELIEVED_CLIP_FACTOR
        both, below = self._mixtures(
            group,
            (below_numeric, below_codes, below_lied),
            (above_numeric, above_codes, above_lied),
            priors,
            clip_count,
        )
        points, categories = below.sample(self.rng, self.tpe.n_candidates)
        axes = group.axes
        raw = axes.from_unit(points, inside=True)
        cells: tuple[np.ndarray, np.ndarray] | GridEnds | None = None
        exact = axes.quantized
        if axes.any_quantized:
            # Integer axes of moderate range: their distinct cell ends straight away.
            cells = axes.grid_ends(raw)
        if cells is None and axes.any_quantized:
            cells = axes.cells(raw)
            fine = (cells[1] - cells[0]).max(axis=0, initial=0.0) < 1e-6
            if fine.any():
                # Cells this narrow: the density at the grid point is the mass up to a
                # factor shared by l and g.
                exact = exact & ~fine
                points = np.where(fine, 0.5 * (cells[0] + cells[1]), points)
        # The largest log l - log g; a NaN score ranks last.
        best = both.best_ratio(points, cells, categories, exact, below.n_kernels)
        for (label, integer), value in zip(group.numeric_out, raw[best].tolist()):
            assignment[label] = int(value) if integer else value
        # (The rows of a call's last proposal are read by nothing.)
        codes = categories[best].astype(float) if self.keep_rows else _NO_ROW
        for j, (spec, code) in enumerate(zip(group.categorical, categories[best].tolist())):
            observed = seen[j]
            if observed is not None:
                code = _decompress(code, observed, spec.dist.size, self.rng)
                if self.keep_rows:
                    codes[j] = code
            assignment[spec.label] = code + spec.dist.offset
        if not self.keep_rows:
            return _NO_ROW, codes
        unit = axes.to_unit(raw[best : best + 1])[0]
        return unit, codes


def _columns_of(values: Any, specs: tuple[ParamSpec, ...], size: int) -> np.ndarray:
    # The history columns of ``specs`` as one fresh (trials, params) array, axis-major.
    stacked: np.ndarray = np.concatenate([values[s.label] for s in specs], dtype=float)
    columns: np.ndarray = stacked.reshape(len(specs), size).T
    return columns


@functools.lru_cache(maxsize=256)
def _plain_weights(n: int, flat: int | None, extra: float | None) -> np.ndarray:
    # `_Proposer._weights` without lies (read-only, cached: the same few counts come
    # back on every suggestion, and the mixtures then find their log weights by identity).
    weights = linear_forgetting_weights(n, flat, extra)
    weights.flags.writeable = False
    return weights


_NO_ROWS = np.empty(0, dtype=np.intp)
_NO_ROWS.flags.writeable = False
# 0, 1, 2, ...: the rows of a history whose trials are all OK (read-only, grown as
# histories grow; see `_first_rows`).
_ROWS = np.empty(0, dtype=np.intp)


def _first_rows(size: int) -> np.ndarray:
    global _ROWS
    if len(_ROWS) < size:
        rows = np.arange(max(size, 2 * len(_ROWS), 1024), dtype=np.intp)
        rows.flags.writeable = False
        _ROWS = rows
    return _ROWS[:size]


_NO_FLAGS = np.empty(0, dtype=bool)
_NO_FLAGS.flags.writeable = False


# g's widths are updated from the last call's from this many observations on (below,
# `gap_bandwidths` costs about as much as the update).
_GROW_FROM = 256


class _GrownWidths:
    """g's last observations and widths (`gap_bandwidths`, rule "optuna") of one group,
    with each axis's observations sorted, to update the widths when one is inserted.

    The widths of neighbour gaps change only for the new observation and its neighbours
    on each axis, as long as no two observations are so close that the sort of
    `gap_bandwidths` could order them either way: a tie, or values closer than far more
    than its packed keys resolve (2**-45 of an axis's span), declines the update. (The
    work per update is a few dozen scalar steps per axis: sorted lists, not arrays.)
    """

    __slots__ = ("floor", "narrowest", "numeric", "order", "sigmas", "sorted")

    def __init__(
        self,
        numeric: np.ndarray,
        sigmas: np.ndarray,
        floor: float,
        ordered: np.ndarray,
        order: np.ndarray,
        narrowest: np.ndarray,
    ) -> None:
        d, n = ordered.shape
        self.numeric = numeric
        self.sigmas = sigmas
        self.floor = floor
        # Per axis: the observations sorted, their rows (with room to grow) and the
        # smallest gap between neighbours.
        self.sorted: list[list[float]] = ordered.tolist()
        self.order = np.empty((d, n + n // 4 + 16), dtype=np.intp)
        self.order[:, :n] = order
        self.narrowest: list[float] = narrowest.tolist()

    def grown(self, numeric: np.ndarray, floor: float) -> np.ndarray | None:
        """The widths of ``numeric``, the last observations with one more inserted, or None."""
        old = self.numeric
        n, d = old.shape
        if len(numeric) != n + 1 or floor != self.floor:
            return None
        # Where the new observation is: last (a new trial), or where a trial that left
        # l comes back in row order; all the others follow in the same order.
        q = n
        if not (numeric[:n] == old).all():
            q = int(np.not_equal(numeric[:n], old).any(axis=1).argmax())
            if not (numeric[q + 1 :] == old[q:]).all():
                return None
        order = self.order
        if n + 1 > order.shape[1]:
            bigger = np.empty((d, 2 * n + 16), dtype=np.intp)
            bigger[:, :n] = order[:, :n]
            self.order = order = bigger
        axes = self.sorted
        plan = []
        for j, v in enumerate(numeric[q].tolist()):
            ordered = axes[j]
            p = bisect.bisect_left(ordered, v)
            # (Comparisons with NaN are false: a NaN declines too.)
            tiny = (max(ordered[-1], v) - min(ordered[0], v)) * 2.0**-40
            narrowest = self.narrowest[j]
            if not narrowest > tiny:
                return None
            own = -1.0
            left = right = -1
            left_width = right_width = 0.0
            if p:
                below = ordered[p - 1]
                gap = v - below
                if not gap > tiny:
                    return None
                narrowest = min(narrowest, gap)
                left = int(order[j, p - 1])
                left_width = max(below - ordered[p - 2], gap) if p >= 2 else gap
                own = gap
            if p < n:
                above = ordered[p]
                gap = above - v
                if not gap > tiny:
                    return None
                narrowest = min(narrowest, gap)
                right = int(order[j, p])
                right_width = max(ordered[p + 1] - above, gap) if p + 1 < n else gap
                own = max(own, gap)
            plan.append((p, v, own, left, left_width, right, right_width, narrowest))
        # (Axis-major, as `gap_bandwidths` makes them.)
        sigmas: np.ndarray = np.empty((d, n + 1)).T
        sigmas[:q] = self.sigmas[:q]
        sigmas[q + 1 :] = self.sigmas[q:]
        sigmas[q] = [_clipped(own, floor) for _, _, own, *_ in plan]
        if q < n:
            # Rows from q on move one down.
            rows = order[:, :n]
            rows[rows >= q] += 1
        for j, (p, v, _, left, left_width, right, right_width, narrowest) in enumerate(plan):
            if left >= 0:
                sigmas[left + (left >= q), j] = _clipped(left_width, floor)
            if right >= 0:
                sigmas[right + (right >= q), j] = _clipped(right_width, floor)
            axes[j].insert(p, v)
            rows = order[j]
            rows[p + 1 : n + 1] = rows[p:n]
            rows[p] = q
            self.narrowest[j] = narrowest
        sigmas.flags.writeable = False
        self.numeric, self.sigmas = numeric, sigmas
        return sigmas


def _clipped(width: float, floor: float) -> float:
    # The magic clip of `gap_bandwidths` on one width (never NaN here).
    return min(max(width, floor), 1.0)


def _any_lie(lied: np.ndarray) -> bool:
    # Whether any flag is set; the shared all-False flags (`false_flags`) need no look.
    return lied is not false_flags(len(lied)) and bool(lied.any())


def _count_lies(lied: np.ndarray) -> int:
    # How many flags are set (as `_any_lie`, the shared all-False flags need no look).
    return 0 if lied is false_flags(len(lied)) else int(np.count_nonzero(lied))


# The unit row of a call's last proposal, which nothing reads.
_NO_ROW = np.empty(0)
_NO_ROW.flags.writeable = False


def _smallest(losses: np.ndarray, count: int) -> np.ndarray:
    """Mask of the ``count`` smallest ``losses``; ties (and NaNs, last) by position.

    The same rows as the first ``count`` of a stable argsort, found in linear time.
    """
    if count >= len(losses):
        return np.ones(len(losses), dtype=bool)
    if count <= 0:
        return np.zeros(len(losses), dtype=bool)
    chosen: np.ndarray
    if len(losses) <= 256:
        # Short: a stable sort costs less than the partition's extra steps.
        chosen = np.zeros(len(losses), dtype=bool)
        chosen[losses.argsort(kind="stable")[:count]] = True
        return chosen
    parted = losses.copy()
    parted.partition(count - 1)
    threshold = float(parted[count - 1])
    if math.isnan(threshold):
        chosen = ~np.isnan(losses)
        ties = (~chosen).nonzero()[0]
    else:
        chosen = losses < threshold
        ties = (losses == threshold).nonzero()[0]
    chosen[ties[: count - int(np.count_nonzero(chosen))]] = True
    return chosen


# Categorical parameters with more categories than this (a randint over seeds, say) are
# modelled over the categories seen in the history plus one bucket for all the others.
_DENSE_CATEGORIES = 256


_PROBABILITIES: dict[Any, np.ndarray] = {}


def _probabilities(dist: Any) -> np.ndarray:
    found = _PROBABILITIES.get(dist)
    if found is None:
        if len(_PROBABILITIES) > 1024:
            _PROBABILITIES.clear()
        found = _PROBABILITIES[dist] = dist.probabilities
        found.flags.writeable = False
    return found


def _compress_categories(
    group: _Group, below: np.ndarray, above: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Prior per categorical axis, remapping ``below``/``above`` codes of large ones in place.

    A large axis keeps its observed categories (uniform prior ``1/size`` each) and one
    last bucket holding the prior mass of all unobserved ones; the bucket's share per
    category is the same in ``l`` and ``g``, so scores are unchanged by the compression.
    """
    if group.dense_priors is not None:
        return group.dense_priors, [None] * len(group.categorical)
    priors: list[np.ndarray] = []
    seen: list[np.ndarray | None] = []
    for j, spec in enumerate(group.categorical):
        size = spec.dist.size
        if size <= _DENSE_CATEGORIES:
            priors.append(_probabilities(spec.dist))
            seen.append(None)
            continue
        observed = np.unique(np.concatenate([below[:, j], above[:, j]]))
        below[:, j] = np.searchsorted(observed, below[:, j])
        above[:, j] = np.searchsorted(observed, above[:, j])
        priors.append(np.append(np.full(len(observed), 1.0 / size), 1.0 - len(observed) / size))
        seen.append(observed)
    return priors, seen


def _decompress(code: int, observed: np.ndarray, size: int, rng: np.random.Generator) -> int:
    if code < len(observed):
        return int(observed[code])
    # The "unobserved" bucket: a uniform draw among categories not seen yet.
    while True:
        draw = int(rng.integers(size))
        position = int(np.searchsorted(observed, draw))
        if position == len(observed) or observed[position] != draw:
            return draw
