"""Rewrite stage: the order of an array comprehension's solutions, as OPA's.

OPA evaluates a body's expressions in order, so in ``[[x, y] | some x in xs;
some y in ys]`` the first generator varies slowest. rego-cpp schedules
independent generators itself and may nest them the other way round
(``[[1, "a"], [2, "a"], ...]``). Where the order is observable, in an array
comprehension, this stage makes every generator after the first depend on
a variable the one before it binds, through an identity function::

    [[x, y] | some x in xs; some y in __psg(ys, x)]

``__psg(d, _) := d`` changes no value, but rego-cpp evaluates a statement
only once its variables are bound, which restores OPA's nesting.

A generator is a ``some x in E`` statement or a statement iterating a
reference (``E[_]``, ``E[k]``); a ``_`` index is renamed to a fresh
variable so the next generator can depend on it. A comprehension with
several generators where one cannot be threaded this way is refused
(UnsupportedByEngineError), not guessed.
"""

from __future__ import annotations

from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.embedded_refusals import ADVICE
from policysupply._internal.engines.rego_lexer import (
    _KEYWORDS,
    _Tok,
    _tokens,
    line_of,
    matching_close,
)

_HELPER = "__psg"
_DEFINITION = f"\n\n{_HELPER}(d, _) := d\n"
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}


def _comprehension_bar(toks: list[_Tok], open_idx: int, close_idx: int) -> int | None:
    """Index of the ``|`` of the array comprehension ``toks[open_idx:close_idx+1]``."""
    depth = 0
    for k in range(open_idx + 1, close_idx):
        t = toks[k].text
        if t in _OPEN:
            depth += 1
        elif t in _CLOSE:
            depth -= 1
        elif t == "|" and depth == 0:
            return k
    return None


def _statements(source: str, toks: list[_Tok], lo: int, hi: int) -> list[tuple[int, int]]:
    """Token ranges of the body statements in ``toks[lo:hi]`` (``;`` or newline)."""
    out: list[tuple[int, int]] = []
    depth = 0
    start = lo
    for k in range(lo, hi):
        t = toks[k].text
        if depth == 0 and k > start:
            prev = toks[k - 1]
            if "\n" in source[prev.offset + len(prev.text) : toks[k].offset]:
                out.append((start, k))
                start = k
        if t in _OPEN:
            depth += 1
        elif t in _CLOSE:
            depth -= 1
        elif t == ";" and depth == 0:
            if k > start:
                out.append((start, k))
            start = k + 1
    if hi > start:
        out.append((start, hi))
    return out


def _ref_head(toks: list[_Tok], end: int, lo: int) -> int | None:
    """First token of the term (reference, call or literal) whose last token is ``toks[end]``."""
    k = end
    while k >= lo:
        t = toks[k]
        if t.text in _CLOSE:
            depth = 0
            j = k
            while j >= lo:
                if toks[j].text in _CLOSE:
                    depth += 1
                elif toks[j].text in _OPEN:
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            if j < lo:
                return None
            if toks[j].text == "(" and j > lo and toks[j - 1].kind == "ident":
                k = j - 1  # a call: its (dotted) name comes before the parenthesis
                continue
            if toks[j].text == "[" and _is_index(toks, j, lo):
                k = j - 1
                continue
            return j  # a literal collection or a parenthesised expression
        if t.kind in ("string", "raw"):
            return k
        if t.kind == "ident" and t.text not in _KEYWORDS:
            if k - 2 >= lo and toks[k - 1].text == ".":
                k -= 2
                continue
            return k
        return None
    return None


def _is_index(toks: list[_Tok], i: int, lo: int) -> bool:
    """``toks[i]`` is a ``[`` that indexes the term before it (not an array literal)."""
    if i <= lo:
        return False
    prev = toks[i - 1]
    return (prev.kind == "ident" and prev.text not in _KEYWORDS) or prev.text in ("]", ")", "}")


class _Generator:
    __slots__ = ("bound", "domain", "fresh")

    def __init__(self, domain: tuple[int, int], bound: str | None, fresh: int | None) -> None:
        self.domain = domain  # token range to wrap (start, exclusive end)
        self.bound = bound  # a variable this generator binds
        self.fresh = fresh  # index of a `_` index to rename, if any


def _assigned(toks: list[_Tok], a: int, b: int) -> str | None:
    """``x`` for a statement ``x := ...`` or ``x = ...``."""
    if b - a > 2 and toks[a].kind == "ident" and toks[a + 1].text in (":=", "="):
        return toks[a].text
    return None


def _generator(toks: list[_Tok], a: int, b: int, bound: set[str]) -> _Generator | str | None:
    """The generator in statement ``toks[a:b]``: ``None`` if none, a reason if unsure."""
    if toks[a].text == "some":
        at = next((k for k in range(a + 1, b) if toks[k].text == "in"), None)
        if at is None:
            return None  # `some x`: a declaration
        if at + 1 >= b or toks[a + 1].kind != "ident":
            return "a domain it cannot read"
        return _Generator((at + 1, b), toks[a + 1].text, None)
    if toks[a].text == "every":
        return None
    # Reference iteration: `E[_]` or `E[v]` with v not bound in this body.
    found: _Generator | None = None
    depth = 0
    k = a
    while k < b:
        t = toks[k].text
        if t in _OPEN:
            close = matching_close(toks, k)
            if close is None or close >= b:
                return "unbalanced brackets"
            if t in ("[", "{") and _comprehension_bar(toks, k, close) is not None:
                k = close + 1  # a nested comprehension is a value, with its own body
                continue
            if _is_index(toks, k, a) and close == k + 2 and toks[k + 1].kind == "ident":
                var = toks[k + 1].text
                if var == "_" or var not in bound:
                    if depth > 0 or found is not None:
                        return "an iteration inside a call, a collection or another iteration"
                    head = _ref_head(toks, k - 1, a)
                    if head is None:
                        return "an iteration over an expression it cannot read"
                    fresh = k + 1 if var == "_" else None
                    name = _assigned(toks, a, b) or (None if var == "_" else var)
                    found = _Generator((head, k), name, fresh)
                    k = close + 1
                    continue
            depth += 1
        elif t in _CLOSE:
            depth -= 1
        k += 1
    return found


def rewrite_nesting(source: str) -> str:
    """Threads the generators of every array comprehension in ``source`` (see module doc)."""
    toks = list(_tokens(source))
    edits: list[tuple[int, int, str]] = []  # (start offset, end offset, text)
    counter = 0
    for i, tok in enumerate(toks):
        if tok.text != "[" or _is_index(toks, i, 0):
            continue
        close = matching_close(toks, i)
        bar = None if close is None else _comprehension_bar(toks, i, close)
        if close is None or bar is None:
            continue
        bound: set[str] = set()
        gens: list[_Generator] = []
        reason: str | None = None
        unsure = 0
        for a, b in _statements(source, toks, bar + 1, close):
            g = _generator(toks, a, b, bound)
            if isinstance(g, str):
                reason = reason or g
                unsure += 1
                continue
            if toks[a].text == "some" and g is not None:
                bound.update(t.text for t in toks[a + 1 : g.domain[0] - 1] if t.kind == "ident")
            name = _assigned(toks, a, b)
            if name:
                bound.add(name)
            if g is not None:
                if g.fresh is not None:
                    counter += 1
                    g.bound = g.bound or f"{_HELPER}_v{counter}"
                bound.add(g.bound or "")
                gens.append(g)
        if len(gens) + unsure < 2:
            continue
        if reason is not None or any(g.bound is None for g in gens[:-1]):
            raise UnsupportedByEngineError(
                "the embedded engine cannot evaluate an array comprehension with several "
                f"generators ({reason or 'one binds no variable'}) in OPA's order; "
                f"{ADVICE}",
                line=line_of(source, tok.offset),
            )
        for n, g in enumerate(gens):
            if g.fresh is not None and g.bound and g.bound.startswith(_HELPER):
                ft = toks[g.fresh]
                edits.append((ft.offset, ft.offset + 1, g.bound))
            if n == 0:
                continue
            s, e = g.domain
            start = toks[s].offset
            end = toks[e - 1].offset + len(toks[e - 1].text)
            before = ", ".join(str(p.bound) for p in gens[:n])
            edits.append((start, start, f"{_HELPER}("))
            edits.append((end, end, f", [{before}])"))
    if not edits:
        return source
    out = source
    # Right to left, so earlier offsets stay valid; at one offset, a closing
    # insertion (end of an inner domain) goes before an opening one.
    for start, end, text in sorted(
        edits, key=lambda e: (e[0], e[1], e[2].startswith(",")), reverse=True
    ):
        out = out[:start] + text + out[end:]
    return out.rstrip("\n") + _DEFINITION
