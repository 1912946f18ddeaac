"""``admission``: the gate as a Kubernetes admission service (and offline reviews)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from policysupply.cli._common import (
    EXIT_FAIL,
    EXIT_USAGE,
    Command,
    emit_json,
    json_option,
    report,
    reported,
)


class _Group(click.Group):
    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:  # raw docstrings carry click's no-rewrap mark as backslash-b
            self.help = self.help.replace("\\b\n", "\b\n")


@click.group(cls=_Group)
def admission() -> None:
    r"""Run the gate as a Kubernetes admission service (validate, mutate, Gatekeeper).

    The configuration file names the trust policy, the rules, the mode
    (enforce, warn, audit), the scope, the cache and the TLS certificate;
    see docs/howto/admission.md.

    \b
    Examples:
      policysupply admission serve --config /etc/policysupply/admission.yaml
      policysupply admission review review.json --config admission.yaml
    """


_config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The service's configuration file (YAML or JSON).",
)


def _config(path: str, overrides: dict[str, Any]) -> Any:
    """The configuration, with its trust policy files read (errors there are exit code 2)."""
    from policysupply.admission import AdmissionConfig
    from policysupply.verifier import TrustPolicy

    config = AdmissionConfig.from_file(path, **overrides)
    TrustPolicy.from_file(config.trust_policy)
    if config.rules_trust_policy is not None:
        TrustPolicy.from_file(config.rules_trust_policy)
    return config


@admission.command()
@_config_option
@click.option("--host", help="Listen on this address instead of the file's server.host.")
@click.option("--port", type=click.IntRange(0, 65535), help="Listen on this port (0: any free).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Log level of the JSON logs on stderr.",
)
def serve(config_path: str, host: str | None, port: int | None, log_level: str) -> None:
    r"""Serve AdmissionReview and Gatekeeper external-data requests until SIGTERM.

    Endpoints: POST /validate, /mutate, /externaldata; GET /healthz,
    /readyz, /metrics. Logs are JSON lines on stderr, one per review, with
    the request uid. SIGTERM lets in-flight requests finish.
    """
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    with reported(code=EXIT_USAGE):
        config = _config(config_path, overrides)
    from policysupply._internal.admission.server import configure_logging
    from policysupply.admission import serve as run

    configure_logging(log_level)
    with reported():
        run(config, ready=lambda p: click.echo(f"listening on {config.host}:{p}", err=True))


@admission.command()
@click.argument("review", type=click.Path(dir_okay=False, allow_dash=True))
@_config_option
@click.option("--mutate", is_flag=True, help="Answer as the mutating webhook (with a patch).")
@json_option
def review(review: str, config_path: str, mutate: bool, as_json: bool) -> None:
    r"""Answer one AdmissionReview file (or - for stdin) as the service would.

    Prints the AdmissionReview response. Exit code 0 when allowed, 1 when
    denied, 2 for a malformed review or configuration.

    \b
    Example:
      policysupply admission review review.json --config admission.yaml
    """
    with reported(as_json, code=EXIT_USAGE):
        config = _config(config_path, {})
    body = sys.stdin.buffer.read() if review == "-" else Path(review).read_bytes()
    from policysupply.admission import create_app

    async def once() -> tuple[int, dict[str, Any]]:
        app = create_app(config)
        await app.startup()
        try:
            status, doc = await app.admission(body, mutate=mutate, endpoint="cli")
            return int(status), dict(doc)
        finally:
            await app.shutdown()

    from policysupply._internal.admission.asgi import HTTPError

    try:
        with reported(as_json):
            _status, doc = asyncio.run(once())
    except HTTPError as exc:
        sys.exit(report("ReviewError", str(exc), EXIT_USAGE))
    if as_json:
        emit_json({"ok": True, **doc})
    else:
        click.echo(json.dumps(doc, indent=2))
    sys.exit(0 if doc["response"]["allowed"] else EXIT_FAIL)
