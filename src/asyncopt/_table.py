"""The trials of a study as a table: one row per trial, the same columns everywhere.

`trial_columns` is the one definition of the columns; the DataFrame
(`trials_dataframe`, ``to_dataframe()``), ``asyncopt trials``, its CSV and
``asyncopt export`` all read it:

- ``tid``, ``state``, ``loss``, ``started_at``, ``finished_at`` (UTC), ``duration``
  (seconds), ``worker``, ``retry_of``;
- ``params_<label>`` for each parameter: the value the objective saw (a choice's chosen
  option, evaluated), empty where the parameter was not active;
- ``params_<label>_index`` for each choice: the raw option index stored;
- ``result_<key>`` for each extra the objective returned beside the loss;
- ``error``: the first line of a failed trial's error (the full text is ``Trial.error``).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from asyncopt._log import first_line
from asyncopt.errors import MissingDependencyError
from asyncopt.space.compile import CompiledSpace
from asyncopt.space.expressions import Apply, Choice, DictNode, ListNode, TupleNode
from asyncopt.trial import Trial

__all__ = [
    "Columns",
    "MissingDependencyError",
    "choice_evaluators",
    "choice_nodes",
    "columns_dataframe",
    "trial_columns",
    "trials_dataframe",
    "utc",
]

#: Column name → one value per trial (None where there is none).
Columns = dict[str, list[Any]]

# Keys of a result mapping that are not extras: they have columns of their own.
_RESULT_KEYS = frozenset({"loss", "status", "error"})


def utc(timestamp: float | None) -> datetime.datetime | None:
    """A Unix timestamp as an aware UTC datetime (None stays None)."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)


def choice_nodes(space: CompiledSpace) -> dict[str, Choice]:
    """Each choice of ``space`` by label (its options are the expressions it chooses from)."""
    found: dict[str, Choice] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Choice):
            found.setdefault(node.label, node)
            for option in node.options:
                walk(option)
        elif isinstance(node, Apply):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, DictNode):
            for key, value in node.items:
                walk(key)
                walk(value)
        elif isinstance(node, (ListNode, TupleNode)):
            for item in node.items:
                walk(item)

    walk(space.root)
    return found


def choice_evaluators(space: CompiledSpace) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    """For each choice label of ``space``, a function of an assignment giving the chosen option."""
    from asyncopt.space.evaluate import build_evaluator  # evaluate imports compile

    return {label: build_evaluator(node) for label, node in choice_nodes(space).items()}


def _labels(space: CompiledSpace | None, trials: Sequence[Trial]) -> list[str]:
    """Parameter labels: the space's order, then any other stored label, sorted."""
    seen = {label for trial in trials for label in trial.assignment}
    ordered = [] if space is None else list(space.labels)
    return ordered + sorted(seen.difference(ordered))


def _extras(trials: Iterable[Trial]) -> list[str]:
    """Result keys beside the loss, in the order they first appear."""
    keys: dict[str, None] = {}
    for trial in trials:
        for key in trial.result or ():
            if key not in _RESULT_KEYS:
                keys.setdefault(str(key), None)
    return list(keys)


def trial_columns(trials: Sequence[Trial], space: CompiledSpace | None = None) -> Columns:
    """The table of ``trials`` (ordered by tid), column by column.

    Without ``space`` (a stored space that cannot be rebuilt) the parameter columns hold
    the raw stored values and there are no ``_index`` columns.
    """
    ordered = sorted(trials, key=lambda t: t.tid)
    choices = {} if space is None else choice_evaluators(space)
    columns: Columns = {
        "tid": [t.tid for t in ordered],
        "state": [t.state.name for t in ordered],
        "loss": [t.loss for t in ordered],
        "last_step": [t.last_step for t in ordered],
        "last_value": [t.last_value for t in ordered],
        "started_at": [utc(t.started_at) for t in ordered],
        "finished_at": [utc(t.finished_at) for t in ordered],
        "duration": [t.duration for t in ordered],
        "worker": [t.worker for t in ordered],
        "retry_of": [t.retry_of for t in ordered],
    }
    labels = _labels(space, ordered)
    for label in labels:
        evaluate = choices.get(label)
        if evaluate is None:
            columns[f"params_{label}"] = [t.assignment.get(label) for t in ordered]
        else:
            columns[f"params_{label}"] = [
                evaluate(t.assignment) if label in t.assignment else None for t in ordered
            ]
    for label in labels:
        if label in choices:
            columns[f"params_{label}_index"] = [t.assignment.get(label) for t in ordered]
    for key in _extras(ordered):
        columns[f"result_{key}"] = [
            None if t.result is None else t.result.get(key) for t in ordered
        ]
    columns["error"] = [first_line(t.error) or None for t in ordered]
    return columns


def trials_dataframe(trials: Sequence[Trial], space: CompiledSpace | None = None) -> Any:
    """The trials as a ``pandas.DataFrame``, one row per trial (see the module's columns).

    dtypes: ``tid`` int64; ``loss``, ``duration`` and real parameters float64 (NaN where
    missing); ``started_at``/``finished_at`` datetime64 in UTC; integer parameters,
    choice indices and ``retry_of`` pandas' nullable Int64; extras as pandas infers
    them (numbers float64); the rest object. Raises
    `MissingDependencyError` when pandas is not installed.
    """
    return columns_dataframe(trial_columns(trials, space), space)


def columns_dataframe(columns: Columns, space: CompiledSpace | None = None) -> Any:
    """`trial_columns`' table as a DataFrame with the dtypes of `trials_dataframe`."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingDependencyError(
            f"the DataFrame of trials needs pandas, which is not installed ({exc}); "
            "install it with `pip install asyncopt[pandas]`"
        ) from None
    integer = {"retry_of", "last_step"}
    real = {"loss", "duration", "last_value"}
    for name in columns:
        if name.endswith("_index") and name.startswith("params_"):
            integer.add(name)
    if space is not None:
        for spec in space.params:
            name = f"params_{spec.label}"
            if spec.dist.name in ("choice", "pchoice"):
                continue
            (integer if spec.dist.is_integer else real).add(name)
    data: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "tid":
            data[name] = pd.Series(values, dtype="int64")
        elif name in ("started_at", "finished_at"):
            data[name] = pd.to_datetime(pd.Series(values, dtype="object"), utc=True)
        elif name in integer:
            data[name] = pd.Series(values, dtype="Int64")
        elif name in real:
            data[name] = pd.Series([math.nan if v is None else v for v in values], dtype="float64")
        elif name.startswith("result_"):
            data[name] = pd.Series(values)  # extras: numbers become float64, the rest object
        else:
            data[name] = pd.Series(values, dtype="object")
    return pd.DataFrame(data, columns=list(columns))
