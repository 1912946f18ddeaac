"""Rego source helpers and the embedded engine (rego-cpp through ``regopy``).

``regopy`` is imported lazily: it loads a shared library, and most users of
``Bundle`` never evaluate anything in-process.

rego-cpp is more lenient than OPA in places (it accepts a rule body without
``if`` in a v1 module, for instance) and does not implement Rego v0 semantics
(``deny[msg] { ... }`` becomes a partial object, not a set). This module closes
the first gap with a small lexical check and refuses the second outright; see
docs/adr/0002-embedded-rego-engine.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import attrs

from policysupply.errors import BundleError

if TYPE_CHECKING:
    import regopy

# ---------------------------------------------------------------------------
# A tiny Rego lexer: enough to find the package path and rule bodies.

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


def package_path(source: str, *, entry: str) -> tuple[str, ...]:
    """Returns the package path of a module (``package a.b["c"]`` → ``("a","b","c")``).

    Raises:
        BundleError: The module has no parseable ``package`` declaration.
    """
    toks = _tokens(source)
    first = next(toks, None)
    if first is None or first.text != "package":
        raise BundleError(
            "module does not start with a package declaration",
            entry=entry,
            line=line_of(source, first.offset) if first else 1,
        )
    path: list[str] = []
    expect_name = True
    for tok in toks:
        if expect_name:
            if tok.kind == "ident":
                path.append(tok.text)
                expect_name = False
                continue
            break
        if tok.text == ".":
            expect_name = True
        elif tok.text == "[":
            key = next(toks, None)
            close = next(toks, None)
            if key is None or key.kind != "string" or close is None or close.text != "]":
                raise BundleError(
                    "malformed package path", entry=entry, line=line_of(source, tok.offset)
                )
            path.append(json.loads(key.text))
        else:
            break
    if not path or expect_name:
        raise BundleError("malformed package path", entry=entry, line=line_of(source, first.offset))
    return tuple(path)


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


# rego-cpp parses and evaluates recursively on the C stack: a module holding
# `[[[…]]]` a few thousand deep, or data/input nested as deep, kills the whole
# process with SIGSEGV (no exception to catch). Nothing is handed to it past
# this depth. `opa check` accepts modules this deep; real policies and
# documents stay within a few dozen levels.
MAX_NESTING = 500


def excessive_nesting(source: str) -> int | None:
    """Offset of the first ``(``/``[``/``{`` nested past ``MAX_NESTING``, if any.

    Brackets inside strings, raw strings and comments do not count.
    """
    depth = 0
    for tok in _tokens(source):
        if tok.text in ("(", "[", "{"):
            depth += 1
            if depth > MAX_NESTING:
                return tok.offset
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
    return None


def _nesting_message() -> str:
    return (
        f"brackets nested more than {MAX_NESTING} deep; the embedded engine "
        "refuses such modules (its parser would exhaust the stack)"
    )


def check_value_nesting(value: Any, *, what: str, entry: str | None = None) -> None:
    """Raises ``BundleError`` if a JSON-like value nests past ``MAX_NESTING``.

    Iterative, so it is safe on values of any depth.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > MAX_NESTING:
            raise BundleError(
                f"{what} is nested more than {MAX_NESTING} deep; the embedded "
                "engine refuses it (evaluating it would exhaust the stack)",
                entry=entry,
            )
        stack.extend((child, depth + 1) for child in children)


RESULT_VAR = "__policysupply_result__"


def wrap_single_expression(query: str) -> str | None:
    """Rewrites a single-expression query so that a ``false`` value survives.

    In Rego query semantics an expression that evaluates to ``false`` fails
    the query; ``opa eval`` and OPA's REST API nonetheless report the value
    of a lone expression, and rego-cpp does not. Binding the expression to a
    variable gives OPA's answer. Returns ``None`` for queries that already
    bind variables, hold several expressions, or use keywords that cannot be
    assigned.
    """
    depth = 0
    toks = list(_tokens(query))
    if not toks or toks[0].text in ("not", "some", "every", "import", "package", "default"):
        return None
    for tok in toks:
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and (tok.text in (":=", "=", ";", "with") or tok.kind == "other"):
            return None
    if "\n" in query.strip():
        return None
    return f"{RESULT_VAR} := ({query})"


# ---------------------------------------------------------------------------
# The embedded engine.

_ENGINE_LOCK = threading.RLock()


@contextlib.contextmanager
def _captured_c_stdout() -> Iterator[None]:
    """Diverts C-level stdout while rego-cpp runs.

    rego-cpp prints a banner for every parse error straight to file
    descriptor 1; the same error reaches us as an exception, so the print is
    only noise in a user's terminal or notebook server log.
    """
    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
    except (AttributeError, OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        saved = os.dup(fd)
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def _regopy() -> Any:
    import regopy

    return regopy


_ERR_LOC = re.compile(r"\(error \d+:([^|\n]*)\|(\d+)\|(\d+)")
_ERR_MSG = re.compile(r"\(errormsg (\d+):")


def _first_error_message(text: str) -> str:
    m = _ERR_MSG.search(text)
    if not m:
        return text.strip()
    start = m.end()
    return text[start : start + int(m.group(1))]


@attrs.frozen(kw_only=True)
class RegoDiagnostic:
    """One problem found in a module."""

    entry: str
    line: int | None
    message: str


def _diagnostic_from_parse_error(text: str, sources: Mapping[str, str]) -> RegoDiagnostic:
    msg = _first_error_message(text)
    loc = _ERR_LOC.search(text)
    if loc and loc.group(1) in sources:
        src = sources[loc.group(1)]
        # rego-cpp reports byte offsets into the UTF-8 source.
        byte_off = int(loc.group(2))
        char_off = len(src.encode("utf-8")[:byte_off].decode("utf-8", "ignore"))
        return RegoDiagnostic(entry=loc.group(1), line=line_of(src, char_off), message=msg)
    name = next(iter(sources), "<module>")
    return RegoDiagnostic(entry=name, line=None, message=msg)


class Engine:
    """A compiled set of modules and data, ready to answer queries.

    Instances are not thread-safe on their own; callers hold ``lock``.
    """

    def __init__(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        rp = _regopy()
        self.lock = threading.Lock()
        self._interp: regopy.Interpreter = rp.Interpreter()
        for name in sorted(modules):
            off = excessive_nesting(modules[name])
            if off is not None:
                raise BundleError(_nesting_message(), entry=name, line=line_of(modules[name], off))
        check_value_nesting(data, what="data", entry="data.json")
        with _ENGINE_LOCK, _captured_c_stdout():
            for name in sorted(modules):
                try:
                    self._interp.add_module(name, modules[name])
                except rp.RegoError as exc:
                    d = _diagnostic_from_parse_error(str(exc), {name: modules[name]})
                    raise BundleError(d.message, entry=d.entry, line=d.line) from None
            self._interp.add_data_json(json.dumps(dict(data)))

    def query(self, query: str, input: Any = None) -> list[dict[str, Any]]:
        """Runs ``query`` and returns rego-cpp's results (expressions, bindings).

        Raises:
            BundleError: The query failed to parse or evaluate.
        """
        from regopy.rego_shared import (
            rego_free_output,
            rego_output_ok,
            rego_output_string,
            rego_query,
        )

        rp = _regopy()
        check_value_nesting(input, what="input")
        if excessive_nesting(query) is not None:
            raise BundleError(f"query: {_nesting_message()}")
        with self.lock, _ENGINE_LOCK, _captured_c_stdout():
            try:
                # regopy.Input keeps string values exact (set_input_term would keep
                # JSON escapes inside strings and break count(), upper() and co).
                self._interp.set_input(rp.Input(input if input is not None else {}))
                out = rego_query(self._interp._impl, query)
            except rp.RegoError as exc:
                raise BundleError(
                    f"query {query!r} failed: {_first_error_message(str(exc))}"
                ) from None
            try:
                ok = rego_output_ok(out)
                text = rego_output_string(out)
            finally:
                rego_free_output(out)
        if not ok or text.lstrip().startswith("(error") or text == "<error>":
            detail = (
                _first_error_message(text)
                if text != "<error>"
                else ("evaluation error (for example conflicting values for a complete rule)")
            )
            raise BundleError(f"query {query!r} failed: {detail}")
        if text == "undefined":
            return []
        try:
            parsed = json.loads(text)
        except RecursionError:
            raise BundleError(
                f"query {query!r}: the result is nested too deeply to be read back"
            ) from None
        except ValueError:
            # rego-cpp does not escape quotes or backslashes in the strings it
            # prints; such a result cannot be read back unambiguously.
            raise BundleError(
                f"query {query!r}: the embedded engine cannot return strings containing "
                'quotes or backslashes; return them through OPA, or avoid " and \\ in results'
            ) from None
        return parsed if isinstance(parsed, list) else [parsed]


def compile_diagnostics(
    modules: Mapping[str, str],
    *,
    v1_modules: frozenset[str],
    packages: Mapping[str, tuple[str, ...]],
) -> list[RegoDiagnostic]:
    """Parses and compiles ``modules`` with rego-cpp; returns every problem found."""
    rp = _regopy()
    diags: list[RegoDiagnostic] = []
    for name in sorted(v1_modules):
        off = v1_body_without_if(modules[name])
        if off is not None:
            diags.append(
                RegoDiagnostic(
                    entry=name,
                    line=line_of(modules[name], off),
                    message="`if` keyword is required before rule body (Rego v1)",
                )
            )
    # Parse modules one at a time so that every broken file is reported, not
    # only the first.
    for name in sorted(modules):
        off = excessive_nesting(modules[name])
        if off is not None:
            diags.append(
                RegoDiagnostic(
                    entry=name, line=line_of(modules[name], off), message=_nesting_message()
                )
            )
            continue
        interp = rp.Interpreter()
        with _ENGINE_LOCK, _captured_c_stdout():
            try:
                interp.add_module(name, modules[name])
            except rp.RegoError as exc:
                diags.append(_diagnostic_from_parse_error(str(exc), {name: modules[name]}))
    if diags:
        return diags
    # rego-cpp resolves function calls only when it evaluates them, so calls
    # to functions that do not exist are found statically, as OPA's compiler
    # does: against OPA's builtins and the functions each package defines.
    defined: dict[tuple[str, ...], set[str]] = {}
    for name, src in modules.items():
        defined.setdefault(packages[name], set()).update(_function_definitions(src))
    for name in sorted(modules):
        diags.extend(_call_problems(name, modules[name], packages[name], defined))
    return diags


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


@functools.lru_cache(maxsize=1)
def opa_builtins() -> dict[str, int]:
    """OPA's builtin functions, name → argument count (-1: variadic or unknown)."""
    raw = resources.files("policysupply._internal").joinpath("opa_builtins.json").read_text()
    table: dict[str, int] = json.loads(raw)["builtins"]
    return table


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


def _function_definitions(source: str) -> set[str]:
    """Names of functions a module defines (``f(x) := ...`` at the start of a line)."""
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    out: set[str] = set()
    depth = 0
    for i, tok in enumerate(toks):
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        elif (
            depth == 0
            and i in firsts
            and tok.kind == "ident"
            and i + 1 < len(toks)
            and toks[i + 1].text == "("
        ):
            out.add(tok.text)
    return out


def _import_aliases(toks: list[_Tok]) -> dict[str, tuple[str, ...]]:
    """Import alias → imported path (``import data.lib as l`` → ``{"l": ("data", "lib")}``)."""
    aliases: dict[str, tuple[str, ...]] = {}
    for i, tok in enumerate(toks):
        if tok.text != "import":
            continue
        path: list[str] = []
        j = i + 1
        while j < len(toks) and toks[j].kind == "ident":
            path.append(toks[j].text)
            j += 1
            if j < len(toks) and toks[j].text == ".":
                j += 1
            else:
                break
        if not path:
            continue
        if j + 1 < len(toks) and toks[j].text == "as":
            aliases[toks[j + 1].text] = tuple(path)
        else:
            aliases[path[-1]] = tuple(path)
    return aliases


def _call_problems(
    entry: str,
    source: str,
    package: tuple[str, ...],
    defined: Mapping[tuple[str, ...], set[str]],
) -> list[RegoDiagnostic]:
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    aliases = _import_aliases(toks)
    builtins = opa_builtins()
    problems: list[RegoDiagnostic] = []
    depth = 0
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        if tok.kind != "ident" or tok.text in _KEYWORDS or (i > 0 and toks[i - 1].text == "."):
            i += 1
            continue
        # Collect a dotted name (`a.b.c`) and see whether a call follows it.
        parts = [tok.text]
        j = i + 1
        while j + 1 < len(toks) and toks[j].text == "." and toks[j + 1].kind == "ident":
            parts.append(toks[j + 1].text)
            j += 2
        is_definition = depth == 0 and i in firsts
        if j < len(toks) and toks[j].text == "(" and not is_definition:
            if parts[0] in aliases:
                parts = [*aliases[parts[0]], *parts[1:]]
            full = ".".join(parts)
            if full in builtins:
                problem = _arity_problem(full, builtins[full], toks, j)
            elif (len(parts) == 1 and full in defined.get(package, set())) or (
                parts[0] == "data" and parts[-1] in defined.get(tuple(parts[1:-1]), set())
            ):
                problem = None
            elif parts[0] == "input":
                problem = None  # refused by the parser or the evaluator, not a call
            else:
                problem = f"undefined function {full}"
            if problem:
                problems.append(
                    RegoDiagnostic(entry=entry, line=line_of(source, tok.offset), message=problem)
                )
        i = j if j > i + 1 else i + 1
    return problems


def _arity_problem(name: str, arity: int, toks: list[_Tok], open_idx: int) -> str | None:
    if arity < 0:
        return None
    if toks[open_idx + 1 : open_idx + 2] and toks[open_idx + 1].text == ")":
        count = 0
    else:
        depth = 0
        count = 1
        for k in range(open_idx, len(toks)):
            tok = toks[k]
            if tok.text in ("(", "[", "{"):
                depth += 1
            elif tok.text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and tok.text == ",":
                count += 1
    # One extra argument is allowed: it binds the result (`count(xs, n)`).
    if count < arity or count > arity + 1:
        return f"{name}: arity mismatch: {count} argument(s) given, {arity} expected"
    return None
