"""The token helpers the semantic checks and the refusals share."""

from __future__ import annotations

import pytest

from policysupply._internal.engines.rego_lexer import _enclosing_open, _ref_start, _tokens
from policysupply._internal.engines.rego_semantics import semantic_problems
from policysupply._internal.engines.rego_unsupported import _arg_index


def test_enclosing_open_finds_the_innermost_open_bracket() -> None:
    toks = list(_tokens('f(a, [b, g(c)], "s")'))
    texts = [t.text for t in toks]
    s = texts.index('"s"')
    assert _enclosing_open(toks, s) == 1  # f's `(`, past the closed `[...]`
    close = len(texts) - 1
    assert _enclosing_open(toks, close) == 1  # the bracket the last `)` closes
    assert _enclosing_open(toks, texts.index("c")) == texts.index("c") - 1
    assert _enclosing_open(toks, 0) is None
    assert _enclosing_open(toks, s, lo=2) is None  # not searched below lo


def test_ref_start_walks_back_over_a_dotted_name() -> None:
    toks = list(_tokens("x := a.b.c(1)"))
    texts = [t.text for t in toks]
    end = texts.index("c")
    assert _ref_start(toks, end) == texts.index("a")
    assert _ref_start(toks, end, lo=texts.index("b")) == texts.index("b")
    assert _ref_start(toks, texts.index("x")) == texts.index("x")


@pytest.mark.parametrize(
    ("source", "want"),
    [
        ('regex.match("a\\\\.b", x)', ("regex.match", 0)),
        ('regex.replace(s, "a.b", "-")', ("regex.replace", 1)),
        ('sprintf("%d", [n])', ("sprintf", 0)),
        ('f(g("s"))', ("g", 0)),
        ('f(["s"])', None),  # inside a list, not an argument
        ('f("s" + x)', None),  # not the end of the argument
        ('("s")', None),  # no function
        ('"s"', None),
    ],
)
def test_arg_index(source: str, want: tuple[str, int] | None) -> None:
    # Of the first string literal in the source.
    toks = list(_tokens(source))
    i = next(n for n, t in enumerate(toks) if t.kind in ("string", "raw"))
    assert _arg_index(toks, i) == want


@pytest.mark.parametrize(
    ("body", "reported"),
    [
        ("\tf(x) := 1", True),
        ("\ta.b.f(x) := 1", True),
        ("\tx := f(1)", False),
        ("\t[y] := [f(1)]", False),
    ],
)
def test_assignment_to_a_call(body: str, reported: bool) -> None:
    source = f"package m\n\nf(x) := x\n\nallow if {{\n{body}\n}}\n"
    diags = semantic_problems({"m.rego": source}, {"m.rego": ("m",)})
    assert any(d.message == "cannot assign to call" for d in diags) is reported
