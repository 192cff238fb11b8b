"""Hyperopt 0.3.0's names and behaviour on asyncopt: change one import and a script runs.

``from hyperopt import fmin, tpe, hp, Trials, STATUS_OK`` becomes
``from asyncopt.hyperopt import fmin, tpe, hp, Trials, STATUS_OK``. See the migration
guide (docs/migrating.md) for what differs and why.
"""

from asyncopt.hyperopt import anneal as anneal
from asyncopt.hyperopt import atpe as atpe
from asyncopt.hyperopt import early_stop as early_stop
from asyncopt.hyperopt import exceptions as exceptions
from asyncopt.hyperopt import mix as mix
from asyncopt.hyperopt import pyll as pyll
from asyncopt.hyperopt import rand as rand
from asyncopt.hyperopt import tpe as tpe
from asyncopt.hyperopt.base import JOB_STATE_CANCEL as JOB_STATE_CANCEL
from asyncopt.hyperopt.base import JOB_STATE_DONE as JOB_STATE_DONE
from asyncopt.hyperopt.base import JOB_STATE_ERROR as JOB_STATE_ERROR
from asyncopt.hyperopt.base import JOB_STATE_NEW as JOB_STATE_NEW
from asyncopt.hyperopt.base import JOB_STATE_RUNNING as JOB_STATE_RUNNING
from asyncopt.hyperopt.base import JOB_STATES as JOB_STATES
from asyncopt.hyperopt.base import STATUS_FAIL as STATUS_FAIL
from asyncopt.hyperopt.base import STATUS_NEW as STATUS_NEW
from asyncopt.hyperopt.base import STATUS_OK as STATUS_OK
from asyncopt.hyperopt.base import STATUS_RUNNING as STATUS_RUNNING
from asyncopt.hyperopt.base import STATUS_STRINGS as STATUS_STRINGS
from asyncopt.hyperopt.base import STATUS_SUSPENDED as STATUS_SUSPENDED
from asyncopt.hyperopt.base import Trials as Trials
from asyncopt.hyperopt.fmin import fmin as fmin
from asyncopt.hyperopt.fmin import generate_trials_to_calculate as generate_trials_to_calculate
from asyncopt.hyperopt.fmin import partial as partial
from asyncopt.hyperopt.fmin import space_eval as space_eval
from asyncopt.space import hp as hp

__all__ = [
    "JOB_STATES",
    "JOB_STATE_CANCEL",
    "JOB_STATE_DONE",
    "JOB_STATE_ERROR",
    "JOB_STATE_NEW",
    "JOB_STATE_RUNNING",
    "STATUS_FAIL",
    "STATUS_NEW",
    "STATUS_OK",
    "STATUS_RUNNING",
    "STATUS_STRINGS",
    "STATUS_SUSPENDED",
    "Trials",
    "anneal",
    "atpe",
    "early_stop",
    "exceptions",
    "fmin",
    "generate_trials_to_calculate",
    "hp",
    "mix",
    "partial",
    "pyll",
    "rand",
    "space_eval",
    "tpe",
]
