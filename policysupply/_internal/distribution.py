"""The OCI distribution protocol over httpx: timeouts, one retry policy, auth.

Why not oras-py's transport: see ``docs/adr/0005-registry-client.md``. In
short, it has no timeouts, its retry decorator swallows exceptions, and it
checks no digests; every request here has connect/read timeouts, only
transient failures are retried (within an overall deadline), and every byte
read is hashed while it streams.

Retries wrap whole units of work (one request, one blob download, one blob
upload session), never a half-consumed stream, so a retry always starts from a
clean state.
"""

from __future__ import annotations

import contextvars
import email.utils
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from policysupply._internal import oci
from policysupply._internal.credentials import Credentials
from policysupply._internal.netconfig import RetryPolicy, Timeout, tls_context
from policysupply.errors import (
    AuthenticationError,
    DigestMismatchError,
    InsecureTransportError,
    NotFoundError,
    RegistryError,
    TransientRegistryError,
)

T = TypeVar("T")

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_MANIFEST = 4 * 1024 * 1024  # distribution-spec's suggested manifest limit
_MAX_JSON = 16 * 1024 * 1024
# All pages of one tags or referrers listing together: a hostile registry
# linking page after page must not fill memory (10 000 pages of 16 MiB).
_MAX_LISTING = 16 * 1024 * 1024
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


def _registry_message(resp: httpx.Response) -> str:
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


def _certificate_failure(exc: BaseException) -> str | None:
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


class _LazyTLSTransport(httpx.BaseTransport):
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


class Client:
    """A distribution-spec client for one registry host."""

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

    # -- manifests -------------------------------------------------------------

    @staticmethod
    def scope(repository: str, *, push: bool = False) -> str:
        """The token scope for pulling (or pushing to) ``repository``."""
        return f"repository:{repository}:{'pull,push' if push else 'pull'}"

    def head_manifest(self, repository: str, reference: str) -> tuple[bool, oci.Descriptor | None]:
        """``(exists, descriptor)``; the descriptor is None when the registry sent no digest."""
        what = (
            f"resolve {repository}:{reference}"
            if ":" not in reference
            else f"resolve {repository}@{reference}"
        )
        _, headers, status = self.request_bytes(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            scope=self.scope(repository),
            what=what,
            headers={"Accept": ACCEPT_MANIFESTS},
            missing_ok=True,
        )
        if status == 404:
            return False, None
        digest = headers.get("docker-content-digest")
        if not digest or not digest.startswith("sha256:"):
            return True, None  # caller falls back to GET and hashes
        return True, oci.Descriptor(
            media_type=headers.get("content-type", oci.MANIFEST_V1).split(";")[0],
            digest=oci.check_digest(digest),
            size=int(headers.get("content-length", "0") or 0),
        )

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """``(bytes, media type, digest)`` of a manifest, digest-checked.

        Raises:
            NotFoundError: No such manifest.
            DigestMismatchError: The bytes do not hash to the requested digest
                (or to the digest the registry announced for a tag).
        """
        sep = "@" if reference.startswith("sha256:") else ":"
        what = f"get manifest {repository}{sep}{reference}"
        data, headers, _ = self.request_bytes(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            limit=_MAX_MANIFEST,
            scope=self.scope(repository),
            what=what,
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        digest = oci.sha256_digest(data)
        expected = reference if sep == "@" else headers.get("docker-content-digest")
        if expected and expected.startswith("sha256:") and expected != digest:
            raise DigestMismatchError(
                f"manifest {repository}{sep}{reference} from {self.host} hashes to {digest}, "
                f"expected {expected}; refusing it"
            )
        media_type = headers.get("content-type", "").split(";")[0].strip()
        return data, media_type, digest

    def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> tuple[str, bool]:
        """Uploads a manifest under a tag or its digest.

        Returns:
            ``(digest, subject_indexed)``: whether the registry said (with
            ``OCI-Subject``) that it indexed the manifest's subject as a referrer.
        """
        digest = oci.sha256_digest(data)
        what = f"put manifest {repository}:{reference}"
        _, headers, _ = self.request_bytes(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=self.scope(repository, push=True),
            what=what,
            headers={"Content-Type": media_type},
            content=lambda: data,
            ok=(200, 201, 202),
        )
        announced = headers.get("docker-content-digest")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise DigestMismatchError(f"{what}: registry stored {announced}, we sent {digest}")
        return digest, "oci-subject" in headers

    def delete_manifest(self, repository: str, reference: str) -> None:
        """Deletes a manifest (by digest) or a tag (where the registry allows it)."""
        what = f"delete {repository}:{reference}"
        try:
            self.request_bytes(
                "DELETE",
                f"/v2/{repository}/manifests/{reference}",
                scope=self.scope(repository, push=True).replace("pull,push", "delete,pull,push"),
                what=what,
                ok=(200, 202),
            )
        except RegistryError as exc:
            if isinstance(exc, (NotFoundError, AuthenticationError, TransientRegistryError)):
                raise
            raise RegistryError(
                f"{exc}; the registry may not allow deletes (distribution needs "
                "storage.delete.enabled) or deleting by tag (delete by digest instead)"
            ) from None

    def tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """All tags, following ``Link`` pagination."""
        out: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list"
        params = {"n": str(page_size)} if page_size else None
        pages = 0
        total = 0
        while url:
            pages += 1
            if pages > 10_000:
                raise RegistryError(f"list tags of {repository}: too many pages")
            body, headers, _ = self.request_bytes(
                "GET",
                url,
                scope=self.scope(repository),
                what=f"list tags of {repository}",
                params=params,
            )
            total += len(body)
            if total > _MAX_LISTING:
                raise RegistryError(
                    f"list tags of {repository}: listing larger than {_MAX_LISTING} bytes"
                )
            try:
                page = json.loads(body).get("tags") or []
            except (ValueError, RecursionError, AttributeError):
                page = None
            if not isinstance(page, list):
                raise RegistryError(f"list tags of {repository}: malformed response")
            names = [t for t in page if isinstance(t, str)]
            out.extend(names)
            nxt = self._next_link(headers, url, f"list tags of {repository}")
            if nxt:
                url, params = nxt, None
            elif page_size and len(names) == page_size and names[-1] != (params or {}).get("last"):
                # Some registries (ggcr) honour n/last but send no Link header:
                # a full page means there may be more.
                url, params = (
                    f"/v2/{repository}/tags/list",
                    {"n": str(page_size), "last": names[-1]},
                )
            else:
                url = None
        return list(dict.fromkeys(out))

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None
    ) -> list[dict[str, Any]] | None:
        """Referrer descriptors from the OCI 1.1 API; None when unsupported."""
        if self._no_referrers_api:
            return None
        url: str | None = f"/v2/{repository}/referrers/{digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        out: list[dict[str, Any]] = []
        filtered = False
        pages = 0
        total = 0
        while url:
            pages += 1
            if pages > 10_000:
                raise RegistryError(f"list referrers of {repository}@{digest}: too many pages")
            body, headers, status = self.request_bytes(
                "GET",
                url,
                scope=self.scope(repository),
                what=f"list referrers of {repository}@{digest}",
                params=params,
                missing_ok=True,
                ok=(200,),
            )
            total += len(body)
            if total > _MAX_LISTING:
                raise RegistryError(
                    f"list referrers of {repository}@{digest}: listing larger than "
                    f"{_MAX_LISTING} bytes"
                )
            ctype = headers.get("content-type", "").split(";")[0].strip()
            if status == 404 or (ctype and ctype != oci.INDEX_V1):
                # Unsupported (some registries answer unknown routes with HTML).
                self._no_referrers_api = True
                return None
            try:
                manifests = json.loads(body).get("manifests") or []
            except (ValueError, RecursionError, AttributeError):
                manifests = None
            if not isinstance(manifests, list):
                raise RegistryError(f"referrers of {repository}@{digest}: malformed index")
            out.extend(m for m in manifests if isinstance(m, dict))
            filtered = "artifacttype" in headers.get("oci-filters-applied", "").lower()
            what = f"list referrers of {repository}@{digest}"
            url, params = self._next_link(headers, url, what), None
        if artifact_type and filtered:
            out = [m for m in out if m.get("artifactType") == artifact_type]
        # Unfiltered results are filtered by the caller, after normalising.
        return out

    # -- blobs -----------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the registry has the blob."""
        _, _, status = self.request_bytes(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=self.scope(repository),
            what=f"check blob {digest} in {repository}",
            missing_ok=True,
        )
        return status != 404

    def download_blob(
        self,
        repository: str,
        digest: str,
        *,
        size: int | None,
        reset: Callable[[], None],
        write: Callable[[bytes], None],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Streams a blob into ``write``, hashing as it goes; returns its size.

        Each attempt calls ``reset`` first, so a retried download starts over.
        Raises DigestMismatchError (never retried) when the bytes do not hash
        to ``digest`` or exceed ``size``.
        """
        what = f"download blob {digest} from {repository}"

        def once() -> int:
            reset()
            resp = self.send(
                "GET", f"/v2/{repository}/blobs/{digest}", scope=self.scope(repository), what=what
            )
            h = hashlib.sha256()
            n = 0
            try:
                for chunk in self._body(resp, what):
                    n += len(chunk)
                    if size is not None and n > size:
                        raise DigestMismatchError(
                            f"{what}: more than the {size} bytes its descriptor declares"
                        )
                    h.update(chunk)
                    write(chunk)
                    if progress:
                        progress(n)
            finally:
                resp.close()
            got = "sha256:" + h.hexdigest()
            if got != digest or (size is not None and n != size):
                raise DigestMismatchError(
                    f"{what}: received {n} bytes hashing to {got}; refusing them"
                )
            return n

        return self.retrying(what, once)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        source: Callable[[], Iterable[bytes]],
        *,
        chunk_size: int | None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Uploads a blob: one PUT, or PATCH chunks of ``chunk_size`` then PUT.

        The whole upload session is one retried unit; ``source`` is called
        again for each attempt.
        """
        what = f"upload blob {digest} to {repository}"
        scope = self.scope(repository, push=True)

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            done = 0
            for c in chunks:
                done += len(c)
                yield c
                if progress:
                    progress(done)

        def once() -> None:
            _, headers, _ = self.once_bytes(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                scope=scope,
                what=what,
                ok=(202,),
                headers={"Content-Length": "0"},
            )
            location = self._location(headers, what)
            if chunk_size is None or size <= chunk_size:
                self._put_final(location, digest, what, scope, lambda: counted(source()), size)
                return
            offset = 0
            for piece in _rechunk(source(), chunk_size):
                end = offset + len(piece) - 1
                _, headers, _ = self.once_bytes(
                    "PATCH",
                    location,
                    scope=scope,
                    what=what,
                    ok=(202,),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end}",
                        "Content-Length": str(len(piece)),
                    },
                    content=lambda p=piece: p,
                )
                offset = end + 1
                if progress:
                    progress(offset)
                location = self._location(headers, what)
            self._put_final(location, digest, what, scope, lambda: b"", 0)

        # Requests inside a session are not retried one by one (after a reset
        # the server's offset is unknown); a transient failure restarts the
        # whole session from POST.
        self.retrying(what, once)

    def _put_final(
        self,
        location: str,
        digest: str,
        what: str,
        scope: str,
        body: Callable[[], bytes | Iterable[bytes]],
        size: int,
    ) -> None:
        url = httpx.URL(location).copy_merge_params({"digest": digest})
        _, headers, _ = self.once_bytes(
            "PUT",
            str(url),
            scope=scope,
            what=what,
            ok=(201,),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body,
        )
        announced = headers.get("docker-content-digest")
        if announced and announced != digest:
            raise DigestMismatchError(f"{what}: registry stored {announced}")

    def _location(self, headers: httpx.Headers, what: str) -> str:
        loc = headers.get("location")
        if not loc:
            raise RegistryError(f"{what}: registry sent no upload location")
        try:
            return str(httpx.URL(self.base + "/").join(loc))
        except httpx.InvalidURL:
            raise RegistryError(f"{what}: registry sent a malformed upload location") from None

    def _next_link(self, headers: httpx.Headers, current: str, what: str) -> str | None:
        """The next page's absolute URL from a ``Link`` header, resolved against ``current``.

        Absolute, so a relative reference cannot be glued onto our host name
        (``<.evil.test/...>``) and the same-origin check on credentials applies.
        """
        link = headers.get("link")
        m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link) if link else None
        if not m:
            return None
        try:
            return str(httpx.URL(self.base + "/").join(current).join(m.group(1)))
        except httpx.InvalidURL:
            raise RegistryError(f"{what}: registry sent a malformed Link header") from None


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buf = bytearray()
    for c in chunks:
        buf += c
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)
