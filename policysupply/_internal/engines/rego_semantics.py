"""Semantic checks OPA's compiler makes and rego-cpp does not (``check()`` only).

Each reports only what it is sure of, so that a valid module is never refused.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Mapping
from importlib import resources

from policysupply._internal.engines.base import RegoDiagnostic
from policysupply._internal.engines.rego_calls import (
    _call_problems,
    _function_definitions,
    _import_aliases,
    function_arities,
)
from policysupply._internal.engines.rego_lexer import (
    _KEYWORDS,
    _call_args,
    _enclosing_open,
    _lines_first_tokens,
    _ref_start,
    _Tok,
    _tokens,
    line_of,
    matching_close,
    tok_offset,
)

_OPERATORS = {"+": "plus", "-": "minus", "*": "mul", "/": "div", "%": "rem"}


@functools.lru_cache(maxsize=1)
def opa_builtin_types() -> dict[str, list[list[str] | None]]:
    """Builtin -> JSON kinds each argument accepts (``None``: any)."""
    raw = resources.files("policysupply._internal.engines").joinpath("opa_builtin_types.json")
    table: dict[str, list[list[str] | None]] = json.loads(raw.read_text())["builtins"]
    return table


def _literal_kind(tok: _Tok) -> str | None:
    if tok.kind == "number":
        return "number"
    if tok.kind in ("string", "raw"):
        return "string"
    if tok.text in ("true", "false"):
        return "boolean"
    if tok.text == "null":
        return "null"
    return None


def _syntax_kind(toks: list[_Tok], s: int, e: int) -> str | None:
    """The JSON kind of the term ``toks[s:e]`` when its syntax alone shows it.

    A scalar literal, ``set()``, or a collection literal or comprehension that
    is the whole term (``[1][0]`` is not an array).
    """
    if e == s + 1:
        return _literal_kind(toks[s])
    if e == s + 3 and toks[s].text == "set" and toks[s + 1].text == "(":
        return "set" if toks[s + 2].text == ")" else None
    if toks[s].text not in ("[", "{") or matching_close(toks, s, e) != e - 1:
        return None
    if toks[s].text == "[":
        return "array"
    if e == s + 2:
        return "object"  # {}
    depth = 0
    for k in range(s, e):
        t = toks[k].text
        if t in ("(", "[", "{"):
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
        elif depth == 1 and t == "|":
            return "set"
        elif depth == 1 and t == ":":
            return "object"
    return "set"


def _rules(toks: list[_Tok], firsts: set[int]) -> list[tuple[int, int]]:
    """Token ranges of the rules of a module (package and imports excluded)."""
    starts: list[int] = []
    depth = 0
    for i, tok in enumerate(toks):
        if depth == 0 and i in firsts and tok.kind == "ident" and tok.text not in ("else",):
            starts.append(i)
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
    starts.append(len(toks))
    return [
        (a, b) for a, b in itertools.pairwise(starts) if toks[a].text not in ("package", "import")
    ]


def _rule_names(source: str) -> set[str]:
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    return {
        toks[a].text if toks[a].text != "default" else toks[a + 1].text
        for a, _ in _rules(toks, firsts)
        if a < len(toks)
    }


def _unsafe_vars(
    entry: str, source: str, toks: list[_Tok], a: int, b: int, known: set[str]
) -> list[RegoDiagnostic]:
    """Variables used exactly once in a rule, in a place that cannot bind them."""
    counts: dict[str, list[int]] = {}
    for i in range(a, b):
        tok = toks[i]
        if tok.kind != "ident" or tok.text in _KEYWORDS or tok.text in known:
            continue
        if tok.text in ("_", "input", "data") or tok.text.startswith("__"):
            continue
        if i > a and toks[i - 1].text == ".":
            continue
        if i + 1 < b and toks[i + 1].text in (".", "("):
            continue  # a namespace or function, not a variable
        counts.setdefault(tok.text, []).append(i)
    problems = []
    for name, where in counts.items():
        if len(where) != 1:
            continue
        i = where[0]
        prev = toks[i - 1].text if i > a else ""
        nxt = toks[i + 1].text if i + 1 < b else ""
        if nxt in (":=", "=", ",", "as") or prev in ("=", "some", "every", ",", "with", "as"):
            continue  # assigned, unified, declared, or one of several names
        if prev == "[" and nxt == "]":
            # A ref index binds (iterates) unless negated.
            negated = any(
                toks[k].text == "not"
                for k in range(i - 1, a - 1, -1)
                if "\n" not in source[toks[k].offset : toks[i].offset]
            )
            if not negated:
                continue
        if prev == "(" or nxt == ")":
            continue  # possibly a call's output argument or a function head
        if nxt == ":" or prev == ":":
            continue  # object key/value: may be inside a comprehension head
        if nxt == "|" or prev == "|":
            continue
        problems.append(
            RegoDiagnostic(
                entry=entry,
                line=line_of(source, tok_offset(toks, i)),
                message=f"var {name} is unsafe",
            )
        )
    return problems


def semantic_problems(
    modules: Mapping[str, str], packages: Mapping[str, tuple[str, ...]]
) -> list[RegoDiagnostic]:
    """OPA compile errors found without a Rego parser.

    Undefined functions, arity, assignment to a call, re-assignment, unsafe
    variables and type errors of literal arguments.
    """
    defined: dict[tuple[str, ...], set[str]] = {}
    rules_in: dict[tuple[str, ...], set[str]] = {}
    for name, source in modules.items():
        defined.setdefault(packages[name], set()).update(_function_definitions(source))
        rules_in.setdefault(packages[name], set()).update(_rule_names(source))
    types = opa_builtin_types()
    function_arities(modules, packages)
    problems: list[RegoDiagnostic] = []
    for entry in sorted(modules):
        source = modules[entry]
        problems.extend(_call_problems(entry, source, packages[entry], defined))
        toks = list(_tokens(source))
        firsts = _lines_first_tokens(toks, source)
        aliases = set(_import_aliases(toks))
        known = rules_in.get(packages[entry], set()) | aliases
        for a, b in _rules(toks, firsts):
            if any(toks[k].text == "$" for k in range(a, b)):
                continue  # template strings: not read by this lexer
            problems.extend(_rule_problems(entry, source, toks, firsts, a, b, types))
            problems.extend(_unused_declarations(entry, source, toks, a, b))
            problems.extend(_unsafe_vars(entry, source, toks, a, b, known | _head_args(toks, a, b)))
    return problems


# Tokens after which a `{` starts a term (an every domain), not the body.
_TERM_STARTS = {"in", "|", "&", "-", "+", "*", "/", "%", ",", "(", "[", ":", "="}


def _declared_names(toks: list[_Tok], j: int, b: int) -> tuple[list[int], int]:
    """Token indices of `x, y` starting at ``toks[j]``, and the index after them."""
    names = []
    while j < b and toks[j].kind == "ident" and toks[j].text not in _KEYWORDS:
        names.append(j)
        if j + 1 < b and toks[j + 1].text == ",":
            j += 2
            continue
        return names, j + 1
    return names, j


def _unused_declarations(
    entry: str, source: str, toks: list[_Tok], a: int, b: int
) -> list[RegoDiagnostic]:
    """OPA's "declared var x unused", for the cases certain without a parser.

    ``every x in xs { ... }`` without ``x`` in its body, or a bare ``some x``
    with no other ``x`` in the rule. Any other token spelled like the name
    counts as a use, except inside the body of a nested ``every`` declaring
    the same name (OPA's scoping); other shadowing is left to OPA.
    """
    problems: list[RegoDiagnostic] = []

    def unused(j: int, lo: int, hi: int) -> bool:
        name = toks[j].text
        if name == "_":
            return False
        hidden: set[int] = set()
        for inner in range(lo, hi):
            found = _every_parts(toks, inner, hi) if toks[inner].text == "every" else None
            if found and any(toks[n].text == name for n in found[0]):
                hidden.update(found[0])
                hidden.update(range(found[1], found[2] + 1))
        return not any(
            k != j
            and k not in hidden
            and toks[k].kind == "ident"
            and toks[k].text == name
            and not (k > 0 and toks[k - 1].text == ".")
            for k in range(lo, hi)
        )

    def report(at: int, names: list[int], lo: int, hi: int) -> None:
        problems.extend(
            RegoDiagnostic(
                entry=entry,
                line=line_of(source, toks[at].offset),
                message=f"declared var {toks[n].text} unused",
            )
            for n in names
            if unused(n, lo, hi)
        )

    for i in range(a, b):
        text = toks[i].text
        if text == "every":
            found = _every_parts(toks, i, b)
            if found is None:
                continue
            names, body, end = found
            # OPA reports the line of the body's first expression.
            report(body + 1 if body + 1 < end else i, names, body, end)
        elif text == "some" and i > a and toks[i - 1].text != ".":
            names, j = _declared_names(toks, i + 1, b)
            ends = j >= b or (
                toks[j].text in (";", "}", "]", "|")
                or "\n" in source[toks[j - 1].offset + len(toks[j - 1].text) : toks[j].offset]
            )
            if not names or not ends:
                continue  # `some x in xs`, `some f(x) in xs`: not a bare declaration
            report(i, names, a, b)
    return problems


def _every_parts(toks: list[_Tok], i: int, b: int) -> tuple[list[int], int, int] | None:
    """For ``every`` at ``toks[i]``: its declared names, body ``{`` and ``}`` indices."""
    names, j = _declared_names(toks, i + 1, b)
    if not names or j >= b or toks[j].text != "in":
        return None
    depth = 0
    body = None
    for k in range(j + 1, b):
        t = toks[k].text
        if t == "{" and depth == 0 and toks[k - 1].text not in _TERM_STARTS:
            body = k
            break
        if t in ("(", "[", "{"):
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
            if depth < 0:
                break
    if body is None:
        return None
    end = matching_close(toks, body, b)
    return None if end is None else (names, body, end)


def _head_args(toks: list[_Tok], a: int, b: int) -> set[str]:
    """Argument names of a function definition (``f(x, y) := ...``)."""
    if a + 1 < b and toks[a + 1].text == "(":
        return {
            toks[k].text
            for s, e in _call_args(toks, a + 1)
            for k in range(s, e)
            if toks[k].kind == "ident"
        }
    return set()


def _rule_problems(
    entry: str,
    source: str,
    toks: list[_Tok],
    firsts: set[int],
    a: int,
    b: int,
    types: Mapping[str, list[list[str] | None]],
) -> list[RegoDiagnostic]:
    problems: list[RegoDiagnostic] = []
    assigned: dict[tuple[int, str], int] = {}
    declared: set[tuple[int, str]] = set()  # names of `some` in a body (scope, name)
    depth_stack: list[int] = []
    for i in range(a, b):
        tok = toks[i]
        if tok.text in ("(", "[", "{"):
            depth_stack.append(i)
        elif tok.text in (")", "]", "}") and depth_stack:
            depth_stack.pop()
        scope = depth_stack[-1] if depth_stack else -1
        at_stmt_start = i == a or (
            toks[i - 1].text in (";", "{", "|")
            or "\n" in source[toks[i - 1].offset + len(toks[i - 1].text) : tok.offset]
        )
        # `f(x) := v` inside a body: OPA "cannot assign to call".
        if tok.text == ":=" and i > a and toks[i - 1].text == ")" and depth_stack:
            k = _enclosing_open(toks, i - 1, a)
            m = _ref_start(toks, k - 1, a) if k is not None else a
            if (
                k is not None
                and k > a
                and toks[k - 1].kind == "ident"
                and m >= a
                and (
                    m == a
                    or toks[m - 1].text in (";", "{", "|")
                    or "\n" in source[toks[m - 1].offset + len(toks[m - 1].text) : toks[m].offset]
                )
            ):
                problems.append(
                    RegoDiagnostic(
                        entry=entry,
                        line=line_of(source, toks[m].offset),
                        message="cannot assign to call",
                    )
                )
        # `some y` twice in the same body (or `some y` then `y := 1`): OPA
        # "var y declared above".
        if tok.text == "some" and depth_stack and at_stmt_start:
            j = i + 1
            while j < b and toks[j].kind == "ident" and toks[j].text not in _KEYWORDS:
                if toks[j].text != "_":
                    if (scope, toks[j].text) in declared:
                        problems.append(
                            RegoDiagnostic(
                                entry=entry,
                                line=line_of(source, toks[j].offset),
                                message=f"var {toks[j].text} declared above",
                            )
                        )
                    declared.add((scope, toks[j].text))
                if j + 1 < b and toks[j + 1].text == ",":
                    j += 2
                    continue
                break
        assigns = (
            tok.kind == "ident"
            and bool(depth_stack)
            and at_stmt_start
            and i + 1 < b
            and toks[i + 1].text == ":="
        )
        if assigns and (scope, tok.text) in declared:
            problems.append(
                RegoDiagnostic(
                    entry=entry,
                    line=line_of(source, tok.offset),
                    message=f"var {tok.text} declared above",
                )
            )
        # `x := 1` twice in the same body: OPA "var x assigned above".
        elif assigns and tok.text != "_":
            key = (scope, tok.text)
            if key in assigned:
                problems.append(
                    RegoDiagnostic(
                        entry=entry,
                        line=line_of(source, tok.offset),
                        message=f"var {tok.text} assigned above",
                    )
                )
            else:
                assigned[key] = i
        # Arguments of a builtin whose JSON kind their syntax shows (a literal,
        # a collection or a comprehension) and the builtin does not accept.
        if tok.kind == "ident" and i + 1 < b and not (i > a and toks[i - 1].text == "."):
            j = i + 1
            while j + 1 < b and toks[j].text == "." and toks[j + 1].kind == "ident":
                j += 2
            name = ".".join(toks[k].text for k in range(i, j, 2))
            if (
                j < b
                and toks[j].text == "("
                and name in types
                and not (i in firsts and not depth_stack)
            ):
                for n, (s, e) in enumerate(_call_args(toks, j)):
                    want = types[name][n] if n < len(types[name]) else None
                    kind = _syntax_kind(toks, s, e)
                    if want is not None and kind is not None and kind not in want:
                        problems.append(
                            RegoDiagnostic(
                                entry=entry,
                                line=line_of(source, tok.offset),
                                message=f"{name}: invalid argument(s)",
                            )
                        )
                        break
        # A string, boolean or null literal as an arithmetic operand.
        if tok.text in _OPERATORS and i > a and i + 1 < b:
            left, right = toks[i - 1], toks[i + 1]
            kinds = {_literal_kind(left), _literal_kind(right)} - {None, "number"}
            # `-` also subtracts sets; only literal scalars are certain errors.
            if kinds and not (tok.text == "-" and right.kind == "number"):
                k = i - 1
                problems.append(
                    RegoDiagnostic(
                        entry=entry,
                        line=line_of(source, toks[k].offset),
                        message=f"{_OPERATORS[tok.text]}: invalid argument(s)",
                    )
                )
    return problems
