"""Opening a remote registry: host and scheme rules, credentials, the httpx client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from policysupply._internal import stores
from policysupply._internal.credentials import Credentials, from_docker_config
from policysupply._internal.netconfig import RetryPolicy, Timeout
from policysupply.errors import InsecureTransportError, RegistryError

if TYPE_CHECKING:
    import httpx


def open_store(
    host: str,
    *,
    insecure: bool,
    auth: Credentials | tuple[str, str] | None,
    docker_config: str | os.PathLike[str] | None,
    timeout: Timeout | None,
    retry: RetryPolicy | None,
    chunk_size: int | None,
    ca_file: str | os.PathLike[str] | None,
    verify_tls: bool,
    transport: httpx.BaseTransport | None,
) -> tuple[stores.RemoteStore, str]:
    """The store for ``Registry.remote`` (see there), and the normalised host.

    Raises:
        ValueError: ``transport`` together with ``ca_file`` or ``verify_tls=False``.
        RegistryError: ``host`` is malformed.
        InsecureTransportError: ``http://`` without ``insecure``.
    """
    if transport is not None and (ca_file is not None or not verify_tls):
        raise ValueError(
            "transport= handles TLS itself: configure the CA or verification on the "
            "transport instead of ca_file/verify_tls"
        )
    scheme = "http" if insecure else "https"
    for prefix in ("http://", "https://"):
        if host.startswith(prefix):
            scheme, host = prefix[:-3], host[len(prefix) :]
    if scheme == "http" and not insecure:
        raise InsecureTransportError(
            f"registry http://{host} is plain HTTP: pass insecure=True to use it "
            "(oras's --plain-http), or use https://"
        )
    host = host.rstrip("/")
    if not host or "/" in host or "@" in host:
        raise RegistryError(f"invalid registry host {host!r}: use host[:port]")
    if isinstance(auth, tuple):
        auth = Credentials(username=auth[0], password=auth[1])
    explicit = auth
    config = Path(docker_config) if docker_config is not None else None

    def credentials() -> Credentials | None:
        return explicit if explicit is not None else from_docker_config(host, config)

    from policysupply._internal.lean_imports import httpx_without_cli

    httpx_without_cli()
    from policysupply._internal.distribution import Client
    from policysupply._internal.netconfig import tls_context

    ca = os.fspath(ca_file) if ca_file is not None else None
    client = Client(
        host,
        scheme=scheme,
        credentials=credentials,
        timeout=timeout or Timeout(),
        retry=retry or RetryPolicy(),
        tls=lambda: tls_context(ca_file=ca, verify=verify_tls),
        transport=transport,
    )
    return stores.RemoteStore(client=client, chunk_size=chunk_size), host
