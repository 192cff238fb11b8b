"""Search spaces: expressions, `hp` constructors, `scope`, compilation and evaluation."""

from asyncopt.space import hp as hp
from asyncopt.space.compile import CompiledSpace as CompiledSpace
from asyncopt.space.compile import Condition as Condition
from asyncopt.space.compile import ParamSpec as ParamSpec
from asyncopt.space.compile import compile_space as compile_space
from asyncopt.space.description import describe as describe
from asyncopt.space.description import rebuild as rebuild
from asyncopt.space.distributions import Distribution as Distribution
from asyncopt.space.evaluate import Assignment as Assignment
from asyncopt.space.evaluate import sample as sample
from asyncopt.space.evaluate import sample_assignments as sample_assignments
from asyncopt.space.evaluate import space_eval as space_eval
from asyncopt.space.scope import scope as scope

__all__ = [
    "Assignment",
    "CompiledSpace",
    "Condition",
    "Distribution",
    "ParamSpec",
    "compile_space",
    "describe",
    "hp",
    "rebuild",
    "sample",
    "sample_assignments",
    "scope",
    "space_eval",
]
