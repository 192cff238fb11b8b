"""`fmin`: Hyperopt's blocking entry point, for scripts and migrating users.

``asyncopt.fmin`` is `asyncopt.hyperopt.fmin` (one function, Hyperopt's signature and
behaviour, with ``trials=``, ``early_stop_fn`` receiving a `asyncopt.hyperopt.Trials`...).
"""

from __future__ import annotations

from asyncopt.hyperopt.fmin import fmin

__all__ = ["fmin"]
