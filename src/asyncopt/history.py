"""The columnar, immutable view of a study's trials that suggest functions read.

`History` holds one row per trial (finished or pending) with numpy columns: the raw value
of every label (NaN where the label is inactive), its active mask, the loss (NaN unless
OK), the state, and where a PRUNED trial stopped (its last step and value). The
orchestrator keeps a `HistoryBuilder` up to date by applying each changed trial once; a
snapshot is O(1) unless a row changed since the previous one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence

import attrs
import numpy as np

from asyncopt.space.compile import CompiledSpace
from asyncopt.trial import Trial, TrialState

__all__ = ["History", "HistoryBuilder"]


def _references(array: np.ndarray) -> int:
    """How many references ``array`` has (as seen from a call like this one).

    Every view keeps a reference to the array it was made from, so a count above the one
    the array had before any view was made tells that a snapshot may still show it.
    """
    return sys.getrefcount(array)


def _readonly(array: np.ndarray) -> np.ndarray:
    view: np.ndarray = array.view()
    view.flags.writeable = False
    return view


class _LazyColumns(Mapping[str, np.ndarray]):
    """Label → a read-only column, made on first access by `_make`.

    Suggest functions often read a few labels (random search reads none), so columns are
    not made for every label of every snapshot.
    """

    __slots__ = ("_columns", "_views")

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        self._columns = columns
        self._views: dict[str, np.ndarray] = {}

    def _make(self, label: str) -> np.ndarray:
        raise NotImplementedError

    def stored_rows(self) -> tuple[object | None, int]:
        """See `History.stored_rows`."""
        raise NotImplementedError

    def __getitem__(self, label: str) -> np.ndarray:
        view = self._views.get(label)
        if view is None:
            view = self._views[label] = _readonly(self._make(label))
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __contains__(self, label: object) -> bool:
        return label in self._columns


class _Columns(_LazyColumns):
    """The first ``n`` rows of each column. Rows below ``n`` of a value column are never
    written again, so the views stay valid."""

    __slots__ = ("_n",)

    def __init__(self, columns: Mapping[str, np.ndarray], n: int) -> None:
        super().__init__(columns)
        self._n = n

    def _make(self, label: str) -> np.ndarray:
        return self._columns[label][: self._n]

    def stored_rows(self) -> tuple[object | None, int]:
        return self._columns, self._n


class _WithRows(_LazyColumns):
    """Each column with a value (NaN where missing) from each of ``extra`` appended."""

    __slots__ = ("_extra",)

    def __init__(self, columns: Mapping[str, np.ndarray], extra: Sequence[Mapping[str, float]]):
        super().__init__(columns)
        self._extra = extra

    def _make(self, label: str) -> np.ndarray:
        tail = np.array([row.get(label, np.nan) for row in self._extra], dtype=float)
        return np.concatenate([self._columns[label], tail])

    def stored_rows(self) -> tuple[object | None, int]:
        # The appended rows are not stored anywhere: only the base's count.
        base = self._columns
        return base.stored_rows() if isinstance(base, _LazyColumns) else (None, 0)


@attrs.frozen(eq=False)
class History:
    """Trials as columns. Rows are in the order trials were first seen (tid order when
    read from storage). CANCELLED trials are kept with their state; suggest functions
    use `ok`, `failed`, `pruned` and `pending` to pick rows.

    ``last_steps`` and ``last_values`` hold, for PRUNED trials, the last step reported
    and the value reported there (NaN for other trials and for PRUNED trials without a
    report); `pruned_order` ranks PRUNED trials by them.
    """

    tids: np.ndarray
    states: np.ndarray
    losses: np.ndarray
    values: Mapping[str, np.ndarray]
    last_steps: np.ndarray
    last_values: np.ndarray

    def __len__(self) -> int:
        return len(self.tids)

    def stored_rows(self) -> tuple[object | None, int]:
        """The object holding the value columns, and how many first rows of them are final.

        Those rows are never written again while the holder lives: histories that name
        the same holder agree on them, so work done on them for one suggestion serves
        the next (TPE's `TPEState`). ``(None, 0)`` when unknown.
        """
        values = self.values
        return values.stored_rows() if isinstance(values, _LazyColumns) else (None, 0)

    def active(self, label: str) -> np.ndarray:
        """Rows where ``label`` is active."""
        mask: np.ndarray = ~np.isnan(self.values[label])
        return mask

    @property
    def ok(self) -> np.ndarray:
        """Rows of OK trials (they have a finite loss)."""
        mask: np.ndarray = self.states == TrialState.OK
        return mask

    @property
    def failed(self) -> np.ndarray:
        """Rows of FAIL trials."""
        mask: np.ndarray = self.states == TrialState.FAIL
        return mask

    @property
    def pruned(self) -> np.ndarray:
        """Rows of PRUNED trials."""
        mask: np.ndarray = self.states == TrialState.PRUNED
        return mask

    def pruned_order(self) -> np.ndarray:
        """Rows of PRUNED trials, best first: the later the step it stopped at the better,
        then the lower its value there (NaN after any number); trials without a report
        come last; ties by row.

        Optuna ranks pruned trials this way when TPE counts them as observations.
        """
        rows = np.flatnonzero(self.pruned)
        # lexsort sorts by its last key first; NaN (no report) sorts after every number.
        order = np.lexsort((rows, self.last_values[rows], -self.last_steps[rows]))
        ranked: np.ndarray = rows[order]
        return ranked

    @property
    def pending(self) -> np.ndarray:
        """Rows of QUEUED or RUNNING trials: proposed, no loss yet."""
        mask: np.ndarray = (self.states == TrialState.QUEUED) | (self.states == TrialState.RUNNING)
        return mask

    @property
    def n_ok(self) -> int:
        """Number of OK trials."""
        return int(np.count_nonzero(self.ok))

    def with_pending(
        self, tids: Sequence[int], assignments: Sequence[Mapping[str, float]]
    ) -> History:
        """This history and a RUNNING row for each of ``assignments`` (with ``tids``).

        For proposals made but not yet stored, so that the next suggestion sees them
        as pending.
        """
        if not assignments:
            return self
        n = len(assignments)
        return History(
            tids=_readonly(np.concatenate([self.tids, np.asarray(tids, dtype=np.int64)])),
            states=_readonly(
                np.concatenate(
                    [self.states, np.full(n, TrialState.RUNNING, dtype=self.states.dtype)]
                )
            ),
            losses=_readonly(np.concatenate([self.losses, np.full(n, np.nan)])),
            values=_WithRows(self.values, assignments),
            last_steps=_readonly(np.concatenate([self.last_steps, np.full(n, np.nan)])),
            last_values=_readonly(np.concatenate([self.last_values, np.full(n, np.nan)])),
        )

    @classmethod
    def empty(cls, space: CompiledSpace) -> History:
        """A history without trials."""
        return HistoryBuilder(space).snapshot()

    @classmethod
    def from_trials(cls, space: CompiledSpace, trials: Iterable[Trial]) -> History:
        """A history of ``trials`` (convenient for tests and custom loops)."""
        builder = HistoryBuilder(space)
        builder.update(trials)
        return builder.snapshot()


class HistoryBuilder:
    """Mutable owner of the column buffers; hands out immutable `History` snapshots.

    New rows are appended past the end of every snapshot, so they never show through an
    old one; a change to an existing row copies the small outcome columns (state, loss,
    last step and value) first if a snapshot still refers to them.
    """

    def __init__(self, space: CompiledSpace, capacity: int = 64) -> None:
        self._space = space
        self._size = 0
        self._rows: dict[int, int] = {}
        self._tids = np.empty(capacity, dtype=np.int64)
        self._states = np.empty(capacity, dtype=np.int8)
        self._losses = np.empty(capacity, dtype=np.float64)
        self._last_steps = np.empty(capacity, dtype=np.float64)
        self._last_values = np.empty(capacity, dtype=np.float64)
        self._values = {label: np.empty(capacity, dtype=np.float64) for label in space.labels}
        self._snapshot: History | None = None
        # The count of an array no view refers to (interpreters differ in what they count).
        self._unviewed = _references(self._states)

    def __len__(self) -> int:
        return self._size

    def update(self, trials: Iterable[Trial]) -> None:
        """Apply trials (new or changed); applying the same record twice is harmless."""
        for trial in trials:
            row = self._rows.get(trial.tid)
            if row is None:
                self._append(trial)
            else:
                self._change(row, trial)

    def _append(self, trial: Trial) -> None:
        if self._size == len(self._tids):
            self._grow()
        row = self._size
        self._rows[trial.tid] = row
        self._tids[row] = trial.tid
        self._write_outcome(row, trial)
        assignment = trial.assignment
        for label, column in self._values.items():
            value = assignment.get(label)
            column[row] = np.nan if value is None else value
        self._size += 1
        self._snapshot = None

    def _change(self, row: int, trial: Trial) -> None:
        self._snapshot = None
        # Copy-on-write, only while a snapshot's view of the columns is still alive.
        if (
            _references(self._states) > self._unviewed
            or _references(self._losses) > self._unviewed
            or _references(self._last_steps) > self._unviewed
            or _references(self._last_values) > self._unviewed
        ):
            self._states = self._states.copy()
            self._losses = self._losses.copy()
            self._last_steps = self._last_steps.copy()
            self._last_values = self._last_values.copy()
        self._write_outcome(row, trial)

    def _write_outcome(self, row: int, trial: Trial) -> None:
        self._states[row] = trial.state
        ok = trial.state is TrialState.OK and trial.loss is not None
        self._losses[row] = trial.loss if ok else np.nan
        step = trial.last_step if trial.state is TrialState.PRUNED else None
        self._last_steps[row] = np.nan if step is None else step
        self._last_values[row] = np.nan if step is None else trial.intermediate[step]

    def _grow(self) -> None:
        capacity = 2 * len(self._tids)

        def grown(array: np.ndarray) -> np.ndarray:
            bigger = np.empty(capacity, dtype=array.dtype)
            bigger[: self._size] = array[: self._size]
            return bigger

        self._tids = grown(self._tids)
        self._states = grown(self._states)
        self._losses = grown(self._losses)
        self._last_steps = grown(self._last_steps)
        self._last_values = grown(self._last_values)
        self._values = {label: grown(column) for label, column in self._values.items()}

    def snapshot(self) -> History:
        """The current rows as an immutable `History`."""
        if self._snapshot is None:
            n = self._size
            self._snapshot = History(
                tids=_readonly(self._tids[:n]),
                states=_readonly(self._states[:n]),
                losses=_readonly(self._losses[:n]),
                values=_Columns(self._values, n),
                last_steps=_readonly(self._last_steps[:n]),
                last_values=_readonly(self._last_values[:n]),
            )
        return self._snapshot
