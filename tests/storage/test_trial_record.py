"""`Trial` as a record: copies made by `Trial.evolve`, equality, immutability."""

from __future__ import annotations

import attrs
import pytest

from asyncopt.storage.base import Trial, TrialState


def running() -> Trial:
    return Trial("s", 3, TrialState.RUNNING, {"x": 0.5}, created_at=10.0, worker="w", seq=7)


def test_evolve_changes_only_the_named_fields() -> None:
    original = running()
    finished = original.evolve(state=TrialState.OK, loss=1.5, finished_at=12.0)

    assert finished == Trial(
        "s",
        3,
        TrialState.OK,
        {"x": 0.5},
        loss=1.5,
        created_at=10.0,
        finished_at=12.0,
        worker="w",
        seq=7,
    )
    # The original is untouched, and the copy is a record of its own.
    assert original.state is TrialState.RUNNING
    assert original.loss is None
    assert finished is not original
    assert original == running()


def test_evolve_of_one_copy_does_not_change_another() -> None:
    first = running().evolve(loss=1.0)
    second = first.evolve(loss=2.0, params={"x": 0.5})

    assert (first.loss, first.params) == (1.0, None)
    assert (second.loss, second.params) == (2.0, {"x": 0.5})


def test_evolve_names_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="'bogus'"):
        running().evolve(loss=1.0, bogus=2)


def test_a_trial_and_its_copies_are_frozen() -> None:
    copy = running().evolve(loss=1.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        copy.loss = 2.0  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        running().tid = 4  # type: ignore[misc]


def test_params_are_not_compared() -> None:
    assert running().evolve(params={"x": 0.5}) == running()
