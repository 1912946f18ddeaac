"""The ordering rewrite stage, as text: operands found with OPA's precedence."""

from __future__ import annotations

import pytest

from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.rego_rewrite import STAGES, rewrite
from policysupply._internal.engines.rego_rewrite_order import (
    _MARKER,
    dedupe_helpers,
    helper_host,
    ordering_in_query,
    rewrite_order,
    rewrite_query,
    with_helpers,
    with_helpers_forced,
)


def _body(source: str) -> str:
    """The rewritten module without the appended helpers."""
    out = rewrite_order(source)
    return out.split("\n" + _MARKER)[0]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('r := 7 < "a"', 'r := __pso_lt(7 , "a")'),
        ("r := null >= 3", "r := __pso_ge(null , 3)"),
        ("r := a <= b", "r := __pso_le(a , b)"),
        ("r := a > b", "r := __pso_gt(a , b)"),
        # Arithmetic, `&` and `|` bind tighter than the relations.
        ("r := a + 1 < b * 2", "r := __pso_lt(a + 1 , b * 2)"),
        ("r := a & b < c | d", "r := __pso_lt(a & b , c | d)"),
        ("r := x-1<y-1", "r := __pso_lt(x-1,y-1)"),
        ("r := a * -b < -c", "r := __pso_lt(a * -b , -c)"),
        # Relations chain to the left: (a == b) < c, (a < b) == c.
        ("r := a == b < c", "r := __pso_lt(a == b , c)"),
        ("r := a < b == c", "r := __pso_lt(a , b) == c"),
        ("r := a < b < c", "r := __pso_lt(__pso_lt(a , b) , c)"),
        # References, calls, indexes, collections.
        ("r := f(x)[0].y <= -1", "r := __pso_le(f(x)[0].y , -1)"),
        ("r := count([x | x := xs[_]]) > 0", "r := __pso_gt(count([x | x := xs[_]]) , 0)"),
        ("r := (a | b) < c", "r := __pso_lt((a | b) , c)"),
        ("r := [1] < [2]", "r := __pso_lt([1] , [2])"),
        # Comprehensions: the bar ends an operand.
        ("r := [x | some x in xs; x>=3]", "r := [x | some x in xs; __pso_ge(x,3)]"),
        ("r := [x < 3 | some x in xs]", "r := [__pso_lt(x , 3) | some x in xs]"),
        ("r := {x: x > 1 | some x in xs}", "r := {x: __pso_gt(x , 1) | some x in xs}"),
        # Keywords end operands.
        ("r if not input.x.y[i] > 3", "r if not __pso_gt(input.x.y[i] , 3)"),
        ("r := x < 3 with input as {}", "r := __pso_lt(x , 3) with input as {}"),
        ("r if every x in xs { x < 3 }", "r if every x in xs { __pso_lt(x , 3) }"),
        ("r if some x in xs; x < 3", "r if some x in xs; __pso_lt(x , 3)"),
        ("r := x in xs < 3", "r := x in __pso_lt(xs , 3)"),
        ('r := {"a": 1 < 2}', 'r := {"a": __pso_lt(1 , 2)}'),
        ("r := f(a < b, c)", "r := f(__pso_lt(a , b), c)"),
        # sort: the builtin only.
        ('r := sort(["b", 0])', 'r := __pso_sort(["b", 0])'),
        ("r := data.lib.sort(x)", "r := data.lib.sort(x)"),
        # Strings and comments are not code.
        ('r := "a < b" # x > y', 'r := "a < b" # x > y'),
    ],
)
def test_operators_become_helper_calls(before: str, after: str) -> None:
    assert _body(f"package t\n\n{before}\n") == f"package t\n\n{after}\n"


def test_operands_spanning_lines_keep_every_token_on_its_line() -> None:
    source = (
        "package t\n\nr if {\n\tx := 1\n\t\t< 2\n\tcount([y |\n\t\tsome y in input.ys\n"
        "\t]) > 0\n}\n"
    )
    out = _body(source)
    assert out == (
        "package t\n\nr if {\n\tx := __pso_lt(1\n\t\t, 2)\n\t__pso_gt(count([y |\n"
        "\t\tsome y in input.ys\n\t]) , 0)\n}\n"
    )
    assert out.count("\n") == source.count("\n")


def test_no_ordering_no_change() -> None:
    source = 'package t\n\nr := x == "a" if x := input.x\n'
    assert rewrite_order(source) == source


def test_helpers_appended_once_after_the_last_line() -> None:
    out = rewrite_order("package t\n\nr := 1 < 2\n")
    assert out.startswith("package t\n\nr := __pso_lt(1 , 2)\n\n" + _MARKER)
    assert out.count(_MARKER) == 1
    assert rewrite_order(out) == out  # idempotent on its own output
    for name in ("__pso_lt(a, b)", "__pso_sort(xs)", "__pso_cmp(a, b)", "__pso_unsupported"):
        assert name in out


def test_other_stages_can_call_the_sort_helper() -> None:
    # A stage that ran before (or calls with_helpers after) gets the definitions.
    source = "package t\n\nr := __pso_sort(input.s)\n"
    assert _MARKER in rewrite_order(source)
    assert _MARKER in with_helpers(source)
    assert with_helpers("package t\n\nr := 1\n") == "package t\n\nr := 1\n"


def test_registered_as_a_stage() -> None:
    assert rewrite_order in STAGES
    assert "__pso_lt(" in rewrite("package t\n\nr := 1 < 2\n")


@pytest.mark.parametrize(
    "source",
    [
        "package t\n\nsort(x) := x\n\nr := sort([2, 1])\n",
        "package t\n\nimport data.lib.sort\n\nr := sort([2, 1])\n",
    ],
)
def test_a_module_naming_its_own_sort_is_refused(source: str) -> None:
    with pytest.raises(UnsupportedByEngineError, match="named sort") as err:
        rewrite_order(source)
    assert err.value.line is not None


def test_a_dangling_operator_is_refused_not_guessed() -> None:
    with pytest.raises(UnsupportedByEngineError, match="operand of <"):
        rewrite_order("package t\n\nr := 1 < \n")


def test_ordering_in_query() -> None:
    assert ordering_in_query("data.t.r") is None
    assert ordering_in_query('data.t.r == "a<b"') is None
    assert ordering_in_query("x = 2; x > 3") == 9
    assert ordering_in_query("sort(data.t.s)") == 0
    assert ordering_in_query("data.lib.sort(x)") is None


def test_helpers_kept_once_per_package() -> None:
    a = rewrite_order("package p\n\nr := 1 < 2\n")
    b = rewrite_order("package p\n\ns := 2 > 1\n")
    c = rewrite_order("package q\n\nt := 2 > 1\n")
    out = dedupe_helpers(
        {"a.rego": a, "b.rego": b, "c.rego": c},
        {"a.rego": ("p",), "b.rego": ("p",), "c.rego": ("q",)},
    )
    assert out["a.rego"] == a
    assert out["b.rego"] == "package p\n\ns := __pso_gt(2 , 1)\n"
    assert out["c.rego"] == c


def test_queries_call_the_helpers_of_a_loaded_package() -> None:
    assert rewrite_query('x < "a"; sort(y)', ("a", "b")) == (
        'data.a.b.__pso_lt(x , "a"); data.a.b.__pso_sort(y)'
    )
    sources = {"z.rego": "package z\n", "y.rego": 'package y["a-b"]\n'}
    packages = {"z.rego": ("z",), "y.rego": ("y", "a-b")}
    assert helper_host(sources, packages) == ("z.rego", ("z",))
    sources["w.rego"] = rewrite_order("package w\n\nr := 1 < 2\n")
    packages["w.rego"] = ("w",)
    assert helper_host(sources, packages) == ("w.rego", ("w",))
    assert helper_host({"y.rego": "package y\n"}, {"y.rego": ("y", "a-b")}) is None
    forced = with_helpers_forced("package z\n")
    assert _MARKER in forced
    assert with_helpers_forced(forced) == forced
