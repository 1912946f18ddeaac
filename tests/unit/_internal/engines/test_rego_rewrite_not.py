"""rego_rewrite_not: what OPA evaluates outside a `not`, written before it."""

from __future__ import annotations

from importlib import resources

import pytest

from policysupply._internal.engines.rego_rewrite import STAGES, rewrite
from policysupply._internal.engines.rego_rewrite_not import negates, rewrite_not
from policysupply.errors import BundleError, UnsupportedByEngineError

HEAD = "package t\n\n"

REWRITTEN = [
    # Call arguments that are refs: hoisted; a one-line body gets braces.
    (
        "r if not startswith(input.image, input.prefix)",
        "r if { __psn0 = input.image; __psn1 = input.prefix; not startswith(__psn0, __psn1) }",
    ),
    # Infix operators are calls; scalars and collections of scalars stay.
    (
        'r if not input.v.error in {"a", "b"}',
        'r if { __psn0 = input.v.error; not __psn0 in {"a", "b"} }',
    ),
    # A nested call is bound first (with its own arguments).
    (
        "r if not count(input.missing) > 0",
        "r if { __psn0 = count(input.missing); not __psn0 > 0 }",
    ),
    # User and package functions; a name may be a rule: bound first too.
    ("r if not lib.f(input.x)", "r if { __psn0 = input.x; not lib.f(__psn0) }"),
    ("r if not f(allowed)", "r if { __psn0 = allowed; not f(__psn0) }"),
    # Items of a collection argument; a comprehension argument as a whole.
    ("r if not f([1, input.a])", "r if { __psn0 = input.a; not f([1, __psn0]) }"),
    (
        "r if not f([x | some x in input.xs])",
        "r if { __psn0 = [x | some x in input.xs]; not f(__psn0) }",
    ),
    # Equality and bare terms: only the dynamic segments of refs...
    ("r if not input.xs[input.i]", "r if { __psn0 = input.i; not input.xs[__psn0] }"),
    (
        "r if not input.xs[input.i] == input.y",
        "r if { __psn0 = input.i; not input.xs[__psn0] == input.y }",
    ),
    # ...and the refs inside collection operands.
    ("r if not [input.p] == [1]", "r if { __psn0 = input.p; not [__psn0] == [1] }"),
    # A name in a segment may be a rule (a local is bound before the `not` anyway).
    ("r if not deny_reason[x]", "r if { __psn0 = x; not deny_reason[__psn0] }"),
    # A call inside a segment is bound before the ref that holds it.
    (
        "r if not f(input.xs[count(y)])",
        "r if { __psn0 = count(y); __psn1 = input.xs[__psn0]; not f(__psn1) }",
    ),
    # A call heading a ref.
    ("r if not f(x).a", "r if { __psn0 = f(x); not __psn0.a }"),
    # Arithmetic written without spaces (the lexer reads `-1` as a number).
    ("r if not a-1 > 0", "r if { __psn0 = a-1; not __psn0 > 0 }"),
    # `with`: copied onto each equality; a value that needs evaluating is bound first.
    (
        "r if {\n\tnot f(input.x) with input as {}\n}",
        "r if {\n\t__psn0 = input.x with input as {}; not f(__psn0) with input as {}\n}",
    ),
    (
        "r if {\n\tnot input.p with input as data.x\n}",
        "r if {\n\t__psn0 = data.x; not input.p with input as __psn0\n}",
    ),
    # Comprehension bodies and `else` bodies; a `not` inside a hoisted comprehension.
    ("r := [x | some x in y; not g(x.a)]", "r := [x | some x in y; __psn0 = x.a; not g(__psn0)]"),
    (
        "r := 1 if {\n\tinput.x\n} else := 2 if not g(input.y)",
        "r := 1 if {\n\tinput.x\n} else := 2 if { __psn0 = input.y; not g(__psn0) }",
    ),
    (
        "r if not count([x | some x in xs; not f(x.a)]) > 0",
        "r if { __psn0 = count([x | some x in xs; __psn1 = x.a; not f(__psn1)]); not __psn0 > 0 }",
    ),
    # Several lines: the copy is written on one line, the newlines stay in place.
    (
        "r if {\n\tnot startswith(\n\t\tinput.a,\n\t\tinput.b,\n\t)\n}",
        "r if {\n\t__psn0 = input.a; __psn1 = input.b; not startswith(\n"
        "\t\t__psn0,\n\t\t__psn1,\n\t)\n}",
    ),
    (
        "r if {\n\tnot x in [\n\t\t1, input.y # why\n\t]\n}",
        "r if {\n\t__psn0 = x; __psn1 = input.y; not __psn0 in [\n\t\t1, __psn1 # why\n\t]\n}",
    ),
    # A comment after a one-line body stays after it.
    ("r if not f(input.x) # note", "r if { __psn0 = input.x; not f(__psn0) } # note"),
]

UNCHANGED = [
    "r if not input.p",
    "r if not input.p == 1",
    "r if not input.xs[5] == 1",
    "r if not allowed",
    "r if not f(1, false)",
    "r if {\n\tnot x == [y | some y in input.ys]\n}",
    "r if input.not",
    # A rule named `not` (OPA's keywords in refs).
    "p if {\n\tnot.foo == 1\n}\n\nnot.foo := 1",
    'r := {"not": 1}',
    # Without a `not` the module is returned as it is.
    "r if startswith(input.image, input.prefix)",
]


@pytest.mark.parametrize(("body", "want"), REWRITTEN)
def test_rewrites_as_opa_hoists(body: str, want: str) -> None:
    got = rewrite_not(HEAD + body + "\n")
    assert got == HEAD + want + "\n"
    assert got.count("\n") == (HEAD + body + "\n").count("\n")


@pytest.mark.parametrize("body", UNCHANGED)
def test_leaves_alone_what_opa_does_not_hoist(body: str) -> None:
    assert rewrite_not(HEAD + body + "\n") == HEAD + body + "\n"


@pytest.mark.parametrize(
    "imp", ["import future.keywords.not", "import future.keywords", "import rego.v2"]
)
def test_not_bodies_modules_are_left_alone(imp: str) -> None:
    # With not-bodies OPA hoists inside the negation, as rego-cpp evaluates it.
    source = f"{HEAD}{imp}\n\nr if not startswith(input.a, input.b)\n"
    assert rewrite_not(source) == source


def test_other_imports_do_not_stop_the_rewrite() -> None:
    source = f"{HEAD}import future.keywords.in\n\nr if not f(input.a)\n"
    assert "__psn0 = input.a" in rewrite_not(source)


def test_names_are_unique_in_a_module() -> None:
    got = rewrite_not(HEAD + "a if not f(input.x)\n\nb if not f(input.y)\n")
    assert "__psn0 = input.x" in got
    assert "__psn1 = input.y" in got


@pytest.mark.parametrize(
    "body",
    [
        'r if not startswith(input.xs[_], "a")',
        "r if not input.xs[_]",
        "r if not f(_)",
    ],
)
def test_wildcard_under_not_is_opas_unsafe_var(body: str) -> None:
    with pytest.raises(BundleError, match="var _ is unsafe") as info:
        rewrite_not(HEAD + body + "\n")
    assert not isinstance(info.value, UnsupportedByEngineError)
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("body", "line"),
    [
        # A comprehension over several lines cannot be copied onto one.
        ("r if {\n\tnot f([x |\n\t\tsome x in input.xs\n\t])\n}", 4),
        # A raw string over several lines, likewise.
        ("r if {\n\tnot count([input.a, `x\ny`]) > 0\n}", 4),
        # `not` that does not start an expression.
        ("r if {\n\tx := 1 not f(x)\n}", 4),
        # Something after the expression this stage does not read.
        ("r if {\n\tnot f(input.x) g\n}", 4),
        # `.5` (OPA reads a number) and a call on a ref segment.
        ("r if {\n\tnot f(input.x, .5)\n}", 4),
        ("r if {\n\tnot input.a[0](1)\n}", 4),
    ],
)
def test_refuses_what_it_cannot_read(body: str, line: int) -> None:
    with pytest.raises(UnsupportedByEngineError, match="use the OPA engine") as info:
        rewrite_not(HEAD + body + "\n")
    assert info.value.line == line
    assert f"line {line}" in str(info.value)


def test_is_a_stage() -> None:
    assert rewrite_not in STAGES
    source = HEAD + "r if not f(input.x)\n"
    assert rewrite(source) == rewrite_not(source)


def test_default_gate_rules_keep_their_lines() -> None:
    source = resources.files("policysupply").joinpath("rules/gate.rego").read_text()
    got = rewrite_not(source)
    assert got.count("\n") == source.count("\n")
    assert (
        "\t__psn0 = input.verification.error; not __psn0 in "
        '{"no_signature", "untrusted_signature", "threshold_not_met"}\n'
    ) in got
    # `not some_identity_allowed`, `not attested(want)`, ...: nothing to hoist but `want`.
    assert "not some_identity_allowed\n" in got


def test_negated_queries_are_detected() -> None:
    assert negates("not data.t.allow")
    assert negates("x := 1; not startswith(input.a, x)")
    assert not negates("data.t.allow == true")
    assert not negates("input.not")
