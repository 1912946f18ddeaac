"""The bundle server's HTTP side: listening socket and request handler."""

from __future__ import annotations

import hmac
import re
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from policysupply.loaders._common import logger

if TYPE_CHECKING:
    import http.server

    from policysupply.loaders.store import ServedBundle

# (name, the ETag the client holds if it is current, seconds to wait) -> what to answer
Current = Callable[[str, "str | None", float], "tuple[ServedBundle, bytes] | None"]


BUNDLE_MEDIA_TYPE = "application/vnd.openpolicyagent.bundles"
_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+)")
_MAX_LONG_POLL = 300.0  # seconds a request is held at most, whatever OPA asks


def _listen(host: str, port: int, handler: Any) -> http.server.ThreadingHTTPServer:
    import http.server  # lazily: only a running server needs it

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server((host, port), handler)


def _etags(header: str | None) -> set[str]:
    out = set()
    for part in (header or "").split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            out.add(tag if tag.startswith('"') else f'"{tag}"')
    return out


def _handler(
    token: str | None,
    timeout: float,
    serving: Callable[[str], ServedBundle | None],
    current: Current,
) -> type[http.server.BaseHTTPRequestHandler]:
    """The request handler class for a server with this ``token`` and socket ``timeout``.

    ``serving(name)`` is what is served now; ``current(name, etag, wait)``
    answers, holding a long poll until the bundle changes or ``wait`` ends.
    """
    import http.server

    socket_timeout = timeout

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "policysupply-bundle-server"
        sys_version = ""
        # The socket timeout for every read and write (StreamRequestHandler.setup):
        # a timed-out read or write ends the request and closes the connection.
        timeout = socket_timeout

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("bundle server: " + format, *args)

        def _plain(self, status: int, text: str, extra: Mapping[str, str] | None = None) -> None:
            body = text.encode()
            self.send_response(status)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorized(self) -> bool:
            if token is None:
                return True
            got = self.headers.get("Authorization") or ""
            return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

        def _serve(self) -> None:
            if not self._authorized():
                self._plain(401, "unauthorized\n", {"WWW-Authenticate": "Bearer"})
                return
            path = urllib.parse.urlsplit(self.path).path
            m = re.fullmatch(r"/bundles/([^/]+)", path)
            if m is None:
                self._plain(404, "not found\n")
                return
            name = urllib.parse.unquote(m.group(1))
            tags = _etags(self.headers.get("If-None-Match"))
            prefer = self.headers.get("Prefer") or ""
            wm = _WAIT.search(prefer)
            wait = min(float(wm.group(1)), _MAX_LONG_POLL) if wm else 0.0
            now = serving(name)
            held = now.etag if now is not None and now.etag in tags else None
            entry = current(name, held, wait)
            if entry is None:
                self._plain(404, f"no bundle named {name}\n")
                return
            served, payload = entry
            if served.etag in tags:
                self.send_response(304)
                self.send_header("ETag", served.etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", served.etag)
            # OPA keeps long polling only while 200s carry its bundle media type.
            self.send_header("Content-Type", BUNDLE_MEDIA_TYPE if wm else "application/gzip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = _serve

        def _refuse(self) -> None:
            self._plain(405, "method not allowed\n", {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    return Handler
