"""A fault-injecting HTTP proxy on loopback, in front of a real registry.

Rules pick requests by method and path pattern and apply a fault a number of
times (then let requests through): a connection reset, a status code with
optional ``Retry-After``, a truncated body, a body with a flipped byte, or a
response slower than the client's read timeout.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Rule:
    method: str
    path: str  # regex searched in the request path
    fault: str  # reset | status | truncate | corrupt | slow
    times: int = 1  # how many matching requests get the fault (-1: all)
    status: int = 503
    retry_after: str | None = None
    delay: float = 2.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            method == self.method
            and re.search(self.path, path) is not None
            and (self.times < 0 or self.hits < self.times)
        )


@dataclass
class FaultProxy:
    upstream: str  # host:port
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, outcome)
    host: str = ""

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and re.search(pattern, p))


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rule = next((r for r in proxy.rules if r.matches(self.command, self.path)), None)
            if rule:
                rule.hits += 1
            proxy.log.append((self.command, self.path, rule.fault if rule else "pass"))
            if rule and rule.fault == "reset":
                self._reset()
                return
            if rule and rule.fault == "status":
                self.send_response(rule.status)
                if rule.retry_after is not None:
                    self.send_header("Retry-After", rule.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if rule and rule.fault == "slow":
                time.sleep(rule.delay)
            conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = proxy.upstream
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if rule and rule.fault == "corrupt" and data:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() in ("content-length", "transfer-encoding", "connection"):
                    continue
                if k.lower() == "location":
                    v = v.replace(f"//{proxy.upstream}", f"//{proxy.host}")
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if rule and rule.fault == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._reset()
                return
            self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    return Handler


def start(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream=upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
