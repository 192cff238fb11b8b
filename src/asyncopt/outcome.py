"""Interpreting what an objective returned (DESIGN 4.2) as a trial outcome."""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from asyncopt.trial import STATUS_FAIL, STATUS_OK, TrialState

__all__ = ["Outcome", "from_exception", "from_value"]


@attrs.frozen
class Outcome:
    """A trial's final state with its loss, result document and error text.

    ``started_at`` (seconds since the epoch) is when the objective call began, if known;
    recording the outcome makes it the trial's start time.
    """

    state: TrialState
    loss: float | None = None
    result: Mapping[str, Any] | None = None
    error: str | None = None
    started_at: float | None = None


def _number(value: object) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def _fail(message: str, result: Mapping[str, Any] | None = None) -> Outcome:
    return Outcome(TrialState.FAIL, None, result, message)


def from_value(value: Any) -> Outcome:
    """The outcome for an objective's return value; never raises.

    A number is the loss; a mapping has ``loss`` (required when ``status`` is ``"ok"``),
    optional ``status`` and JSON-serializable extras. Anything else, or a loss that is not
    a finite number, gives a FAIL outcome whose error says what was wrong.
    """
    number = _number(value)
    if number is not None:
        if not math.isfinite(number):
            return _fail(f"ObjectiveError: the objective returned a non-finite loss ({number!r})")
        return Outcome(TrialState.OK, number, {"loss": number, "status": STATUS_OK})
    if not isinstance(value, Mapping):
        return _fail(
            "ObjectiveError: the objective returned "
            f"{type(value).__name__} ({value!r:.100}); expected a number or a mapping "
            "with 'loss' (and optional 'status')"
        )
    result = {str(key): item for key, item in value.items()}
    try:
        result = json.loads(json.dumps(result, default=_numpy_default, allow_nan=True))
    except (TypeError, ValueError) as exc:
        return _fail(f"ObjectiveError: the result mapping is not JSON-serializable ({exc})")
    status = result.get("status", STATUS_OK)
    if status not in (STATUS_OK, STATUS_FAIL):
        return _fail(f"ObjectiveError: result status {status!r} is neither 'ok' nor 'fail'", result)
    if status == STATUS_FAIL:
        error = result.get("error")
        return Outcome(TrialState.FAIL, None, result, str(error) if error else "status 'fail'")
    if "loss" not in result:
        return _fail("ObjectiveError: the result has status 'ok' but no 'loss'", result)
    loss = _number(result["loss"])
    if loss is None:
        return _fail(
            f"ObjectiveError: the result's loss {result['loss']!r} is not a number", result
        )
    if not math.isfinite(loss):
        return _fail(f"ObjectiveError: the result's loss is not finite ({loss!r})", result)
    result["status"] = STATUS_OK
    return Outcome(TrialState.OK, loss, result)


def _numpy_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def from_exception(exc: BaseException) -> Outcome:
    """A FAIL outcome carrying the exception's type, message and traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return _fail(f"{type(exc).__qualname__}: {exc}\n{text}")
