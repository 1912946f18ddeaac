"""Small pieces of HTTP to a registry: error bodies, auth challenges, TLS failures and transport.

Used by :class:`policysupply._internal.registry_http.Session`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

import httpx


def registry_message(resp: httpx.Response) -> str:
    """The registry's own error code/message, bounded, for error texts."""
    try:
        body = json.loads(resp.read()[:65536])
        first = body["errors"][0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, RecursionError, LookupError, TypeError, AttributeError, httpx.HTTPError):
        return ""  # an unreadable or unparsable body just gives no detail
    return f" ({text[:200]})" if text else ""


_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parses a ``WWW-Authenticate`` header into ``(scheme, params)``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def certificate_failure(exc: BaseException) -> str | None:
    """The reason, if ``exc`` was caused by a TLS certificate verification failure."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore wraps ssl
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "verification failed")
        seen = seen.__cause__ or seen.__context__
    return None


class LazyTLSTransport(httpx.BaseTransport):
    """The TLS transport, created on the first https request.

    Loading the CA bundle costs tens of milliseconds; a plain-HTTP registry
    (loopback, ``insecure=True``) never pays it unless a redirect leads to
    an https URL, which is then verified as usual.
    """

    def __init__(self, context: Callable[[], Any]) -> None:
        self._context = context
        self._inner: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self._inner is None:
                self._inner = httpx.HTTPTransport(verify=self._context())
        return self._inner.handle_request(request)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
