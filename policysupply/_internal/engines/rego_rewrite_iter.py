"""Rewrite stage: sets and objects iterate in OPA's order under rego-cpp.

OPA iterates a set in sorted order (its total order over values) and an
object by sorted key; rego-cpp iterates both in insertion order. Where the
order becomes observable (an array comprehension, ``concat`` over a set, the
rows of a query) the answers differ. Rather than chase every way a set or
object is built at run time (literals, comprehensions, partial rules,
builtins), this stage puts OPA's order back where it is consumed:

* iteration domains, where the order of solutions shows (in an array
  comprehension and in a query; a rule body, a set or object comprehension,
  ``not`` and ``every`` answer the same in any order): ``some x in E`` and
  ``some k, v in E``, and reference iteration ``E[x]``/``E[_]`` (and
  patterns such as ``E[[a, b]]``), become ``__psi_ordered_H(E)...``, which
  rebuilds a set or object in sorted insertion order (arrays and scalars
  pass through unchanged). Left alone:
  array literals, references into ``input`` (the engine loads input with
  sorted keys; what ``with input as`` puts there is checked), literals whose
  plain string keys are sorted (one-line ones are sorted in place), and
  ``E[x]`` with ``x`` bound earlier in the body (a lookup). A reference
  iterating several levels (``a[i].b[j]``) is wrapped once, by a helper
  ordering that deep (``__psi_ordered3_H``): rego-cpp finds nothing for an
  iteration inside a call's argument;
* builtins that serialise a collection in iteration order: ``concat``'s
  second argument is sorted; ``walk``, ``yaml.marshal`` and
  ``urlquery.encode_object`` get their argument rebuilt at the top level and
  checked to be in order below (``__psi_deep_H``);
* rego-cpp nests independent generators of a body last first: each
  ``some ... in`` after the first depends on the previous one's variable
  (``__psi_after_H(E, x)``), so they nest as written.

Sorting uses rego-cpp's ``sort``, exact for values of one scalar type; a set
of several types or of collections, or an object with such keys, is refused
at run time (a ``json.marshal_with_options`` error naming ``REFUSAL_MARK``,
turned into ``UnsupportedByEngineError`` by the engine). ``_SORT`` and
``_SORTABLE`` are the one place to switch to an OPA-order sort.

``H`` is a hash of the module text, so helpers of several modules of one
package never add up to several function definitions. Text changes stay
within lines; helpers are appended after the last line. Queries are
rewritten the same way (``rewrite_query``), calling one module's helpers.
"""

from __future__ import annotations

import functools
import hashlib

from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.rego_lexer import (
    _KEYWORDS,
    _call_args,
    _Tok,
    _tokens,
)

PREFIX = "__psi"
# In the error the refusal helper raises (followed by MIXED or NESTED); the
# engine maps it to a refusal.
REFUSAL_MARK = "__psi_unordered"
MIXED = f"{REFUSAL_MARK}:mixed"
NESTED = f"{REFUSAL_MARK}:nested"

# The sort whose order iteration takes: exact only for one scalar type, so
# _SORTABLE guards it. Another stage's OPA-order sort replaces both.
_SORT = "sort"
_SORTABLE = True

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
# Builtins whose answer depends on the iteration order of (nested) collections
# in their first argument: checked deeply. ``concat``'s second is ordered.
_DEEP_ARG0 = frozenset({"walk", "yaml.marshal", "urlquery.encode_object"})
_ORDERED_ARG1 = frozenset({"concat"})


def helper_suffix(source: str) -> str:
    """The ``H`` of this module's helper names."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:10]


def rewrite_iteration_order(source: str) -> str:
    """Stage: wraps iteration domains and order-consuming arguments; appends helpers."""
    h = helper_suffix(source)
    body, used = _rewrite(_sort_literals(source), f"{PREFIX}_%s_{h}", module=True)
    if not used:
        return body
    sep = "" if body.endswith("\n") else "\n"
    return body + sep + helpers(h, used)


@functools.lru_cache(maxsize=256)
def rewrite_query(query: str, package_ref: str, h: str) -> str:
    """The same rewrite of a query, calling the helpers of a module by reference.

    Args:
        query: The query.
        package_ref: The module's package as a reference (``data.a.b``).
        h: The suffix of the helpers (``helpers(h, ALL_KINDS)`` defines them).
    """
    return _rewrite(_sort_literals(query), f"{package_ref}.{PREFIX}_%s_{h}", module=False)[0]


def _sort_literals(source: str) -> str:
    """Literal sets of plain strings, and objects with plain string keys, sorted in place.

    Only literals written on one line, so tokens stay on their line. The
    common ``some k in {"app", "team"}`` then needs no run-time rebuild, and
    ``with input as {...}`` literals pass the order check. Inner literals
    first: a pass sorts the literals that hold no other unsorted one.
    """
    for _ in range(_MAX_PASSES):
        toks = list(_tokens(source))
        match = _matching(toks)
        found: list[tuple[int, int, str]] = []
        for i, tok in enumerate(toks):
            if tok.text == "{" and i in match:
                text = _sorted_literal(toks, i, match[i], source)
                if text is not None:
                    found.append((toks[i].offset, toks[match[i]].offset + 1, text))
        # Outermost ones wait for a later pass when they hold one that changes.
        edits = [
            e for e in found if not any(o != e and e[0] <= o[0] and o[1] <= e[1] for o in found)
        ]
        if not edits:
            return source
        for a, b, text in sorted(edits, reverse=True):
            source = source[:a] + text + source[b:]
    return source


_MAX_PASSES = 16


def _sorted_literal(toks: list[_Tok], open_: int, close: int, source: str) -> str | None:
    """The one-line literal between these braces with its items sorted, if that changes it."""
    if "\n" in source[toks[open_].offset : toks[close].offset]:
        return None
    items = _literal_items(toks, open_, close, source)
    if items is None:
        return None
    ordered = sorted(items)
    if ordered == items:
        return None
    return "{" + ", ".join(text for _, text in ordered) + "}"


def _literal_items(
    toks: list[_Tok], open_: int, close: int, source: str
) -> list[tuple[str, str]] | None:
    """(key, text) of each item of a set of plain strings or an object with such keys."""
    items: list[tuple[str, str]] = []
    pairs: set[bool] = set()
    depth = 0
    start = open_ + 1
    for k in range(open_ + 1, close + 1):
        t = toks[k].text
        if t in _OPEN:
            depth += 1
        elif t in _CLOSE and k < close:
            depth -= 1
        elif t == "|" and depth == 0:
            return None  # a comprehension, or a union
        if (t == "," and depth == 0) or k == close:
            if start >= k or not _plain_string(toks[start]):
                return None
            pair = start + 1 < k and toks[start + 1].text == ":"
            if not pair and start + 1 != k:
                return None  # an expression, not a plain string
            pairs.add(pair)
            last = toks[k - 1]
            text = source[toks[start].offset : last.offset + len(last.text)]
            items.append((toks[start].text[1:-1], text))
            start = k + 1
    if len(pairs) != 1:
        return None
    return items


def _plain_string(tok: _Tok) -> bool:
    # Escapes would make text order differ from value order; such strings are
    # refused by the embedded engine anyway.
    return tok.kind == "string" and "\\" not in tok.text


def _rewrite(source: str, names: str, *, module: bool) -> tuple[str, set[str]]:
    """Wraps what needs it in calls of the helpers ``names % kind``; the kinds used."""
    kinds = ("ordered", "deep", "strings", "after")
    ordered, deep, strings, after = (f"{names % k}(" for k in kinds)
    toks = list(_tokens(source))
    match = _matching(toks)
    spans: list[tuple[int, int, str, str, int]] = []  # tokens a..b, before, after, layer
    heads = _statement_heads(toks, source) if module else set()
    parent = _parents(toks)
    shows = _OrderShows(toks, match, parent, module)
    # Variables bound so far, per body, and the current rule's function arguments:
    # `E[x]` with such an x is a lookup, left alone (no rebuild per lookup).
    bound: dict[int | None, set[str]] = {}
    args_bound: set[str] = set()
    chains: dict[int, list[int]] = {}  # ref head -> first, last iterating bracket, depth
    somes: list[tuple[int, int, int, int | None]] = []  # `some`, its domain, body
    for i, tok in enumerate(toks):
        if i in heads:
            args_bound = _function_args(toks, match, i)
        assigned = _is_name(tok) and i + 1 < len(toks) and toks[i + 1].text == ":="
        if assigned and (parent[i] is not None or not module):
            bound.setdefault(parent[i], set()).add(tok.text)
        if tok.text == "some":
            dom = _some_domain(toks, match, i, source)
            if dom is None:
                continue
            body = parent[i]
            declared = {t.text for t in toks[i + 1 : dom[0]] if _is_name(t)}
            if body is not None or not module:
                bound.setdefault(body, set()).update(declared)
            if shows(body):
                somes.append((i, dom[0], dom[1], body))
        elif tok.text == "with":
            # What replaces input must be in order as input is (see _ordered_already).
            val = _with_value(toks, match, i, source)
            if val is not None:
                spans.append((val[0], val[1], deep, ")", 1))
        elif tok.text == "[" and i > 0 and _adjacent(toks, i - 1, i):
            prev = toks[i - 1]
            if not (prev.text in ("]", ")", "}") or _is_name(prev)):
                continue
            if i not in match or not _iterates(toks, i, match[i]) or not shows(parent[i]):
                continue
            key = toks[i + 1].text
            if match[i] == i + 2 and (key in args_bound or _bound(key, i, parent, bound)):
                continue
            head = _ref_head(toks, match, i - 1)
            if head in heads or _ordered_already(toks, match, head, i - 1, source):
                continue
            # One call per reference, at its first iteration, ordering as deep as
            # its last: rego-cpp finds nothing for an iteration inside a call's
            # argument (`count(xs[i])`), so `O(O(a)[i])[j]` would not do.
            chain = chains.get(head)
            if chain is None or not _same_ref(toks, match, chain[0], i):
                chains[head] = [i, i, 0]
            else:
                chain[1] = i
        elif tok.text == "(" and i > 0 and _is_name(toks[i - 1]) and _adjacent(toks, i - 1, i):
            start = i - 1
            while start >= 2 and toks[start - 1].text == "." and _is_name(toks[start - 2]):
                start -= 2
            if start > 0 and toks[start - 1].text == ".":
                continue  # a rule or function of another package
            name = "".join(t.text for t in toks[start:i])
            args = _call_args(toks, i)
            if name == "walk" and not shows(parent[start]):
                continue  # a relation: its order shows only as iteration's does
            if name in _DEEP_ARG0 and args:
                a, b = args[0][0], args[0][1] - 1
                if not _ordered_already(toks, match, a, b, source):
                    spans.append((a, b, deep, ")", 1))
            elif name in _ORDERED_ARG1 and len(args) > 1:
                a, b = args[1][0], args[1][1] - 1
                if not _ordered_already(toks, match, a, b, source):
                    spans.append((a, b, strings, ")", 1))
    last_some: dict[int | None, str] = {}  # per body: a variable its last `some` declared
    for i, a, b, body in somes:
        inner = [h for h, c in chains.items() if a <= h <= b]
        link = f", {last_some[body]})" if body in last_some else None
        if not inner:
            if not _ordered_already(toks, match, a, b, source):
                spans.append((a, b, ordered, ")", 1))
            if link:
                # rego-cpp nests independent generators last first; a dependency
                # on the previous one's variable nests them as written, as OPA does.
                spans.append((a, b, after, link, 0))
        elif inner == [a] and match.get(chains[a][1]) == b:
            # `some x in E[i]`: E is ordered one level deeper (its elements are
            # iterated too), and the dependency goes inside, on E's base.
            chains[a][2] = 1
            if link:
                spans.append((a, chains[a][0] - 1, after, link, 2))
        else:
            raise UnsupportedByEngineError(
                f"line {_line_of(source, toks[i].offset)}: the embedded engine cannot "
                "iterate this `some ... in` domain in OPA's order (it iterates a "
                "reference inside an expression); bind the reference to a variable "
                "first, or use the OPA engine (engine='opa')"
            )
        var = next((t.text for t in toks[i + 1 : a] if _is_name(t) and t.text != "_"), None)
        if var is not None:
            last_some[body] = var
    for head, (first, last, extra) in chains.items():
        depth = _segments(toks, match, first, last) + extra
        if depth > _MAX_DEPTH:
            raise UnsupportedByEngineError(
                f"line {_line_of(source, toks[first].offset)}: a reference iterating "
                f"{depth} levels deep cannot be ordered as OPA iterates it by the "
                "embedded engine; bind the inner levels to variables, or use the OPA "
                "engine (engine='opa')"
            )
        kind = "ordered" if depth == 1 else f"ordered{depth}"
        spans.append((head, first - 1, f"{names % kind}(", ")", 1))
    used = {k for k in ALL_KINDS for span in spans if span[2] == f"{names % k}("}
    return _apply(source, toks, spans), used


class _OrderShows:
    """Whether iteration directly in a body shows its order in the answer.

    Only in an array comprehension and in a query (the rows): a rule's body,
    a set or object comprehension, `not` and `every` give the same answer
    whatever the order (when two iterations fail, both engines fail).
    """

    def __init__(
        self, toks: list[_Tok], match: dict[int, int], parent: list[int | None], module: bool
    ) -> None:
        self._toks, self._match, self._parent, self._module = toks, match, parent, module
        self._memo: dict[int | None, bool] = {}

    def __call__(self, p: int | None) -> bool:
        if p not in self._memo:
            self._memo[p] = self._shows(p)
        return self._memo[p]

    def _shows(self, p: int | None) -> bool:
        if p is None:
            return not self._module
        t = self._toks[p].text
        bar = self._bar(p)
        if t == "[" and bar:
            return True
        if t == "{" and (bar or self._body(p)):
            return False
        return self(self._parent[p])  # a call's arguments, or a literal

    def _bar(self, p: int) -> bool:
        depth = 0
        for k in range(p + 1, self._match.get(p, p)):
            t = self._toks[k].text
            if t in _OPEN:
                depth += 1
            elif t in _CLOSE:
                depth -= 1
            elif t == "|" and depth == 0:
                return True
        return False

    def _body(self, p: int) -> bool:
        """A rule, `not`, `else` or `every` body (not a set or object literal)."""
        if p == 0:
            return False
        before = self._toks[p - 1]
        if before.text in ("if", "not", "else"):
            return True
        # `every x in xs {`: a term ends right before the brace.
        return (
            before.kind in ("string", "number")
            or before.text in ("]", ")", "}")
            or (_is_name(before))
        )


# Deepest reference iteration ordered by one helper (``a[i].b[j]`` is 3).
_MAX_DEPTH = 6


def _line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _same_ref(toks: list[_Tok], match: dict[int, int], first: int, i: int) -> bool:
    """Whether the bracket at ``i`` continues the reference whose bracket is at ``first``."""
    k = first
    while k < i:
        if toks[k].text == "[" and k in match:
            nxt = match[k] + 1
        elif toks[k].text == ".":
            nxt = k + 2
        else:
            return False
        if nxt >= len(toks) or not _adjacent(toks, nxt - 1, nxt):
            return False
        k = nxt
    return k == i


def _segments(toks: list[_Tok], match: dict[int, int], first: int, last: int) -> int:
    """Segments (``[...]``, ``.name``) from the bracket at ``first`` to the one at ``last``."""
    n = 0
    k = first
    while k <= last:
        k = match[k] + 1 if toks[k].text == "[" else k + 2
        n += 1
    return n


def _parents(toks: list[_Tok]) -> list[int | None]:
    """For each token, the innermost open bracket around it."""
    out: list[int | None] = []
    stack: list[int] = []
    for i, tok in enumerate(toks):
        if tok.text in _CLOSE and stack:
            stack.pop()
        out.append(stack[-1] if stack else None)
        if tok.text in _OPEN:
            stack.append(i)
    return out


def _bound(name: str, i: int, parent: list[int | None], bound: dict[int | None, set[str]]) -> bool:
    """Whether ``name`` was bound earlier in a body around ``toks[i]``."""
    p = parent[i]
    while True:
        if name in bound.get(p, ()):
            return True
        if p is None:
            return False
        p = parent[p]


def _function_args(toks: list[_Tok], match: dict[int, int], head: int) -> set[str]:
    """Names of the arguments of the function a statement defines (``f(x, y) := ...``)."""
    k = head + 1
    if k < len(toks) and toks[k].text == "(" and k in match:
        return {t.text for t in toks[k + 1 : match[k]] if _is_name(t)}
    return set()


def _is_name(tok: _Tok) -> bool:
    return tok.kind == "ident" and tok.text not in _KEYWORDS


def _adjacent(toks: list[_Tok], a: int, b: int) -> bool:
    return toks[a].offset + len(toks[a].text) == toks[b].offset


def _matching(toks: list[_Tok]) -> dict[int, int]:
    """Both ways: the index of each bracket's partner (unbalanced ones have none)."""
    out: dict[int, int] = {}
    stack: list[int] = []
    for i, tok in enumerate(toks):
        if tok.text in _OPEN:
            stack.append(i)
        elif tok.text in _CLOSE and stack and toks[stack[-1]].text == _CLOSE[tok.text]:
            j = stack.pop()
            out[i], out[j] = j, i
    return out


def _statement_heads(toks: list[_Tok], source: str) -> set[int]:
    """Tokens that start a top-level statement (rule heads are not iterations)."""
    heads: set[int] = set()
    depth = 0
    for i, tok in enumerate(toks):
        if depth == 0 and (i == 0 or "\n" in source[toks[i - 1].offset : tok.offset]):
            heads.add(i)
            if tok.text == "default" and i + 1 < len(toks):
                heads.add(i + 1)
        if tok.text in _OPEN:
            depth += 1
        elif tok.text in _CLOSE:
            depth = max(0, depth - 1)
    return heads


def _some_domain(
    toks: list[_Tok], match: dict[int, int], i: int, source: str
) -> tuple[int, int] | None:
    """Token range of ``E`` in ``some ... in E`` (``None`` for a plain ``some x``)."""
    k = i + 1
    found = None
    while k < len(toks):
        t = toks[k].text
        if t == "in":
            found = k
            break
        if t in (";",) or t in _CLOSE or "\n" in source[toks[k - 1].offset : toks[k].offset]:
            return None
        k = match.get(k, k) + 1 if t in _OPEN else k + 1
    if found is None or found + 1 >= len(toks):
        return None
    start = k = found + 1
    end = start
    while k < len(toks):
        t = toks[k].text
        if k > start and "\n" in source[toks[k - 1].offset : toks[k].offset]:
            break
        if t in (";", "with") or t in _CLOSE:
            break
        if t in _OPEN:
            if k not in match:
                return None
            k = match[k]
        end = k
        k += 1
    return start, end


def _ordered_already(toks: list[_Tok], match: dict[int, int], a: int, b: int, source: str) -> bool:
    """An array literal, or a reference into ``input``.

    ``input`` is handed to rego-cpp with sorted keys and holds no sets, and
    what ``with`` puts in its place is checked (``_with_value``), so its
    objects iterate in OPA's order already.
    """
    if toks[a].text == "[" and match.get(a) == b:
        return True
    if toks[a].text == "{" and match.get(a) == b:
        # Literals with plain string keys are sorted by _sort_literals.
        items = _literal_items(toks, a, b, source)
        return items is not None and items == sorted(items)
    return toks[a].text == "input" and _ref_head(toks, match, b) == a


def _with_value(
    toks: list[_Tok], match: dict[int, int], i: int, source: str
) -> tuple[int, int] | None:
    """Token range of ``V`` in ``with input... as V``."""
    if i + 1 >= len(toks) or toks[i + 1].text != "input":
        return None
    k = i + 1
    while k < len(toks) and toks[k].text != "as":
        if toks[k].text in _OPEN:
            k = match.get(k, len(toks))
        k += 1
    start = k = k + 1
    if start >= len(toks):
        return None
    end = start
    while k < len(toks):
        t = toks[k].text
        if k > start and "\n" in source[toks[k - 1].offset : toks[k].offset]:
            break
        if t in (";", "with") or t in _CLOSE:
            break
        if t in _OPEN:
            if k not in match:
                return None
            k = match[k]
        end = k
        k += 1
    if _ordered_already(toks, match, start, end, source):
        return None
    return start, end


def _iterates(toks: list[_Tok], open_: int, close: int) -> bool:
    """Whether the key between these brackets may bind variables (iteration)."""
    inner = toks[open_ + 1 : close]
    if not inner:
        return False
    if len(inner) == 1:
        return _is_name(inner[0])
    if inner[0].text not in ("[", "{"):
        return False  # a reference, call or expression: a lookup
    return any(_is_name(t) for t in inner)


def _ref_head(toks: list[_Tok], match: dict[int, int], j: int) -> int:
    """First token of the reference (or call, or collection) that ends at ``toks[j]``."""
    while True:
        t = toks[j].text
        if t in _CLOSE:
            m = match.get(j)
            if m is None:
                return j
            if t == "}":
                return m
            if m > 0 and _adjacent(toks, m - 1, m):
                p = toks[m - 1]
                if _is_name(p) or (t == "]" and p.text in ("]", ")", "}")):
                    j = m - 1
                    continue
            return m
        dotted = j >= 2 and toks[j - 1].text == "." and toks[j].kind == "ident"
        if dotted and _adjacent(toks, j - 1, j) and _adjacent(toks, j - 2, j - 1):
            j -= 2
            continue
        return j


def _apply(source: str, toks: list[_Tok], spans: list[tuple[int, int, str, str, int]]) -> str:
    if not spans:
        return source
    inserts: list[tuple[int, int, int, int, str]] = []  # (offset, order, ..., text)
    for a, b, opening, closing, layer in set(spans):
        start = toks[a].offset
        end = toks[b].offset + len(toks[b].text)
        # At one offset: closing parens first (inner spans first), then opening
        # calls (outer spans first); spans over the same tokens by layer.
        inserts.append((start, 1, -end, layer, opening))
        inserts.append((end, 0, -start, -layer, closing))
    inserts.sort()
    out: list[str] = []
    last = 0
    for offset, _, _, _, text in inserts:
        out.append(source[last:offset])
        out.append(text)
        last = offset
    out.append(source[last:])
    return "".join(out)


def helpers(h: str, kinds: frozenset[str] | set[str]) -> str:
    """Definitions of the helpers of these kinds (and of those they call), suffix ``h``."""
    need = set(kinds)
    todo = list(need)
    while todo:
        for dep in _DEPENDS.get(todo.pop(), ()):
            if dep not in need:
                need.add(dep)
                todo.append(dep)
    if not need:
        return ""
    blocks = _blocks(h)
    lines = ["", "# policysupply: OPA's iteration order (rego_rewrite_iter)."]
    for kind in ALL_KINDS:
        if kind in need:
            lines += [*blocks[kind], ""]
    return "\n".join(lines)


_DEEP_KINDS = tuple(f"ordered{n}" for n in range(2, _MAX_DEPTH + 1))
ALL_KINDS = ("after", "strings", "ordered", *_DEEP_KINDS, "deep", "sorted", "refuse")
_DEPENDS: dict[str, tuple[str, ...]] = {
    "ordered": ("sorted",),
    "ordered2": ("ordered", "sorted"),
    **{f"ordered{n}": (f"ordered{n - 1}", "sorted") for n in range(3, _MAX_DEPTH + 1)},
    "deep": ("ordered", "sorted", "refuse"),
    "sorted": ("refuse",),
}


def _blocks(h: str) -> dict[str, list[str]]:
    o, d, s = f"{PREFIX}_ordered_{h}", f"{PREFIX}_deep_{h}", f"{PREFIX}_sorted_{h}"
    ok, bad, refuse = f"{PREFIX}_sortable_{h}", f"{PREFIX}_unordered_{h}", f"{PREFIX}_refuse_{h}"
    blocks = {
        "after": [f"{PREFIX}_after_{h}(x, _) := x"],
        # concat takes strings only (anything else fails in both engines), and
        # sort orders strings exactly: no type check, no rebuild.
        "strings": [f"{PREFIX}_strings_{h}(x) := {_SORT}(x) if {{", "\tis_set(x)", "} else := x"],
        "ordered": [
            f"{o}(x) := x if {{",
            "\tis_array(x)",
            "} else := y if {",
            "\tis_set(x)",
            f"\ty := {{e | some e in {s}(x)}}",
            "} else := y if {",
            "\tis_object(x)",
            f"\ty := {{k: x[k] | some k in {s}(object.keys(x))}}",
            "} else := x",
        ],
        "sorted": [
            f"{s}(x) := {_SORT}(x) if {ok}(x)" if _SORTABLE else f"{s}(x) := {_SORT}(x)",
            "",
            f'{s}(x) := {refuse}(x, "{MIXED}") if not {ok}(x)' if _SORTABLE else "",
            "",
            f"{ok}(x) if count(x) < 2",
            "",
            f"{ok}(x) if {{",
            "\tts := {type_name(e) | some e in x}",
            "\tcount(ts) == 1",
            '\tnot ts["array"]',
            '\tnot ts["object"]',
            '\tnot ts["set"]',
            "}",
        ],
        # Nested sets and objects must iterate in order already (input and data
        # are loaded sorted); the top level is rebuilt.
        "deep": [
            f"{d}(x) := y if {{",
            f"\ty := {o}(x)",
            f"\tnot {bad}(y)",
            f'}} else := {refuse}(x, "{NESTED}")',
            "",
            f"{bad}(x) if {{",
            "\twalk(x, [_, v])",
            "\tis_object(v)",
            "\tks := [k | v[k]]",
            f"\tks != {s}(ks)",
            "}",
            "",
            f"{bad}(x) if {{",
            "\twalk(x, [_, v])",
            "\tis_set(v)",
            "\tes := [e | v[e]]",
            f"\tes != {s}(es)",
            "}",
        ],
        # json.marshal_with_options fails naming an unknown option key: the one
        # rego-cpp error that carries a message of ours.
        "refuse": [f"{refuse}(x, why) := json.marshal_with_options(x, {{why: 1}})"],
    }
    for n in range(2, _MAX_DEPTH + 1):
        inner = f"{PREFIX}_ordered{n - 1}_{h}" if n > 2 else o
        blocks[f"ordered{n}"] = [
            f"{PREFIX}_ordered{n}_{h}(x) := y if {{",
            "\tis_array(x)",
            f"\ty := [{inner}(e) | some e in x]",
            "} else := y if {",
            "\tis_set(x)",
            f"\ty := {{{inner}(e) | some e in {s}(x)}}",
            "} else := y if {",
            "\tis_object(x)",
            f"\ty := {{k: {inner}(x[k]) | some k in {s}(object.keys(x))}}",
            "} else := x",
        ]
    return blocks
