"""The nesting stage threads an array comprehension's generators in order."""

from __future__ import annotations

import pytest

from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.rego_rewrite_nest import rewrite_nesting

HELPER = "\n\n__psg(d, _) := d\n"


def _body(text: str) -> str:
    return f"package t\n\n{text}\n"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            'r := [[x, y] | some x in [1, 2]; some y in ["a", "b"]]',
            'r := [[x, y] | some x in [1, 2]; some y in __psg(["a", "b"], [x])]',
        ),
        (
            "r := [[i, j] | input.a[i]; input.c[j]]",
            "r := [[i, j] | input.a[i]; __psg(input.c, [i])[j]]",
        ),
        (
            # A `_` index the next generator must depend on gets a name.
            "r := [x | input.c[_]; some x in [1, 2]]",
            "r := [x | input.c[__psg_v1]; some x in __psg([1, 2], [__psg_v1])]",
        ),
        (
            'r := [[x, y] | x := [1, 2][_]; y := split(input.s, ",")[_]]',
            'r := [[x, y] | x := [1, 2][_]; y := __psg(split(input.s, ","), [x])[_]]',
        ),
        (
            "r := [z |\n\tsome x in xs\n\tsome y in ys\n\tsome z in zs\n]",
            "r := [z |\n\tsome x in xs\n\tsome y in __psg(ys, [x])\n"
            "\tsome z in __psg(zs, [x, y])\n]",
        ),
    ],
)
def test_later_generators_depend_on_the_earlier_ones(before: str, after: str) -> None:
    out = rewrite_nesting(_body(before))
    assert out == _body(after).rstrip("\n") + HELPER
    # Original tokens keep their lines (diagnostics keep OPA's line numbers).
    assert out.count("\n") - HELPER.count("\n") == _body(before).count("\n") - 1


@pytest.mark.parametrize(
    "text",
    [
        "r := [x | some x in [1, 2]]",  # one generator
        "r := [x | some x in xs; x > 1]",  # a filter is no generator
        "r := {[x, y] | some x in [1]; some y in [2]}",  # a set: order not observable
        "r := [x | some x in xs; ys[x]]",  # a lookup by a bound variable
    ],
)
def test_what_needs_no_threading_is_left_alone(text: str) -> None:
    assert rewrite_nesting(_body(text)) == _body(text)


def test_a_nested_comprehension_is_threaded_on_its_own() -> None:
    # The inner comprehension is one value of the outer body, not a generator of it.
    before = "r := [x | some x in xs; y := [z | some z in x; some w in x]]"
    after = "r := [x | some x in xs; y := [z | some z in x; some w in __psg(x, [z])]]"
    assert rewrite_nesting(_body(before)) == _body(after).rstrip("\n") + HELPER


def test_a_generator_it_cannot_thread_is_refused_with_its_line() -> None:
    source = _body("a := 1\n\nr := [x | some x in [1, 2]; count(input.c[_]) > 0]")
    with pytest.raises(UnsupportedByEngineError, match="use the OPA engine") as info:
        rewrite_nesting(source)
    assert info.value.line == 5
