"""The ``checks`` rewrite stage: run-time guards, without moving any token to another line."""

from __future__ import annotations

import pytest

from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.rego_rewrite_checks import (
    REASONS,
    refusal_reason,
    rewrite_checks,
)


def _body(source: str) -> str:
    """The rewritten module without the appended helpers."""
    return rewrite_checks(source).split("\n\n__psc")[0] + "\n"


def test_a_module_without_guarded_calls_is_unchanged() -> None:
    source = "package t\n\nr := input.xs[0] == startswith(input.s, \"a\")\n"
    assert rewrite_checks(source) == source


def test_percent_s_becomes_percent_v_and_non_literal_arguments_are_guarded() -> None:
    source = 'package t\n\nr := sprintf("%s/%s %v %%s", ["x", input.n, 2])\n'
    assert _body(source) == (
        'package t\n\nr := sprintf("%v/%v %v %%s", ["x", __psc_s(input.n), 2])\n'
    )
    assert "__psc_s(x) := x if not is_number(x)" in rewrite_checks(source)


def test_only_v_verbs_with_a_literal_array_need_nothing() -> None:
    source = 'package t\n\nr := sprintf("%v: %v", [input.a, input.b])\n'
    assert rewrite_checks(source) == source


def test_an_array_by_reference_is_counted_and_checked() -> None:
    source = 'package t\n\nr := sprintf("%v-%s", input.xs)\nq := sprintf("%v", [x | x := 1])\n'
    assert _body(source) == (
        'package t\n\nr := sprintf("%v-%v", __psc_sa(input.xs, 2, [1]))\n'
        'q := sprintf("%v", __psc_sa([x | x := 1], 1, []))\n'
    )


def test_nested_calls_and_lines_are_kept() -> None:
    source = 'package t\n\nr := sprintf("%s", [\n\tsprintf("%s", [y]),\n])\n'
    out = _body(source)
    assert out == 'package t\n\nr := sprintf("%v", [\n\t__psc_s(sprintf("%v", [__psc_s(y)])),\n])\n'
    assert out.count("\n") == source.count("\n")


def test_an_index_into_an_array_literal_is_not_the_argument_array() -> None:
    source = 'package t\n\nr := sprintf("%v", [[1], [2]][0])\n'
    assert "__psc_sa([[1], [2]][0], 1, [])" in _body(source)


def test_refusal_reason_reads_the_guards_error() -> None:
    error = 'eval_builtin_error: time: invalid duration "__psc_refused_sprintf_s_number"'
    assert refusal_reason(error) == REASONS["sprintf_s_number"]
    assert refusal_reason("eval_type_error: count: operand 1") is None


def test_builtins_reading_characters_guard_arguments_that_may_hold_quotes() -> None:
    source = (
        "package t\n\n"
        "a := count(msg)\n"
        "b := count(input.xs)\n"
        'c := count({"x"})\n'
        'd := crypto.hmac.sha256(msg, "k")\n'
        'e := split(msg, ",")\n'  # a non-empty literal separator
        "f := split(msg, sep)\n"
        'g := sort(["a", msg])\n'
    )
    assert _body(source) == (
        "package t\n\n"
        "a := count(__psc_q(msg))\n"
        "b := count(__psc_q(input.xs))\n"
        'c := count({"x"})\n'
        'd := crypto.hmac.sha256(__psc_q(msg), "k")\n'
        'e := split(msg, ",")\n'
        "f := split(__psc_q(msg), sep)\n"
        'g := sort(__psc_qa(["a", msg]))\n'
    )
    out = rewrite_checks(source)
    assert "__psc_qs(x) if {" in out
    assert "__psc_qe(xs) if {" in out


def test_a_rule_head_named_like_a_builtin_is_not_a_call() -> None:
    source = "package t\n\nr := x if {\n\tx := count(y)\n}\n"
    assert _body(source) == "package t\n\nr := x if {\n\tx := count(__psc_q(y))\n}\n"


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("-1 / 7", "__psc_div(-1 , 7)"),
        ("a / b / c", "__psc_div(__psc_div(a , b) , c)"),
        ("a * b / c + 1", "__psc_div(a * b , c) + 1"),
        ("x -1 / 7", "x -__psc_div(1 , 7)"),  # `x - (1 / 7)`
        ("data.a.b[0] / f(x).y", "__psc_div(data.a.b[0] , f(x).y)"),
        ("(a + b) / (c - d)", "__psc_div((a + b) , (c - d))"),
        ("[1, 2][0] / -x", "__psc_div([1, 2][0] , -x)"),
        ("10 / 4 * 2", "__psc_div(10 , 4) * 2"),
        ('sprintf("%s", [a / b])', 'sprintf("%v", [__psc_s(__psc_div(a , b))])'),
    ],
)
def test_divisions_are_wrapped_with_their_operands(expr: str, want: str) -> None:
    assert _body(f"package t\n\nr := {expr}\n") == f"package t\n\nr := {want}\n"


def test_a_division_whose_operands_are_not_found_is_refused() -> None:
    with pytest.raises(UnsupportedByEngineError) as err:
        rewrite_checks("package t\n\nr := x if {\n\tx := / 2\n}\n")
    assert err.value.line == 4
