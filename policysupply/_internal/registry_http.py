"""HTTP to a registry: one session per host with timeouts, the retry policy, auth and redirects.

The distribution API itself (manifests, tags, referrers, blobs) is
``distribution.Client``, built on :class:`Session`.
"""

from __future__ import annotations

import contextvars
import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from policysupply._internal import oci
from policysupply._internal.credentials import Credentials
from policysupply._internal.netconfig import RetryPolicy, Timeout, tls_context
from policysupply._internal.registry_wire import LazyTLSTransport as _LazyTLSTransport
from policysupply._internal.registry_wire import certificate_failure as _certificate_failure
from policysupply._internal.registry_wire import parse_challenge as parse_challenge
from policysupply._internal.registry_wire import registry_message as _registry_message
from policysupply.errors import (
    AuthenticationError,
    InsecureTransportError,
    NotFoundError,
    RegistryError,
    TransientRegistryError,
)

T = TypeVar("T")

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_MANIFEST = 4 * 1024 * 1024  # distribution-spec's suggested manifest limit
_MAX_JSON = 16 * 1024 * 1024
_MAX_TOKEN = 1024 * 1024
_MAX_REDIRECTS = 10

ACCEPT_MANIFESTS = ", ".join(
    [
        oci.MANIFEST_V1,
        oci.INDEX_V1,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


# When the current operation must end (monotonic clock); set by Client.retrying
# so that a body trickling in below the per-read timeout still stops on time.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "policysupply_deadline", default=None
)


class _Transient(Exception):  # internal signal, never escapes
    """A failure worth retrying; converted to TransientRegistryError at the end."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, refused: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.refused = refused  # the connection itself failed (refused, DNS)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Session:
    """Requests to one registry host: timeouts, retries within a deadline, auth, redirects."""

    def __init__(
        self,
        host: str,
        *,
        scheme: str,
        credentials: Callable[[], Credentials | None],
        timeout: Timeout,
        retry: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "policysupply",
        tls: Callable[[], Any] | None = None,
    ) -> None:
        self.host = host
        self.base = f"{scheme}://{host}"
        self._base_path = self.base + "/"
        self._credentials_source = credentials
        self._credentials_loaded = False
        self._creds: Credentials | None = None
        self._retry = retry
        self._http = httpx.Client(
            timeout=httpx.Timeout(
                connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
            ),
            # Redirects (blob GETs to storage) are followed by _follow, which
            # refuses a downgrade to plain HTTP; httpx's redirect request drops
            # the Authorization header when a redirect leaves the origin.
            follow_redirects=False,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            transport=transport or httpx.HTTPTransport(verify=False),  # http:// only
            mounts=None if transport else {"https://": _LazyTLSTransport(tls or tls_context)},
        )
        self._lock = threading.Lock()
        # The distribution spec forbids a 404 from a registry that has the
        # referrers API, so one 404 settles it for this client.
        self._no_referrers_api = False
        self._tokens: dict[str, str] = {}  # scope -> Authorization value
        self._basic = False  # registry asked for basic auth

    @property
    def _credentials(self) -> Credentials | None:
        # Looked up on first use (docker config, credential helpers), not at
        # construction: constructors do no I/O.
        with self._lock:
            if not self._credentials_loaded:
                self._creds = self._credentials_source()
                self._credentials_loaded = True
            return self._creds

    def close(self) -> None:
        """Closes pooled connections."""
        self._http.close()

    # -- retry ---------------------------------------------------------------

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        """Runs ``fn`` under the retry policy; ``fn`` signals retryable failures.

        The first attempt runs directly: the common case needs no retry
        machinery, and tenacity (which imports asyncio) is loaded only once a
        request actually has to be retried.
        """
        start = time.monotonic()
        outer = _DEADLINE.get()
        ends = start + self._retry.deadline
        token = _DEADLINE.set(ends if outer is None else min(outer, ends))
        try:
            try:
                return fn()
            except _Transient as exc:
                first = exc
            return self._retry_loop(what, fn, start, first)
        finally:
            _DEADLINE.reset(token)

    def _retry_loop(self, what: str, fn: Callable[[], T], start: float, first: _Transient) -> T:
        import random

        import tenacity

        policy = self._retry

        def backoff(attempts_made: int) -> float:
            # Full-jitter exponential backoff, as tenacity.wait_random_exponential.
            return random.uniform(  # noqa: S311 - jitter, not security
                0, min(policy.max_backoff, policy.initial_backoff * 2 ** (attempts_made - 1))
            )

        def give_up(attempts_made: int, exc: _Transient) -> bool:
            elapsed = time.monotonic() - start
            if attempts_made >= policy.max_attempts or elapsed >= policy.deadline:
                return True
            if exc.refused and attempts_made >= policy.max_refused_attempts:
                return True
            ra = exc.retry_after
            return ra is not None and elapsed + ra > policy.deadline

        def delay(attempts_made: int, exc: _Transient) -> float:
            ra = exc.retry_after
            wanted = ra if ra is not None else backoff(attempts_made)
            return max(0.0, min(wanted, policy.deadline - (time.monotonic() - start)))

        def failed(attempts: int, exc: _Transient) -> TransientRegistryError:
            return TransientRegistryError(
                f"{what} on {self.host}: {exc} (gave up after {attempts} attempt(s) "
                f"in {time.monotonic() - start:.1f}s)"
            )

        # tenacity numbers its own attempts from 1; one was made already.
        def stop(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            assert isinstance(exc, _Transient)  # noqa: S101 - retry only on _Transient
            return give_up(state.attempt_number + 1, exc)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            assert isinstance(exc, _Transient)  # noqa: S101 - retry only on _Transient
            return delay(state.attempt_number + 1, exc)

        if give_up(1, first):
            raise failed(1, first) from None
        time.sleep(delay(1, first))
        retryer = tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return retryer(fn)
        except _Transient as exc:
            attempts = retryer.statistics.get("attempt_number", 1) + 1
            raise failed(attempts, exc) from None

    # -- one attempt ---------------------------------------------------------

    def _same_origin(self, url: str | httpx.URL) -> bool:
        # The common case, a path under the registry's own base URL: the
        # authority ends at that "/", so no parse is needed (one per request).
        if isinstance(url, str) and url.startswith(self._base_path):
            return True
        try:
            target, base = httpx.URL(url), httpx.URL(self.base)
        except httpx.InvalidURL:
            return False
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)

    @staticmethod
    def _origin(url: httpx.URL) -> str:
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"

    def _follow(self, req: httpx.Request, what: str) -> httpx.Response:
        """Sends ``req`` (streamed), following redirects but never down to plain HTTP.

        An https request redirected to ``http://`` would expose the request
        and let anyone on the path answer it, so that is refused wherever in
        the chain it happens. httpx builds each next request, dropping the
        Authorization header when the redirect leaves the origin.
        """
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._http.send(req, stream=True, follow_redirects=False)
            nxt = resp.next_request
            if nxt is None:
                return resp
            resp.close()
            if req.url.scheme == "https" and nxt.url.scheme != "https":
                raise InsecureTransportError(
                    f"{what}: {self._origin(req.url)} redirected to plain HTTP "
                    f"({self._origin(nxt.url)}); refusing the downgrade"
                )
            req = nxt
        raise RegistryError(f"{what}: more than {_MAX_REDIRECTS} redirects; giving up")

    def _auth_header(self, scope: str) -> str | None:
        with self._lock:
            token = self._tokens.get(scope)
        if token:
            return token
        if self._basic and self._credentials:
            return self._credentials.basic_header()
        return None

    def _fetch_token(self, params: Mapping[str, str], scope: str) -> None:
        realm = params.get("realm")
        if not realm:
            raise AuthenticationError(f"{self.host} sent a bearer challenge without a realm")
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise AuthenticationError(f"{self.host} named a malformed token realm")
        if self.base.startswith("https://") and url.scheme != "https":
            # Even anonymous: the token that authorises every later request
            # would travel in clear, and anyone on the path could answer.
            raise InsecureTransportError(
                f"{self.host} names the token service {self._origin(url)} over plain HTTP; "
                "refusing the downgrade from https"
            )
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        if self._credentials:
            # The registry chose this realm; a token service on another origin
            # gets the credentials only over https (on plain HTTP anyone on
            # the path could read them, or answer for the registry and name
            # a realm of their own).
            if not self._same_origin(url) and url.scheme != "https":
                raise AuthenticationError(
                    f"{self.host} names the token service {self._origin(url)}, another "
                    "origin over plain HTTP; credentials go to another origin only over "
                    "https (serve the token service over https or on the registry's origin)"
                )
            headers["Authorization"] = self._credentials.basic_header()
        what = f"get a token for {scope} from {self._origin(url)}"
        try:
            resp = self._follow(
                self._http.build_request("GET", url, params=query, headers=headers), what
            )
        except httpx.TransportError as exc:
            raise _Transient(f"token service unreachable ({type(exc).__name__})") from None
        try:
            body_bytes = self._read_bounded(resp, _MAX_TOKEN, what)
        finally:
            resp.close()
        if resp.status_code in _RETRY_STATUSES:
            raise _Transient(
                f"token service answered {resp.status_code}",
                _retry_after(resp.headers.get("retry-after")),
            )
        if resp.status_code in (401, 403):
            who = f"user {self._credentials.username!r}" if self._credentials else "anonymous"
            raise AuthenticationError(f"{self.host}: token service refused {who} for {scope}")
        if resp.status_code != 200:
            raise RegistryError(f"{self.host}: token service answered {resp.status_code}")
        try:
            body = json.loads(body_bytes)
            token = body.get("token") or body.get("access_token")
        except (ValueError, RecursionError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(f"{self.host}: token service returned no token")
        with self._lock:
            self._tokens[scope] = f"Bearer {token}"

    def send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        content: Callable[[], bytes | Iterable[bytes]] | None = None,
        params: Mapping[str, str] | None = None,
        ok: Iterable[int] = (200,),
        missing_ok: bool = False,
    ) -> httpx.Response:
        """One request (plus one auth round trip), as a stream; raises on bad status.

        The caller must close the response. ``content`` is a factory so the
        body can be sent again after an auth challenge.

        Returns:
            The open response; with ``missing_ok`` a 404 is returned too.
        """
        full = url if url.startswith(("http://", "https://")) else self.base + url
        # Upload sessions and pagination hand us URLs from Location/Link
        # headers; credentials go only to the registry itself, never to
        # another host a registry (or an attacker answering for it) names.
        ours = self._same_origin(full)
        if self.base.startswith("https://") and not full.startswith("https://"):
            # A Link or Location header is no redirect, but the same downgrade:
            # the next page of a tags or referrers list (or an upload) in clear.
            raise InsecureTransportError(
                f"{what}: {self.host} named a plain HTTP URL ({full.split('?')[0][:120]}); "
                "refusing the downgrade"
            )
        for attempt in (1, 2):
            hdrs = dict(headers or {})
            auth = self._auth_header(scope) if ours else None
            if auth:
                hdrs["Authorization"] = auth
            try:
                req = self._http.build_request(
                    method,
                    full,
                    headers=hdrs,
                    params=params,
                    content=content() if content else None,
                )
                resp = self._follow(req, what)
            except httpx.TimeoutException as exc:
                raise _Transient(f"timed out ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                reason = _certificate_failure(exc)
                if reason:  # not transient: retrying cannot fix trust
                    raise RegistryError(
                        f"{what}: the TLS certificate of {req.url.host} is not trusted "
                        f"({reason}); add its CA (SSL_CERT_FILE) or, for a plain-HTTP "
                        "registry, use insecure=True"
                    ) from None
                raise _Transient(
                    f"connection failed ({type(exc).__name__})",
                    refused=isinstance(exc, httpx.ConnectError),
                ) from None
            if resp.status_code == 401 and not self._same_origin(resp.request.url):
                # A host a redirect (or an upload Location) led to asks for
                # credentials: whatever realm it names, it is not the registry.
                resp.close()
                raise AuthenticationError(
                    f"{what}: {self.host} redirected the request to "
                    f"{self._origin(resp.request.url)}, which asks for credentials; the "
                    f"registry's credentials are sent only to {self.base}"
                )
            if resp.status_code == 401 and attempt == 1:
                challenge = resp.headers.get("www-authenticate", "")
                resp.close()
                scheme, params_ = parse_challenge(challenge)
                if scheme == "bearer":
                    self._fetch_token(params_, scope)
                    continue
                if scheme == "basic" and self._credentials:
                    self._basic = True
                    continue
                raise AuthenticationError(
                    f"{what}: {self.host} requires credentials; pass auth= or "
                    "log in with `docker login` / `oras login`"
                )
            try:
                self._check(resp, what=what, ok=ok, missing_ok=missing_ok)
            except BaseException:
                resp.close()
                raise
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(
        self, resp: httpx.Response, *, what: str, ok: Iterable[int], missing_ok: bool
    ) -> None:
        status = resp.status_code
        if status in ok or (missing_ok and status == 404):
            return
        if status in _RETRY_STATUSES:
            raise _Transient(
                f"registry answered {status}", _retry_after(resp.headers.get("retry-after"))
            )
        detail = _registry_message(resp)
        if status == 404:
            raise NotFoundError(f"{what}: not found on {self.host}{detail}")
        if status == 401:
            who = f"user {self._credentials.username!r}" if self._credentials else "anonymous"
            raise AuthenticationError(f"{what}: {self.host} refused the credentials of {who}")
        if status == 403:
            raise AuthenticationError(f"{what}: {self.host} denied access{detail}")
        raise RegistryError(f"{what}: {self.host} answered HTTP {status}{detail}")

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _body(resp: httpx.Response, what: str) -> Iterator[bytes]:
        """The response body in chunks; transport failures mid-body become retryable.

        The caller closes ``resp`` (in a ``finally``), also when it stops early.
        """
        ends = _DEADLINE.get()
        try:
            # As received (not re-chunked), so the deadline is checked per read.
            for chunk in resp.iter_bytes():
                if ends is not None and time.monotonic() > ends:
                    raise _Transient("the operation's deadline passed while reading the body")
                yield chunk
        except httpx.TimeoutException:
            raise _Transient("timed out reading the body") from None
        except httpx.TransportError as exc:
            raise _Transient(f"body cut short ({type(exc).__name__})") from None

    def _read_bounded(self, resp: httpx.Response, limit: int, what: str) -> bytes:
        out = bytearray()
        try:
            for chunk in self._body(resp, what):
                out += chunk
                if len(out) > limit:
                    raise RegistryError(f"{what}: response larger than {limit} bytes")
        finally:
            resp.close()
        return bytes(out)

    def once_bytes(
        self, method: str, url: str, *, limit: int = _MAX_JSON, **kw: Any
    ) -> tuple[bytes, httpx.Headers, int]:
        """One request (not retried) whose bounded body is read whole."""
        resp = self.send(method, url, **kw)
        return self._read_bounded(resp, limit, kw["what"]), resp.headers, resp.status_code

    def request_bytes(
        self, method: str, url: str, *, limit: int = _MAX_JSON, **kw: Any
    ) -> tuple[bytes, httpx.Headers, int]:
        """:meth:`once_bytes` under the retry policy."""
        return self.retrying(kw["what"], lambda: self.once_bytes(method, url, limit=limit, **kw))
