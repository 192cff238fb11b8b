"""The ``asyncopt`` logger's record of each finished trial.

Like Optuna: a successful trial is logged at INFO with its tid, loss and parameters, a
failed one at WARNING with the first line of its error, a cancelled one at INFO. asyncopt
adds no handler, so without logging configured Python shows the WARNING records on
standard error and nothing else (see docs/logging.md).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asyncopt.trial import Trial, TrialState

__all__ = ["first_line", "log_finished", "logger"]

logger = logging.getLogger("asyncopt")

# Parameters longer than this are cut in the log line (a space can be large).
_MAX_PARAMS_CHARS = 300


def first_line(text: str | None) -> str:
    """The first non-blank line of ``text`` (an error with its traceback), or ``""``."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _params_text(trial: Trial) -> str:
    shown: Any = trial.params if trial.params is not None else dict(trial.assignment)
    text = json.dumps(shown, default=repr, sort_keys=False)
    if len(text) > _MAX_PARAMS_CHARS:
        text = text[: _MAX_PARAMS_CHARS - 3] + "..."
    return text


def log_finished(trial: Trial) -> None:
    """Log ``trial`` (just finished) on the ``asyncopt`` logger at the level its state calls for."""
    if trial.state is TrialState.OK:
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "trial %d of study %r finished with loss %r and parameters %s",
                trial.tid,
                trial.study,
                trial.loss,
                _params_text(trial),
            )
    elif trial.state is TrialState.FAIL:
        if logger.isEnabledFor(logging.WARNING):
            logger.warning(
                "trial %d of study %r failed: %s (parameters %s)",
                trial.tid,
                trial.study,
                first_line(trial.error) or "no error message",
                _params_text(trial),
            )
    elif trial.state is TrialState.PRUNED:
        logger.info(
            "trial %d of study %r was pruned at step %s with value %r",
            trial.tid,
            trial.study,
            trial.last_step,
            trial.last_value,
        )
    elif trial.state is TrialState.CANCELLED:
        logger.info(
            "trial %d of study %r was cancelled: %s",
            trial.tid,
            trial.study,
            first_line(trial.error) or "no reason given",
        )
