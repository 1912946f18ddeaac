"""The embedded engine: rego-cpp (through ``regopy``) in a worker process.

Zero-install, and never silently different from OPA:

* rego-cpp runs in a child process (``_embedded_worker``), started on the
  first ``prepare``/``check`` and reused for every query of a preparation; a
  crash there (rego-cpp dies with SIGSEGV on some valid policies) is a
  ``BundleError`` naming the module or query, never the death of the caller.
* Builtin errors are strict (as ``opa eval --strict-builtin-errors``):
  a type error, division by zero or failing builtin is a ``BundleError``,
  never an undefined result that would silently disable a deny rule.
* What rego-cpp answers differently from OPA is refused with
  ``UnsupportedByEngineError`` ("use the OPA engine"): the builtins listed in
  ``embedded_unsupported.json`` (derived by ``scripts/probe_embedded.py``
  from OPA's compliance suite), strings rego-cpp mishandles (escapes, quotes,
  control and non-ASCII characters), and a few constructs (see
  ``rego_source.unsupported_constructs``). Rego v0 modules are refused too.

The refusals (``embedded_refusals``), the worker pool (``embedded_pool``)
and the shaping of results (``embedded_results``) are in their own modules.

See docs/adr/0012-embedded-engine-isolation.md.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from policysupply._internal.engines import rego_rewrite_iter as iter_order
from policysupply._internal.engines import rego_source as src
from policysupply._internal.engines._worker_client import WorkerDiedError
from policysupply._internal.engines.base import (
    CheckRequest,
    RegoDiagnostic,
    RegoVersions,
    ResultSet,
    UnsupportedByEngineError,
)
from policysupply._internal.engines.embedded_pool import (
    _POOL as _POOL,
)
from policysupply._internal.engines.embedded_pool import (
    _POOL_LOCK as _POOL_LOCK,
)
from policysupply._internal.engines.embedded_pool import (
    _check_worker,
    _give_back,
    _take_worker,
)
from policysupply._internal.engines.embedded_refusals import (
    ADVICE as ADVICE,
)
from policysupply._internal.engines.embedded_refusals import (
    _check_plain,
    _crash_message,
    _parse_diagnostic,
    _refusal,
)
from policysupply._internal.engines.embedded_refusals import (
    unsupported_builtins as unsupported_builtins,
)
from policysupply._internal.engines.embedded_results import (
    _data_refs,
    _error_text,
    _expression_texts,
    _results,
)
from policysupply._internal.engines.rego_lexer import _KEYWORDS
from policysupply._internal.engines.rego_rewrite import rewrite
from policysupply._internal.engines.rego_rewrite_checks import refusal_reason
from policysupply._internal.engines.rego_rewrite_not import negates
from policysupply._internal.engines.rego_rewrite_order import (
    _MARKER as _ORDER_MARK,
)
from policysupply._internal.engines.rego_rewrite_order import (
    UNSUPPORTED_MARK,
    dedupe_helpers,
    helper_host,
    ordering_in_query,
    rewrite_query,
    with_helpers_forced,
)
from policysupply._internal.engines.rego_unsupported import nested_with_data
from policysupply.errors import BundleError


class EmbeddedEngine:
    """rego-cpp behind the engine seam, isolated in a worker process.

    Args:
        timeout: Seconds a single parse or query may take before the worker
            is killed and the call fails (``None``: no limit).
    """

    def __init__(self, *, timeout: float | None = 60.0) -> None:
        self._timeout = timeout

    @property
    def name(self) -> str:
        return "embedded"

    def __repr__(self) -> str:
        return "EmbeddedEngine()"

    # -- check -------------------------------------------------------------

    def check(self, request: CheckRequest) -> list[RegoDiagnostic]:
        """Every problem ``opa check`` would report that this engine finds.

        Without ``refuse`` (checking a bundle that OPA will evaluate, as
        ``Bundle.check`` and ``policysupply build`` do), builtins rego-cpp gets
        wrong are fine, and constructs its parser cannot read are reported as
        problems of this engine, not raised.

        Raises:
            UnsupportedByEngineError: ``strict`` (OPA's strict-mode checks
                need the OPA engine); or ``refuse`` and the modules use a
                builtin or construct this engine would answer differently
                from OPA.
        """
        if request.strict:
            raise UnsupportedByEngineError(
                "strict checks (as `opa check --strict`) need the OPA engine (engine='opa')"
            )
        diags = self._diagnostics(
            request.modules, rego_versions=request.rego_versions, refuse=request.refuse
        )
        if not diags and request.refuse:
            self._refuse_unsupported(request.modules)
        return diags

    def _diagnostics(
        self, modules: Mapping[str, str], *, rego_versions: RegoVersions, refuse: bool
    ) -> list[RegoDiagnostic]:
        diags: list[RegoDiagnostic] = []
        for name in sorted(modules):
            source = modules[name]
            off = src.excessive_nesting(source)
            if off is not None:
                diags.append(
                    RegoDiagnostic(
                        entry=name, line=src.line_of(source, off), message=src._nesting_message()
                    )
                )
                continue
            if '$"' in source and refuse:
                # Template strings: neither this lexer nor rego-cpp reads them.
                found = src.unsupported_constructs(
                    source, unsupported_builtins=unsupported_builtins()
                )
                if found:
                    raise _refusal(name, source, found)
            if rego_versions.get(name, 1) == 1 and '$"' not in source:
                off = src.v1_body_without_if(source)
                if off is not None:
                    diags.append(
                        RegoDiagnostic(
                            entry=name,
                            line=src.line_of(source, off),
                            message="`if` keyword is required before rule body (Rego v1)",
                        )
                    )
            early = src.syntax_problem(source)
            if early is not None:
                diags.append(RegoDiagnostic(entry=name, line=early[0], message=early[1]))
                continue
            parsed = self._parse(name, source)
            if parsed:
                # rego-cpp refuses some valid Rego (`some k, v in` inside a
                # comprehension, `with` on functions): say so, not "syntax error".
                found = src.unsupported_constructs(
                    source, unsupported_builtins=unsupported_builtins()
                )
                if found and refuse:
                    raise _refusal(name, source, found)
                if found:
                    refusal = _refusal(name, source, found)
                    parsed = [RegoDiagnostic(entry=name, line=refusal.line, message=str(refusal))]
            diags.extend(parsed)
        if diags:
            return _sorted(diags)
        packages = {name: src.package_path(s, entry=name) for name, s in modules.items()}
        return _sorted(src.semantic_problems(modules, packages))

    def _parse(self, name: str, source: str) -> list[RegoDiagnostic]:
        worker = _check_worker()
        try:
            answer = worker.request(
                {"op": "parse", "name": name, "source": source}, timeout=self._timeout
            )
        except WorkerDiedError as exc:
            return [
                RegoDiagnostic(
                    entry=name, line=None, message=_crash_message("parsing this module", exc.reason)
                )
            ]
        if answer.get("ok"):
            return []
        return [_parse_diagnostic(answer.get("error") or {}, name, source)]

    @staticmethod
    def _refuse_unsupported(modules: Mapping[str, str]) -> None:
        table = unsupported_builtins()
        for name in sorted(modules):
            found = src.unsupported_constructs(modules[name], unsupported_builtins=table)
            if found:
                raise _refusal(name, modules[name], found)
        packages = {name: src.package_path(s, entry=name) for name, s in modules.items()}
        nested = nested_with_data(modules, packages)
        if nested is not None:
            name, off = nested
            raise _refusal(
                name,
                modules[name],
                [
                    (
                        off,
                        "`with data...` over rules that use `with` themselves (rego-cpp "
                        "drops the outer replacement of data inside the inner `with`)",
                    )
                ],
            )

    # -- prepare -----------------------------------------------------------

    def prepare(
        self, modules: Mapping[str, str], data: Mapping[str, Any], *, rego_versions: RegoVersions
    ) -> EmbeddedPrepared:
        """Checks, refuses what this engine cannot answer exactly, loads a worker.

        Raises:
            UnsupportedByEngineError: Rego v0 modules, or builtins, constructs
                or strings the embedded engine would answer differently.
            BundleError: A module does not compile (first problem; the
                message counts the rest).
        """
        v0 = sorted(m for m in modules if rego_versions.get(m, 1) == 0)
        if v0:
            raise UnsupportedByEngineError(
                "the embedded engine does not implement Rego v0 semantics (e.g. "
                "`deny[msg] { ... }` would evaluate as an object, not a set); "
                f"{ADVICE}, or migrate the module to Rego v1 (`opa fmt --write --v0-v1`)",
                entry=v0[0],
            )
        src.check_value_nesting(data, what="data", entry="data.json")
        diags = self.check(
            CheckRequest(
                modules=modules, data=data, rego_versions=rego_versions, strict=False, refuse=True
            )
        )
        if diags:
            first = diags[0]
            more = f" ({len(diags) - 1} more problem(s))" if len(diags) > 1 else ""
            raise BundleError(first.message + more, entry=first.entry, line=first.line)
        _check_plain(data, "data", entry="data.json")
        prepared = EmbeddedPrepared(dict(modules), dict(data), timeout=self._timeout)
        prepared._load()
        return prepared


def _sorted(diags: list[RegoDiagnostic]) -> list[RegoDiagnostic]:
    return sorted(diags, key=lambda d: (d.entry, d.line or 0))


def _rewritten(name: str, source: str) -> str:
    """``rewrite(source)``, a stage's refusal (or OPA's compile error) naming the module."""
    try:
        return rewrite(source)
    except BundleError as exc:
        if exc.entry is not None:
            raise
        raise type(exc)(exc.reason, entry=name, line=exc.line) from None


class EmbeddedPrepared:
    """Modules and data loaded into one worker process, reused for every query.

    Safe to share between threads (queries are serialised). ``close()``
    kills the worker; so does garbage collection and interpreter exit.
    """

    def __init__(
        self, modules: dict[str, str], data: dict[str, Any], *, timeout: float | None
    ) -> None:
        self._modules = modules
        # What rego-cpp evaluates: rewritten where it would differ from OPA
        # (rego_rewrite); a stage may refuse with UnsupportedByEngineError.
        self._packages = {n: src.package_path(s, entry=n) for n, s in modules.items()}
        self._sources = dedupe_helpers(
            {name: _rewritten(name, source) for name, source in modules.items()}, self._packages
        )
        # Keys sorted: rego-cpp iterates objects in the order it reads them.
        try:
            self._data_json = _sorted_json(data)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"data is not JSON: {exc}", entry="data.json") from None
        self._timeout = timeout
        self._worker = _take_worker()
        self._loaded = False
        self._closed = False
        # Queries iterate in OPA's order through helpers of the first module's
        # package, added (and the worker reloaded) when a query first needs them.
        self._query_module = min(modules) if modules else None
        self._query_helpers = False

    @property
    def engine(self) -> str:
        return "embedded"

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id while it runs (for tests and diagnostics)."""
        return self._worker.pid

    def __repr__(self) -> str:
        return f"EmbeddedPrepared(modules={len(self._modules)}, worker_pid={self.worker_pid})"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loaded:
            _give_back(self._worker, self._timeout)
        else:
            self._worker.close()

    def _load(self) -> None:
        """(Re)starts the worker and loads modules then data, one request each."""
        with self._worker.lock:
            self._loaded = False
            for name in sorted(self._modules):
                try:
                    answer = self._worker.request(
                        {"op": "add_module", "name": name, "source": self._sources[name]},
                        timeout=self._timeout,
                    )
                except WorkerDiedError as exc:
                    raise BundleError(
                        _crash_message("loading this module", exc.reason), entry=name
                    ) from None
                if not answer.get("ok"):
                    d = _parse_diagnostic(answer.get("error") or {}, name, self._sources[name])
                    self._worker.close()
                    raise BundleError(d.message, entry=d.entry, line=d.line)
            try:
                answer = self._worker.request(
                    {"op": "add_data", "json": self._data_json}, timeout=self._timeout
                )
            except WorkerDiedError as exc:
                raise BundleError(
                    _crash_message("loading data", exc.reason), entry="data.json"
                ) from None
            if not answer.get("ok"):
                self._worker.close()
                raise BundleError("the embedded engine refused the data", entry="data.json")
            self._loaded = True

    def _suspects(self, query: str) -> list[str]:
        """Modules whose package the query refers to (all, if none match)."""
        refs = {
            tuple(p)
            for p in (name.split(".")[1:] for name in _data_refs(query) if name.startswith("data."))
        }
        hits = sorted(
            m
            for m, pkg in self._packages.items()
            for ref in refs
            if ref[: len(pkg)] == pkg or pkg[: len(ref)] == ref
        )
        return hits or sorted(self._modules)

    def _ordering_query(self, query: str) -> str:
        """``query`` with ``<``/``sort`` calling OPA-order helpers in a loaded package.

        The helpers are added to a module (and the worker reloaded) the
        first time a query needs them and no module has them.
        """
        host = helper_host(self._sources, self._packages)
        if host is None:
            raise UnsupportedByEngineError(
                f"query {query!r}: the embedded engine orders values (<, <=, >, >=, sort) "
                "as OPA does only with a module whose package path is plain names; "
                f"{ADVICE}"
            )
        name, package = host
        if _ORDER_MARK not in self._sources[name]:
            with self._worker.lock:
                self._sources[name] = with_helpers_forced(self._sources[name])
                if self._loaded and self._worker.running:
                    self._worker.request({"op": "reset"}, timeout=self._timeout)
                self._loaded = False
        return rewrite_query(query, package)

    def query(self, query: str, input: Any = None) -> Sequence[ResultSet]:
        """Evaluates ``query`` against the loaded modules and data.

        Returns:
            OPA's result sets: one ``{"expressions": [{"value", "text"}],
            "bindings": {...}}`` per solution; empty when undefined.

        Raises:
            UnsupportedByEngineError: The query or input holds something this
                engine would answer differently from OPA.
            BundleError: The query does not parse, evaluation failed (type
                error, division by zero, builtin error, conflicting values),
                or rego-cpp crashed (the worker is restarted next time).
        """
        if self._closed:
            raise BundleError("this preparation was closed")
        if src.excessive_nesting(query) is not None:
            raise BundleError(f"query: {src._nesting_message()}")
        found = src.unsupported_constructs(
            query, unsupported_builtins=unsupported_builtins(), query=True
        )
        if found:
            raise _refusal(None, query, found)
        if negates(query):
            # rego-cpp answers a negated query undefined where OPA reports
            # true, and OPA's hoisting would add locals to the bindings.
            raise UnsupportedByEngineError(
                f"query {query!r}: the embedded engine does not evaluate a negated "
                f"expression (`not ...`) in a query as OPA does; bind it in a rule, or {ADVICE}"
            )
        sent = query
        if ordering_in_query(query) is not None:
            sent = self._ordering_query(query)
        if re.search(r"\bwith\s+data\b", query):
            # As a rule would (EmbeddedEngine._refuse_unsupported).
            as_rule = {"<query>": f"package __psc_query\n\n__psc_query if {{\n{query}\n}}\n"}
            if nested_with_data(
                {**self._modules, **as_rule}, {**self._packages, "<query>": ("__psc_query",)}
            ):
                raise UnsupportedByEngineError(
                    f"query {query!r}: the embedded engine cannot evaluate `with data...` "
                    "over rules that use `with` themselves exactly as OPA does (rego-cpp "
                    f"drops the outer replacement of data inside the inner `with`); {ADVICE}"
                )
        input_json: str | None = None
        if input is not None:
            src.check_value_nesting(input, what="input")
            _check_plain(input, "input")
            try:
                input_json = _sorted_json(input)
            except (TypeError, ValueError) as exc:
                raise BundleError(f"input is not JSON: {exc}") from None
        # Iteration in the query takes OPA's order too (the rows' order).
        evaluated = sent
        first = self._query_module
        if first is not None:
            evaluated = iter_order.rewrite_query(
                sent, _package_ref(self._packages[first]), _QUERY_HELPERS
            )
        wrapped = src.wrap_single_expression(evaluated)
        texts = _expression_texts(query)
        with self._worker.lock:
            if iter_order.PREFIX in evaluated and not self._query_helpers and first is not None:
                self._sources[first] += iter_order.helpers(
                    _QUERY_HELPERS, frozenset(iter_order.ALL_KINDS)
                )
                self._query_helpers = True
                if self._loaded and self._worker.running:
                    with contextlib.suppress(WorkerDiedError):  # _load starts a new one
                        self._worker.request({"op": "reset"}, timeout=self._timeout)
                self._loaded = False
            if not self._loaded or not self._worker.running:
                self._load()
            try:
                answer = self._worker.request(
                    {"op": "query", "query": wrapped or evaluated, "input": input_json},
                    timeout=self._timeout,
                )
            except WorkerDiedError as exc:
                self._loaded = False
                suspects = ", ".join(self._suspects(query))
                raise BundleError(
                    _crash_message(f"evaluating {query!r} over {suspects}", exc.reason)
                ) from None
        if not answer.get("ok"):
            text = _error_text(answer.get("error") or {})
            refused = refusal_reason(text)
            if refused is not None:
                raise UnsupportedByEngineError(
                    f"query {query!r}: the embedded engine cannot evaluate {refused} "
                    f"exactly as OPA does; {ADVICE}"
                )
            if UNSUPPORTED_MARK in text:
                # Raised only by rego_rewrite_order's helpers.
                raise UnsupportedByEngineError(
                    f"query {query!r}: the embedded engine cannot order two objects, two "
                    "sets, or arrays holding collections of one type exactly as OPA does; "
                    f"{ADVICE}"
                )
            if iter_order.REFUSAL_MARK in text:
                what = (
                    "an object or set whose keys are not in sorted order, nested in a "
                    "value given to walk, yaml.marshal, urlquery.encode_object or "
                    "`with input`,"
                    if iter_order.NESTED in text
                    else "a set of values of several types or of collections (or an "
                    "object with such keys)"
                )
                raise UnsupportedByEngineError(
                    f"query {query!r}: {what} is iterated where its order shows, and the "
                    f"embedded engine cannot reproduce OPA's order (sorted) for it; {ADVICE}"
                )
            raise BundleError(f"query {query!r} failed: {text}")
        return _results(str(answer.get("text", "")), query, wrapped is not None, texts)


def _sorted_json(value: Any) -> str:
    """JSON text with every object's keys sorted as OPA iterates them.

    rego-cpp iterates objects in the order it reads them; OPA by sorted key
    (Go's byte order, Python's ``str`` order). Keys that are not strings are
    turned into JSON's strings first, so that they sort as strings.
    """
    if not _str_keys(value):
        value = json.loads(json.dumps(value, allow_nan=False))
    return json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)


def _str_keys(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                return False
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return True


# The suffix of the helpers queries call (rego_rewrite_iter's own use a hash).
_QUERY_HELPERS = "query"


def _package_ref(package: tuple[str, ...]) -> str:
    return "data" + "".join(
        f".{p}" if p.isidentifier() and p not in _KEYWORDS else f"[{json.dumps(p)}]"
        for p in package
    )


_DEFAULT: EmbeddedEngine | None = None


def default_engine() -> EmbeddedEngine:
    """A shared ``EmbeddedEngine`` with default settings."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = EmbeddedEngine()
    return _DEFAULT
