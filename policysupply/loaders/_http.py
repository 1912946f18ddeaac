"""The bundle server's HTTP side: listening socket and request handler."""

from __future__ import annotations

import hmac
import json
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
EVENTS_PATH = "/registry/events"  # where a registry posts its push notifications
_MAX_EVENTS_BODY = 1 << 20  # distribution batches events; this is far above a batch


def _listen(host: str, port: int, handler: Any) -> http.server.ThreadingHTTPServer:
    import http.server  # lazily: only a running server needs it

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client closing its keep-alive connection (OPA, a registry's
            # notifier) is routine, not a traceback on stderr.
            import sys

            if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                logger.debug("bundle server: %s closed the connection", client_address)
                return
            super().handle_error(request, client_address)

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


def pushed_repositories(body: bytes) -> set[str]:
    """Repositories named by the push events in a registry notification (distribution's envelope).

    Only *where* something was pushed is read, to wake the watches on those
    repositories; nothing in an event is trusted for content.

    Raises:
        ValueError: Not a JSON envelope ``{"events": [...]}``.
    """
    doc = json.loads(body)
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        raise ValueError("not a registry notification envelope")
    out = set()
    for event in events:
        if not isinstance(event, dict) or event.get("action") != "push":
            continue
        target = event.get("target")
        repository = target.get("repository") if isinstance(target, dict) else None
        if isinstance(repository, str) and repository:
            out.add(repository)
    return out


def _handler(
    token: str | None,
    timeout: float,
    serving: Callable[[str], ServedBundle | None],
    current: Current,
    events_token: str | None = None,
    on_push: Callable[[set[str]], int] | None = None,
) -> type[http.server.BaseHTTPRequestHandler]:
    """The request handler class for a server with this ``token`` and socket ``timeout``.

    ``serving(name)`` is what is served now; ``current(name, etag, wait)``
    answers, holding a long poll until the bundle changes or ``wait`` ends.
    With ``events_token``, ``POST /registry/events`` carrying it as a bearer
    token passes the pushed repositories to ``on_push`` (which wakes watches).
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

        do_PUT = do_DELETE = do_PATCH = _refuse

        def do_POST(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if events_token is None or on_push is None or path != EVENTS_PATH:
                self._refuse()
                return
            got = self.headers.get("Authorization") or ""
            if not hmac.compare_digest(got.encode(), f"Bearer {events_token}".encode()):
                self.close_connection = True  # the body is not read: do not reuse
                self._plain(401, "unauthorized\n", {"WWW-Authenticate": "Bearer"})
                return
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                length = -1
            if not 0 <= length <= _MAX_EVENTS_BODY:
                self.close_connection = True
                self._plain(413 if length > 0 else 411, "bad or missing Content-Length\n")
                return
            try:
                repositories = pushed_repositories(self.rfile.read(length))
            except (ValueError, RecursionError):
                self._plain(400, "not a registry notification\n")
                return
            woken = on_push(repositories)
            logger.debug("registry events for %s woke %d watch(es)", sorted(repositories), woken)
            self._plain(200, "ok\n")

    return Handler
