"""How objective return values become trial outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncopt.outcome import from_exception, from_value
from asyncopt.storage.base import TrialState


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.5), np.int64(3), -1e300])
def test_numbers_are_losses(value: float) -> None:
    outcome = from_value(value)
    assert outcome.state is TrialState.OK
    assert outcome.loss == float(value)
    assert isinstance(outcome.loss, float)


def test_bool_is_not_a_loss() -> None:
    assert from_value(True).state is TrialState.FAIL


def test_numpy_extras_become_json() -> None:
    outcome = from_value({"loss": np.float64(0.25), "curve": np.arange(3), "n": np.int32(4)})
    assert outcome.state is TrialState.OK
    assert outcome.loss == 0.25
    assert outcome.result == {"loss": 0.25, "curve": [0, 1, 2], "n": 4, "status": "ok"}


def test_exception_outcome() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        outcome = from_exception(exc)
    assert outcome.state is TrialState.FAIL
    assert outcome.error is not None
    assert outcome.error.startswith("KeyError: 'missing'")
    assert "test_outcome.py" in outcome.error


def test_negative_infinity_fails() -> None:
    outcome = from_value(-math.inf)
    assert outcome.state is TrialState.FAIL
    assert outcome.loss is None
