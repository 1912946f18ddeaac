"""Syntax as OPA reads it.

Rego v1's ``if`` before rule bodies, syntax errors found before rego-cpp
parses, and the line OPA reports for a parse error.
"""

from __future__ import annotations

import itertools

from policysupply._internal.engines.rego_lexer import (
    _Tok,
    _tokens,
    line_of,
)

# A "{" at the top level that follows one of these opens a value (object or
# set literal, comprehension), not a rule body.
_VALUE_OPENERS = frozenset(
    {
        ":=",
        "=",
        "==",
        "!=",
        "<=",
        ">=",
        "<",
        ">",
        ",",
        "(",
        "[",
        "{",
        ":",
        "|",
        "&",
        "+",
        "-",
        "*",
        "/",
        "%",
        "if",
        "contains",
        "in",
        "with",
        "as",
        "not",
        "some",
    }
)


def _opens_body(prev: _Tok) -> bool:
    if prev.text == "else":
        return True
    if prev.text in _VALUE_OPENERS:
        return False
    return prev.kind in ("ident", "string", "raw", "number") or prev.text in (")", "]", "}")


def v1_body_without_if(source: str) -> int | None:
    """Returns the offset of a top-level rule body not introduced by ``if``, if any.

    Rego v1 requires ``if`` before every rule body (and after ``else``); OPA
    refuses such modules but rego-cpp accepts them, so a v1 module would pass
    ``check()`` here and fail in OPA without this.
    """
    depth = 0
    prev: _Tok | None = None
    for tok in _tokens(source):
        if tok.text in ("(", "[", "{"):
            if tok.text == "{" and depth == 0 and prev is not None and _opens_body(prev):
                return tok.offset
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        prev = tok
    return None


_INFIX = frozenset({"==", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", ":=", "=", "|", "&"})


_HEAD_KEYWORDS = frozenset({"contains", "if", "else", "default", "import", "package"})


def syntax_problem(source: str) -> tuple[int, str] | None:
    """(line, OPA's message) for syntax errors found before rego-cpp parses."""
    toks = list(_tokens(source))
    if not toks or toks[0].text != "package":
        return (line_of(source, toks[0].offset) if toks else 1, "package expected")
    for tok in toks:
        if tok.kind == "other" and tok.text == '"':
            return (line_of(source, tok.offset), "non-terminated string")
    return None


def opa_error_line(source: str, byte_offset: int, message: str) -> int:
    """The line OPA reports for a parse error rego-cpp reports at ``byte_offset``.

    The parsers point at different tokens of the same mistake: OPA at the
    first token that cannot continue the statement.
    """
    offset = len(source.encode("utf-8")[:byte_offset].decode("utf-8", "ignore"))
    toks = list(_tokens(source))
    at = next((i for i, t in enumerate(toks) if t.offset >= offset), None)
    if at is None:
        return line_of(source, offset)
    tok = toks[at]
    if message == "this is unclosed" and tok.text == "{":
        # OPA reads on through the body until a rule-head keyword.
        depth = 0
        for t in toks[at:]:
            if t.text in ("(", "[", "{"):
                depth += 1
            elif t.text in (")", "]", "}"):
                depth -= 1
            elif depth == 1 and t.text in _HEAD_KEYWORDS:
                return line_of(source, t.offset)
        return line_of(source, len(source))
    if message == "Invalid import" and tok.text == "import":
        # `import x as` then a newline: OPA takes the next word as the alias
        # and fails on the token after it.
        k = at + 1
        while (
            k < len(toks)
            and toks[k].text != "as"
            and line_of(source, toks[k].offset) == line_of(source, tok.offset)
        ):
            k += 1
        if (
            k + 2 < len(toks)
            and toks[k].text == "as"
            and line_of(source, toks[k + 1].offset) != line_of(source, toks[k].offset)
        ):
            return line_of(source, toks[k + 2].offset)
    # An infix operator with its right operand missing: OPA skips the
    # newline and fails on the next token.
    for t, nxt in itertools.pairwise(toks[at:]):
        if (
            t.text in _INFIX
            and line_of(source, nxt.offset) > line_of(source, t.offset)
            and (nxt.text in (")", "]", "}") or nxt.kind == "other")
        ):
            return line_of(source, nxt.offset)
        if line_of(source, t.offset) > line_of(source, tok.offset):
            break
    return line_of(source, offset)
