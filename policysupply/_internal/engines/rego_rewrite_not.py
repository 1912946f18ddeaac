"""Rewrite stage: evaluate before a ``not`` what OPA evaluates outside it.

OPA's compiler binds dynamic terms to generated locals placed *before* the
expression that uses them (``rewriteExprTerms`` hoists nested calls,
``rewriteDynamicTerms`` the arguments of calls and the dynamic segments of
refs, ``rewriteWithModifiers`` ``with`` values that need evaluation). For a
negated expression those equalities land outside the negation, so an
undefined argument makes the body undefined instead of the negation true::

    not startswith(input.image, input.prefix)   # OPA: undefined without prefix

rego-cpp evaluates the whole expression under the ``not``. This stage writes
OPA's hoisting into the source: ``__psn0 = input.prefix; not startswith(
input.image, __psn0)`` (a one-line ``if`` body gets braces). What is hoisted:

* every call nested in the expression (not inside a comprehension);
* for a call expression (builtins, user functions, infix operators other than
  ``=``/``==``): each argument that is a ref, a name (a rule or an import; a
  local variable is bound before the ``not`` anyway) or a comprehension, and
  such items of collection arguments;
* for an equality or a bare term: the dynamic segments of refs
  (``input.xs[input.i]``) and the ref items of collection operands;
* a ``with`` value that is not a constant; the other hoisted equalities carry
  the expression's ``with`` clauses, as OPA's do.

A module that enables not-bodies (``import future.keywords.not``,
``import future.keywords``, ``import rego.v2``) is left alone: OPA then
hoists inside the negation, as rego-cpp evaluates it. A negated expression
this module cannot parse with confidence is refused
(``UnsupportedByEngineError``) rather than guessed at.
"""

from __future__ import annotations

import attrs

from policysupply._internal.engines.rego_lexer import _KEYWORDS, _Tok, _tokens, line_of
from policysupply.errors import BundleError, UnsupportedByEngineError

PREFIX = "__psn"

_ADVICE = "use the OPA engine (engine='opa')"

_RELATIONS = ("==", "!=", "<", ">", "<=", ">=")
# Binary operators by precedence, lowest first (`in` is handled apart).
_LEVELS: tuple[tuple[str, ...], ...] = (_RELATIONS, ("|",), ("&",), ("+", "-"), ("*", "/", "%"))
_SCALARS = frozenset({"true", "false", "null"})
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
# Keywords after which a `-1` token is a negative number, not a subtraction.
_NOT_TERM_END = _KEYWORDS - _SCALARS


class _Rejected(Exception):
    """OPA rejects the module: ``message`` is its error."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


_ILLEGAL_NEGATIONS = {
    "not": "unexpected not keyword",
    "some": "unexpected some keyword: illegal negation of 'some'",
    "every": "unexpected every keyword: illegal negation of 'every'",
}


class _Unparsed(Exception):
    """The negated expression is outside what this stage reads with confidence."""

    def __init__(self, why: str, offset: int) -> None:
        super().__init__(why)
        self.why = why
        self.offset = offset


@attrs.frozen
class _Node:
    """A term of a negated expression: tokens ``lo`` up to (excluding) ``hi``.

    ``kind``: ``scalar``, ``var``, ``ref`` (``children``: the head, then the
    bracketed segments), ``call`` (``children``: the arguments; ``op`` names an
    infix operator, ``-`` a unary minus), ``array``, ``set``, ``object``
    (``children``: keys and values), ``compr`` (a comprehension, opaque) or
    ``paren`` (``children``: the inner term).
    """

    kind: str
    lo: int
    hi: int
    children: tuple[_Node, ...] = ()
    op: str = ""
    name: str = ""


def rewrite_not(source: str) -> str:
    """Returns ``source`` with what OPA evaluates outside each ``not`` hoisted before it.

    Raises:
        UnsupportedByEngineError: A negated expression this stage cannot read
            (naming its line; the embedded engine adds the module).
    """
    if "not" not in source:
        return source
    toks = _split_minus(list(_tokens(source)))
    if not any(_is_not(toks, k) for k in range(len(toks))) or _not_bodies(toks):
        return source
    return _Rewriter(source, toks).text()


def negates(query: str) -> bool:
    """Whether a query holds a ``not`` (a negated expression)."""
    if "not" not in query:
        return False
    toks = list(_tokens(query))
    return any(_is_not(toks, k) for k in range(len(toks)))


def _is_not(toks: list[_Tok], k: int) -> bool:
    """``toks[k]`` negates, not a ref segment (``a.not``) nor a rule named so (``not.foo``)."""
    tok = toks[k]
    if tok.kind != "ident" or tok.text != "not" or (k > 0 and toks[k - 1].text == "."):
        return False
    return not (k + 1 < len(toks) and toks[k + 1].text == "." and _adjacent(toks, k, k + 1))


def _not_bodies(toks: list[_Tok]) -> bool:
    """The module imports a keyword set that makes OPA parse ``not`` over a body."""
    for k, tok in enumerate(toks):
        if tok.text != "import":
            continue
        path: list[str] = []
        j = k + 1
        while j < len(toks) and toks[j].kind == "ident":
            path.append(toks[j].text)
            if j + 1 < len(toks) and toks[j + 1].text == "." and _adjacent(toks, j, j + 1):
                j += 2
            else:
                break
        if path in (["future", "keywords"], ["future", "keywords", "not"], ["rego", "v2"]):
            return True
    return False


def _adjacent(toks: list[_Tok], a: int, b: int) -> bool:
    return toks[a].offset + len(toks[a].text) == toks[b].offset


def _ends_term(tok: _Tok) -> bool:
    if tok.kind == "ident":
        return tok.text not in _NOT_TERM_END
    return tok.kind in ("number", "string", "raw") or tok.text in (")", "]", "}")


def _split_minus(toks: list[_Tok]) -> list[_Tok]:
    """Splits a ``-1`` the lexer read after a term into ``-`` and ``1`` (``a-1``)."""
    out: list[_Tok] = []
    for tok in toks:
        if tok.kind == "number" and tok.text.startswith("-") and out and _ends_term(out[-1]):
            out.append(_Tok("op", "-", tok.offset))
            out.append(_Tok("number", tok.text[1:], tok.offset + 1))
        else:
            out.append(tok)
    return out


class _Parser:
    """Rego's expression grammar over tokens, enough to know what OPA hoists."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks

    def _text(self, k: int) -> str:
        return self.toks[k].text if k < len(self.toks) else ""

    def _fail(self, why: str, k: int) -> _Unparsed:
        off = self.toks[min(k, len(self.toks) - 1)].offset
        return _Unparsed(why, off)

    def _expect(self, k: int, text: str) -> int:
        if self._text(k) != text:
            raise self._fail(f"expected {text!r}", k)
        return k + 1

    def expr(self, k: int) -> tuple[_Node, int]:
        """``a in b`` (lowest precedence) and everything above it."""
        lhs, k = self.binary(k, 0)
        while self._text(k) == "in" and self.toks[k].kind == "ident":
            rhs, k = self.binary(k + 1, 0)
            lhs = _Node("call", lhs.lo, k, (lhs, rhs), op="in")
        return lhs, k

    def binary(self, k: int, level: int) -> tuple[_Node, int]:
        if level == len(_LEVELS):
            return self.term(k)
        lhs, k = self.binary(k, level + 1)
        while self._text(k) in _LEVELS[level] and self.toks[k].kind == "op":
            op = self.toks[k].text
            rhs, k = self.binary(k + 1, level + 1)
            lhs = _Node("call", lhs.lo, k, (lhs, rhs), op=op)
        return lhs, k

    def term(self, k: int) -> tuple[_Node, int]:
        if k >= len(self.toks):
            raise self._fail("unexpected end of the module", k)
        tok = self.toks[k]
        node: _Node
        if tok.text == "-" and tok.kind == "op":
            nxt = self.toks[k + 1] if k + 1 < len(self.toks) else None
            if nxt is not None and nxt.kind == "ident" and _adjacent(self.toks, k, k + 1):
                inner, j = self.finish(_Node("var", k + 1, k + 2, name=nxt.text), k + 2)
                return _Node("call", k, j, (inner,), op="-"), j
            if nxt is not None and nxt.kind == "number" and _adjacent(self.toks, k, k + 1):
                return _Node("scalar", k, k + 2), k + 2
            raise self._fail("a unary minus on something other than a name or number", k)
        if tok.kind in ("number", "string", "raw") or tok.text in _SCALARS:
            node, k = _Node("scalar", k, k + 1), k + 1
        elif tok.kind == "ident" and (tok.text not in _KEYWORDS or tok.text == "contains"):
            # `contains` is a keyword in rule heads only (the builtin elsewhere).
            node, k = _Node("var", k, k + 1, name=tok.text), k + 1
        elif tok.text == "[":
            node, k = self.collection(k, "]")
        elif tok.text == "{":
            node, k = self.collection(k, "}")
        elif tok.text == "(":
            inner, j = self.expr(k + 1)
            j = self._expect(j, ")")
            node, k = _Node("paren", k, j, (inner,)), j
        else:
            raise self._fail(f"unexpected {tok.text!r}", k)
        return self.finish(node, k)

    def finish(self, node: _Node, k: int) -> tuple[_Node, int]:
        """Ref segments (``.a``, ``[e]``) and calls (``f(x)``) written right after a term."""
        segments: list[_Node] = []
        head = node
        while k < len(self.toks) and _adjacent(self.toks, k - 1, k):
            text = self.toks[k].text
            if text == "." and k + 1 < len(self.toks) and self.toks[k + 1].kind == "ident":
                k += 2
            elif text == "[":
                seg, k = self.expr(k + 1)
                k = self._expect(k, "]")
                segments.append(seg)
            elif text == "(":
                if head.kind != "var" or segments:
                    raise self._fail("a call of something other than a function name", k)
                args, k = self.items(k + 1, ")")
                head, segments = _Node("call", node.lo, k, tuple(args)), []
            else:
                break
        if head is node and not segments and k == node.hi:
            return node, k
        if head.kind == "call" and k == head.hi:
            return head, k
        return _Node("ref", node.lo, k, (head, *segments)), k

    def items(self, k: int, close: str) -> tuple[list[_Node], int]:
        """Comma-separated expressions up to ``close`` (a trailing comma allowed)."""
        out: list[_Node] = []
        while self._text(k) != close:
            item, k = self.expr(k)
            out.append(item)
            if self._text(k) == ",":
                k += 1
            elif self._text(k) != close:
                raise self._fail(f"expected ',' or {close!r}", k)
        return out, k + 1

    def collection(self, k: int, close: str) -> tuple[_Node, int]:
        end = self._matching(k)
        if any(self.toks[j].text == "|" and self._depth_one(k, j) for j in range(k + 1, end)):
            return _Node("compr", k, end + 1), end + 1
        if close == "]":
            arr, j = self.items(k + 1, "]")
            return _Node("array", k, j, tuple(arr)), j
        if self._text(k + 1) == "}":
            return _Node("object", k, k + 2), k + 2
        first, j = self.expr(k + 1)
        if self._text(j) != ":":
            rest, j = self.items(j + 1, "}") if self._text(j) == "," else ([], self._expect(j, "}"))
            return _Node("set", k, j, (first, *rest)), j
        pairs: list[_Node] = [first]
        value, j = self.expr(j + 1)
        pairs.append(value)
        while self._text(j) == ",":
            if self._text(j + 1) == "}":
                j += 1
                break
            key, j = self.expr(j + 1)
            j = self._expect(j, ":")
            value, j = self.expr(j)
            pairs += [key, value]
        j = self._expect(j, "}")
        return _Node("object", k, j, tuple(pairs)), j

    def _matching(self, k: int) -> int:
        depth = 0
        for j in range(k, len(self.toks)):
            text = self.toks[j].text
            if text in _CLOSERS:
                depth += 1
            elif text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    if text != _CLOSERS[self.toks[k].text]:
                        raise self._fail("mismatched brackets", j)
                    return j
        raise self._fail("an unclosed bracket", k)

    def _depth_one(self, k: int, j: int) -> bool:
        depth = 0
        for m in range(k, j):
            text = self.toks[m].text
            if text in _CLOSERS:
                depth += 1
            elif text in (")", "]", "}"):
                depth -= 1
        return depth == 1


@attrs.frozen
class _With:
    target_lo: int
    value: _Node


class _Rewriter:
    def __init__(self, source: str, toks: list[_Tok]) -> None:
        self.source = source
        self.toks = toks
        self.parser = _Parser(toks)
        self.count = 0

    def text(self) -> str:
        try:
            body, _ = self.emit(0, len(self.toks), {}, flat=False)
        except _Rejected as exc:
            raise BundleError(exc.message, line=line_of(self.source, exc.offset)) from None
        except _Unparsed as exc:
            line = line_of(self.source, exc.offset)
            raise UnsupportedByEngineError(
                "the embedded engine cannot evaluate a negated expression (`not ...`) "
                f"at line {line} exactly as OPA does ({exc.why}); {_ADVICE}",
                line=line,
            ) from None
        head = self.source[: self.toks[0].offset]
        tail = self.source[self._end(len(self.toks) - 1) :]
        return head + body + tail

    def _end(self, k: int) -> int:
        return self.toks[k].offset + len(self.toks[k].text)

    def _gap(self, k: int, flat: bool) -> str:
        """The source between token ``k - 1`` and token ``k``."""
        gap = self.source[self._end(k - 1) : self.toks[k].offset]
        if flat and ("\n" in gap or "#" in gap):
            return " "
        return gap

    def emit(
        self, lo: int, hi: int, subst: dict[int, tuple[int, str]], *, flat: bool
    ) -> tuple[str, int]:
        """Rewritten text of tokens ``lo`` to ``hi`` (no gap before ``lo``).

        ``subst`` maps a token index to (end, name): that span becomes the
        generated name, followed by the newlines it held. ``flat`` writes
        newlines and comments as spaces (text copied before a ``not``).
        """
        out: list[str] = []
        k = lo
        while k < hi:
            if k > lo:
                out.append(self._gap(k, flat))
            if k in subst:
                end, name = subst[k]
                held = self.source[self.toks[k].offset : self._end(end - 1)].count("\n")
                out.append(name + ("" if flat else "\n" * held))
                k = end
            elif _is_not(self.toks, k):
                text, k = self.negation(k)
                out.append(text)
            else:
                out.append(self.toks[k].text)
                k += 1
        return "".join(out), k

    def negation(self, k: int) -> tuple[str, int]:
        """The ``not`` statement at token ``k``, rewritten; and the index past it."""
        prev = self.toks[k - 1] if k > 0 else None
        one_line = prev is not None and prev.text == "if"
        newline_before = prev is None or "\n" in self.source[self._end(k - 1) : self.toks[k].offset]
        if not (one_line or newline_before or prev is None or prev.text in ("{", ";", "|")):
            raise self.parser._fail("a `not` that does not start an expression", k)
        after = self.parser._text(k + 1)
        if after in _ILLEGAL_NEGATIONS:
            # OPA's parse errors (not hoisting matters, but the message).
            raise _Rejected(_ILLEGAL_NEGATIONS[after], self.toks[k + 1].offset)
        expr, j = self.parser.expr(k + 1)
        if self.parser._text(j) in (":=", "="):
            if self.parser._text(j) == ":=":
                raise self.parser._fail("an assignment under `not`", j)
            rhs, j = self.parser.expr(j + 1)
            expr = _Node("call", expr.lo, j, (expr, rhs), op="=")
        withs: list[_With] = []
        while self.parser._text(j) == "with" and self.toks[j].kind == "ident":
            target, j = self.parser.term(j + 1)
            j = self.parser._expect(j, "as")
            value, j = self.parser.expr(j)
            withs.append(_With(target.lo, value))
        self._check_end(j, one_line)
        if j == k + 1:
            raise self.parser._fail("an empty negation", k)
        wildcard = _wildcard(expr)
        if wildcard is not None:
            # OPA checks safety before hoisting: a wildcard is never bound
            # outside the negation (hoisted, rego-cpp would iterate it).
            raise _Rejected("var _ is unsafe", self.toks[wildcard].offset)
        hoists = self._hoists(expr, withs)
        # A term hoisted with a larger one starting where it starts (the call
        # heading `f(x).a`) is evaluated as part of it.
        hoists = [n for i, n in enumerate(hoists) if not any(m.lo == n.lo for m in hoists[i + 1 :])]
        subst: dict[int, tuple[int, str]] = {}
        names: list[tuple[str, _Node, dict[int, tuple[int, str]]]] = []
        for node in hoists:
            name = f"{PREFIX}{self.count}"
            self.count += 1
            # Earlier hoists inside this term (a call in a ref's brackets).
            inner = {lo: v for lo, v in subst.items() if node.lo < lo and v[0] <= node.hi}
            subst[node.lo] = (node.hi, name)
            names.append((name, node, inner))
        with_lo = withs[0].target_lo - 1 if withs else j
        with_text = ""
        if withs:
            with_text, _ = self.emit(with_lo, j, subst, flat=True)
            with_text = " " + with_text
        prefix: list[str] = []
        for name, node, inner in names:
            self._check_flat(node)
            copied, _ = self.emit(node.lo, node.hi, inner, flat=True)
            is_with_value = any(w.value is node for w in withs)
            prefix.append(f"{name} = {copied}{'' if is_with_value else with_text}; ")
        negated, _ = self.emit(k + 1, j, subst, flat=False)
        text = "".join(prefix) + "not" + self._gap(k + 1, flat=False) + negated
        return ("{ " + text + " }" if one_line and prefix else text), j

    def _check_end(self, j: int, one_line: bool) -> None:
        if j >= len(self.toks):
            return
        text = self.toks[j].text
        if "\n" in self.source[self._end(j - 1) : self.toks[j].offset]:
            return
        if text in ("}", "]") or (text == ";" and not one_line) or (text == "else" and one_line):
            return
        raise self.parser._fail(f"unexpected {text!r} after the negated expression", j)

    def _check_flat(self, node: _Node) -> None:
        """A term copied onto one line must not rely on its newlines."""
        if any("\n" in self.toks[k].text for k in range(node.lo, node.hi)):
            raise self.parser._fail("a raw string over several lines to hoist", node.lo)
        if node.kind == "compr":
            if "\n" in self.source[self.toks[node.lo].offset : self._end(node.hi - 1)]:
                raise self.parser._fail("a comprehension over several lines to hoist", node.lo)
            return
        for child in node.children:
            self._check_flat(child)

    def _hoists(self, expr: _Node, withs: list[_With]) -> list[_Node]:
        """The terms OPA binds before the negated expression, in evaluation order."""
        out = [w.value for w in withs if not _constant(w.value)]
        top = _unparen(expr)
        operands = list(top.children) if top.kind == "call" else [top]
        calls: list[_Node] = []
        for operand in operands:
            _nested_calls(operand, calls)
        out += calls
        hoisted = {id(n) for n in calls}
        dynamic: list[_Node] = []
        if top.kind == "call" and top.op not in ("=", "=="):
            for operand in operands:
                _dynamic_arg(operand, hoisted, dynamic)
        else:
            for operand in operands:
                _dynamic_in_term(operand, hoisted, dynamic)
        return out + dynamic


def _wildcard(node: _Node) -> int | None:
    """The token of a ``_`` in ``node``, outside comprehensions."""
    if node.kind == "var" and node.name == "_":
        return node.lo
    for child in node.children:
        found = _wildcard(child)
        if found is not None:
            return found
    return None


def _unparen(node: _Node) -> _Node:
    while node.kind == "paren":
        node = node.children[0]
    return node


def _constant(node: _Node) -> bool:
    if node.kind in ("scalar",):
        return True
    if node.kind in ("array", "set", "object", "paren"):
        return all(_constant(c) for c in node.children)
    return False


def _nested_calls(node: _Node, out: list[_Node]) -> None:
    """Calls OPA's ``rewriteExprTerms`` binds first; a collection or call heading a ref too."""
    inner = _unparen(node)
    if inner.kind == "call":
        out.append(node)
    elif inner.kind == "ref":
        head, *segments = inner.children
        if _unparen(head).kind in ("call", "array", "set", "object", "compr"):
            out.append(head)
        for seg in segments:
            _nested_calls(seg, out)
    elif inner.kind in ("array", "set", "object"):
        for child in inner.children:
            _nested_calls(child, out)


def _dynamic_arg(node: _Node, hoisted: set[int], out: list[_Node]) -> None:
    """OPA's ``rewriteDynamicsOne``: refs, names and comprehensions are bound first."""
    if id(node) in hoisted:
        return
    inner = _unparen(node)
    if inner.kind in ("ref", "compr"):
        out.append(node)
    elif inner.kind == "var":
        if inner.name != "_":
            out.append(node)
    elif inner.kind in ("array", "set", "object"):
        for child in inner.children:
            _dynamic_arg(child, hoisted, out)


def _dynamic_in_term(node: _Node, hoisted: set[int], out: list[_Node]) -> None:
    """OPA's ``rewriteDynamicsInTerm``: a ref keeps its head, its segments are bound."""
    if id(node) in hoisted:
        return
    inner = _unparen(node)
    if inner.kind == "ref":
        for seg in inner.children[1:]:
            _dynamic_arg(seg, hoisted, out)
    elif inner.kind in ("array", "set", "object"):
        _dynamic_arg(inner, hoisted, out)
