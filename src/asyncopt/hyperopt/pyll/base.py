"""``from hyperopt.pyll.base import scope`` keeps working."""

from __future__ import annotations

from asyncopt.space.scope import scope as scope

__all__ = ["scope"]
