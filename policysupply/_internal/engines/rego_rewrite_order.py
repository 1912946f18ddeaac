"""Rewrite stage: OPA's ordering of values for ``<``, ``<=``, ``>``, ``>=`` and ``sort``.

rego-cpp orders values of different types its own way (``"a" < 7`` is true
there, ``sort`` puts strings before numbers) and orders arrays and objects
unlike OPA (``[2] < [1, 2]`` is true there). OPA orders
``null < boolean < number < string < array < object < set``; arrays element
by element then by length; objects by their key-sorted (key, value) pairs
then by size; sets by their sorted elements then by size
(``v1/ast/compare.go``).

This stage rewrites every infix ordering operator into a call of a helper
function (``a < b`` → ``__pso_lt(a, b)``, likewise ``__pso_le``, ``__pso_gt``,
``__pso_ge``) and every call of the builtin ``sort`` into ``__pso_sort``, and
appends the helpers (Rego functions, in the module's own package) after the
module's last line. Same-type numbers and strings keep rego-cpp's native
comparison (it agrees with OPA there: plain ASCII strings, numbers below
2^53); values of different types compare by OPA's type rank; arrays compare
element by element. Two objects, two sets, or arrays whose elements at the
deciding position are collections of one type make the helpers fail
evaluation with an error naming ``UNSUPPORTED_MARK``, which the engine
reports as ``UnsupportedByEngineError`` (see ``_COMPARE`` for why).

Operands are found on the lexer's tokens with OPA's precedence: an operand
extends over ``|``, ``&``, ``+``, ``-``, ``*``, ``/``, ``%``, references and
calls; relations chain to the left (``a == b < c`` is ``(a == b) < c``).
Only text within lines changes; no token moves to another line.

Other stages may call ``__pso_sort(x)`` (OPA's ``sort``: an array or set in,
a sorted array out; a non-collection is rego-cpp's type error; two objects
or two sets among the elements are refused as above) or ``__pso_lt(a, b)``
and friends in their output. A stage running before this one only writes
the call: this stage appends the definitions to any module that calls one.
A stage running after it passes its output through ``with_helpers``.
Helpers are kept in one module per package (``dedupe_helpers``, applied by
the engine to the whole preparation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.rego_lexer import _KEYWORDS, _Tok, _tokens, line_of

PREFIX = "__pso"
# An error message holding this marks a comparison the helpers refuse.
UNSUPPORTED_MARK = f"{PREFIX}_unsupported"

_ORDER_OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
# Binary operators binding tighter than the relations (OPA's parseTermOr and below).
_TIGHTER = frozenset({"|", "&", "+", "-", "*", "/", "%"})
_OPEN = {"(": ")", "[": "]", "{": "}"}
_LITERALS = frozenset({"true", "false", "null"})
_MARKER = f"# {PREFIX}: OPA's ordering of values (policysupply)"
_USES = re.compile(rf"\b{PREFIX}_(?:lt|le|gt|ge|sort)\(")


def _refuse(source: str, offset: int, what: str) -> UnsupportedByEngineError:
    return UnsupportedByEngineError(
        f"the embedded engine cannot order values exactly as OPA does here ({what}); "
        "use the OPA engine (engine='opa')",
        line=line_of(source, offset),
    )


class _Scan:
    """Bracket structure of a module's tokens: matches, parents, comprehension bars."""

    def __init__(self, source: str, toks: list[_Tok]) -> None:
        self.source = source
        self.toks = toks
        self.match: dict[int, int] = {}
        self.parent: list[int] = []  # index of the innermost enclosing opener, or -1
        self.bars: set[int] = set()
        stack: list[int] = []
        seen_bar: set[int] = set()
        for i, tok in enumerate(toks):
            self.parent.append(stack[-1] if stack else -1)
            if tok.text in _OPEN and tok.kind == "op":
                stack.append(i)
            elif tok.text in (")", "]", "}") and tok.kind == "op":
                if not stack or _OPEN[toks[stack[-1]].text] != tok.text:
                    raise _refuse(source, tok.offset, "unbalanced brackets")
                o = stack.pop()
                self.match[o] = i
                self.match[i] = o
            elif tok.text == "|" and stack:
                o = stack[-1]
                # The first `|` directly inside a `[`/`{` term is its comprehension bar.
                if o not in seen_bar and self._may_be_comprehension(o):
                    self.bars.add(i)
                seen_bar.add(o)
        if stack:
            raise _refuse(source, toks[stack[-1]].offset, "unbalanced brackets")

    def _may_be_comprehension(self, o: int) -> bool:
        text = self.toks[o].text
        if text == "(":
            return False
        if text == "[" and self._adjacent_after_term(o):
            return False  # an index: `xs[a | b]`
        # A `{` after `if`/`else` or a term (`every x in xs {`) is a body.
        return not (text == "{" and o > 0 and self._opens_body(o))

    def _opens_body(self, o: int) -> bool:
        prev = self.toks[o - 1]
        return prev.text in ("if", "else") or self.is_term_end(o - 1)

    def _adjacent_after_term(self, k: int) -> bool:
        if k == 0:
            return False
        prev = self.toks[k - 1]
        return prev.offset + len(prev.text) == self.toks[k].offset and self.is_term_end(k - 1)

    def is_term_end(self, k: int) -> bool:
        if k < 0:
            return False
        tok = self.toks[k]
        if tok.kind == "ident":
            return tok.text not in _KEYWORDS or tok.text in _LITERALS
        if tok.kind in ("number", "string", "raw"):
            return True
        return tok.kind == "op" and tok.text in (")", "]", "}")

    def _negative_number(self, k: int) -> bool:
        tok = self.toks[k]
        return tok.kind == "number" and tok.text.startswith("-")

    # -- backwards ----------------------------------------------------------

    def _term_start_back(self, k: int, lo: int) -> int | None:
        """First token of the term (with references and calls) ending at ``toks[k]``."""
        if k < lo or not self.is_term_end(k):
            return None
        tok = self.toks[k]
        j = self.match[k] if tok.kind == "op" else k
        if tok.kind == "op" and self.toks[j].text in ("(", "[") and self._adjacent_after_term(j):
            return self._term_start_back(j - 1, lo)  # a call or an index
        if j - 2 >= lo and self.toks[j - 1].text == "." and tok.kind == "ident":
            return self._term_start_back(j - 2, lo)  # `a.b`
        return j

    def left_start(self, i: int) -> int | None:
        """First token of the left operand of the relation at ``toks[i]``."""
        lo = self.parent[i] + 1
        k = i - 1
        start: int | None = None
        while True:
            t = self._term_start_back(k, lo)
            if t is None:
                return start
            # Unary minus (`a * -b`): a `-` not after a term.
            while t - 1 >= lo and self.toks[t - 1].text == "-" and not self.is_term_end(t - 2):
                t -= 1
            start = t
            p = t - 1
            if p < lo:
                return start
            if self._negative_number(t) and self.is_term_end(p):
                k = p  # `a -1`: the lexer's `-1` is a subtraction
                continue
            prev = self.toks[p]
            if prev.kind == "op" and (prev.text in _TIGHTER or prev.text in _RELATIONS):
                if p in self.bars:
                    return start
                k = p - 1
                continue
            return start

    # -- forwards -----------------------------------------------------------

    def _term_end_fwd(self, k: int, hi: int) -> int | None:
        """Last token of the term (with references and calls) starting at ``toks[k]``."""
        if k >= hi:
            return None
        tok = self.toks[k]
        if tok.kind == "op" and tok.text in _OPEN:
            e = self.match[k]
        elif tok.kind == "ident":
            if tok.text in _KEYWORDS and tok.text not in _LITERALS:
                return None
            e = k
        elif tok.kind in ("number", "string", "raw"):
            e = k
        else:
            return None
        while e + 1 < hi:
            nxt = self.toks[e + 1]
            if nxt.text == "." and e + 2 < hi and self.toks[e + 2].kind == "ident":
                e += 2
            elif nxt.text in ("(", "[") and self._adjacent_after_term(e + 1):
                e = self.match[e + 1]
            else:
                break
        return e

    def right_end(self, i: int) -> int | None:
        """Last token of the right operand of the relation at ``toks[i]``."""
        o = self.parent[i]
        hi = self.match[o] if o >= 0 else len(self.toks)
        k = i + 1
        end: int | None = None
        while True:
            while k < hi and self.toks[k].text == "-" and self.toks[k].kind == "op":
                k += 1
            e = self._term_end_fwd(k, hi)
            if e is None:
                return None
            end = e
            n = e + 1
            if n >= hi:
                return end
            if self._negative_number(n):
                k = n  # `b -1`: a subtraction
                continue
            nxt = self.toks[n]
            if nxt.kind == "op" and nxt.text in _TIGHTER and n not in self.bars:
                k = n + 1
                continue
            return end


def _sort_shadowed(source: str, toks: list[_Tok]) -> int | None:
    """Offset of a definition or import that makes ``sort`` name something else."""
    depth = 0
    line_start = 0  # index of the first token of the current top-level line
    for i, tok in enumerate(toks):
        if i > 0 and depth == 0 and "\n" in source[toks[i - 1].offset : tok.offset]:
            line_start = i
        if tok.kind == "op" and tok.text in _OPEN:
            depth += 1
        elif tok.kind == "op" and tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        elif (
            tok.kind == "ident"
            and tok.text == "sort"
            and depth == 0
            and (i == line_start or toks[line_start].text == "import")
        ):
            # `sort(x) := ...`, `sort := ...`, `import data.lib.sort`, `import ... as sort`.
            return tok.offset
    return None


def _order_sites(toks: list[_Tok]) -> tuple[list[int], list[int]]:
    """Indexes of the ordering operators and of the calls of the builtin ``sort``."""
    ops = [i for i, t in enumerate(toks) if t.kind == "op" and t.text in _ORDER_OPS]
    sorts = [
        i
        for i, t in enumerate(toks)
        if t.kind == "ident"
        and t.text == "sort"
        and i + 1 < len(toks)
        and toks[i + 1].text == "("
        and (i == 0 or toks[i - 1].text != ".")
    ]
    return ops, sorts


def ordering_in_query(query: str) -> int | None:
    """Offset of the first ordering operator or ``sort`` call in a query, if any."""
    toks = list(_tokens(query))
    ops, sorts = _order_sites(toks)
    first = min(ops + sorts, default=None)
    return None if first is None else toks[first].offset


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def helper_host(
    sources: Mapping[str, str], packages: Mapping[str, tuple[str, ...]]
) -> tuple[str, tuple[str, ...]] | None:
    """(module, package) a query can call the helpers in: one that holds them, else any.

    Only packages written as plain names (``data.a.b``) qualify. ``None``
    when no module does.
    """
    plain = [n for n in sorted(sources) if all(_PLAIN_NAME.match(p) for p in packages[n])]
    holding = [n for n in plain if _MARKER in sources[n]]
    for name in holding or plain:
        return name, packages[name]
    return None


def with_helpers_forced(source: str) -> str:
    """``source`` with the helpers appended (once) whether or not it calls them."""
    if _MARKER in source:
        return source
    sep = "" if source.endswith("\n") else "\n"
    return f"{source}{sep}\n{helpers()}"


def rewrite_query(query: str, package: tuple[str, ...]) -> str:
    """``query`` with its ordering calling the helpers of ``package`` (``data.p.__pso_lt``).

    Raises:
        UnsupportedByEngineError: An operand this scan cannot delimit.
    """
    return _rewritten(query, prefix=".".join(("data", *package, PREFIX)))


def rewrite_order(source: str) -> str:
    """The ``STAGES`` entry: OPA's ordering for relations and ``sort`` (see module doc).

    Raises:
        UnsupportedByEngineError: An operand this scan cannot delimit, or a
            module defining or importing its own ``sort``.
    """
    at = source.find("\n" + _MARKER)
    if at >= 0:
        # Already rewritten: the helpers' own operators stay native.
        return _rewritten(source[:at]) + source[at:]
    return with_helpers(_rewritten(source))


def _rewritten(source: str, prefix: str = PREFIX) -> str:
    toks = list(_tokens(source))
    ops, sorts = _order_sites(toks)
    if not ops and not sorts:
        return source
    if sorts:
        off = _sort_shadowed(source, toks)
        if off is not None:
            raise _refuse(source, off, "a rule or import named sort")
    scan = _Scan(source, toks)
    # (offset, order, text, end): closers (0) before openers (1) before replacements (2).
    edits: list[tuple[int, int, int, str, int]] = []
    for i in ops:
        s = scan.left_start(i)
        e = scan.right_end(i)
        if s is None or e is None:
            raise _refuse(source, toks[i].offset, f"an operand of {toks[i].text}")
        name = f"{prefix}_{_ORDER_OPS[toks[i].text]}("
        edits.append((toks[s].offset, 1, -e, name, toks[s].offset))
        edits.append((toks[i].offset, 2, 0, ",", toks[i].offset + len(toks[i].text)))
        end = toks[e].offset + len(toks[e].text)
        edits.append((end, 0, -s, ")", end))
    for i in sorts:
        edits.append((toks[i].offset, 2, 0, f"{prefix}_sort", toks[i].offset + 4))
    edits.sort(key=lambda x: (x[0], x[1], x[2]))
    out: list[str] = []
    cursor = 0
    for offset, order, _, text, end in edits:
        out.append(source[cursor:offset])
        out.append(text)
        cursor = end if order == 2 else offset
    out.append(source[cursor:])
    return "".join(out)


def with_helpers(source: str) -> str:
    """``source`` with the helper functions appended if it calls one and lacks them."""
    if _MARKER in source or not _USES.search(source):
        return source
    sep = "" if source.endswith("\n") else "\n"
    return f"{source}{sep}\n{helpers()}"


def dedupe_helpers(
    sources: Mapping[str, str], packages: Mapping[str, tuple[str, ...]]
) -> dict[str, str]:
    """``sources`` with the helpers kept in one module per package.

    Identical definitions in several modules of a package are correct but
    rego-cpp evaluates every copy on each call (four modules: three times
    slower), so all but the first module (by name) of a package drop theirs.
    """
    out = dict(sources)
    kept: set[tuple[str, ...]] = set()
    # Identical copies: dropping all but one per package changes no answer.
    for name in sorted(sources):
        at = sources[name].find("\n" + _MARKER)
        if at < 0:
            continue
        if packages[name] in kept:
            out[name] = sources[name][:at]
        kept.add(packages[name])
    return out


def helpers() -> str:
    """The Rego helper functions (for a module's package; see the module doc)."""
    p = PREFIX
    return "\n".join(
        [
            _MARKER,
            _ENTRY.format(p=p),
            _COMPARE.format(p=p),
            _SORT.format(p=p),
            _SCALAR_SORT.format(p=p),
        ]
    )


# Entry points (numbers and strings first, without further calls) and the
# refusal: an error only the helpers raise (user code calling semver.compare
# is refused before it gets here).
_ENTRY = """\
{p}_lt(a, b) := a < b if {{
\tis_number(a)
\tis_number(b)
}} else := a < b if {{
\tis_string(a)
\tis_string(b)
}} else := {p}_cmp(a, b) < 0

{p}_le(a, b) := a <= b if {{
\tis_number(a)
\tis_number(b)
}} else := a <= b if {{
\tis_string(a)
\tis_string(b)
}} else := {p}_cmp(a, b) <= 0

{p}_gt(a, b) := a > b if {{
\tis_number(a)
\tis_number(b)
}} else := a > b if {{
\tis_string(a)
\tis_string(b)
}} else := {p}_cmp(a, b) > 0

{p}_ge(a, b) := a >= b if {{
\tis_number(a)
\tis_number(b)
}} else := a >= b if {{
\tis_string(a)
\tis_string(b)
}} else := {p}_cmp(a, b) >= 0

{p}_sort(xs) := sort(xs) if {{
\tnot {p}_collection(xs)
}} else := {p}_sorted([y | some y in xs])

{p}_refuse(x) := semver.compare("{p}_unsupported: objects, sets or nested collections", "0.0.0")

{p}_rank(x) := r if {{
\tranks := {{
\t\t"null": 0, "boolean": 1, "number": 2, "string": 3,
\t\t"array": 4, "object": 5, "set": 6,
\t}}
\tr := ranks[type_name(x)]
}}

{p}_sign(n) := -1 if {{
\tn < 0
}} else := 1 if {{
\tn > 0
}} else := 0

{p}_collection(x) if is_array(x)

{p}_collection(x) if is_set(x)

{p}_scalars(xs) if {{
\tcount([y | some y in xs; {p}_rank(y) > 3]) == 0
}}
"""

# Values of different types by rank, scalars of one type natively, arrays
# element by element (`{p}_cmp0`: scalars, or values of different types)
# then by length. Two objects, two sets, or two collections of one type
# inside arrays are refused: comparing them as OPA does needs one more copy
# of these functions per level of nesting (Rego has no recursion), and
# rego-cpp's `with` slows down exponentially with the functions a call can
# reach (three levels: a `with input` query ran for more than ten seconds).
_COMPARE = """\
{p}_cmp(a, b) := {p}_cmpr(a, b, {p}_rank(a), {p}_rank(b))

{p}_cmpr(a, b, ra, rb) := -1 if {{
\tra < rb
}} else := 1 if {{
\tra > rb
}} else := 0 if {{
\ta == b
}} else := -1 if {{
\tra < 4
\ta < b
}} else := 1 if {{
\tra < 4
}} else := {p}_cmpa(a, b) if {{
\tra == 4
}} else := {p}_refuse(a)

{p}_cmpa(a, b) := c if {{
\td := [[i, c] | some i; x := a[i]; y := b[i]; c := {p}_cmp0(x, y); c != 0]
\tcount(d) > 0
\tsome e in d
\tcount([f | some f in d; f[0] < e[0]]) == 0
\tc := e[1]
}} else := {p}_sign(count(a) - count(b))

{p}_cmp0(a, b) := {p}_cmpr0(a, b, {p}_rank(a), {p}_rank(b))

{p}_cmpr0(a, b, ra, rb) := -1 if {{
\tra < rb
}} else := 1 if {{
\tra > rb
}} else := 0 if {{
\ta == b
}} else := -1 if {{
\tra < 4
\ta < b
}} else := 1 if {{
\tra < 4
}} else := {p}_refuse(a)
"""

# Sorted as an array (rego-cpp cannot index the array its sort makes of a
# set). rego-cpp's sort orders numbers by their text (10 before 9), so
# integers (below 2^53: larger are refused) are sorted by zero-padded
# decimal text with their index (negatives by magnitude, reversed), other
# numbers placed by counting (native `<` on numbers is right); strings,
# booleans and nulls use the native sort; types in OPA's rank order. With
# collections, each element's place is the number of elements ordered
# before it (ties by position). Comprehension heads stay plain variables:
# rego-cpp yields [] for `[m[n] | some n in ...]` over a local `m` inside a
# function.
_SORT = """\
{p}_sorted(ys) := sort(ys) if {{
\tcount([y | some y in ys; not is_string(y)]) == 0
}} else := {p}_number_sort(ys) if {{
\tcount([y | some y in ys; not is_number(y)]) == 0
}} else := {p}_scalar_sort(ys) if {{
\t{p}_scalars(ys)
}} else := s if {{
\tpos := {{i: c | some i; y := ys[i]; c := {p}_before(ys, y, i)}}
\ts := {p}_place(ys, pos)
}}

{p}_before(ys, y, i) := count([j | some j; z := ys[j]; {p}_key(z, y, j, i) < 0])

{p}_key(z, y, j, i) := c if {{
\tc := {p}_cmp(z, y)
\tc != 0
}} else := {p}_sign(j - i)
"""

_SCALAR_SORT = """\
{p}_scalar_sort(ys) := [x | some r in [0, 1, 2, 3]; some x in {p}_group_sort(ys, r)]

{p}_group_sort(ys, r) := {p}_number_sort([y | some y in ys; is_number(y)]) if {{
\tr == 2
}} else := sort([y | some y in ys; {p}_rank(y) == r])

{p}_number_sort(ns) := s if {{
\tcount([x | some x in ns; floor(x) != x]) == 0
\tbyk := {{k: x | some i; x := ns[i]; k := {p}_int_key(x, i)}}
\tneg := [k | some k; x := byk[k]; x < 0]
\tnonneg := [k | some k; x := byk[k]; x >= 0]
\torder := array.concat(array.reverse(sort(neg)), sort(nonneg))
\ts := [x | some k in order; x := byk[k]]
}} else := s if {{
\tpos := {{i: c | some i; y := ns[i]; c := {p}_number_before(ns, y, i)}}
\ts := {p}_place(ns, pos)
}}

{p}_int_key(x, i) := concat("#", [{p}_pad(format_int(x, 10)), {p}_pad(format_int(i, 10))]) if {{
\tx >= 0
}} else := concat("#", [{p}_pad(format_int(0 - x, 10)), {p}_pad(format_int(i, 10))])

{p}_pad(s) := concat("", [substring("0000000000000000", 0, 16 - count(s)), s])

{p}_number_before(ns, y, i) := a + b if {{
\ta := count([j | some j; z := ns[j]; z < y])
\tb := count([j | some j; z := ns[j]; z == y; j < i])
}}

{p}_place(ys, pos) := s if {{
\tinv := {{c: i | some i; c := pos[i]}}
\ts := [x | some n in numbers.range(0, count(ys) - 1); i := inv[n]; x := ys[i]]
}} else := []
"""
