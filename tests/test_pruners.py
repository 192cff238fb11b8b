"""Pruners against decisions computed by hand on small histories."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from asyncopt.pruners import (
    Hyperband,
    MedianPruner,
    NopPruner,
    PercentilePruner,
    Pruner,
    SuccessiveHalving,
    pruner_from_name,
)
from asyncopt.trial import Trial, TrialState

NAN = math.nan


def trial(tid: int, values: dict[int, float], state: TrialState = TrialState.RUNNING) -> Trial:
    return Trial(study="s", tid=tid, state=state, assignment={}, intermediate=values)


def ok(tid: int, values: dict[int, float]) -> Trial:
    return trial(tid, values, TrialState.OK)


# -- NopPruner --------------------------------------------------------------------------


def test_nop_never_prunes() -> None:
    others = [ok(i, {0: 0.0}) for i in range(10)]
    assert NopPruner().should_prune(trial(99, {0: 100.0}), others) is False
    assert isinstance(NopPruner(), Pruner)


# -- MedianPruner / PercentilePruner ----------------------------------------------------


FOUR = [ok(i, {2: float(i + 1)}) for i in range(4)]  # values 1, 2, 3, 4 at step 2: median 2.5


@pytest.mark.parametrize(("best", "pruned"), [(3.0, True), (2.5, False), (2.0, False)])
def test_median_compares_with_the_ok_trials_at_the_step(best: float, pruned: bool) -> None:
    pruner = MedianPruner(n_startup_trials=4)
    assert pruner.should_prune(trial(10, {0: 9.0, 1: 9.0, 2: best}), FOUR) is pruned


def test_median_uses_the_best_value_so_far() -> None:
    # Current value 5 is above the median 2.5, but the trial reached 1.0 at step 0.
    assert MedianPruner(0).should_prune(trial(10, {0: 1.0, 2: 5.0}), FOUR) is False


def test_median_waits_for_startup_trials() -> None:
    current = trial(10, {2: 100.0})
    assert MedianPruner(n_startup_trials=5).should_prune(current, FOUR) is False
    assert MedianPruner(n_startup_trials=4).should_prune(current, FOUR) is True


def test_median_ignores_trials_that_are_not_ok() -> None:
    others = [
        ok(0, {2: 1.0}),
        trial(1, {2: 0.0}),  # running
        trial(2, {2: 0.0}, TrialState.PRUNED),
        trial(3, {2: 0.0}, TrialState.FAIL),
    ]
    # Only the OK trial counts: median 1.0, so 0.5 continues and 1.5 is pruned.
    assert MedianPruner(0).should_prune(trial(10, {2: 0.5}), others) is False
    assert MedianPruner(0).should_prune(trial(10, {2: 1.5}), others) is True
    # And the startup count is of OK trials: one, not four.
    assert MedianPruner(2).should_prune(trial(10, {2: 1.5}), others) is False


def test_median_leaves_out_trials_without_the_step() -> None:
    others = [ok(0, {2: 1.0, 3: 1.0}), ok(1, {2: 5.0}), ok(2, {2: 6.0})]
    # At step 3 only trial 0 reported: median 1.0.
    assert MedianPruner(0).should_prune(trial(10, {2: 9.0, 3: 2.0}), others) is True
    # Nobody reported step 4: nothing to compare with.
    assert MedianPruner(0).should_prune(trial(10, {4: 99.0}), others) is False


def test_median_nan_values() -> None:
    others = [ok(0, {1: 1.0}), ok(1, {1: NAN}), ok(2, {1: 3.0})]
    # The NaN of trial 1 is ignored: median of (1, 3) = 2.
    assert MedianPruner(0).should_prune(trial(10, {1: 2.0}), others) is False
    assert MedianPruner(0).should_prune(trial(10, {1: 2.1}), others) is True
    # A NaN current value is pruned when there is a median to compare with ...
    assert MedianPruner(0).should_prune(trial(10, {0: 0.0, 1: NAN}), others) is True
    # ... and not when there is none.
    assert MedianPruner(0).should_prune(trial(10, {7: NAN}), others) is False
    only_nan = [ok(0, {1: NAN})]
    assert MedianPruner(0).should_prune(trial(10, {1: NAN}), only_nan) is False


def test_median_warmup_steps() -> None:
    others = [ok(i, dict.fromkeys(range(6), 0.0)) for i in range(3)]
    pruner = MedianPruner(0, n_warmup_steps=3)
    assert pruner.should_prune(trial(10, {2: 1.0}), others) is False
    assert pruner.should_prune(trial(10, {2: 1.0, 3: 1.0}), others) is True


@pytest.mark.parametrize(
    ("reported", "checked"),
    [
        ({0: 1.0}, True),  # step 0 is a checkpoint
        ({0: 1.0, 4: 1.0}, False),  # the last checkpoint (0) was checked at step 0
        ({0: 1.0, 4: 1.0, 5: 1.0}, True),  # checkpoint 5
        ({0: 1.0, 3: 1.0, 7: 1.0}, True),  # checkpoint 5 skipped: checked at 7
        ({0: 1.0, 6: 1.0, 7: 1.0}, False),  # checkpoint 5 was checked at 6
        ({0: 1.0, 6: 1.0, 10: 1.0}, True),  # checkpoint 10
    ],
)
def test_median_interval_steps(reported: dict[int, float], checked: bool) -> None:
    others = [ok(i, dict.fromkeys(range(12), 0.0)) for i in range(3)]
    assert MedianPruner(0, interval_steps=5).should_prune(trial(10, reported), others) is checked


def test_interval_counts_from_the_warmup() -> None:
    others = [ok(i, dict.fromkeys(range(12), 0.0)) for i in range(3)]
    pruner = MedianPruner(0, n_warmup_steps=2, interval_steps=3)  # checks at 2, 5, 8, ...
    assert pruner.should_prune(trial(10, {2: 1.0}), others) is True
    assert pruner.should_prune(trial(10, {2: 1.0, 4: 1.0}), others) is False
    assert pruner.should_prune(trial(10, {2: 1.0, 4: 1.0, 5: 1.0}), others) is True


def test_percentile_interpolates() -> None:
    others = [ok(i, {0: float(i + 1)}) for i in range(5)]  # 1..5: 25th percentile is 2.0
    pruner = PercentilePruner(25.0, n_startup_trials=0)
    assert pruner.should_prune(trial(10, {0: 2.0}), others) is False
    assert pruner.should_prune(trial(10, {0: 2.01}), others) is True
    # 10th percentile: 1 + 0.4 * (2 - 1) = 1.4
    assert PercentilePruner(10, 0).should_prune(trial(10, {0: 1.39}), others) is False
    assert PercentilePruner(10, 0).should_prune(trial(10, {0: 1.41}), others) is True
    # 0 is the best, 100 the worst: only a trial worse than every OK trial is pruned.
    assert PercentilePruner(0, 0).should_prune(trial(10, {0: 1.5}), others) is True
    assert PercentilePruner(100, 0).should_prune(trial(10, {0: 5.0}), others) is False
    assert PercentilePruner(100, 0).should_prune(trial(10, {0: 5.5}), others) is True


def test_median_ignores_a_stale_copy_of_the_trial() -> None:
    # The study's copy of trial 10 says OK with a low value: it must not count.
    others = [ok(0, {0: 5.0}), ok(10, {0: 0.0})]
    assert MedianPruner(0).should_prune(trial(10, {0: 4.0}), others) is False
    assert MedianPruner(0).should_prune(trial(10, {0: 6.0}), others) is True


def test_no_reports_are_never_pruned() -> None:
    others = [ok(i, {0: 0.0}) for i in range(5)]
    for pruner in (MedianPruner(0), PercentilePruner(50, 0), SuccessiveHalving(),
                   Hyperband(max_resource=9)):  # fmt: skip
        assert pruner.should_prune(trial(10, {}), others) is False


# -- SuccessiveHalving ------------------------------------------------------------------


ETA3 = SuccessiveHalving(min_resource=1, reduction_factor=3)  # rungs at steps 1, 3, 9, 27


def test_rung_steps() -> None:
    assert [ETA3.rung_step(k) for k in range(4)] == [1, 3, 9, 27]
    shifted = SuccessiveHalving(min_resource=2, reduction_factor=2, min_early_stopping_rate=1)
    assert [shifted.rung_step(k) for k in range(3)] == [4, 8, 16]


def test_the_first_trial_at_a_rung_continues() -> None:
    assert ETA3.should_prune(trial(0, {0: 9.0, 1: 9.0}), []) is False


@pytest.mark.parametrize(("value", "pruned"), [(0.4, False), (0.5, False), (0.6, True)])
def test_top_share_of_the_rung_continues(value: float, pruned: bool) -> None:
    others = [ok(0, {1: 0.5, 2: 0.1}), trial(1, {1: 0.7}, TrialState.PRUNED)]
    # Three values at rung 1 (0.5, 0.7 and ours): 3 // 3 = 1 place; ties continue.
    assert ETA3.should_prune(trial(5, {0: 0.0, 1: value}), others) is pruned


def test_top_share_grows_with_the_rung() -> None:
    others = [trial(i, {1: v}) for i, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])]
    # Six values: two places (0.1 and ours if below 0.2).
    assert ETA3.should_prune(trial(9, {1: 0.15}), others) is False
    assert ETA3.should_prune(trial(9, {1: 0.25}), others) is True
    assert ETA3.should_prune(trial(9, {1: 0.05}), others) is False


def test_a_trial_reaches_a_rung_at_its_first_report_at_or_after_it() -> None:
    # Trial 0 skipped step 1: its value at rung 1 is its value at step 2 (0.2), not 0.9.
    others = [trial(0, {0: 0.0, 2: 0.2, 5: 0.9})]
    assert ETA3.should_prune(trial(1, {1: 0.3}), others) is True
    assert ETA3.should_prune(trial(1, {1: 0.1}), others) is False


def test_asha_never_waits_for_a_rung_to_fill() -> None:
    slow = trial(0, {0: 0.0})  # still before rung 1 (and best so far)
    fast = [trial(1, {0: 0.5, 1: 0.5})]
    # Trial 2 is decided now, without the slow trial: better than the rung's best: continues;
    assert ETA3.should_prune(trial(2, {1: 0.4}), [slow, *fast]) is False
    # worse: pruned.
    assert ETA3.should_prune(trial(2, {1: 0.6}), [slow, *fast]) is True
    # Once the slow trial reaches the rung, it is one of the rivals.
    arrived = trial(0, {0: 0.0, 1: 0.3})
    assert ETA3.should_prune(trial(2, {1: 0.4}), [arrived, *fast]) is True


def test_asha_decides_only_when_a_rung_is_reached() -> None:
    others = [trial(i, {1: 0.1, 2: 0.1}) for i in range(5)]
    # Step 2 is between rungs 1 and 3: nothing decided, however bad.
    assert ETA3.should_prune(trial(9, {1: 0.1, 2: 99.0}), others) is False
    # Reaching rung 3 with no rival there: continues.
    assert ETA3.should_prune(trial(9, {1: 0.1, 2: 99.0, 3: 99.0}), others) is False


def test_asha_judges_every_rung_jumped_over() -> None:
    # One report at step 5 reaches rungs 1 and 3. At rung 1 the value 0.3 is first of
    # (0.3, 0.4, 0.5); at rung 3 it is last of (0.1, 0.2, 0.3).
    others = [trial(0, {1: 0.4, 3: 0.1}), trial(1, {1: 0.5, 3: 0.2})]
    assert ETA3.should_prune(trial(9, {0: 1.0, 5: 0.3}), others) is True
    # Rung 3 alone would prune it too; rung 1 alone would not.
    assert ETA3.should_prune(trial(9, {0: 1.0, 2: 0.3}), others) is False


def test_asha_min_early_stopping_rate_shifts_the_rungs() -> None:
    late = SuccessiveHalving(min_resource=1, reduction_factor=3, min_early_stopping_rate=1)
    others = [trial(i, {1: 0.1, 3: 0.1}) for i in range(5)]
    assert late.should_prune(trial(9, {1: 5.0}), others) is False  # step 1 is no rung
    assert late.should_prune(trial(9, {1: 5.0, 3: 5.0}), others) is True


def test_asha_nan_values() -> None:
    others = [trial(0, {1: NAN}), trial(1, {1: 0.5}), trial(2, {1: NAN})]
    # NaN rivals are left out: (0.5, ours): 2 // 3 = 0 -> one place.
    assert ETA3.should_prune(trial(9, {1: 0.4}), others) is False
    assert ETA3.should_prune(trial(9, {1: 0.6}), others) is True
    # A NaN value is pruned when anybody else reached the rung, not when alone.
    assert ETA3.should_prune(trial(9, {1: NAN}), others) is True
    assert ETA3.should_prune(trial(9, {1: NAN}), [trial(0, {1: NAN})]) is False


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_asha_bootstrap_count_stops_the_first_trials_at_a_rung(count: int) -> None:
    pruner = SuccessiveHalving(min_resource=1, reduction_factor=3, bootstrap_count=count)
    # Arrivals at rung 1, each better than every earlier one: the k-th arrival (k = 1, 2,
    # ...) is stopped while k <= count, and continues after (the best of its rung).
    values = [0.9, 0.8, 0.7, 0.6]
    decisions = [
        pruner.should_prune(trial(k, {1: v}), [trial(j, {1: values[j]}) for j in range(k)])
        for k, v in enumerate(values)
    ]
    assert decisions == [k + 1 <= count for k in range(4)]
    # Past the bootstrap, the usual rule: the fourth arrival, worse than the best, stops.
    rivals = [trial(j, {1: v}) for j, v in enumerate([0.1, 0.2, 0.3])]
    assert pruner.should_prune(trial(9, {1: 0.5}), rivals) is True
    assert pruner.should_prune(trial(9, {1: 0.05}), rivals) is (count > 3)


def test_asha_bootstrap_counts_only_rivals_with_a_value() -> None:
    pruner = SuccessiveHalving(min_resource=1, reduction_factor=3, bootstrap_count=2)
    # A NaN rival does not count: ours is the second value at the rung, still stopped.
    assert pruner.should_prune(trial(9, {1: 0.1}), [trial(0, {1: NAN}), trial(1, {1: 0.5})])
    assert not pruner.should_prune(trial(9, {1: 0.1}), [trial(0, {1: 0.7}), trial(1, {1: 0.5})])


def test_asha_bootstrap_holds_a_nan_value_alone_at_its_rung() -> None:
    # Without a bootstrap a NaN value alone at its rung continues; with one, it stops
    # like any other first arrival.
    assert ETA3.should_prune(trial(9, {1: NAN}), []) is False
    holding = SuccessiveHalving(min_resource=1, reduction_factor=3, bootstrap_count=1)
    assert holding.should_prune(trial(9, {1: NAN}), []) is True


def test_hyperband_passes_the_bootstrap_count_to_every_bracket() -> None:
    pruner = Hyperband(max_resource=27, bootstrap_count=1)
    for bracket in range(pruner.n_brackets):
        tid = next(t for t in range(500) if pruner.bracket(t) == bracket)
        first = 3**bracket
        alone = trial(tid, dict.fromkeys(range(first + 1), 0.0))
        # The only trial at its bracket's first rung: stopped (Optuna's default would not).
        assert pruner.should_prune(alone, []) is True
        assert Hyperband(max_resource=27).should_prune(alone, []) is False


def test_asha_ignores_a_stale_copy_of_the_trial() -> None:
    stale = trial(9, {1: 0.0})  # an older read of trial 9, with a better value
    assert ETA3.should_prune(trial(9, {1: 0.6}), [stale]) is False


# -- Hyperband ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_resource", "max_resource", "eta", "brackets"),
    [(1, 27, 3, 4), (1, 26, 3, 3), (1, 1, 3, 1), (2, 54, 3, 4), (1, 81, 3, 5), (1, 64, 4, 4)],
)
def test_hyperband_number_of_brackets(
    min_resource: int, max_resource: int, eta: int, brackets: int
) -> None:
    pruner = Hyperband(min_resource, max_resource=max_resource, reduction_factor=eta)
    assert pruner.n_brackets == brackets


def test_hyperband_brackets_by_tid() -> None:
    pruner = Hyperband(max_resource=27)
    assignment = [pruner.bracket(tid) for tid in range(4900)]
    # The same tid lands in the same bracket for an equal pruner, every time.
    assert assignment == [Hyperband(max_resource=27).bracket(tid) for tid in range(4900)]
    # Shares follow Hyperband's trials per bracket: 27, 12, 6, 4 of 49.
    counts = Counter(assignment)
    for bracket, share in enumerate((27, 12, 6, 4)):
        assert abs(counts[bracket] / 4900 - share / 49) < 0.03
    # Consecutive tids are spread out: the first 8 trials use more than one bracket.
    assert len(set(assignment[:8])) > 1


def test_hyperband_brackets_are_independent() -> None:
    pruner = Hyperband(max_resource=27)
    by_bracket: dict[int, list[int]] = {}
    for tid in range(200):
        by_bracket.setdefault(pruner.bracket(tid), []).append(tid)
    me, mate, stranger = by_bracket[0][0], by_bracket[0][1], by_bracket[1][0]
    # A better trial of another bracket is not a rival: trial `me` is alone at rung 1.
    assert pruner.should_prune(trial(me, {1: 0.9}), [trial(stranger, {1: 0.1, 3: 0.1})]) is False
    # A better trial of its own bracket is (bracket 0 has rungs at 1, 3, 9, 27).
    assert pruner.should_prune(trial(me, {1: 0.9}), [trial(mate, {1: 0.1})]) is True


def test_hyperband_bracket_sets_the_first_rung() -> None:
    pruner = Hyperband(max_resource=27)
    tids = [next(t for t in range(500) if pruner.bracket(t) == b) for b in range(4)]
    mates = {b: [trial(t, dict.fromkeys(range(28), 0.0)) for t in range(500, 560)
                 if pruner.bracket(t) == b][:3] for b in range(4)}  # fmt: skip
    # Bracket b's first rung is at step 3**b: a bad trial is pruned there, not before.
    for bracket, tid in enumerate(tids):
        first = 3**bracket
        before = dict.fromkeys(range(first), 5.0)
        assert pruner.should_prune(trial(tid, before), mates[bracket]) is False
        assert pruner.should_prune(trial(tid, {**before, first: 5.0}), mates[bracket]) is True


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "named"),
    [
        (lambda: MedianPruner(n_startup_trials=-1), ValueError, "n_startup_trials"),
        (lambda: MedianPruner(n_warmup_steps=1.5), TypeError, "n_warmup_steps"),
        (lambda: MedianPruner(interval_steps=0), ValueError, "interval_steps"),
        (lambda: MedianPruner(interval_steps=True), TypeError, "interval_steps"),
        (lambda: PercentilePruner(101), ValueError, "percentile"),
        (lambda: PercentilePruner(NAN), ValueError, "percentile"),
        (lambda: PercentilePruner("25"), TypeError, "percentile"),
        (lambda: SuccessiveHalving(min_resource=0), ValueError, "min_resource"),
        (lambda: SuccessiveHalving(reduction_factor=1), ValueError, "reduction_factor"),
        (lambda: SuccessiveHalving(min_early_stopping_rate=-1), ValueError,
         "min_early_stopping_rate"),
        (lambda: SuccessiveHalving(bootstrap_count=-1), ValueError, "bootstrap_count"),
        (lambda: Hyperband(max_resource=9, bootstrap_count=0.5), TypeError, "bootstrap_count"),
        (lambda: Hyperband(), TypeError, "max_resource"),
        (lambda: Hyperband(max_resource=0), ValueError, "max_resource"),
        (lambda: Hyperband(4, max_resource=3), ValueError, "max_resource"),
        (lambda: Hyperband(max_resource=9, reduction_factor=1.5), TypeError, "reduction_factor"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(make: object, error: type[Exception], named: str) -> None:
    with pytest.raises(error, match=named):
        make()  # type: ignore[operator]


def test_pruners_are_frozen_values() -> None:
    assert MedianPruner(3) == MedianPruner(n_startup_trials=3)
    assert hash(SuccessiveHalving()) == hash(SuccessiveHalving())
    for pruner in (NopPruner(), MedianPruner(), PercentilePruner(25), SuccessiveHalving(),
                   Hyperband(max_resource=9)):  # fmt: skip
        assert isinstance(pruner, Pruner)


# -- pruner_from_name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", NopPruner()),
        ("nop", NopPruner()),
        ("median", MedianPruner()),
        ("Median:n_startup_trials=3", MedianPruner(n_startup_trials=3)),
        ("median: n_warmup_steps = 2 , interval_steps=4",
         MedianPruner(n_warmup_steps=2, interval_steps=4)),
        ("percentile:percentile=25", PercentilePruner(25)),
        ("percentile:percentile=12.5,n_startup_trials=0", PercentilePruner(12.5, 0)),
        ("asha", SuccessiveHalving()),
        ("successive-halving:min_resource=3,reduction_factor=3", SuccessiveHalving(3, 3)),
        ("hyperband:max_resource=81", Hyperband(max_resource=81)),
        ("asha:reduction_factor=3,bootstrap_count=2", SuccessiveHalving(1, 3, bootstrap_count=2)),
    ],
)  # fmt: skip
def test_pruner_from_name(text: str, expected: Pruner) -> None:
    assert pruner_from_name(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "unknown pruner 'bogus'; the pruners are"),
        ("median:foo=1", "no option 'foo'"),
        ("median:n_startup_trials", "expected OPTION=VALUE"),
        ("median:n_startup_trials=x", "n_startup_trials: 'x' is not a number"),
        ("median:n_startup_trials=1.5", "n_startup_trials must be an int"),
        ("median:n_startup_trials=-1", "n_startup_trials must be >= 0"),
        ("percentile", "percentile"),
        ("hyperband", "max_resource"),
        ("hyperband:max_resource=3,min_resource=9", "max_resource"),
    ],
)
def test_pruner_from_name_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pruner_from_name(text)


def test_value_at_a_rung_is_the_first_report_at_or_after_it() -> None:
    from asyncopt.pruners import _value_at

    rng = random.Random(0)
    for _ in range(200):
        steps = rng.sample(range(30), rng.randint(0, 10))
        reports = {s: rng.random() for s in steps}
        rung = rng.randint(0, 30)
        later = [s for s in reports if s >= rung]
        expected = reports[min(later)] if later else None
        assert _value_at(trial(0, reports), rung) == expected
