"""The process that runs rego-cpp for the embedded engine.

rego-cpp is native code that can die with SIGSEGV or abort() on inputs OPA
accepts; running it here, in a child process, turns such a death into a
typed error in the parent instead of killing it (see ``embedded``). The
parent starts this module with ``python -I -m`` and talks to it over
stdin/stdout: each message is a 4-byte big-endian length and a JSON object.

Requests (``op``):
    ``add_module`` {name, source}: parse a module into the interpreter.
    ``add_data`` {json}: add a JSON base document.
    ``query`` {query, input}: evaluate (``input`` is JSON text or null);
        plans are built once per query text and reused.
    ``parse`` {name, source}: parse a module in a fresh interpreter (checks).
    ``reset``: start over with an empty interpreter.
    ``builtins`` {names}: which of these builtins rego-cpp has.
    ``ping``: answer ``{"ok": true}``.

Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": {...}}``.
Nothing here trusts the parent more than the parent trusts itself: the
process holds no secrets and reads only what it is sent.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections import OrderedDict
from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")
_MAX_PLANS = 64


def read_message(stream: BinaryIO) -> Any:
    """Reads one framed JSON message; ``None`` at end of stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return json.loads(body)


def write_message(stream: BinaryIO, message: Any) -> None:
    """Writes one framed JSON message and flushes."""
    body = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _errors_of(node: Any) -> list[dict[str, str]]:
    """Message and code of every error in a rego-cpp error sequence node."""
    from regopy.rego_shared import (
        NodeKind,
        rego_node_get,
        rego_node_size,
        rego_node_type,
        rego_node_value,
    )

    found: list[dict[str, str]] = []

    def walk(n: Any, depth: int) -> None:
        if not n or depth > 8:
            return
        kind = rego_node_type(n)
        if kind == NodeKind.Error:
            err = {"message": "", "code": ""}
            for k in range(rego_node_size(n)):
                child = rego_node_get(n, k)
                ck = rego_node_type(child)
                if ck == NodeKind.ErrorMessage:
                    err["message"] = rego_node_value(child)
                elif ck == NodeKind.ErrorCode:
                    err["code"] = rego_node_value(child)
            found.append(err)
            return
        if kind in (NodeKind.ErrorSeq, NodeKind.Results, NodeKind.Result):
            for k in range(rego_node_size(n)):
                walk(rego_node_get(n, k), depth + 1)

    walk(node, 0)
    return found


def _parse_error(text: str) -> dict[str, Any]:
    """Message, module name and byte offset from a rego-cpp parse error text."""
    import re

    loc = re.search(r"\(error \d+:([^|\n]*)\|(\d+)\|(\d+)", text)
    msg = re.search(r"\(errormsg (\d+):", text)
    message = text.strip()
    if msg:
        start = msg.end()
        message = text[start : start + int(msg.group(1))]
    out: dict[str, Any] = {"kind": "parse", "message": message}
    if loc:
        out["name"] = loc.group(1)
        out["offset"] = int(loc.group(2))
    return out


class _Worker:
    def __init__(self) -> None:
        import regopy

        self._rp = regopy
        self._interp = self._new()
        self._runtime = self._new()
        self._plans: OrderedDict[str, Any] = OrderedDict()

    def _new(self) -> Any:
        from regopy.rego_shared import rego_set_strict_builtin_errors

        interp = self._rp.Interpreter()
        # OPA's REST API and `opa eval --strict-builtin-errors`: a builtin that
        # fails is an error, never an undefined expression.
        rego_set_strict_builtin_errors(interp._impl, True)
        return interp

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "builtins":
            from regopy.rego_shared import rego_is_available_builtin

            names = [n for n in req["names"] if rego_is_available_builtin(self._interp._impl, n)]
            return {"ok": True, "available": names}
        if op == "reset":
            self._interp = self._new()
            self._runtime = self._new()
            self._plans.clear()
            return {"ok": True}
        if op == "add_module":
            return self._add_module(self._interp, req["name"], req["source"])
        if op == "parse":
            return self._add_module(self._new(), req["name"], req["source"])
        if op == "add_data":
            try:
                self._interp.add_data_json(req["json"])
            except self._rp.RegoError as exc:
                return {"ok": False, "error": {"kind": "data", "message": str(exc)[:500]}}
            self._plans.clear()
            return {"ok": True}
        if op == "query":
            return self._query(req["query"], req.get("input"))
        return {"ok": False, "error": {"kind": "protocol", "message": f"unknown op {op!r}"}}

    def _add_module(self, interp: Any, name: str, source: str) -> dict[str, Any]:
        try:
            interp.add_module(name, source)
        except self._rp.RegoError as exc:
            return {"ok": False, "error": _parse_error(str(exc))}
        self._plans.clear()
        return {"ok": True}

    def _plan(self, query: str) -> Any:
        plan = self._plans.get(query)
        if plan is None:
            plan = self._interp.build(query)
            self._plans[query] = plan
            if len(self._plans) > _MAX_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(query)
        return plan

    def _query(self, query: str, input_json: str | None) -> dict[str, Any]:
        from regopy.rego_shared import (
            rego_bundle_query,
            rego_free_output,
            rego_output_node,
            rego_output_ok,
            rego_output_string,
        )

        try:
            plan = self._plan(query)
        except self._rp.RegoError as exc:
            return {"ok": False, "error": _parse_error(str(exc)) | {"kind": "query"}}
        runtime = self._runtime
        try:
            # A fresh runtime per query when there is no input, so that the
            # previous query's input cannot leak into this one.
            if input_json is None:
                runtime = self._runtime = self._new()
            else:
                runtime.set_input_term(input_json)
            out = rego_bundle_query(runtime._impl, plan._impl)
        except self._rp.RegoError as exc:
            return {"ok": False, "error": {"kind": "eval", "message": str(exc)[:2000]}}
        try:
            ok = rego_output_ok(out)
            if not ok:
                errors = _errors_of(rego_output_node(out))
                return {"ok": False, "error": {"kind": "eval", "errors": errors}}
            text = rego_output_string(out)
        finally:
            rego_free_output(out)
        return {"ok": True, "text": text}


def main() -> None:
    """Serves requests from stdin until it closes."""
    stdin = sys.stdin.buffer
    # Our answers go to a private duplicate of fd 1; fd 1 itself is pointed
    # at stderr so that rego-cpp's own prints cannot corrupt the channel.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    stdout = os.fdopen(out_fd, "wb")
    worker = _Worker()
    while True:
        req = read_message(stdin)
        if req is None:
            return
        try:
            answer = worker.handle(req)
        except Exception as exc:
            answer = {"ok": False, "error": {"kind": "internal", "message": repr(exc)[:500]}}
        write_message(stdout, answer)


if __name__ == "__main__":
    main()
