"""Running the service: uvicorn, TLS with certificate reload, JSON logs, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import ssl
from typing import Any

from policysupply._internal.admission.config import AdmissionConfig
from policysupply._internal.admission.service import Service

log = logging.getLogger("policysupply.admission")

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure_logging(level: str = "info") -> None:
    """Sends the service's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("policysupply.admission", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _mtimes(*paths: Any) -> tuple[float, ...]:
    out = []
    for p in paths:
        try:
            out.append(os.stat(p).st_mtime)
        except OSError:
            out.append(-1.0)
    return tuple(out)


async def reload_certificates(
    context: ssl.SSLContext, cert: str, key: str, interval: float
) -> None:
    """Loads the certificate again whenever its files change (new handshakes use it).

    A half-written pair (cert-manager renewing) fails to load and is retried
    on the next tick; the old certificate stays in use meanwhile.
    """
    seen = _mtimes(cert, key)
    while True:
        await asyncio.sleep(interval)
        now = _mtimes(cert, key)
        if now == seen:
            continue
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("certificate reload failed; keeping the old one", extra={"error": str(exc)})
            continue
        seen = now
        log.info("certificate reloaded", extra={"cert_file": cert})


def uvicorn_config(service: Service, config: AdmissionConfig) -> Any:
    """The uvicorn configuration for ``service`` (TLS when a certificate is configured)."""
    import uvicorn

    tls: dict[str, Any] = {}
    if config.cert_file and config.key_file:
        tls = {"ssl_certfile": str(config.cert_file), "ssl_keyfile": str(config.key_file)}
    return uvicorn.Config(
        service,
        host=config.host,
        port=config.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, int(config.deadline) + 2),
        timeout_keep_alive=30,
        backlog=1024,
        **tls,
    )


async def serve_async(service: Service, config: AdmissionConfig, *, ready: Any = None) -> None:
    """Runs the service until SIGTERM/SIGINT; in-flight requests finish first.

    Args:
        service: The application.
        config: Its configuration.
        ready: Optional callable given the bound port once the server listens.
    """
    import uvicorn

    if not (config.cert_file and config.key_file) and not config.allow_http:
        from policysupply.errors import AdmissionConfigError

        raise AdmissionConfigError(
            "the API server calls webhooks over HTTPS only: set server.cert_file and "
            "server.key_file (or server.allow_http: true for a local test)"
        )
    await service.startup()  # errors here are typed; the lifespan startup is then a no-op
    ucfg = uvicorn_config(service, config)
    ucfg.load()
    server = uvicorn.Server(ucfg)
    tasks = []
    if ucfg.ssl is not None and config.cert_file and config.key_file:
        tasks.append(
            asyncio.ensure_future(
                reload_certificates(
                    ucfg.ssl,
                    str(config.cert_file),
                    str(config.key_file),
                    config.cert_reload_interval,
                )
            )
        )
    if ready is not None:

        async def announce() -> None:
            while not server.started:
                await asyncio.sleep(0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            ready(port)

        tasks.append(asyncio.ensure_future(announce()))
    try:
        await server.serve()
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
