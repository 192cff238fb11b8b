"""Hyperopt's import paths and names exist in `asyncopt.hyperopt`, documented."""

from __future__ import annotations

import importlib
import types

import pytest

import asyncopt as ao
import asyncopt.hyperopt as aohp

NAMES = {
    "fmin", "space_eval", "partial", "generate_trials_to_calculate", "Trials", "hp",
    "tpe", "rand", "anneal", "atpe", "mix", "early_stop", "exceptions", "pyll",
    "STATUS_OK", "STATUS_FAIL", "STATUS_NEW", "STATUS_RUNNING", "STATUS_SUSPENDED",
    "STATUS_STRINGS", "JOB_STATES", "JOB_STATE_NEW", "JOB_STATE_RUNNING", "JOB_STATE_DONE",
    "JOB_STATE_ERROR", "JOB_STATE_CANCEL",
}  # fmt: skip

#: (module, name) pairs Hyperopt scripts import, under asyncopt.hyperopt.
PATHS = [
    ("fmin", "generate_trials_to_calculate"),
    ("fmin", "space_eval"),
    ("fmin", "fmin"),
    ("base", "Trials"),
    ("base", "STATUS_OK"),
    ("base", "JOB_STATE_DONE"),
    ("early_stop", "no_progress_loss"),
    ("pyll", "scope"),
    ("pyll.base", "scope"),
    ("pyll.stochastic", "sample"),
    ("plotting", "main_plot_history"),
    ("plotting", "main_plot_histogram"),
    ("plotting", "main_plot_vars"),
    ("exceptions", "AllTrialsFailed"),
    ("exceptions", "DuplicateLabel"),
    ("exceptions", "InvalidAnnotatedParameter"),
    ("tpe", "suggest"),
    ("anneal", "suggest"),
    ("rand", "suggest"),
    ("atpe", "suggest"),
    ("mix", "suggest"),
]


def test_all_is_hyperopts_top_level() -> None:
    assert set(aohp.__all__) == NAMES
    for name in aohp.__all__:
        assert getattr(aohp, name) is not None


@pytest.mark.parametrize(("module", "name"), PATHS, ids=[f"{m}.{n}" for m, n in PATHS])
def test_hyperopt_import_paths(module: str, name: str) -> None:
    imported = importlib.import_module(f"asyncopt.hyperopt.{module}")
    value = getattr(imported, name)
    if callable(value) or isinstance(value, types.ModuleType):
        assert value.__doc__, f"{module}.{name} has no docstring"


def test_asyncopt_fmin_is_the_hyperopt_fmin() -> None:
    assert ao.fmin is aohp.fmin
    assert aohp.exceptions.DuplicateLabel is ao.SpaceError
    assert aohp.exceptions.AllTrialsFailed is ao.AllTrialsFailed
    assert aohp.hp is ao.hp
    assert aohp.pyll.scope is ao.scope
