"""The iteration-order rewrite stage, as pure text (no engine)."""

from __future__ import annotations

import re

import pytest

from policysupply._internal.engines import rego_rewrite_iter as it
from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.rego_rewrite import STAGES, rewrite


def _body(source: str) -> str:
    """The rewritten module without the appended helpers, calls shown as O(...)/D(...)."""
    out = it.rewrite_iteration_order(source)
    h = it.helper_suffix(source)
    text = out.split("\n# policysupply: OPA's iteration order")[0]
    for name, short in (("ordered", "O"), ("deep", "D"), ("strings", "S"), ("after", "A")):
        text = text.replace(f"__psi_{name}_{h}(", f"{short}(")
    text = re.sub(rf"__psi_ordered(\d)_{h}\(", r"O\1(", text)
    return text


def _line(body: str) -> str:
    return _body(f"package t\n\n{body}\n").split("\n")[2]


def test_registered_as_a_stage() -> None:
    assert it.rewrite_iteration_order in STAGES
    assert "__psi_ordered_" in rewrite("package t\n\nr := [x | some x in s]\n")


@pytest.mark.parametrize(
    ("body", "want"),
    [
        ("r := [x | some x in {3, 1, 2}]", "r := [x | some x in O({3, 1, 2})]"),
        ("r := [x | some x in s | t]", "r := [x | some x in O(s | t)]"),
        ("r := [v | some k, v in o]", "r := [v | some k, v in O(o)]"),
        ('r := concat(",", s)', 'r := concat(",", S(s))'),
        (
            'r := concat(",", {x | some x in input.xs})',
            'r := concat(",", S({x | some x in input.xs}))',
        ),
        ('r := concat(",", data.t.s)', 'r := concat(",", S(data.t.s))'),
        ("r := [x | x := s[_]]", "r := [x | x := O(s)[_]]"),
        ('r := [x | {"b", "a"}[x]]', 'r := [x | {"a", "b"}[x]]'),  # sorted in place
        ('r := [x | {"b", 1}[x]]', 'r := [x | O({"b", 1})[x]]'),
        ('r if { some k in {"team", "app"}; k }', 'r if { some k in {"app", "team"}; k }'),
        ('r := [x | some x in {"b",\n"a"}]', 'r := [x | some x in O({"b",'),
        ("r := [k | data.t.o[k]]", "r := [k | O(data.t.o)[k]]"),
        (
            "r := x if { x := data.t.q with input as o }",
            "r := x if { x := data.t.q with input as D(o) }",
        ),
        (
            'r := x if { x := data.t.q with input.a as {"b": 1,\n"a": 2}; true }',
            'r := x if { x := data.t.q with input.a as D({"b": 1,',
        ),
        (  # one-line literals are sorted in place
            'r := x if { x := data.t.q with input.a as {"b": {"d": 1, "c": 2}, "a": 2} }',
            'r := x if { x := data.t.q with input.a as {"a": 2, "b": {"c": 2, "d": 1}} }',
        ),
        ('r := [x | some x in {"b": 1, "a": 2}]', 'r := [x | some x in {"a": 2, "b": 1}]'),
        ('r := [x | some x in {"b": 1, "a": x}]', 'r := [x | some x in {"a": x, "b": 1}]'),
        ('r := [x | some x in {"b": 1, 2: 1}]', 'r := [x | some x in O({"b": 1, 2: 1})]'),
        # One call per reference, as deep as its last iteration (rego-cpp finds
        # nothing for an iteration inside a call's argument).
        ("r := [v | data.t.o[_].x[v]]", "r := [v | O3(data.t.o)[_].x[v]]"),
        ("r := [v | data.t.o.a[i][j]]", "r := [v | O2(data.t.o.a)[i][j]]"),
        ("r := [v | data.t.o[i].a]", "r := [v | O(data.t.o)[i].a]"),
        ("r := [j | some i in x; data.t.o[i][j]]", "r := [j | some i in O(x); O(data.t.o[i])[j]]"),
        # The domain's elements are iterated too: one level deeper.
        ("r := [x | some x in data.t.o[i]]", "r := [x | some x in O2(data.t.o)[i]]"),
        (
            "r := [x | some y in ys; some x in data.t.o[i]]",
            "r := [x | some y in O(ys); some x in O2(A(data.t.o, y))[i]]",
        ),
        ("r := [k | object.keys(o)[k]]", "r := [k | O(object.keys(o))[k]]"),
        ("r := [p | s[[p, _]]]", "r := [p | O(s)[[p, _]]]"),
        ("r := [p | walk(o, [p, _])]", "r := [p | walk(D(o), [p, _])]"),
        ("r := yaml.marshal(o)", "r := yaml.marshal(D(o))"),
        ("r := urlquery.encode_object(o)", "r := urlquery.encode_object(D(o))"),
    ],
)
def test_wraps_iteration_and_order_consumers(body: str, want: str) -> None:
    assert _line(body) == want


@pytest.mark.parametrize(
    "body",
    [
        "r := [x | some x in [3, 1, 2]]",  # arrays keep their order
        # input is loaded with sorted keys (and what `with` puts there is checked)
        "r := [k | input.o[k]]",
        "r := [x | some x in input.xs]",
        "r if { some k, v in input.o; v }",
        'r := concat(",", input.xs)',
        "r := [p | walk(input, [p, _])]",
        "r := data.t.q with input as input.x",
        "r := data.t.q with data.t.x as {1, 2}",
        'r := input.o["a"]',  # lookups
        "r := input.o[input.k]",
        "r := input.xs[0]",
        "r := input.o[x.y]",
        "p[x] := 1 if x := input.k",  # a rule head, not an iteration
        'a.b[c] contains "x" if c := input.k',
        "r if every x in input.xs { x }",  # every: order does not show
        "r if input.x in {1, 2}",
        "r := input.xs [1]",  # not a reference (whitespace)
        "r := count(s)",
        'r := pkg.concat(",", s)',  # another package's rule
    ],
)
def test_leaves_lookups_heads_and_arrays_alone(body: str) -> None:
    assert _line(body) == body


@pytest.mark.parametrize(
    ("body", "want"),
    [
        # Bound earlier in the body, or a function's argument: lookups.
        ("r := [1 | some k in ks; data.t.o[k]]", "r := [1 | some k in O(ks); data.t.o[k]]"),
        ("r if { k := input.k; data.t.o[k] }", "r if { k := input.k; data.t.o[k] }"),
        ("f(k) := data.t.o[k]", "f(k) := data.t.o[k]"),
        (
            "r := [k | some k in ks; [1 | data.t.o[k]]]",
            "r := [k | some k in O(ks); [1 | data.t.o[k]]]",
        ),
        # Declared but not bound, bound after, or bound in another body: iterations.
        ("r := [1 | some k; data.t.o[k]]", "r := [1 | some k; O(data.t.o)[k]]"),
        ("r := [1 | data.t.o[k]; k := 1]", "r := [1 | O(data.t.o)[k]; k := 1]"),
        ("r := [1 | [1 | k := 1]; data.t.o[k]]", "r := [1 | [1 | k := 1]; O(data.t.o)[k]]"),
    ],
)
def test_bound_keys_are_lookups(body: str, want: str) -> None:
    assert _line(body) == want


@pytest.mark.parametrize(
    "body",
    [
        "r if { some x in s; x > 1 }",  # a rule body: any order gives the answer
        "r contains x if { some x in s; data.t.o[x] }",
        "r := {x | some x in s; t[x]}",
        "r := {k: v | some k, v in o}",
        "r := [1 | not { some x in s; x > 1 }]",
        "r := [1 | every x in s { t[x] }]",
        "r contains p if walk(o, [p, _])",
    ],
)
def test_leaves_iteration_alone_where_order_does_not_show(body: str) -> None:
    assert _line(body) == body


def test_too_deep_a_reference_is_refused() -> None:
    with pytest.raises(UnsupportedByEngineError, match="7 levels deep"):
        it.rewrite_iteration_order("package t\n\nr := [1 | x[a][b][c][d][e][f][g]]\n")


def test_never_moves_a_token_to_another_line() -> None:
    source = (
        "package t\n\nimport rego.v1\n\n"
        "deny contains msg if {\n"
        "\tsome c in input.request.object.spec.containers\n"
        "\tbad := {p | some p in c.ports; p.hostPort}\n"
        '\tmsg := concat(", ", [x | some x in bad;\n'
        "\t\tx.name])\n"
        "}\n\n"
        "names := [k | input.o[k]; some v in\n"
        "\tdata.t.x[k]]\n"
    )
    out = it.rewrite_iteration_order(source)
    lines = source.split("\n")
    got = out.split("\n")
    h = it.helper_suffix(source)
    strip = re.compile(rf"__psi_(ordered\d*|deep|after)_{h}\(|\)")
    for a, b in zip(lines, got, strict=False):
        assert strip.sub("", a) == strip.sub("", b)
    assert got[len(lines) - 1] == lines[-1]


def test_helpers_only_those_used_and_query_rewritten() -> None:
    assert rewrite("package a.b\n\nr := 1\n") == "package a.b\n\nr := 1\n"
    source = 'package a.b\n\nr := concat(",", s)\n'
    out = it.rewrite_iteration_order(source)
    h = it.helper_suffix(source)
    assert f"__psi_strings_{h}(x) := sort(x) if {{" in out
    assert "__psi_ordered_" not in out
    source = "package a.b\n\nr := [x | some x in s]\n"
    out = it.rewrite_iteration_order(source)
    assert f"__psi_ordered_{h}" not in out  # another module, another suffix
    h = it.helper_suffix(source)
    for name in ("ordered", "sorted", "sortable", "refuse"):
        assert f"__psi_{name}_{h}(" in out
    assert "__psi_deep_" not in out
    everything = it.helpers("q", frozenset(it.ALL_KINDS))
    for name in ("after", "strings", "ordered", "ordered6", "deep", "unordered"):
        assert f"__psi_{name}_q(" in everything
    q = it.rewrite_query("data.t.s[x]", "data.t", "H")
    assert q == "data.t.__psi_ordered_H(data.t.s)[x]"
    assert it.rewrite_query("x := data.t.r", "data.t", "H") == "x := data.t.r"
    q = it.rewrite_query("some x in data.t.s; some y in [1]", "data.t", "H")
    assert q == (
        "some x in data.t.__psi_ordered_H(data.t.s); some y in data.t.__psi_after_H([1], x)"
    )


def test_generators_of_one_body_nest_as_written() -> None:
    assert _line("r := [[x, y] | some x in [1]; some y in [2]]") == (
        "r := [[x, y] | some x in [1]; some y in A([2], x)]"
    )
    assert _line("r := [[x, y] | some x in s; some _, y in t]") == (
        "r := [[x, y] | some x in O(s); some _, y in A(O(t), x)]"
    )
    # Two one-line rule bodies are not one body.
    body = _body("package t\n\nr if some x in [1]\n\nq if some y in [2]\n")
    assert "A(" not in body
