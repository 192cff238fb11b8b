"""Hyperopt's ``rand.suggest``: random search (asyncopt's, which takes no options)."""

from __future__ import annotations

from asyncopt.algorithms.rand import suggest

__all__ = ["suggest"]
