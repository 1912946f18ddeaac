"""Rego's tokens: a tiny lexer without a Rego parser, and helpers over its tokens.

Enough to find the package path, rule bodies, calls and their arguments; the
static checks of ``rego_source`` and its sibling modules are built on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:=|==|!=|<=|>=|[{}()\[\].,;:=<>+\-*/%|&!])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@attrs.frozen
class _Tok:
    kind: str
    text: str
    offset: int


def _tokens(source: str) -> Iterator[_Tok]:
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or "other"
        if kind in ("ws", "comment"):
            continue
        yield _Tok(kind, m.group(), m.start())


def line_of(source: str, offset: int) -> int:
    """Returns the 1-based line of character ``offset`` in ``source``."""
    return source.count("\n", 0, offset) + 1


def tok_offset(toks: list[_Tok], i: int) -> int:
    return toks[i].offset


def _lines_first_tokens(toks: list[_Tok], source: str) -> set[int]:
    """Indexes of the tokens that start a line."""
    firsts: set[int] = set()
    last_end = -1
    for i, tok in enumerate(toks):
        # A newline between the previous token and this one starts a line.
        if i == 0 or "\n" in source[last_end : tok.offset]:
            firsts.add(i)
        last_end = tok.offset + len(tok.text)
    return firsts


def _call_args(toks: list[_Tok], open_idx: int) -> list[tuple[int, int]]:
    """Token ranges of the arguments of the call whose ``(`` is at ``open_idx``."""
    args: list[tuple[int, int]] = []
    depth = 0
    start = open_idx + 1
    for k in range(open_idx, len(toks)):
        t = toks[k].text
        if t in ("(", "[", "{"):
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                if k > start:
                    args.append((start, k))
                return args
        elif t == "," and depth == 1:
            args.append((start, k))
            start = k + 1
    return args


def matching_close(toks: list[_Tok], open_idx: int, hi: int | None = None) -> int | None:
    """Index of the bracket closing ``toks[open_idx]``, searching before ``hi``."""
    depth = 0
    for k in range(open_idx, len(toks) if hi is None else hi):
        if toks[k].text in ("(", "[", "{"):
            depth += 1
        elif toks[k].text in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return k
    return None


def _enclosing_open(toks: list[_Tok], i: int, lo: int = 0) -> int | None:
    """Index of the innermost bracket still open at ``toks[i]``, searching back to ``lo``.

    For ``i`` just past a closing bracket, that is the bracket it closes.
    ``None`` when no bracket at or after ``lo`` encloses ``i``.
    """
    depth = 0
    for k in range(i - 1, lo - 1, -1):
        t = toks[k].text
        if t in (")", "]", "}"):
            depth += 1
        elif t in ("(", "[", "{"):
            if depth == 0:
                return k
            depth -= 1
    return None


def _ref_start(toks: list[_Tok], end: int, lo: int = 0) -> int:
    """Index of the first name of the dotted reference (``a.b.c``) ending at ``toks[end]``."""
    start = end
    while start - 2 >= lo and toks[start - 1].text == "." and toks[start - 2].kind == "ident":
        start -= 2
    return start


_KEYWORDS = frozenset(
    {
        "if",
        "else",
        "not",
        "some",
        "every",
        "in",
        "contains",
        "with",
        "as",
        "default",
        "import",
        "package",
        "true",
        "false",
        "null",
    }
)
