"""asyncopt: hyperparameter search built for ``await``."""

from asyncopt.algorithms import anneal as anneal
from asyncopt.algorithms import rand as rand
from asyncopt.algorithms import tpe as tpe
from asyncopt.compat import fmin as fmin
from asyncopt.errors import AllTrialsFailed as AllTrialsFailed
from asyncopt.errors import AsyncoptError as AsyncoptError
from asyncopt.errors import ObjectiveError as ObjectiveError
from asyncopt.errors import SpaceError as SpaceError
from asyncopt.errors import StorageError as StorageError
from asyncopt.errors import StorageURLError as StorageURLError
from asyncopt.errors import StudyMismatchError as StudyMismatchError
from asyncopt.errors import TrialError as TrialError
from asyncopt.errors import TrialPruned as TrialPruned
from asyncopt.history import History as History
from asyncopt.orchestrator import OptimizationResult as OptimizationResult
from asyncopt.orchestrator import minimize as minimize
from asyncopt.pruners import Hyperband as Hyperband
from asyncopt.pruners import MedianPruner as MedianPruner
from asyncopt.pruners import NopPruner as NopPruner
from asyncopt.pruners import PercentilePruner as PercentilePruner
from asyncopt.pruners import SuccessiveHalving as SuccessiveHalving
from asyncopt.space import hp as hp
from asyncopt.space.compile import CompiledSpace as CompiledSpace
from asyncopt.space.compile import compile_space as compile_space
from asyncopt.space.evaluate import sample as sample
from asyncopt.space.evaluate import space_eval as space_eval
from asyncopt.space.scope import scope as scope
from asyncopt.storage.base import Storage as Storage
from asyncopt.storage.urls import open_storage as open_storage
from asyncopt.study import RunningTrial as RunningTrial
from asyncopt.study import Study as Study
from asyncopt.study import SyncRunningTrial as SyncRunningTrial
from asyncopt.study import open_study as open_study
from asyncopt.trial import STATUS_FAIL as STATUS_FAIL
from asyncopt.trial import STATUS_OK as STATUS_OK
from asyncopt.trial import Trial as Trial
from asyncopt.trial import TrialState as TrialState

__version__ = "0.1.0"

__all__ = [
    "STATUS_FAIL",
    "STATUS_OK",
    "AllTrialsFailed",
    "AsyncoptError",
    "CompiledSpace",
    "History",
    "Hyperband",
    "MedianPruner",
    "NopPruner",
    "ObjectiveError",
    "OptimizationResult",
    "PercentilePruner",
    "RunningTrial",
    "SpaceError",
    "Storage",
    "StorageError",
    "StorageURLError",
    "Study",
    "StudyMismatchError",
    "SuccessiveHalving",
    "SyncRunningTrial",
    "Trial",
    "TrialError",
    "TrialPruned",
    "TrialState",
    "anneal",
    "compile_space",
    "fmin",
    "hp",
    "minimize",
    "open_storage",
    "open_study",
    "rand",
    "sample",
    "scope",
    "space_eval",
    "tpe",
]
