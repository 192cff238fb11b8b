"""Pruners: whether to stop a running trial now, from the values trials reported so far.

A pruner is a pure function of the study's trials, like a suggest function: no I/O, no
clock, no state kept between calls. ``should_prune(trial, trials)`` gets the RUNNING
trial that asks (its ``intermediate`` includes the value just reported, so its
`asyncopt.Trial.last_step` is the current step) and every trial of the study as last
read, in any state (``trials`` may hold a stale copy of ``trial``: the copy is ignored).
Losses are minimized. A trial without reports is never pruned.

- `NopPruner` never prunes (the default).
- `MedianPruner` and `PercentilePruner` compare a trial with the OK trials at the same
  step (Optuna's median stopping rule).
- `SuccessiveHalving` is asynchronous successive halving (ASHA): a trial reaching a rung
  continues only if it ranks in the top ``1/reduction_factor`` of the trials that reached
  that rung so far; nobody waits for a rung to fill.
- `Hyperband` runs several `SuccessiveHalving` brackets, each trial in one of them.

`pruner_from_name` builds one from text (the CLI's ``--pruner``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np

from asyncopt.trial import Trial, TrialState

__all__ = [
    "Hyperband",
    "MedianPruner",
    "NopPruner",
    "PercentilePruner",
    "Pruner",
    "SuccessiveHalving",
    "pruner_from_name",
]


@runtime_checkable
class Pruner(Protocol):
    """What `asyncopt.minimize` asks whether a running trial should stop."""

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """True to stop ``trial`` now, given every trial of the study (``trials``)."""
        ...


# -- argument checks ----------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_at_least(minimum: int) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        owner = type(instance).__name__
        if not _is_int(value):
            raise TypeError(f"{owner}: {attribute.name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{owner}: {attribute.name} must be >= {minimum}, got {value!r}")

    return check


def _check_percentile(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
        value, (bool, np.bool_)
    ):
        raise TypeError(f"PercentilePruner: percentile must be a number, got {value!r}")
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"PercentilePruner: percentile must be in [0, 100], got {value!r}")


def _others(trial: Trial, trials: Sequence[Trial]) -> list[Trial]:
    """``trials`` without (any stale copy of) ``trial``."""
    return [other for other in trials if other.tid != trial.tid]


# -- never --------------------------------------------------------------------------------


@attrs.frozen
class NopPruner:
    """Never prunes: every trial runs to the end (the default of `asyncopt.minimize`)."""

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """Always False."""
        return False


# -- the median stopping rule -------------------------------------------------------------


def _checked_at(step: int, reported: Sequence[int], warmup: int, interval: int) -> bool:
    """Whether the report at ``step`` is the first at or after a step where the rule applies.

    The rule applies at ``warmup``, ``warmup + interval``, ...; a trial that skips such a
    step is checked at the first step it reports beyond it, and only once per interval.
    """
    checkpoint = (step - warmup) // interval * interval + warmup
    previous = max((s for s in reported if s < step), default=-1)
    return previous < checkpoint


@attrs.frozen
class PercentilePruner:
    """Prunes a trial whose best value so far is worse than a percentile of the OK trials.

    At a step where the rule applies, the trial's best (lowest) value over its reports
    is compared with the ``percentile``-th percentile (linear interpolation) of the
    values the OK trials reported at that same step; the trial is pruned when it is
    strictly greater. Ties continue.

    - OK trials that did not report that step are left out; if none did, nothing is
      compared and the trial continues. NaN values of other trials are ignored.
    - A NaN current value (a diverged trial) is pruned whenever there is something to
      compare against (a percentile exists at that step).
    - ``n_startup_trials``: no pruning until that many trials are OK.
    - ``n_warmup_steps``: no pruning at steps below it (steps count from 0).
    - ``interval_steps``: the rule applies every that many steps from ``n_warmup_steps``
      (at the first report at or after each such step).

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range (named).
    """

    percentile: float = attrs.field(validator=_check_percentile)
    n_startup_trials: int = attrs.field(default=5, validator=_int_at_least(0))
    n_warmup_steps: int = attrs.field(default=0, validator=_int_at_least(0))
    interval_steps: int = attrs.field(default=1, validator=_int_at_least(1))

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """True when ``trial``'s best value is worse than the percentile (see the class)."""
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        if not _checked_at(step, list(trial.intermediate), self.n_warmup_steps,
                           self.interval_steps):  # fmt: skip
            return False
        finished = [t for t in _others(trial, trials) if t.state is TrialState.OK]
        if len(finished) < self.n_startup_trials:
            return False
        at_step = [t.intermediate[step] for t in finished if step in t.intermediate]
        values = np.asarray([v for v in at_step if not math.isnan(v)], dtype=float)
        if values.size == 0:
            return False
        threshold = float(np.percentile(values, float(self.percentile)))
        current = trial.intermediate[step]
        if math.isnan(current):
            return True
        best = min(v for v in trial.intermediate.values() if not math.isnan(v))
        return best > threshold


@attrs.frozen
class MedianPruner:
    """Prunes a trial whose best value so far is worse than the median of the OK trials.

    Optuna's median stopping rule: `PercentilePruner` at the 50th percentile, with the
    same ``n_startup_trials``, ``n_warmup_steps`` and ``interval_steps`` and the same
    handling of missing steps, ties and NaN values.
    """

    n_startup_trials: int = attrs.field(default=5, validator=_int_at_least(0))
    n_warmup_steps: int = attrs.field(default=0, validator=_int_at_least(0))
    interval_steps: int = attrs.field(default=1, validator=_int_at_least(1))

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """True when ``trial``'s best value is worse than the median (see the class)."""
        rule = PercentilePruner(
            50.0, self.n_startup_trials, self.n_warmup_steps, self.interval_steps
        )
        return rule.should_prune(trial, trials)


# -- successive halving -------------------------------------------------------------------


def _value_at(trial: Trial, step: int) -> float | None:
    """The trial's value when it reached ``step``: at its first report at or after it."""
    value = trial.intermediate.get(step)
    if value is not None:  # reported at the rung itself, as most objectives do
        return value
    reached = [s for s in trial.intermediate if s > step]
    return trial.intermediate[min(reached)] if reached else None


@attrs.frozen
class SuccessiveHalving:
    """Asynchronous successive halving (ASHA, Li et al. 2020): stop all but the best trials
    at each rung, without waiting for a rung to fill.

    Rung ``k`` (0, 1, ...) is at step ``min_resource * reduction_factor ** (
    min_early_stopping_rate + k)``. A trial *reaches* a rung with its first report at
    or after the rung's step; its value there is the value of that report. When it
    reaches a rung, it competes with every other trial (any state) that has reached that
    rung so far and continues only if its value is among the best
    ``max(1, n // reduction_factor)`` of the ``n`` values (its own included; ties
    continue). So (with ``bootstrap_count=0``) the first trial at a rung continues, and
    the next ones continue only if they beat the rung's best until the rung holds
    ``reduction_factor`` trials. Nothing is decided at reports between rungs: call
    ``should_prune`` after every report. A trial that jumps over several rungs in one
    report is judged at each of them.

    ``bootstrap_count`` (Optuna's option of that name): a trial reaching a rung is
    stopped there while at most ``bootstrap_count`` trials, itself included, have reached
    it. ``reduction_factor - 1`` is the rule of the original ASHA, where nobody goes on
    from a rung that holds fewer than ``reduction_factor`` trials: with a search that
    improves on what it sees (TPE), the first trials, drawn at random, then no longer run
    to the end just because they came first. The default 0 is Optuna's: the first trial
    at a rung continues. With few trials, a count above 0 may leave no trial complete.

    NaN values of other trials are left out; a NaN value of the trial at a rung prunes it
    when some other trial reached that rung. Trials never stop at the last rung by
    themselves: the objective decides how many steps a full trial has.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range (named).
    """

    min_resource: int = attrs.field(default=1, validator=_int_at_least(1))
    reduction_factor: int = attrs.field(default=4, validator=_int_at_least(2))
    min_early_stopping_rate: int = attrs.field(default=0, validator=_int_at_least(0))
    bootstrap_count: int = attrs.field(default=0, validator=_int_at_least(0))

    def rung_step(self, rung: int) -> int:
        """The step of rung ``rung`` (0 is the first)."""
        exponent = self.min_early_stopping_rate + rung
        return int(self.min_resource * self.reduction_factor**exponent)

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """True when ``trial`` just reached a rung outside its top share (see the class)."""
        step = trial.last_step
        if step is None:
            return False
        previous = max((s for s in trial.intermediate if s < step), default=-1)
        others = _others(trial, trials)
        rung = 0
        while self.rung_step(rung) <= step:
            rung_step = self.rung_step(rung)
            rung += 1
            if rung_step <= previous:
                continue  # judged when the trial reached it
            rivals = [_value_at(other, rung_step) for other in others]
            values = [v for v in rivals if v is not None and not math.isnan(v)]
            if not self._continues(trial.intermediate[step], values):
                return True
        return False

    def _continues(self, value: float, rivals: list[float]) -> bool:
        # The bootstrap holds every trial, a NaN one too, until the rung has filled.
        if len(rivals) + 1 <= self.bootstrap_count:
            return False
        if math.isnan(value):
            return not rivals
        ranked = sorted([*rivals, value])
        places = max(1, len(ranked) // self.reduction_factor)
        return value <= ranked[places - 1]


# -- Hyperband ----------------------------------------------------------------------------


@attrs.frozen
class Hyperband:
    """Hyperband (Li et al. 2018): trials split among brackets of `SuccessiveHalving` that
    stop trials early more or less aggressively.

    There are ``floor(log(max_resource / min_resource) / log(reduction_factor)) + 1``
    brackets; bracket ``b`` is `SuccessiveHalving` with ``min_early_stopping_rate=b`` (its
    first rung at ``min_resource * reduction_factor ** b``), so bracket 0 prunes earliest
    and the last bracket barely prunes. A trial's bracket is a function of its tid alone
    (`bracket`), with each bracket taking a share of the trials proportional to
    Hyperband's number of configurations for it; trials compete only with trials of
    their own bracket. ``max_resource`` is the number of steps of a full trial.
    ``bootstrap_count`` is `SuccessiveHalving`'s, in every bracket.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range (named).
    """

    min_resource: int = attrs.field(default=1, validator=_int_at_least(1))
    max_resource: int = attrs.field(kw_only=True, validator=_int_at_least(1))
    reduction_factor: int = attrs.field(default=3, validator=_int_at_least(2))
    bootstrap_count: int = attrs.field(default=0, kw_only=True, validator=_int_at_least(0))

    def __attrs_post_init__(self) -> None:
        if self.max_resource < self.min_resource:
            raise ValueError(
                f"Hyperband: max_resource ({self.max_resource}) must be >= min_resource "
                f"({self.min_resource})"
            )

    @property
    def n_brackets(self) -> int:
        """How many brackets: ``floor(log_eta(max_resource / min_resource)) + 1``."""
        ratio, count = self.max_resource // self.min_resource, 0
        # Integer powers: a float log would miss an exact power by rounding.
        while self.reduction_factor ** (count + 1) <= ratio:
            count += 1
        return count + 1

    def _shares(self) -> list[int]:
        """Trials per bracket in one Hyperband round: ``ceil(B * eta**s / (s + 1))`` for
        bracket ``b`` with ``s = B - 1 - b`` (B brackets, eta the reduction factor)."""
        n = self.n_brackets
        return [math.ceil(n * self.reduction_factor ** (n - 1 - b) / (n - b)) for b in range(n)]

    def bracket(self, tid: int) -> int:
        """The bracket of trial ``tid``: a fixed function of the tid.

        Consecutive tids are spread over the brackets (a multiplicative hash), so trials
        started together do not all land in one bracket.
        """
        return _bracket(tid, self._shares())

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """True when `SuccessiveHalving` of ``trial``'s bracket would stop it, among the
        trials of that bracket."""
        shares = self._shares()
        bracket = _bracket(trial.tid, shares)
        mates = [t for t in trials if _bracket(t.tid, shares) == bracket]
        halving = SuccessiveHalving(
            self.min_resource, self.reduction_factor, bracket, self.bootstrap_count
        )
        return halving.should_prune(trial, mates)


def _bracket(tid: int, shares: list[int]) -> int:
    slot = (int(tid) * 2654435761) % 2**32 % sum(shares)
    for bracket, share in enumerate(shares):
        if slot < share:
            return bracket
        slot -= share
    raise AssertionError("unreachable: the slots sum to the shares")  # pragma: no cover


# -- from text ----------------------------------------------------------------------------

_NAMES: dict[str, type[Any]] = {
    "none": NopPruner,
    "nop": NopPruner,
    "median": MedianPruner,
    "percentile": PercentilePruner,
    "asha": SuccessiveHalving,
    "successive_halving": SuccessiveHalving,
    "sha": SuccessiveHalving,
    "hyperband": Hyperband,
}


def _option_value(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def pruner_from_name(text: str) -> Pruner:
    """The pruner ``text`` names: ``NAME`` or ``NAME:OPTION=VALUE,OPTION=VALUE``.

    Names: ``none`` (or ``nop``), ``median``, ``percentile``, ``asha`` (or
    ``successive_halving``, ``sha``) and ``hyperband``; options are the constructor's
    arguments, with numeric values. Examples: ``"median:n_startup_trials=3"``,
    ``"percentile:percentile=25"``, ``"asha:min_resource=3,reduction_factor=3"``,
    ``"hyperband:max_resource=81"``.

    Raises:
        ValueError: an unknown name or option, a value that is not a number, a missing or
            out-of-range argument (the message names it).
    """
    if not isinstance(text, str):
        raise TypeError(f"a pruner name must be text, got {type(text).__name__}")
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower().replace("-", "_")
    factory = _NAMES.get(name)
    if factory is None:
        raise ValueError(f"unknown pruner {name!r}; the pruners are {', '.join(sorted(_NAMES))}")
    options: dict[str, int | float] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        option, equals, value = item.partition("=")
        option = option.strip()
        if not equals or not option:
            raise ValueError(f"pruner {name!r}: expected OPTION=VALUE, got {item!r}")
        allowed = [field.name for field in attrs.fields(factory)]
        if option not in allowed:
            raise ValueError(
                f"pruner {name!r} has no option {option!r}; its options are "
                f"{', '.join(allowed) or 'none'}"
            )
        try:
            options[option] = _option_value(value.strip())
        except ValueError as exc:
            raise ValueError(f"pruner {name!r}: option {option}: {exc}") from None
    try:
        pruner: Pruner = factory(**options)
    except TypeError as exc:
        raise ValueError(f"pruner {name!r}: {exc}") from None
    return pruner
