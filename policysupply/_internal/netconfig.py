"""Network settings as plain values (kept apart from the client so importing them is cheap)."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Timeout:
    """Per-request timeouts, in seconds (as httpx defines them).

    Attributes:
        connect: Establishing a connection.
        read: Waiting for each chunk of a response.
        write: Sending each chunk of a request body.
        pool: Waiting for a free connection from the pool.
    """

    connect: float = 10.0
    read: float = 60.0
    write: float = 60.0
    pool: float = 10.0


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """The one retry policy for registry traffic.

    Only connection failures, timeouts and HTTP 429/502/503/504 are retried;
    ``Retry-After`` is honoured; every other error is raised at once. Each
    operation (one request, one blob transfer) stops at ``deadline``.

    Attributes:
        deadline: Seconds one operation may take, retries included.
        max_attempts: Upper bound on attempts per operation.
        initial_backoff: First back-off in seconds (exponential with jitter).
        max_backoff: Largest back-off between attempts, in seconds.
        max_refused_attempts: Attempts while the host refuses connections
            (nothing listening, or no such host): enough to ride out a
            restart, not minutes of waiting on a wrong address.
    """

    deadline: float = 120.0
    max_attempts: int = 10
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    max_refused_attempts: int = 3

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)


def tls_context(*, ca_file: str | None = None, verify: bool = True) -> Any:
    """The ``ssl.SSLContext`` registry connections use (built on the first https request).

    By default the operating system's trust store (OpenSSL's default paths, which
    also honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``), falling back to certifi's
    bundle only where the system offers no CA at all (some macOS Python builds).
    ``ca_file`` trusts exactly that PEM bundle instead (a private registry's CA,
    as ``oras --ca-file``); ``verify=False`` checks nothing (``oras --insecure``).
    """
    import ssl

    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_file is not None:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            from policysupply.errors import RegistryError

            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise RegistryError(
                f"cannot use the CA file {ca_file}: {reason} (a PEM file of CA certificates)"
            ) from None
    ctx = ssl.create_default_context()
    if not ctx.cert_store_stats().get("x509_ca"):
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi comes with httpx
            return ctx
        ctx.load_verify_locations(cafile=certifi.where())
    return ctx
