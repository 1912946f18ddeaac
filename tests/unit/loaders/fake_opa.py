"""An in-memory OPA behind the loader's OpaApi seam, for fault injection.

It keeps policies and base data, answers ``GET /v1/policies`` with the part
of the AST the loader reads (package path, rule head references), and refuses
what OPA's compiler refuses in the loader's tests: a module without a package
(a parse error), base data where a rule is defined and a rule where base data
is (conflicts), and a call to a function no module defines (a compile error
another write may fix). Faults are injected per write, counted from 1:

- ``refuse``: OPA answers with a non-retryable error; nothing is applied.
- ``lose``: OPA applies the write, but the answer never arrives.
- ``drop``: the request never arrives; nothing is applied.
- ``down``: OPA is gone from this write on; every later call fails too.
- ``interrupt``: the process is interrupted (KeyboardInterrupt) mid-write.

Reads fail all at once (``refuse_reads``, ``down``) or one by one: a read
named in ``refused_reads`` (``"data/<path>"``, ``"policy/<id>"``) is refused
as OPA's authorization policy refuses a path it does not allow (401).

Real OPA stays the reference: tests/interop/test_loaders_opa.py runs the same
scenarios against it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from policysupply._internal.bundle_format import parse_json
from policysupply._internal.engines.rego_source import opa_builtins
from policysupply.errors import LoadError
from policysupply.loaders._api import MISSING, DataPath, Rejected

# A package path: names, and string keys in brackets ("..." or `...`), as OPA reads them.
_PACKAGE = re.compile(r"^package[ \t]+(\w+(?:\.\w+|\[\"[^\"\n]*\"\]|\[`[^`\n]*`\])*)", re.M)
_SEGMENT = re.compile(r"(\w+)|\[\"([^\"]*)\"\]|\[`([^`]*)`\]")
_IMPORT = re.compile(r"^import\s+data\.([\w.]+)(?:\s+as\s+(\w+))?", re.M)
_HEAD = re.compile(r"^(?:default\s+)?([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)*)(\()?", re.M)
_CALL = re.compile(r"(?<![\w.])([A-Za-z_][\w.]*)\(")
_KEYWORDS = {"package", "import", "default", "not", "some", "every", "with", "else"}


class FakeOpa:
    """OpaApi over dictionaries, with per-write faults (see the module docstring)."""

    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.faults: dict[int, str] = {}  # write attempt (1-based) -> fault kind
        self.refuse_reads = False
        self.refused_reads: set[str] = set()  # reads refused one by one (see the docstring)
        self.attempts: list[tuple[str, str]] = []  # every write tried, in order
        self.accepted: list[int] = []  # which attempts (1-based) OPA applied
        self.reads: list[str] = []
        self.bodies: list[tuple[str, bytes]] = []  # data PUTs sent as given bytes
        self.down = False

    # -- state, for assertions --------------------------------------------------

    def state(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Every policy and the whole base data document (copies)."""
        return dict(self.policies), copy.deepcopy(self.data)

    # -- OpaApi: reads -------------------------------------------------------------

    def list_policies(self) -> list[Mapping[str, Any]]:
        self._read("policies")  # every module OPA holds: a load must never need this
        return [{"id": pid, "raw": raw, "ast": _ast(raw)} for pid, raw in self.policies.items()]

    def get_policy(self, pid: str) -> Mapping[str, Any] | None:
        self._read("policy/" + pid)
        raw = self.policies.get(pid)
        return None if raw is None else {"id": pid, "raw": raw, "ast": _ast(raw)}

    def get_data(self, path: DataPath) -> Any:
        self._read("data/" + "/".join(path))
        return copy.deepcopy(_value_at(self._merged(), path))

    def query(self, path: DataPath, input: Any) -> Any:
        self._read("query/" + "/".join(path))
        value = _value_at(self._merged(), path)
        return None if value is MISSING else value

    def healthy(self) -> bool:
        return not self.down

    def close(self) -> None:
        pass

    # -- OpaApi: writes --------------------------------------------------------------

    def put_data(self, path: DataPath, value: Any, body: bytes | None = None) -> None:
        if body is not None:
            # The bytes sent must read back as exactly the value meant (read
            # as OPA reads JSON: a lone surrogate escape becomes U+FFFD).
            read_back = parse_json(body, entry="PUT body")
            assert read_back == value, f"body for {path} does not read back as the value"
            self.bodies.append(("/".join(path), body))
        self._write("PUT data", "/".join(path), lambda data, _: _set(data, path, value))

    def delete_data(self, path: DataPath) -> None:
        self._write("DELETE data", "/".join(path), lambda data, _: _delete(data, path))

    def put_policy(self, pid: str, raw: str) -> None:
        self._write("PUT policy", pid, lambda _, policies: policies.__setitem__(pid, raw))

    def delete_policy(self, pid: str) -> None:
        self._write("DELETE policy", pid, lambda _, policies: policies.pop(pid, None))

    # -- internals -----------------------------------------------------------------------

    def _read(self, what: str) -> None:
        if self.down:
            raise LoadError(f"fake OPA: {what}: connection refused")
        if self.refuse_reads:
            raise Rejected(500, "internal_error", f"{what}: injected refusal", False)
        if what in self.refused_reads:
            raise Rejected(
                401, "unauthorized", f"{what}: request rejected by administrative policy", False
            )
        self.reads.append(what)

    def _write(self, op: str, target: str, change: Any) -> None:
        self.attempts.append((op, target))
        fault = self.faults.get(len(self.attempts))
        if fault == "down":
            self.down = True
        if self.down:
            raise LoadError(f"fake OPA: {op} {target}: connection refused")
        if fault == "refuse":
            raise Rejected(500, "internal_error", f"{op} {target}: injected refusal", False)
        if fault == "drop":
            raise LoadError(f"fake OPA: {op} {target}: connection reset before the request")
        data, policies = copy.deepcopy(self.data), dict(self.policies)
        change(data, policies)
        _compile(policies, data)  # raises Rejected as OPA's compiler would
        self.data, self.policies = data, policies
        self.accepted.append(len(self.attempts))
        if fault == "lose":
            raise LoadError(f"fake OPA: {op} {target}: connection lost before the answer")
        if fault == "interrupt":
            raise KeyboardInterrupt

    def _merged(self) -> dict[str, Any]:
        """Base data with a stand-in value at every rule path, as ``GET /v1/data`` mixes them."""
        merged = copy.deepcopy(self.data)
        for raw in self.policies.values():
            for path, _ in _rules(raw):
                _set(merged, path, "<rule value>")
        return merged


def _package(raw: str) -> DataPath | None:
    m = _PACKAGE.search(raw)
    if m is None:
        return None
    return tuple(
        next(g for g in seg.groups() if g is not None) for seg in _SEGMENT.finditer(m.group(1))
    )


def _rules(raw: str) -> list[tuple[DataPath, bool]]:
    """Each rule's ground head path (package + head reference) and whether it is a function."""
    pkg = _package(raw) or ()
    out = []
    for m in _HEAD.finditer(raw):
        if m.group(1) in _KEYWORDS:
            continue
        rest = tuple(s for s in m.group(2).split(".") if s)
        out.append(((*pkg, m.group(1), *rest), m.group(3) is not None))
    return out


def _ast(raw: str) -> dict[str, Any]:
    """The part of OPA's AST the loader reads: package path and rule head references."""
    pkg = _package(raw) or ()
    terms = [{"type": "var", "value": "data"}] + [{"type": "string", "value": s} for s in pkg]
    rules = []
    for path, _ in _rules(raw):
        head = path[len(pkg) :]
        ref = [{"type": "var", "value": head[0]}]
        ref += [{"type": "string", "value": s} for s in head[1:]]
        rules.append({"head": {"name": head[0], "ref": ref}})
    return {"package": {"path": terms}, "rules": rules}


def _compile(policies: Mapping[str, str], data: Mapping[str, Any]) -> None:
    functions: set[DataPath] = set()
    for pid, raw in policies.items():
        if _package(raw) is None:
            raise Rejected(
                400, "invalid_parameter", f"{pid}: rego_parse_error: package expected", True
            )
        for path, is_function in _rules(raw):
            if _value_at(data, path) is not MISSING:
                raise Rejected(
                    400,
                    "invalid_parameter",
                    f"{pid}: rego_compile_error: conflicting rule for data path {'/'.join(path)}",
                    False,
                )
            if is_function:
                functions.add(path)
    builtins = opa_builtins()
    for pid, raw in policies.items():
        pkg = _package(raw) or ()
        aliases = {
            (m.group(2) or m.group(1).split(".")[-1]): tuple(m.group(1).split("."))
            for m in _IMPORT.finditer(raw)
        }
        for m in _CALL.finditer(raw):
            name = m.group(1)
            parts = tuple(name.split("."))
            if name in builtins or parts[0] in _KEYWORDS:
                continue
            if parts[0] == "data":
                target = parts[1:]
            elif parts[0] in aliases and len(parts) > 1:
                target = aliases[parts[0]] + parts[1:]
            else:
                target = (*pkg, *parts)
            if target not in functions and _is_call(raw, m.start()):
                raise Rejected(
                    400,
                    "invalid_parameter",
                    f"{pid}: rego_type_error: undefined function {name}",
                    False,
                )


def _is_call(raw: str, start: int) -> bool:
    """A call, not a definition: a definition starts its line."""
    return not (start == 0 or raw[start - 1] == "\n")


def _value_at(doc: Any, path: DataPath) -> Any:
    node = doc
    for seg in path:
        if not isinstance(node, Mapping) or seg not in node:
            return MISSING
        node = node[seg]
    return node


def _set(doc: dict[str, Any], path: DataPath, value: Any) -> None:
    if not path:
        doc.clear()
        doc.update(value)
        return
    node = doc
    for seg in path[:-1]:
        node = node.setdefault(seg, {})
        if not isinstance(node, dict):
            raise Rejected(400, "invalid_parameter", f"{'/'.join(path)}: not an object", False)
    node[path[-1]] = copy.deepcopy(value)


def _delete(doc: dict[str, Any], path: DataPath) -> None:
    node: Any = doc
    for seg in path[:-1]:
        node = node.get(seg) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)
