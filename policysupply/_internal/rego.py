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
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
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
        with self.lock, _ENGINE_LOCK, _captured_c_stdout():
            try:
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
        parsed = json.loads(text)
        return parsed if isinstance(parsed, list) else [parsed]


def compile_diagnostics(
    modules: Mapping[str, str],
    data: Mapping[str, Any],
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
    parsed: dict[str, str] = {}
    for name in sorted(modules):
        interp = rp.Interpreter()
        with _ENGINE_LOCK, _captured_c_stdout():
            try:
                interp.add_module(name, modules[name])
            except rp.RegoError as exc:
                diags.append(_diagnostic_from_parse_error(str(exc), {name: modules[name]}))
                continue
        parsed[name] = modules[name]
    if diags:
        return diags
    # Errors rego-cpp only reports when a package is evaluated (unknown
    # functions, conflicting rules): evaluate each package once.
    engine = Engine(parsed, data)
    by_package: dict[tuple[str, ...], list[str]] = {}
    for name, pkg in packages.items():
        by_package.setdefault(pkg, []).append(name)
    for pkg, names in sorted(by_package.items()):
        ref = "data" + "".join(f"[{json.dumps(p)}]" for p in pkg)
        try:
            engine.query(ref)
        except BundleError as exc:
            diags.append(_locate_eval_error(exc.reason, {n: modules[n] for n in names}))
    return diags


_FN_NOT_FOUND = re.compile(r"Function not found: ([\w.]+)")


def _locate_eval_error(message: str, sources: Mapping[str, str]) -> RegoDiagnostic:
    detail = message.split(": ", 1)[-1]
    m = _FN_NOT_FOUND.search(detail)
    if m:
        needle = re.compile(re.escape(m.group(1)) + r"\s*\(")
        for name, src in sorted(sources.items()):
            hit = needle.search(src)
            if hit:
                return RegoDiagnostic(entry=name, line=line_of(src, hit.start()), message=detail)
    return RegoDiagnostic(entry=sorted(sources)[0], line=None, message=detail)
