"""The exceptions asyncopt raises.

Every error derives from `AsyncoptError`; foreign exceptions (``sqlite3``, ``pymongo``)
are translated at the storage boundary, so callers only ever catch these::

    AsyncoptError
    ├── SpaceError               a bad search space (names the label)
    ├── ObjectiveError           an objective returned something unusable
    ├── AllTrialsFailed          a study has no successful trial to report
    ├── TrialPruned              raised by an objective to end its trial PRUNED
    ├── TrialError               an ask/tell misuse (unknown tid, told twice, cancelled)
    ├── CommandError             a command-line misuse (asyncopt.cli)
    ├── MissingDependencyError   an optional package is not installed (asyncopt.plot)
    └── StorageError             anything a storage backend could not do
        ├── StorageURLError      an unknown scheme or malformed URL
        ├── StudyNameError       a study name that is not a non-empty string
        ├── StudyMismatchError   a study exists with another space
        ├── StudyNotFoundError   no study of that name
        ├── TrialNotFoundError   no trial with that tid
        ├── TrialStateError      the trial is not in a state that allows the change
        ├── LeaseLostError       the caller does not hold the trial's lease
        └── StorageUnavailableError  the server or file could not be reached
"""

from __future__ import annotations

__all__ = [
    "AllTrialsFailed",
    "AsyncoptError",
    "CommandError",
    "LeaseLostError",
    "MissingDependencyError",
    "ObjectiveError",
    "SpaceError",
    "StorageError",
    "StorageURLError",
    "StorageUnavailableError",
    "StudyMismatchError",
    "StudyNameError",
    "StudyNotFoundError",
    "TrialError",
    "TrialNotFoundError",
    "TrialPruned",
    "TrialStateError",
]


class AsyncoptError(Exception):
    """Base class of every error raised by asyncopt."""


class SpaceError(AsyncoptError, ValueError):
    """The search space is invalid; the message names the offending label."""

    def __init__(self, message: str, label: str | None = None) -> None:
        super().__init__(message)
        self.label = label


class ObjectiveError(AsyncoptError):
    """The objective returned a value asyncopt cannot record as a result."""


class AllTrialsFailed(AsyncoptError):
    """No trial of the study finished with status ``ok``."""


class TrialPruned(AsyncoptError):
    """Raised by an objective to end its trial as PRUNED, with its last reported value.

    Not a failure: `asyncopt.minimize` catches it whatever ``catch`` holds.
    """


class TrialError(AsyncoptError):
    """An ask/tell call that does not fit the trial's state."""


class CommandError(AsyncoptError):
    """A command could not run as asked (bad ``module:name``, unrebuildable space, ...)."""


class MissingDependencyError(AsyncoptError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class StorageError(AsyncoptError):
    """A storage backend could not carry out an operation."""


class StorageURLError(StorageError, ValueError):
    """A storage URL is malformed or names an unknown scheme."""


class StudyNameError(StorageError, ValueError):
    """A study name is not a non-empty string without NUL within the length limit."""


class StudyMismatchError(StorageError):
    """A study of that name exists with a different space fingerprint."""


class StudyNotFoundError(StorageError, LookupError):
    """No study of that name exists in the storage."""


class TrialNotFoundError(StorageError, TrialError, LookupError):
    """No trial with that tid exists in the study."""


class TrialStateError(StorageError, TrialError):
    """The trial's state does not allow the requested change (e.g. finishing twice)."""


class LeaseLostError(TrialStateError):
    """The caller does not hold the trial's lease (another worker reaped or owns it)."""


class StorageUnavailableError(StorageError):
    """The database file or server could not be reached or opened."""
