"""Module-set refusals of rego_unsupported: nested ``with``."""

from __future__ import annotations

import pytest

from policysupply._internal.engines.rego_unsupported import (
    lost_comprehension_errors,
    nested_with_data,
)

_INNER = "b := x if {\n\tx := a with input as {}\n}\n"
_PLAIN = "b := x if {\n\tx := a\n}\n"


def _nested(*modules: tuple[str, str]) -> tuple[str, int] | None:
    sources = {f"m{n}.rego": f"package {pkg}\n\n{body}" for n, (pkg, body) in enumerate(modules)}
    packages = {name: (src.split()[1],) for name, src in sources.items()}
    return nested_with_data(sources, packages)


@pytest.mark.parametrize(
    "outer",
    [
        "r := x if {\n\tx := b with data.t.a as 2\n}\n",
        "r := x if {\n\tx := [y | y := data.t.b] with data.t.a as 2\n}\n",
        "c := b\n\nr := x if {\n\tx := c with data.t.a as 2\n}\n",
    ],
)
def test_with_data_over_a_rule_using_with_is_found(outer: str) -> None:
    source = f"package t\n\na := 1\n\n{_INNER}\n{outer}"
    found = _nested(("t", f"a := 1\n\n{_INNER}\n{outer}"))
    assert found is not None
    name, off = found
    assert name == "m0.rego"
    assert source[off:].startswith("with data.t.a")


def test_across_packages_and_imports() -> None:
    lib = ("lib", f"a := 1\n\n{_INNER}")
    main = ("t", "import data.lib\n\nr := x if {\n\tx := lib.b with data.lib.a as 2\n}\n")
    assert _nested(lib, main) is not None


@pytest.mark.parametrize(
    "modules",
    [
        # No inner `with`: the common test shape.
        [("t", f"a := 1\n\n{_PLAIN}\nr := x if {{\n\tx := b with data.t.a as 2\n}}\n")],
        # `with` in rules the outer expression does not reach.
        [
            ("t", f"a := 1\n\n{_PLAIN}\nr := x if {{\n\tx := b with data.t.a as 2\n}}\n"),
            ("u", "c := x if {\n\tx := 1 with input as {}\n}\n"),
        ],
        # Only `with input` outside.
        [("t", f"a := 1\n\n{_INNER}\nr := x if {{\n\tx := b with input as 2\n}}\n")],
    ],
)
def test_other_shapes_are_not_refused(modules: list[tuple[str, str]]) -> None:
    assert _nested(*modules) is None


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ("r := [x | some x in array.reverse(input.o); input.missing]", True),
        ('r := [1 | upper(input.o) == "a"; some x in [1]; input.missing]', True),
        ("r := [x | x := array.reverse(input.o)[_]; input.missing]", True),
        ("r := {x | some x in f(1)\n\tinput.missing\n}", True),
        # Depends on the iteration (directly or through y): evaluated in order.
        ("r := [y | some x in f(xs); y := x + 1; y > 2]", False),
        ('r := [x | some x in split(input.s, ","); startswith(x, "a")]', False),
        # Nothing before it may fail, or it cannot fail.
        ("r := [x | some x in input.xs; input.on]", False),
        ("r := [x | some x in f(1); y := 1]", False),
        ("r := [x | some x in [y | some y in input.l; is_object(y)]; input.on]", False),
    ],
)
def test_expressions_rego_cpp_hoists_past_a_failing_call(body: str, refused: bool) -> None:
    source = f"package t\n\n{body}\n"
    assert bool(lost_comprehension_errors(source)) is refused
