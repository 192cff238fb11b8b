"""Hyperopt's `Trials` and status constants, over an asyncopt storage.

A `Trials` is a view of one study in a storage (``memory://`` by default, any storage
URL or `Storage` instance): its trials as Hyperopt's documents (``tid``, ``result``,
``misc`` with ``vals``/``idxs``, ``state``, ``book_time``, ``refresh_time``...). `fmin`
fills it; giving the same `Trials` to another `fmin` call resumes the study.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from asyncopt.errors import AllTrialsFailed, SpaceError
from asyncopt.hyperopt._blocking import run_blocking
from asyncopt.outcome import _numpy_default
from asyncopt.space.compile import CompiledSpace, compile_space
from asyncopt.space.description import rebuild
from asyncopt.storage import MemoryStorage, Storage, Trial, TrialState, open_storage

__all__ = [
    "JOB_STATES",
    "JOB_STATE_CANCEL",
    "JOB_STATE_DONE",
    "JOB_STATE_ERROR",
    "JOB_STATE_NEW",
    "JOB_STATE_RUNNING",
    "JOB_VALID_STATES",
    "STATUS_FAIL",
    "STATUS_NEW",
    "STATUS_OK",
    "STATUS_RUNNING",
    "STATUS_STRINGS",
    "STATUS_SUSPENDED",
    "Trials",
]

STATUS_NEW = "new"
STATUS_RUNNING = "running"
STATUS_SUSPENDED = "suspended"
STATUS_OK = "ok"
STATUS_FAIL = "fail"
STATUS_STRINGS = (STATUS_NEW, STATUS_RUNNING, STATUS_SUSPENDED, STATUS_OK, STATUS_FAIL)

JOB_STATE_NEW = 0
JOB_STATE_RUNNING = 1
JOB_STATE_DONE = 2
JOB_STATE_ERROR = 3
JOB_STATE_CANCEL = 4
JOB_STATES = [JOB_STATE_NEW, JOB_STATE_RUNNING, JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_CANCEL]
#: The states of the trials `Trials.trials` shows (as Hyperopt, errors and cancels are hidden).
JOB_VALID_STATES = {JOB_STATE_NEW, JOB_STATE_RUNNING, JOB_STATE_DONE}

# A FAIL trial is DONE when the objective reported the failure (status "fail"), an ERROR
# when it raised or returned something unusable; any other state is a cancel.
_JOB_STATE = {
    TrialState.QUEUED: JOB_STATE_NEW,
    TrialState.RUNNING: JOB_STATE_RUNNING,
    TrialState.OK: JOB_STATE_DONE,
}
_STATUS = {JOB_STATE_NEW: STATUS_NEW, JOB_STATE_RUNNING: STATUS_RUNNING}

#: Result key holding the token of what a result could not store (kept in this process).
KEPT_KEY = "asyncopt_kept"


def _utc(timestamp: float | None) -> datetime.datetime | None:
    # Hyperopt's times are naive UTC datetimes.
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.replace(tzinfo=None)


def _storable(value: Any) -> bool:
    try:
        json.dumps(value, default=_numpy_default, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


class Trials:
    """Hyperopt's ``Trials``: the trials of one study, as Hyperopt's documents.

    ``exp_key`` names the study (``"default"`` when None). ``storage`` (an asyncopt
    extra) is where the study lives: ``memory://`` (the default: this process, this
    object), a `MemoryStorage` to share, or any storage URL, so several processes can
    share the study. TypeError for another `Storage` instance (each call opens the URL
    in its own event loop).
    ``refresh`` reads the stored trials now. Pass the object to `fmin` to fill it;
    pass it again to resume. Values a result holds that the storage cannot (objects that
    are not JSON) and ``attachments`` are kept in this object, in this process.
    """

    asynchronous = False

    def __init__(
        self,
        exp_key: str | None = None,
        refresh: bool = True,
        *,
        storage: str | Storage = "memory://",
    ) -> None:
        if exp_key is not None and (not isinstance(exp_key, str) or not exp_key):
            raise ValueError(f"exp_key must be a non-empty string or None, got {exp_key!r}")
        fresh = isinstance(storage, str) and storage.split(":", 1)[0] == "memory"
        if not isinstance(storage, (str, MemoryStorage)):
            # Each blocking call runs its own event loop; a connection opened in one
            # cannot serve the next, so the storage is reopened from its URL every time.
            raise TypeError(
                "Trials takes a storage URL (or a memory:// Storage), not "
                f"{type(storage).__name__}: Trials(storage='sqlite:///tuning.db')"
            )
        self._storage: str | Storage = MemoryStorage() if fresh else storage
        self._exp_key = exp_key
        self.attachments: dict[str, Any] = {}
        self._records: tuple[Trial, ...] = ()
        self._space: CompiledSpace | None = None
        # Points from `generate_trials_to_calculate`, queued by the next `fmin`.
        self._points: list[dict[str, Any]] = []
        # Token -> (result values, attachments) the storage could not hold, until the
        # trial's record arrives; then by tid.
        self._kept: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._extras: dict[int, dict[str, Any]] = {}
        self._documents: dict[int, tuple[Trial, dict[str, Any]]] = {}
        if refresh and not fresh:
            self.refresh()

    # -- asyncopt's side ---------------------------------------------------------------------

    @property
    def storage(self) -> str | Storage:
        """Where the study lives (a URL or a `Storage`)."""
        return self._storage

    @property
    def study(self) -> str:
        """The study's name: ``exp_key``, or ``"default"``."""
        return self._exp_key or "default"

    @property
    def space(self) -> CompiledSpace | None:
        """The study's compiled space, once known (after `fmin` or a read)."""
        return self._space

    @property
    def records(self) -> tuple[Trial, ...]:
        """The study's trials as asyncopt `Trial` records, ordered by tid."""
        return self._records

    def __repr__(self) -> str:
        return f"Trials({len(self._records)} trials, study={self.study!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_documents"] = {}
        return state

    def refresh(self) -> None:
        """Read the study's trials from the storage (blocking; in async code, `read`)."""
        run_blocking(self.read)

    async def read(self) -> None:
        """Read the study's trials from the storage (the asynchronous `refresh`)."""
        async with open_storage(self._storage) as store:
            names = {record.name: record for record in await store.list_studies()}
            record = names.get(self.study)
            if record is None:
                self.update((), None)
                return
            space = self._space
            if space is None:
                # A space holding constants JSON cannot describe is not rebuilt: the
                # documents then list the labels each trial has.
                with contextlib.suppress(SpaceError):
                    space = compile_space(rebuild(dict(record.space)))
            self.update(await store.trials_since(self.study, 0), space)

    def update(self, records: Sequence[Trial], space: CompiledSpace | None = None) -> None:
        """Show ``records`` (the study's trials), with the labels of ``space`` if given."""
        if space is not None and space is not self._space:
            self._space = space
            self._documents = {}  # their misc lists the labels of the space
        self._records = tuple(sorted(records, key=lambda trial: trial.tid))
        if self._kept:
            for trial in self._records:
                token = None if trial.result is None else trial.result.get(KEPT_KEY)
                kept = self._kept.pop(token, None) if isinstance(token, str) else None
                if kept is not None:
                    extras, attachments = kept
                    self._extras[trial.tid] = extras
                    for name, value in attachments.items():
                        self.attachments[self.aname({"tid": trial.tid}, name)] = value

    def relocate(self, storage: str | Storage) -> None:
        """Keep this study in ``storage`` from now on (resuming what it holds there).

        Only a `Trials` that holds no trial yet, in memory, can move: ValueError otherwise.
        """
        if self._records or not isinstance(self._storage, MemoryStorage):
            raise ValueError(
                "this Trials already holds trials or lives in another storage; to keep a "
                "study in a file, pass only trials_save_file, or Trials(storage=...)"
            )
        self._storage = storage
        self.refresh()

    def keep(self, value: Any) -> Any:
        """``value`` (an objective's result) with what the storage cannot hold taken out.

        ``attachments`` and values that are not JSON stay in this object and come back in
        the trial's document.
        """
        if not isinstance(value, Mapping):
            return value
        result = dict(value)
        attachments = result.pop("attachments", None) or {}
        extras = {
            key: result.pop(key)
            for key in list(result)
            if key not in ("loss", "status") and not _storable(result[key])
        }
        if attachments or extras:
            token = uuid.uuid4().hex
            self._kept[token] = (extras, dict(attachments))
            result[KEPT_KEY] = token
        return result

    def queue(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Hold ``points`` (label -> raw value) for the next `fmin` to evaluate first."""
        self._points.extend(dict(point) for point in points)

    def take_points(self) -> list[dict[str, Any]]:
        """The held points, handed over once."""
        points, self._points = self._points, []
        return points

    # -- Hyperopt's documents ----------------------------------------------------------------

    def _document(self, trial: Trial) -> dict[str, Any]:
        cached = self._documents.get(trial.tid)
        if cached is not None and cached[0] is trial:
            return cached[1]
        document = self._build(trial)
        self._documents[trial.tid] = (trial, document)
        return document

    def _build(self, trial: Trial) -> dict[str, Any]:
        result = dict(trial.result or {})
        result.pop(KEPT_KEY, None)
        result.update(self._extras.get(trial.tid, {}))
        state = _JOB_STATE.get(trial.state, JOB_STATE_CANCEL)
        misc = self._misc(trial.tid, trial.assignment)
        if trial.state is TrialState.FAIL:
            if result.get("status") == STATUS_FAIL:
                state = JOB_STATE_DONE
            else:
                state = JOB_STATE_ERROR
                kind, _, message = (trial.error or "").partition("\n")[0].partition(": ")
                misc["error"] = (kind, message)
        if state in _STATUS or state in (JOB_STATE_ERROR, JOB_STATE_CANCEL):
            result = {"status": _STATUS.get(state, STATUS_FAIL)}
        return {
            "state": state,
            "tid": trial.tid,
            "spec": None,
            "result": result,
            "misc": misc,
            "exp_key": self._exp_key,
            "owner": trial.worker,
            "version": 0,
            "book_time": _utc(trial.started_at or trial.created_at),
            "refresh_time": _utc(trial.finished_at or trial.started_at or trial.created_at),
        }

    def _misc(self, tid: int, assignment: Mapping[str, Any]) -> dict[str, Any]:
        labels = tuple(assignment) if self._space is None else self._space.labels
        return {
            "tid": tid,
            "cmd": ("domain_attachment", "FMinIter_Domain"),
            "workdir": None,
            "idxs": {label: [tid] if label in assignment else [] for label in labels},
            "vals": {label: [assignment[label]] if label in assignment else [] for label in labels},
        }

    def _all_documents(self) -> list[dict[str, Any]]:
        documents = [self._document(trial) for trial in self._records]
        # Points not yet stored show as NEW trials after the stored ones, as in Hyperopt.
        first = len(self._records)
        for offset, point in enumerate(self._points):
            document = self._build(
                Trial(self.study, first + offset, TrialState.QUEUED, assignment=point)
            )
            documents.append(document)
        return documents

    @property
    def trials(self) -> list[dict[str, Any]]:
        """The documents of the NEW, RUNNING and DONE trials, ordered by tid."""
        return [doc for doc in self._all_documents() if doc["state"] in JOB_VALID_STATES]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, item: Any) -> Any:
        # As Hyperopt: by position or by tid would be ambiguous.
        raise NotImplementedError("index trials.trials (the list of documents) instead")

    @property
    def tids(self) -> list[int]:
        """The trials' ids."""
        return [doc["tid"] for doc in self.trials]

    @property
    def specs(self) -> list[Any]:
        """Hyperopt's ``spec`` of each trial (always None here)."""
        return [doc["spec"] for doc in self.trials]

    @property
    def results(self) -> list[dict[str, Any]]:
        """The ``result`` of each trial (status, loss and what the objective returned)."""
        return [doc["result"] for doc in self.trials]

    @property
    def miscs(self) -> list[dict[str, Any]]:
        """The ``misc`` of each trial (``vals``, ``idxs``, ``tid``...)."""
        return [doc["misc"] for doc in self.trials]

    @property
    def idxs_vals(self) -> tuple[dict[str, list[int]], dict[str, list[Any]]]:
        """Per label, the tids where it was active, and its values there."""
        idxs: dict[str, list[int]] = {}
        vals: dict[str, list[Any]] = {}
        for misc in self.miscs:
            for label, tids in misc["idxs"].items():
                idxs.setdefault(label, []).extend(tids)
                vals.setdefault(label, []).extend(misc["vals"][label])
        return idxs, vals

    @property
    def idxs(self) -> dict[str, list[int]]:
        """Per label, the tids of the trials where it was active."""
        return self.idxs_vals[0]

    @property
    def vals(self) -> dict[str, list[Any]]:
        """Per label, its values in the trials where it was active."""
        return self.idxs_vals[1]

    def losses(self, bandit: Any = None) -> list[float | None]:
        """Each trial's loss (None when it has none)."""
        _no_bandit(bandit)
        return [result.get("loss") for result in self.results]

    def statuses(self, bandit: Any = None) -> list[str | None]:
        """Each trial's status."""
        _no_bandit(bandit)
        return [result.get("status") for result in self.results]

    def count_by_state_synced(self, arg: int | Sequence[int], trials: Any = None) -> int:
        """How many of ``trials`` (the shown ones by default) are in the state(s) ``arg``."""
        documents = self.trials if trials is None else trials
        states = _states(arg)
        return sum(1 for doc in documents if doc["state"] in states)

    def count_by_state_unsynced(self, arg: int | Sequence[int]) -> int:
        """How many trials, errors and cancels included, are in the state(s) ``arg``."""
        return self.count_by_state_synced(arg, trials=self._all_documents())

    @property
    def best_trial(self) -> dict[str, Any]:
        """The document of the OK trial with the lowest loss; `AllTrialsFailed` if none."""
        candidates = [
            doc
            for doc in self.trials
            if doc["result"].get("status") == STATUS_OK
            and not math.isnan(float(doc["result"]["loss"]))
        ]
        if not candidates:
            raise AllTrialsFailed(f"none of the {len(self.trials)} trials succeeded")
        return min(candidates, key=lambda doc: (float(doc["result"]["loss"]), doc["tid"]))

    @property
    def argmin(self) -> dict[str, Any]:
        """The best trial's raw values (label -> value, a choice's option index)."""
        vals = self.best_trial["misc"]["vals"]
        return {label: values[0] for label, values in vals.items() if values}

    def average_best_error(self, bandit: Any = None) -> float:
        """The true loss of the best trial, as Hyperopt computes it.

        With a ``loss_variance`` in the results, the average of ``true_loss`` (default:
        the loss) over the trials within three standard deviations of the best, weighted
        by the probability that each is the best. ValueError when no trial is OK.
        """
        _no_bandit(bandit)
        rows = sorted(
            (
                float(result["loss"]),
                float(result.get("loss_variance", 0.0)),
                float(result.get("true_loss", result["loss"])),
            )
            for result in self.results
            if result.get("status") == STATUS_OK
        )
        if not rows:
            raise ValueError("Empty loss vector")
        table = np.asarray(rows)
        if np.all(table[:, 1] == 0):
            return float(table[np.argmin(table[:, 0]), 2])
        cutoff = table[0, 0] + 3 * math.sqrt(table[0, 1])
        near = table[table[:, 0] < cutoff] if table[0, 1] > 0 else table[:1]
        # P(each is the lowest), by sampling the losses: a fixed generator keeps it a
        # function of the trials.
        rng = np.random.default_rng(0)
        draws = rng.normal(near[:, 0], np.sqrt(near[:, 1]), size=(1000, len(near)))
        best = np.bincount(np.argmin(draws, axis=1), minlength=len(near)) / 1000
        return float(np.sum(best * near[:, 2]))

    def delete_all(self) -> None:
        """Delete the study and its trials from the storage (blocking), and the attachments."""

        async def delete() -> None:
            async with open_storage(self._storage) as store:
                if any(record.name == self.study for record in await store.list_studies()):
                    await store.delete_study(self.study)

        run_blocking(delete)
        self.attachments = {}
        self._records = ()
        self._points = []
        self._extras = {}
        self._documents = {}

    def aname(self, trial: Mapping[str, Any], name: str) -> str:
        """The key of attachment ``name`` of ``trial`` in `attachments`."""
        return f"ATTACH::{trial['tid']}::{name}"

    def trial_attachments(self, trial: Mapping[str, Any]) -> _Attachments:
        """The attachments of ``trial`` (a document), as a mutable mapping by name."""
        return _Attachments(self, trial)

    def fmin(self, fn: Any, space: Any, **options: Any) -> Any:
        """`fmin` with this object as ``trials``."""
        from asyncopt.hyperopt.fmin import fmin

        return fmin(fn, space, trials=self, **options)


class _Attachments:
    def __init__(self, trials: Trials, trial: Mapping[str, Any]) -> None:
        self._trials = trials
        self._trial = trial

    def _key(self, name: str) -> str:
        return self._trials.aname(self._trial, name)

    def __contains__(self, name: str) -> bool:
        return self._key(name) in self._trials.attachments

    def __getitem__(self, name: str) -> Any:
        return self._trials.attachments[self._key(name)]

    def __setitem__(self, name: str, value: Any) -> None:
        self._trials.attachments[self._key(name)] = value

    def __delitem__(self, name: str) -> None:
        del self._trials.attachments[self._key(name)]


def _no_bandit(bandit: Any) -> None:
    if bandit is not None:
        raise TypeError("bandits are not supported: call without one")


def _states(arg: int | Sequence[int]) -> set[int]:
    states = {arg} if isinstance(arg, int) else set(arg)
    unknown = states - set(JOB_STATES)
    if unknown:
        raise TypeError(f"not job states: {sorted(unknown)}; use the JOB_STATE_* constants")
    return states
