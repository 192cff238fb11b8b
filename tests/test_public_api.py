"""The top-level namespace is exactly the public surface of DESIGN.md."""

from __future__ import annotations

import types

import asyncopt as ao

PUBLIC = {
    # spaces
    "hp",
    "scope",
    "sample",
    "space_eval",
    "compile_space",
    "CompiledSpace",
    "History",
    # algorithms
    "rand",
    "tpe",
    "anneal",
    # running a search
    "minimize",
    "fmin",
    "open_study",
    "Study",
    "OptimizationResult",
    # pruning (the pruners themselves also live in asyncopt.pruners)
    "RunningTrial",
    "SyncRunningTrial",
    "TrialPruned",
    "NopPruner",
    "MedianPruner",
    "PercentilePruner",
    "SuccessiveHalving",
    "Hyperband",
    # storage
    "open_storage",
    "Storage",
    "Trial",
    "TrialState",
    "STATUS_OK",
    "STATUS_FAIL",
    # errors
    "AsyncoptError",
    "SpaceError",
    "StorageError",
    "StorageURLError",
    "StudyMismatchError",
    "ObjectiveError",
    "TrialError",
    "AllTrialsFailed",
}


def test_all_is_the_public_surface() -> None:
    assert set(ao.__all__) == PUBLIC
    assert len(ao.__all__) == len(set(ao.__all__))


def test_every_public_name_exists_and_is_documented() -> None:
    for name in ao.__all__:
        obj = getattr(ao, name)
        if isinstance(obj, (str, int)):
            continue
        assert obj.__doc__, f"asyncopt.{name} has no docstring"


def test_no_other_public_attributes() -> None:
    extra = {
        name
        for name, value in vars(ao).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert extra <= PUBLIC | {"annotations"}


def test_algorithm_modules_have_suggest_and_configure() -> None:
    for module in (ao.rand, ao.tpe, ao.anneal):
        assert callable(module.suggest)
        assert callable(module.configure)


def test_status_constants() -> None:
    assert (ao.STATUS_OK, ao.STATUS_FAIL) == ("ok", "fail")
