"""Pruning rules: pure functions of the study's intermediate values (placeholder until the
pruners land: the protocol and the rule that never prunes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from asyncopt.trial import Trial

__all__ = ["NopPruner", "Pruner"]


class Pruner(Protocol):
    """Decides whether a running trial should stop, from the trials' intermediate values."""

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """True when ``trial`` (RUNNING, its latest report included) should stop now."""
        ...


@attrs.frozen
class NopPruner:
    """Never prunes."""

    def should_prune(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        return False
