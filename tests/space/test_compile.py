"""Compilation: the flat table, activation conditions, order, fingerprint."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import asyncopt as ao
from asyncopt import SpaceError, hp, scope
from asyncopt.space import (
    CompiledSpace,
    Condition,
    Distribution,
    compile_space,
    rebuild,
    sample_assignments,
)
from asyncopt.space.evaluate import columns_to_assignments
from asyncopt.space.expressions import MAX_DEPTH


def clause(*pairs: tuple[str, int]) -> frozenset[tuple[str, int]]:
    return frozenset(pairs)


def cond(*clauses: frozenset[tuple[str, int]]) -> Condition:
    return Condition(frozenset(clauses))


def assert_parents_first(table: CompiledSpace) -> None:
    position = {label: i for i, label in enumerate(table.labels)}
    for spec in table:
        for parent in spec.condition.parents:
            assert position[parent] < position[spec.label], (parent, spec.label)


# -- the flat table --------------------------------------------------------------------------


def test_flat_table_of_a_plain_space() -> None:
    table = compile_space(
        {"lr": hp.loguniform("lr", -9, -1), "layers": [hp.uniformint("n", 1, 4), 3], "k": "c"}
    )
    assert sorted(table.labels) == ["lr", "n"]
    assert len(table) == 2
    assert table["lr"].dist == Distribution("loguniform", (-9, -1))
    assert table["n"].dist == Distribution("uniformint", (1, 4))
    assert all(spec.condition.is_always for spec in table)
    assert table["lr"].condition == Condition.always()
    assert "lr" in table
    assert "nope" not in table
    assert 3 not in table
    assert [spec.label for spec in table] == list(table.labels)


def test_unknown_label_lookup_is_a_space_error_naming_it() -> None:
    with pytest.raises(SpaceError, match="'nope'") as info:
        compile_space(hp.uniform("x", 0, 1))["nope"]
    assert info.value.label == "nope"


def test_constant_space_has_an_empty_table() -> None:
    table = compile_space({"a": [1, (2, "b")]})
    assert len(table) == 0
    assert ao.sample({"a": [1, (2, "b")]}, 0) == {"a": [1, (2, "b")]}


def test_compile_space_is_idempotent() -> None:
    table = compile_space({"x": hp.uniform("x", 0, 1)})
    assert compile_space(table) is table
    assert compile_space({"x": hp.uniform("x", 0, 1)}) == table
    assert hash(compile_space({"x": hp.uniform("x", 0, 1)})) == hash(table)


def test_parameters_inside_expressions_are_found() -> None:
    table = compile_space(scope.max(hp.uniform("a", 0, 1) * 2, -hp.normal("b", 0, 1)))
    assert sorted(table.labels) == ["a", "b"]


def test_dict_keys_may_hold_parameters() -> None:
    space = {hp.choice("key", ["left", "right"]): 1}
    assert compile_space(space).labels == ("key",)
    assert ao.space_eval(space, {"key": 1}) == {"right": 1}


# -- conditions ------------------------------------------------------------------------------

SPACE = {
    "lr": hp.loguniform("lr", -9, -1),
    "model": hp.choice(
        "model",
        [
            {"kind": "svm", "C": hp.lognormal("C", 0, 1)},
            {
                "kind": "tree",
                "depth": scope.int(hp.quniform("depth", 1, 10, 1)),
                "split": hp.choice("split", ["gini", {"entropy": hp.uniform("base", 1, 3)}]),
            },
            "none",
        ],
    ),
}


def test_conditions_follow_the_choices_above() -> None:
    table = compile_space(SPACE)
    assert table["lr"].condition.is_always
    assert table["model"].condition.is_always
    assert table["C"].condition == cond(clause(("model", 0)))
    assert table["depth"].condition == cond(clause(("model", 1)))
    assert table["split"].condition == cond(clause(("model", 1)))
    # A choice inside a choice: every choice above must have picked the branch.
    assert table["base"].condition == cond(clause(("model", 1), ("split", 1)))
    assert table["base"].condition.parents == {"model", "split"}
    assert table["model"].dist == Distribution("choice", (3,))


def test_condition_holds_and_mask_agree() -> None:
    condition = compile_space(SPACE)["base"].condition
    assert condition.holds({"model": 1, "split": 1})
    assert condition.holds({"model": 1.0, "split": 1.0})
    assert not condition.holds({"model": 1, "split": 0})
    assert not condition.holds({"model": 0})
    assert not condition.holds({})
    columns = {
        "model": np.array([1, 1, 0, 2, 1.0]),
        "split": np.array([1, 0, np.nan, np.nan, 1.0]),
    }
    assert condition.mask(columns, 5).tolist() == [True, False, False, False, True]
    assert Condition.always().mask({}, 3).tolist() == [True] * 3
    assert Condition.always().holds({})


def test_parameter_reused_in_two_branches_is_active_in_either() -> None:
    shared = hp.uniform("shared", 0, 1)
    space = hp.choice("c", [{"a": shared}, {"b": shared}, "neither"])
    table = compile_space(space)
    assert table["shared"].condition == cond(clause(("c", 0)), clause(("c", 1)))
    assert table["shared"].condition.holds({"c": 1})
    assert not table["shared"].condition.holds({"c": 2})
    assert ao.space_eval(space, {"c": 1, "shared": 0.5}) == {"b": 0.5}


def test_parameter_reused_under_two_different_choices() -> None:
    shared = hp.normal("shared", 0, 1)
    space = {"a": hp.choice("a", [shared, 0]), "b": hp.choice("b", [0, [shared]])}
    table = compile_space(space)
    assert table["shared"].condition == cond(clause(("a", 0)), clause(("b", 1)))
    assert_parents_first(table)
    assert table.labels.index("shared") == 2


def test_parameter_reused_inside_and_outside_a_choice_is_always_active() -> None:
    shared = hp.uniform("shared", 0, 1)
    table = compile_space({"top": shared, "c": hp.choice("c", [shared, 1])})
    assert table["shared"].condition.is_always
    assert table["shared"].condition == Condition.always()


def test_nested_clause_implied_by_a_shorter_one_is_dropped() -> None:
    shared = hp.uniform("shared", 0, 1)
    inner = hp.choice("inner", [shared, 0])
    table = compile_space(hp.choice("outer", [[shared, inner], inner]))
    # Active when outer=0 (directly), or when inner=0 under outer=1; the clause
    # {outer=0, inner=0} is implied by {outer=0}.
    assert table["shared"].condition == cond(
        clause(("outer", 0)), clause(("outer", 1), ("inner", 0))
    )
    assert table["inner"].condition == cond(clause(("outer", 0)), clause(("outer", 1)))


def test_choice_reused_in_two_branches_gives_its_children_both_paths() -> None:
    inner = hp.choice("inner", [hp.uniform("u", 0, 1), "const"])
    table = compile_space(hp.pchoice("outer", [(0.5, inner), (0.3, [inner]), (0.2, None)]))
    assert table["u"].condition == cond(
        clause(("outer", 0), ("inner", 0)), clause(("outer", 1), ("inner", 0))
    )
    assert table["outer"].dist == Distribution("pchoice", (0.5, 0.3, 0.2))


def test_three_levels_of_choices() -> None:
    space = hp.choice("a", [hp.choice("b", [hp.choice("c", [hp.uniform("leaf", 0, 1), 0]), 0]), 0])
    table = compile_space(space)
    assert table.labels == ("a", "b", "c", "leaf")
    assert table["leaf"].condition == cond(clause(("a", 0), ("b", 0), ("c", 0)))
    assert ao.space_eval(space, {"a": 0, "b": 0, "c": 0, "leaf": 0.25}) == 0.25
    assert ao.space_eval(space, {"a": 0, "b": 1}) == 0


def test_condition_describe_is_canonical() -> None:
    a = cond(clause(("z", 1), ("a", 0)), clause(("b", 2)))
    b = cond(clause(("b", 2)), clause(("a", 0), ("z", 1)))
    assert a == b
    assert a.describe() == b.describe() == [[["a", 0], ["z", 1]], [["b", 2]]]
    assert Condition.always().describe() == [[]]


# -- parents first ---------------------------------------------------------------------------


def test_parents_come_before_children_even_when_met_later() -> None:
    # "a_first" is walked first (keys are walked in sorted order) and uses the parameter
    # that sits under "z_choice" too.
    shared = hp.uniform("shared", 0, 1)
    space = {
        "a_first": hp.choice("a_choice", [0, {"s": shared}]),
        "z_last": hp.choice("z_choice", [[hp.choice("deep", [shared, 1])], 1]),
    }
    table = compile_space(space)
    assert_parents_first(table)
    assert table["shared"].condition.parents == {"a_choice", "z_choice", "deep"}
    assert table.labels == ("a_choice", "z_choice", "deep", "shared")


def test_table_order_is_deterministic() -> None:
    assert compile_space(SPACE).labels == compile_space(dict(reversed(SPACE.items()))).labels
    assert compile_space(SPACE).labels == ("lr", "model", "C", "depth", "split", "base")


# -- check_assignment ------------------------------------------------------------------------


def test_check_assignment_accepts_exactly_the_active_labels() -> None:
    table = compile_space(SPACE)
    table.check_assignment({"lr": 0.01, "model": 0, "C": 2.0})
    table.check_assignment({"lr": 0.01, "model": 1, "depth": 3.0, "split": 0})
    table.check_assignment({"lr": 0.01, "model": 1, "depth": 3.0, "split": 1, "base": 2.0})
    table.check_assignment({"lr": 0.01, "model": 2})


@pytest.mark.parametrize(
    ("assignment", "label", "message"),
    [
        ({"lr": 0.01}, "model", "misses active"),
        ({"lr": 0.01, "model": 0}, "C", "misses active"),
        ({"lr": 0.01, "model": 2, "C": 1.0}, "C", "inactive"),
        ({"lr": 0.01, "model": 1, "depth": 3.0, "split": 0, "base": 2.0}, "base", "inactive"),
        ({"lr": 0.01, "model": 2, "extra": 1}, "extra", "unknown"),
        ({"lr": 1.0, "model": 2}, "lr", "outside"),
        ({"lr": 0.01, "model": 3}, "model", "outside"),
        ({"lr": 0.01, "model": 1.5}, "model", "outside"),
        ({"lr": 0.01, "model": 1, "depth": 3.5, "split": 0}, "depth", "outside"),
        ({"lr": 0.01, "model": 1, "depth": 30.0, "split": 0}, "depth", "outside"),
        ({"lr": float("nan"), "model": 2}, "lr", "outside"),
        ({"lr": "0.01", "model": 2}, "lr", "outside"),
    ],
)
def test_check_assignment_names_the_offending_label(
    assignment: dict[str, Any], label: str, message: str
) -> None:
    with pytest.raises(SpaceError, match=message) as info:
        compile_space(SPACE).check_assignment(assignment)
    assert info.value.label == label
    assert repr(label) in str(info.value)


def test_check_assignment_explains_that_choices_take_indices() -> None:
    with pytest.raises(SpaceError, match=r"option index, 0\.\.2"):
        compile_space(SPACE).check_assignment({"lr": 0.01, "model": "none"})


def test_space_eval_refuses_missing_labels_and_bad_indices() -> None:
    with pytest.raises(SpaceError, match="'C'") as info:
        ao.space_eval(SPACE, {"lr": 0.1, "model": 0})
    assert info.value.label == "C"
    with pytest.raises(SpaceError, match="'model'"):
        ao.space_eval(SPACE, {"lr": 0.1, "model": 3})
    with pytest.raises(SpaceError, match="'model'"):
        ao.space_eval(SPACE, {"lr": 0.1, "model": 0.5})
    # Labels of branches not taken are ignored, as in Hyperopt.
    assert ao.space_eval(SPACE, {"lr": 0.1, "model": 2, "C": 5.0}) == {"lr": 0.1, "model": "none"}


# -- fingerprint -----------------------------------------------------------------------------


def fingerprint(space: Any) -> str:
    return compile_space(space).fingerprint


def test_fingerprint_is_a_sha256_hex_digest_and_stable() -> None:
    value = fingerprint(SPACE)
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert fingerprint(SPACE) == value
    assert fingerprint(dict(reversed(SPACE.items()))) == value
    assert compile_space(SPACE) == compile_space(SPACE)


def test_fingerprint_ignores_how_numbers_are_spelled() -> None:
    assert fingerprint(hp.uniform("x", 0, 1)) == fingerprint(hp.uniform("x", 0.0, 1.0))
    assert fingerprint(hp.uniform("x", 0, 1)) == fingerprint(hp.uniform("x", np.int8(0), 1))
    assert fingerprint(hp.randint("r", 3)) == fingerprint(hp.randint("r", 0, 3))


def test_fingerprint_covers_the_table_not_constants_or_expressions() -> None:
    x = hp.uniform("x", 0, 1)
    assert fingerprint({"x": x, "k": 1}) == fingerprint({"x": x, "k": 2})
    assert fingerprint(x * 2) == fingerprint(scope.exp(x))


def _base() -> dict[str, Any]:
    return {
        "a": hp.uniform("a", 0, 1),
        "c": hp.choice("c", [{"b": hp.quniform("b", 0, 10, 2)}, hp.normal("n", 0, 1)]),
        "p": hp.pchoice("p", [(0.25, 0), (0.75, hp.loguniform("l", -2, 2))]),
        "r": hp.randint("r", 1, 5),
    }


CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "label": lambda s: s.update(a=hp.uniform("a2", 0, 1)),
    "choice label": lambda s: s.update(
        c=hp.choice("c2", [{"b": hp.quniform("b", 0, 10, 2)}, hp.normal("n", 0, 1)])
    ),
    "distribution": lambda s: s.update(a=hp.loguniform("a", 0, 1)),
    "distribution q": lambda s: s.update(a=hp.quniform("a", 0, 1, 0.5)),
    "low": lambda s: s.update(a=hp.uniform("a", -1, 1)),
    "high": lambda s: s.update(a=hp.uniform("a", 0, 2)),
    "q": lambda s: s.update(
        c=hp.choice("c", [{"b": hp.quniform("b", 0, 10, 1)}, hp.normal("n", 0, 1)])
    ),
    "mu": lambda s: s.update(
        c=hp.choice("c", [{"b": hp.quniform("b", 0, 10, 2)}, hp.normal("n", 1, 1)])
    ),
    "sigma": lambda s: s.update(
        c=hp.choice("c", [{"b": hp.quniform("b", 0, 10, 2)}, hp.normal("n", 0, 2)])
    ),
    "randint low": lambda s: s.update(r=hp.randint("r", 0, 5)),
    "randint upper": lambda s: s.update(r=hp.randint("r", 1, 6)),
    "probabilities": lambda s: s.update(
        p=hp.pchoice("p", [(0.5, 0), (0.5, hp.loguniform("l", -2, 2))])
    ),
    "choice to pchoice": lambda s: s.update(
        c=hp.pchoice("c", [(0.5, {"b": hp.quniform("b", 0, 10, 2)}), (0.5, hp.normal("n", 0, 1))])
    ),
    "option count": lambda s: s.update(
        c=hp.choice("c", [{"b": hp.quniform("b", 0, 10, 2)}, hp.normal("n", 0, 1), None])
    ),
    "branches swapped": lambda s: s.update(
        c=hp.choice("c", [hp.normal("n", 0, 1), {"b": hp.quniform("b", 0, 10, 2)}])
    ),
    "moved out of a choice": lambda s: s.update(
        c=hp.choice("c", [{"b": 0}, hp.normal("n", 0, 1)]), b=hp.quniform("b", 0, 10, 2)
    ),
    "moved into another choice": lambda s: s.update(
        c=hp.choice("c", [{"b": 0}, hp.normal("n", 0, 1)]),
        p=hp.pchoice("p", [(0.25, hp.quniform("b", 0, 10, 2)), (0.75, hp.loguniform("l", -2, 2))]),
    ),
    "extra condition": lambda s: s.update(
        c=hp.choice("c", [{"b": hp.quniform("b", 0, 10, 2)}, [hp.normal("n", 0, 1)]]),
        a=hp.choice("outer", [hp.uniform("a", 0, 1), 0]),
    ),
    "new parameter": lambda s: s.update(z=hp.uniform("z", 0, 1)),
    "removed parameter": lambda s: s.pop("a"),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_fingerprint_changes_with_any_label_distribution_parameter_or_condition(
    change: str,
) -> None:
    base = _base()
    changed = _base()
    CHANGES[change](changed)
    assert compile_space(changed) != compile_space(base)
    assert fingerprint(changed) != fingerprint(base)


def test_all_changes_give_distinct_fingerprints() -> None:
    values = {fingerprint(_base())}
    for change in CHANGES.values():
        space = _base()
        change(space)
        values.add(fingerprint(space))
    assert len(values) == len(CHANGES) + 1


# -- compiled spaces inside spaces; the sampling helpers -------------------------------------


def test_a_compiled_space_nested_in_a_space_is_its_tree() -> None:
    inner = compile_space({"x": hp.uniform("x", 0, 1)})
    outer = {"inner": inner, "c": hp.choice("c", [inner, None])}
    table = compile_space(outer)
    assert table.labels == ("c", "x")
    assert table["x"].condition.is_always
    assert ao.space_eval(outer, {"c": 0, "x": 0.5}) == {"inner": {"x": 0.5}, "c": {"x": 0.5}}


def test_sample_assignments_defaults_and_accepts_any_space() -> None:
    space = {"x": hp.uniform("x", 0, 1), "c": hp.choice("c", [hp.randint("r", 3), 0])}
    table = compile_space(space)
    (one,) = sample_assignments(table, np.random.default_rng(4))
    assert sample_assignments(space, np.random.default_rng(4), 1) == [one]
    many = sample_assignments(space, np.random.default_rng(4), 50)
    assert len(many) == 50
    for assignment in many:
        table.check_assignment(assignment)
        assert type(assignment["x"]) is float
        assert type(assignment["c"]) is int
    assert sample_assignments(space, np.random.default_rng(4), 0) == []
    assert sample_assignments({"k": 1}, np.random.default_rng(4), 3) == [{}, {}, {}]


def test_columns_to_assignments_infers_n_and_drops_inactive_labels() -> None:
    table = compile_space(
        {"x": hp.uniform("x", 0, 1), "c": hp.choice("c", [hp.randint("r", 3), 0])}
    )
    columns = {
        "x": np.array([0.5, 0.25, 0.75]),
        "c": np.array([0.0, 1.0, 0.0]),
        "r": np.array([2.0, np.nan, 0.0]),
    }
    expected = [{"x": 0.5, "c": 0, "r": 2}, {"x": 0.25, "c": 1}, {"x": 0.75, "c": 0, "r": 0}]
    assert columns_to_assignments(table, columns) == expected
    assert columns_to_assignments(table, columns, 3) == expected
    single = {label: column[:1] for label, column in columns.items()}
    (first,) = columns_to_assignments(table, single)
    assert first == expected[0]
    assert {k: type(v) for k, v in first.items()} == {"x": float, "c": int, "r": int}


# -- deep spaces: a SpaceError that says so, never a RecursionError ---------------------------


def _nested_choices(levels: int) -> Any:
    space: Any = hp.uniform("leaf", 0, 1)
    for level in range(levels - 1):
        space = hp.choice(f"c{level}", [space, level])
    return space


def _nested_dicts(levels: int) -> Any:
    space: Any = hp.uniform("leaf", 0, 1)
    for _ in range(levels - 1):
        space = {"inner": space}
    return space


def _nested_lists(levels: int) -> Any:
    space: Any = hp.uniform("leaf", 0, 1)
    for _ in range(levels - 1):
        space = [space, 1]
    return space


def _chained_arithmetic(levels: int) -> Any:
    space: Any = hp.uniform("leaf", 0, 1)
    for _ in range(levels - 1):
        space = space + 1
    return space


NESTINGS = [_nested_choices, _nested_dicts, _nested_lists, _chained_arithmetic]


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 2_000, 20_000])
@pytest.mark.parametrize("build", NESTINGS, ids=lambda build: build.__name__.lstrip("_"))
def test_a_space_nested_too_deep_is_a_space_error(build: Any, levels: int) -> None:
    with pytest.raises(SpaceError, match=f"nested more than {MAX_DEPTH} levels deep"):
        compile_space(build(levels))


def test_a_container_that_holds_itself_is_a_space_error() -> None:
    looped: dict[str, Any] = {"x": hp.uniform("x", 0, 1)}
    looped["again"] = looped
    with pytest.raises(SpaceError, match="holds itself"):
        compile_space(looped)


def _at_call_depth(frames: int, work: Any) -> Any:
    return work() if frames == 0 else _at_call_depth(frames - 1, work)


@pytest.mark.parametrize("build", NESTINGS, ids=lambda build: build.__name__.lstrip("_"))
def test_a_space_at_the_depth_limit_goes_through_every_walk(build: Any) -> None:
    space = build(MAX_DEPTH)
    seed = 3

    def every_walk() -> None:
        table = compile_space(space)
        copy = compile_space(rebuild(json.loads(json.dumps(table.describe()))))
        assert copy.fingerprint == table.fingerprint
        assert copy.root == table.root
        assert hash(copy.root) == hash(table.root)
        pickled = pickle.loads(pickle.dumps(table))
        assert ao.sample(pickled, seed) == ao.sample(space, seed)

    # Well inside a caller's stack (a test runner, an event loop, a worker thread).
    _at_call_depth(250, every_walk)


def test_a_reused_hyperparameter_stays_one_through_a_stored_description() -> None:
    lr = hp.loguniform("lr", -9, -1)
    branch = hp.choice("opt", [{"lr": lr}, {"lr": lr, "momentum": hp.uniform("m", 0, 1)}])
    table = compile_space({"lr": lr, "opt": branch, "again": branch})
    copy = compile_space(rebuild(json.loads(json.dumps(table.describe()))))
    assert copy.labels == table.labels
    assert copy.fingerprint == table.fingerprint


def test_a_description_nested_too_deep_is_a_space_error() -> None:
    root: Any = {"param": "x", "name": "uniform", "args": [0, 1]}
    for _ in range(20_000):
        root = {"list": [root, 1.5]}
    with pytest.raises(SpaceError, match="nested more than"):
        rebuild({"format": 1, "root": root})
    # Constants at the bottom of a space at the limit still rebuild.
    space: Any = [float("nan"), "text", None]
    for _ in range(MAX_DEPTH - 1):
        space = [space]
    table = compile_space(space)
    assert compile_space(rebuild(json.loads(json.dumps(table.describe())))) == table
