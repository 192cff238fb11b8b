"""Hyperopt's ``pyll``: ``scope`` (asyncopt's space functions) and ``stochastic.sample``."""

from __future__ import annotations

from asyncopt.hyperopt.pyll import stochastic as stochastic
from asyncopt.space.scope import scope as scope

__all__ = ["scope", "stochastic"]
