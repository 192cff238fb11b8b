"""The columnar History: snapshots never change, whatever the builder does next."""

from __future__ import annotations

import gc

import numpy as np

from asyncopt import hp
from asyncopt.history import History, HistoryBuilder
from asyncopt.space.compile import compile_space
from asyncopt.storage.base import Trial, TrialState

SPACE = compile_space(
    {"x": hp.uniform("x", 0, 1), "c": hp.choice("c", [0, {"y": hp.uniform("y", 0, 1)}])}
)


def running(tid: int, x: float, c: int = 0) -> Trial:
    assignment: dict[str, int | float] = {"x": x, "c": c}
    if c == 1:
        assignment["y"] = x / 2
    return Trial("s", tid, TrialState.RUNNING, assignment)


def test_columns_hold_values_with_nan_where_inactive() -> None:
    history = History.from_trials(SPACE, [running(0, 0.5), running(1, 0.25, c=1)])
    assert len(history) == 2
    assert set(history.values) == {"x", "c", "y"}
    assert "y" in history.values
    assert "z" not in history.values
    np.testing.assert_array_equal(history.values["x"], [0.5, 0.25])
    np.testing.assert_array_equal(history.active("y"), [False, True])
    assert not history.values["x"].flags.writeable


def test_a_snapshot_is_unchanged_by_later_finishes_and_appends() -> None:
    builder = HistoryBuilder(SPACE, capacity=2)
    builder.update([running(0, 0.1), running(1, 0.2)])
    before = builder.snapshot()
    states, losses = before.states, before.losses
    builder.update([running(0, 0.1).evolve(state=TrialState.OK, loss=3.0)])
    builder.update([running(2, 0.3)])  # grows the buffers
    assert before.states.tolist() == [TrialState.RUNNING, TrialState.RUNNING]
    assert np.isnan(before.losses).all()
    assert states is before.states
    assert np.isnan(losses).all()
    after = builder.snapshot()
    assert after.states.tolist() == [TrialState.OK, TrialState.RUNNING, TrialState.RUNNING]
    assert after.losses[0] == 3.0


def test_a_column_kept_without_its_snapshot_is_unchanged() -> None:
    builder = HistoryBuilder(SPACE)
    builder.update([running(0, 0.1)])
    kept_states = builder.snapshot().states  # the History itself is dropped
    gc.collect()
    builder.update([running(0, 0.1).evolve(state=TrialState.FAIL)])
    assert kept_states.tolist() == [TrialState.RUNNING]
    assert builder.snapshot().states.tolist() == [TrialState.FAIL]


def test_an_unreferenced_snapshot_lets_the_builder_write_in_place() -> None:
    builder = HistoryBuilder(SPACE)
    builder.update([running(0, 0.1)])
    builder.snapshot()  # dropped at once
    buffer = id(builder._states)  # not a reference: that would count as a reader
    builder.update([running(0, 0.1).evolve(state=TrialState.OK, loss=1.0)])
    assert id(builder._states) == buffer
    assert builder.snapshot().losses.tolist() == [1.0]


def test_reapplying_a_record_changes_nothing() -> None:
    builder = HistoryBuilder(SPACE)
    done = running(0, 0.1).evolve(state=TrialState.OK, loss=2.0)
    builder.update([running(0, 0.1), done, done])
    history = builder.snapshot()
    assert len(history) == 1
    assert history.n_ok == 1
    assert history.losses[0] == 2.0


def test_with_pending_adds_running_rows_and_leaves_the_history_alone() -> None:
    done = Trial("s", 0, TrialState.OK, {"x": 0.5, "c": 0}, loss=1.0)
    history = History.from_trials(SPACE, [done])
    extended = history.with_pending([1, 2], [{"x": 0.25, "c": 0}, {"x": 0.75, "c": 1, "y": 0.1}])
    assert len(extended) == 3
    np.testing.assert_array_equal(extended.tids, [0, 1, 2])
    np.testing.assert_array_equal(extended.pending, [False, True, True])
    np.testing.assert_array_equal(extended.ok, [True, False, False])
    np.testing.assert_array_equal(extended.losses, [1.0, np.nan, np.nan])
    np.testing.assert_array_equal(extended.values["x"], [0.5, 0.25, 0.75])
    np.testing.assert_array_equal(extended.active("y"), [False, False, True])
    assert set(extended.values) == {"x", "c", "y"}
    assert not extended.values["y"].flags.writeable
    assert not extended.states.flags.writeable
    assert len(history) == 1
    assert history.with_pending([], []) is history


def test_a_snapshot_keeps_its_pruned_columns_when_a_trial_is_pruned_later() -> None:
    builder = HistoryBuilder(SPACE)
    builder.update([running(0, 0.1), running(1, 0.2)])
    before = builder.snapshot()
    pruned = running(1, 0.2).evolve(
        state=TrialState.PRUNED, loss=0.5, intermediate={0: 1.0, 3: 0.5}
    )
    builder.update([pruned])
    after = builder.snapshot()
    assert np.isnan(before.last_steps).all()
    assert before.pruned_order().tolist() == []
    np.testing.assert_array_equal(after.last_steps, [np.nan, 3.0])
    np.testing.assert_array_equal(after.last_values, [np.nan, 0.5])
    assert after.pruned_order().tolist() == [1]


def test_stored_rows_name_the_holder_and_its_final_rows() -> None:
    builder = HistoryBuilder(SPACE, capacity=2)
    builder.update([running(0, 0.1), running(1, 0.2)])
    first = builder.snapshot()
    holder, stored = first.stored_rows()
    assert holder is not None
    assert stored == 2
    # A finish changes no value row: the same holder, the same rows.
    builder.update([running(0, 0.1).evolve(state=TrialState.OK, loss=1.0)])
    assert builder.snapshot().stored_rows() == (holder, 2)
    # Pending rows appended to a history are not stored anywhere.
    assert first.with_pending([9], [{"x": 0.3, "c": 0}]).stored_rows() == (holder, 2)
    # Growing past the capacity moves the columns to a new holder.
    builder.update([running(2, 0.3)])
    grown, count = builder.snapshot().stored_rows()
    assert grown is not holder
    assert count == 3
    plain = History(
        tids=first.tids, states=first.states, losses=first.losses, values=dict(first.values),
        last_steps=first.last_steps, last_values=first.last_values,
    )  # fmt: skip
    assert plain.stored_rows() == (None, 0)
