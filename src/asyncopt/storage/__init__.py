"""Storages: the protocol, the URL registry and the built-in backends."""

from asyncopt.storage.base import Storage as Storage
from asyncopt.storage.base import StudyRecord as StudyRecord
from asyncopt.storage.base import Trial as Trial
from asyncopt.storage.base import TrialState as TrialState
from asyncopt.storage.memory import MemoryStorage as MemoryStorage
from asyncopt.storage.urls import StorageURL as StorageURL
from asyncopt.storage.urls import open_storage as open_storage
from asyncopt.storage.urls import register_backend as register_backend

__all__ = [
    "MemoryStorage",
    "Storage",
    "StorageURL",
    "StudyRecord",
    "Trial",
    "TrialState",
    "open_storage",
    "register_backend",
]
