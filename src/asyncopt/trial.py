"""The records a study is made of: `Trial`, `TrialState`, `StudyRecord`, and their codecs.

This module sits below storage, history, algorithms and the orchestrator: they all import
their records from here. A storage only moves documents; turning values into storable
form and back is written once, here:

- `plain_assignment` and `result_json` normalize what callers pass (numpy scalars and 0-d
  arrays become Python numbers), so every backend stores and returns the same values;
- `trial_from_document` and `study_from_document` decode a stored row or document and
  raise a `StorageError` naming the study, the tid and the field when it cannot be read;
- `encode_big_int` / `decode_big_int` keep integers beyond 64 bits (seeds) exactly.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Iterable, Mapping
from numbers import Integral, Real
from typing import Any

import attrs

from asyncopt.errors import StorageError

__all__ = [
    "BUDGETED_STATES",
    "FINISHED_STATES",
    "STATUS_FAIL",
    "STATUS_OK",
    "STORED_FIELDS",
    "StudyRecord",
    "Trial",
    "TrialState",
    "best_of",
    "decode_big_int",
    "encode_big_int",
    "intermediate_json",
    "loss_rank",
    "plain_assignment",
    "reported_value",
    "result_json",
    "study_from_document",
    "to_json",
    "trial_from_document",
]

STATUS_OK = "ok"
STATUS_FAIL = "fail"


class TrialState(enum.IntEnum):
    """Where a trial is in its life: QUEUED → RUNNING → OK | FAIL | PRUNED | CANCELLED.

    The values are stored: a new state takes the next number, none is ever renumbered.
    """

    QUEUED = 0
    RUNNING = 1
    OK = 2
    FAIL = 3
    CANCELLED = 4
    PRUNED = 5

    @property
    def is_finished(self) -> bool:
        """True for OK, FAIL, PRUNED and CANCELLED."""
        return self >= TrialState.OK

    @property
    def counts_toward_budget(self) -> bool:
        """Every state but CANCELLED counts toward ``max_evals``."""
        return self is not TrialState.CANCELLED


BUDGETED_STATES = frozenset(s for s in TrialState if s.counts_toward_budget)
FINISHED_STATES = frozenset(s for s in TrialState if s.is_finished)


# Not slotted: `Trial.evolve` then copies the instance dict in one step, which costs a
# third of writing each slot (the orchestrator makes several copies per trial).
@attrs.frozen(slots=False)
class Trial:
    """One evaluation of the objective, as stored.

    ``assignment`` maps each active label to its raw value (a choice's option index).
    ``params`` is the evaluated space; it is filled in by `asyncopt.open_study` and
    `asyncopt.minimize`, not by storages. Times are Unix timestamps in seconds.
    ``intermediate`` maps each reported step to its value (NaN for a non-finite one); a
    PRUNED trial's ``loss`` is its last reported value.
    """

    study: str
    tid: int
    state: TrialState = attrs.field(converter=TrialState)
    assignment: Mapping[str, int | float]
    loss: float | None = None
    result: Mapping[str, Any] | None = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires_at: float | None = None
    worker: str | None = None
    seed: int | None = None
    retry_of: int | None = None
    seq: int = 0
    intermediate: Mapping[int, float] = attrs.field(factory=dict)
    params: Any = attrs.field(default=None, eq=False, repr=False)

    def evolve(self, **changes: Any) -> Trial:
        """A copy with ``changes`` applied, through the same converters as the constructor.

        Faster than `attrs.evolve` (the orchestrator makes several copies per trial).
        """
        if not _TRIAL_FIELDS.issuperset(changes):
            unknown = sorted(set(changes) - _TRIAL_FIELDS)
            raise TypeError(f"Trial has no field {unknown[0]!r}")
        if "state" in changes:
            changes["state"] = TrialState(changes["state"])
        fields = self.__dict__.copy()
        fields.update(changes)
        copy = object.__new__(Trial)
        object.__setattr__(copy, "__dict__", fields)
        return copy

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def last_step(self) -> int | None:
        """The largest reported step, or None before the first report."""
        return max(self.intermediate, default=None)

    @property
    def last_value(self) -> float | None:
        """The value reported at `last_step`, or None before the first report."""
        step = self.last_step
        return None if step is None else self.intermediate[step]

    def to_dict(self) -> dict[str, Any]:
        """The stored fields as a JSON-serializable dict (``params`` excluded).

        ``intermediate`` becomes ``{"step": value}`` with NaN written as None.
        """
        data = attrs.asdict(self, recurse=False, filter=lambda a, _: a.name != "params")
        data["state"] = self.state.name
        data["assignment"] = dict(self.assignment)
        data["result"] = None if self.result is None else dict(self.result)
        data["intermediate"] = _intermediate_out(self.intermediate)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        """Inverse of `to_dict`."""
        fields = dict(data)
        state = fields.pop("state")
        fields["state"] = TrialState[state] if isinstance(state, str) else TrialState(state)
        fields["intermediate"] = _intermediate(fields.get("intermediate"))
        return cls(**fields)


_TRIAL_FIELDS = frozenset(field.name for field in attrs.fields(Trial))

#: The fields a storage keeps for each trial, in `Trial`'s order (its study is the row's
#: or document's study, and ``params`` is computed by the reader).
STORED_FIELDS = tuple(f.name for f in attrs.fields(Trial) if f.name not in ("study", "params"))


@attrs.frozen
class StudyRecord:
    """A study: its name, the space it searches (fingerprint and JSON description), its seed."""

    name: str
    fingerprint: str
    space: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    seed: int
    created_at: float


def loss_rank(trial: Trial) -> tuple[float, int]:
    """The order of OK trials, best first: lower loss, then lower tid."""
    assert trial.loss is not None
    return trial.loss, trial.tid


def best_of(trials: Iterable[Trial]) -> Trial | None:
    """The OK trial with the lowest loss (lowest tid on ties), or None if there is none."""
    return min(
        (t for t in trials if t.state is TrialState.OK and t.loss is not None),
        key=loss_rank,
        default=None,
    )


# -- values in ----------------------------------------------------------------------------

_INT64 = range(-(2**63), 2**63)


def _plain(value: Any) -> Any:
    """A numpy scalar or 0-d array as the Python number it holds (JSON's ``default``)."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any, what: str) -> str:
    """``value`` as compact JSON text (numpy scalars and 0-d arrays as plain numbers).

    Raises `StorageError` naming ``what`` when it cannot be stored.
    """
    try:
        return json.dumps(value, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StorageError(f"cannot store the {what}: {exc}") from None


def result_json(result: Mapping[str, Any] | None) -> str | None:
    """A trial result as JSON text (None stays None); `StorageError` if not serializable."""
    if result is None:
        return None
    if not isinstance(result, Mapping):
        raise StorageError(f"cannot store the result: a mapping is needed, got {result!r}")
    return to_json(dict(result), "result")


def _number(label: str, value: Any) -> int | float:
    if type(value) is float or type(value) is int:  # the common case, without ABC checks
        return value
    if isinstance(value, bool):
        raise StorageError(f"cannot store the assignment: {label!r} is a bool, not a number")
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    try:
        plain = _plain(value)
    except TypeError:
        plain = None
    if isinstance(plain, (int, float)) and not isinstance(plain, bool):
        return plain
    raise StorageError(
        f"cannot store the assignment: {label!r} is {type(value).__name__}, not a number"
    )


def plain_assignment(assignment: Mapping[str, Any]) -> dict[str, int | float]:
    """An assignment with string labels and Python numbers; `StorageError` otherwise."""
    if not isinstance(assignment, Mapping):
        raise StorageError(f"an assignment must be a mapping, got {type(assignment).__name__}")
    plain: dict[str, int | float] = {}
    for label, value in assignment.items():
        if not isinstance(label, str):
            raise StorageError(f"cannot store the assignment: label {label!r} is not a string")
        plain[label] = _number(label, value)
    return plain


def reported_value(value: float) -> float | None:
    """A reported value as JSON and documents hold it: NaN as None."""
    return None if math.isnan(value) else value


def _intermediate_out(intermediate: Mapping[int, float]) -> dict[str, float | None]:
    """Reported values as JSON holds them: steps as decimal text, in order; NaN as None."""
    return {str(step): reported_value(value) for step, value in sorted(intermediate.items())}


def intermediate_json(intermediate: Mapping[int, float]) -> str | None:
    """Reported values (step -> value) as JSON text, NaN as null; None when there are none."""
    return to_json(_intermediate_out(intermediate), "reported values") if intermediate else None


def encode_big_int(value: int | None) -> int | str | None:
    """An integer as stored: itself within 64 bits, else its decimal text."""
    if value is None:
        return None
    value = int(value)
    return value if value in _INT64 else str(value)


def decode_big_int(value: Any) -> int | None:
    """Inverse of `encode_big_int`; TypeError or ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return int(value)


# -- values out ---------------------------------------------------------------------------


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _loss(value: Any) -> float | None:
    # SQLite keeps a NaN loss as the text "NaN" (it would store NaN as NULL).
    if isinstance(value, str):
        loss = float(value)
        if not math.isnan(loss):
            raise ValueError(f"expected a number, got {value!r}")
        return loss
    return _optional_float(value)


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    decoded = json.loads(value) if isinstance(value, (str, bytes)) else value
    if isinstance(decoded, list):  # MongoDB keeps assignments as [label, value] pairs
        decoded = dict(decoded)
    if not isinstance(decoded, dict):
        raise TypeError(f"expected a JSON object, got {type(decoded).__name__}")
    return decoded


def _assignment(value: Any) -> dict[str, int | float]:
    decoded = _mapping(value)
    for label, number in decoded.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"the value of {label!r} is {number!r}, not a number")
    return decoded


def _result(value: Any) -> dict[str, Any] | None:
    return None if value is None else _mapping(value)


def _intermediate(value: Any) -> dict[int, float]:
    """Reported values as stored (a mapping or JSON text of step -> value; None as NaN)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping of step to value, got {type(value).__name__}")
    # JSON and MongoDB keep the steps as decimal strings.
    return {
        int(step) if isinstance(step, str) and step.isdigit() else _int(step): (
            math.nan if reported is None else float(reported)
        )
        for step, reported in value.items()
    }


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "state": TrialState,
    "assignment": _assignment,
    "loss": _loss,
    "result": _result,
    "error": _optional_str,
    "created_at": _optional_float,
    "started_at": _optional_float,
    "finished_at": _optional_float,
    "lease_expires_at": _optional_float,
    "worker": _optional_str,
    "seed": decode_big_int,
    "retry_of": _optional_int,
    "seq": _int,
    "intermediate": _intermediate,
}


def trial_from_document(study: str, document: Mapping[str, Any]) -> Trial:
    """The trial a stored row or document describes (missing optional fields are None).

    ``document`` has the fields of `Trial` (but ``study`` and ``params``) as stored:
    ``assignment`` and ``result`` as JSON text or mappings, the seed by `encode_big_int`,
    a NaN loss possibly as ``"NaN"``. Raises `StorageError` naming the study, the tid and
    the field of a value that cannot be read (a tampered or corrupted row).
    """
    try:
        tid = _int(document["tid"])
    except (KeyError, TypeError) as exc:
        raise StorageError(
            f"study {study!r} holds a trial whose field 'tid' cannot be read: {exc}"
        ) from None
    get: Callable[[str], Any] = document.get
    try:
        # Every field at once; on a failure, the loop below names the field.
        fields = {
            "study": study,
            "tid": tid,
            "state": TrialState(get("state")),
            "assignment": _assignment(get("assignment")),
            "loss": _loss(get("loss")),
            "result": _result(get("result")),
            "error": _optional_str(get("error")),
            "created_at": _optional_float(get("created_at")),
            "started_at": _optional_float(get("started_at")),
            "finished_at": _optional_float(get("finished_at")),
            "lease_expires_at": _optional_float(get("lease_expires_at")),
            "worker": _optional_str(get("worker")),
            "seed": decode_big_int(get("seed")),
            "retry_of": _optional_int(get("retry_of")),
            "seq": _int(get("seq")),
            "intermediate": _intermediate(get("intermediate")),
            "params": None,
        }
    except (TypeError, ValueError, KeyError):
        for name, decode in _DECODERS.items():
            try:
                decode(get(name))
            except (TypeError, ValueError, KeyError) as exc:
                raise StorageError(
                    f"trial {tid} of study {study!r}: its stored field {name!r} cannot be "
                    f"read ({type(exc).__name__}: {exc})"
                ) from None
        raise  # pragma: no cover - the loop decodes the same fields the same way
    trial = object.__new__(Trial)
    object.__setattr__(trial, "__dict__", fields)
    return trial


def study_from_document(document: Mapping[str, Any]) -> StudyRecord:
    """The study a stored row or document describes (``space`` as JSON text or a mapping).

    Raises `StorageError` naming the study and the field of a value that cannot be read.
    """
    name = document.get("name")
    decoders: dict[str, Callable[[Any], Any]] = {
        "name": _optional_str,
        "fingerprint": _optional_str,
        "space": _mapping,
        "seed": decode_big_int,
        "created_at": _optional_float,
    }
    fields = {}
    for field, decode in decoders.items():
        try:
            value = decode(document.get(field))
            if value is None:
                raise TypeError("missing")
        except (TypeError, ValueError) as exc:
            raise StorageError(
                f"study {name!r}: its stored field {field!r} cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from None
        fields[field] = value
    return StudyRecord(**fields)
