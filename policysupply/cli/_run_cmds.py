"""``load`` and ``serve``: verified bundles meet OPA (``gate`` is in ``_gate_cmds``)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from policysupply.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    REFERENCE_HELP,
    Command,
    emit_json,
    json_option,
    reported,
    require_verifier,
    say,
    usage_error,
)
from policysupply.cli._options import F, directory_option
from policysupply.cli._targets import NetOptions, open_target, registry_options
from policysupply.cli._trust import (
    TrustOptions,
    trust_options,
    verifier_from_options,
)

if TYPE_CHECKING:
    pass


def _token_option(flag: str, envvar: str, what: str) -> Callable[[F], F]:
    """A bearer token, also (better) from ``envvar``, which ``--help`` names."""
    return click.option(flag, envvar=envvar, show_envvar=True, help=what)


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@click.option(
    "--opa",
    "opa_url",
    default="http://127.0.0.1:8181",
    show_default=True,
    help="OPA's base URL.",
)
@_token_option(
    "--opa-token",
    "POLICYSUPPLY_OPA_TOKEN",
    "Bearer token for OPA (prefer the environment variable to the flag).",
)
@click.option("--name", help="Load name (default: the image's host/repository).")
@trust_options(required=True, state=True)
@registry_options
@json_option
def load(
    reference: str,
    opa_url: str,
    opa_token: str | None,
    name: str | None,
    trust: TrustOptions,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Verify the policy image at REFERENCE, then load it into a running OPA.

    Nothing reaches OPA unless verification passed; if OPA refuses any step,
    what was loaded before is restored. Exit code 1 for a verification or load
    failure, 2 for setup errors.

    \b
    Examples:
      policysupply load registry.example.com/acme/policy:1.0 --key cosign.pub
      policysupply load reg.example.com/acme/policy:prod -k cosign.pub \
          --opa http://opa.internal:8181 --state /var/lib/policysupply/trust.json
    """
    from policysupply import OPA, fetch_verified
    from policysupply._internal import extras

    if not extras.available("opa_client"):
        usage_error(
            "loading into OPA's REST API needs opa-python-client, which is not installed: "
            f"{extras.hint('opa_client')} (or serve the bundle to OPA's bundle plugin: "
            "policysupply serve)"
        )
    verifier = require_verifier(verifier_from_options(trust, as_json))
    with reported(as_json, code=EXIT_USAGE):
        opa = OPA(opa_url, token=opa_token)
    target = open_target(reference, net, param="REFERENCE")
    with reported(as_json), target.registry, opa:
        verified = fetch_verified(target.registry, target.ref, verifier, state=trust.trust_state())
        with reported(as_json, service=f"OPA at {opa_url}"):
            result = opa.load(verified, name=name)
    pinned = target.pinned(verified.artifact.digest)
    if as_json:
        emit_json(
            {
                "ok": True,
                "reference": pinned,
                "digest": verified.artifact.digest,
                "opa": opa_url,
                "name": result.name,
                "revision": result.revision,
                "roots": list(result.roots),
                "modules": list(result.modules),
                "removed": list(result.removed),
                "changed": result.changed,
            }
        )
    else:
        say(f"verified {pinned}", fg="green")
        say(
            essential=True,
            message=f"loaded into {opa_url} as {result.name!r}: revision {result.revision!r}, "
            f"{len(result.modules)} modules, roots {list(result.roots)}"
            + (f", removed {len(result.removed)}" if result.removed else ""),
        )


def _parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{addr!r} is not HOST:PORT", param_hint="--addr")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("references", nargs=-1, required=True)
@directory_option(
    ".policysupply-bundles",
    "Keeps the last good bundle of each name, so a restart serves it at once.",
)
@click.option(
    "--addr",
    default="127.0.0.1:8282",
    show_default=True,
    help="Address to listen on (port 0 picks a free one).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How often each tag is re-resolved.",
)
@click.option(
    "--on-expiry",
    type=click.Choice(["withdraw", "serve", "exit"]),
    default="withdraw",
    show_default=True,
    help="A served bundle older than --max-signature-age: stop serving it, keep serving it "
    "(still reported), or stop the server (exit code 1).",
)
@_token_option(
    "--server-token",
    "POLICYSUPPLY_BUNDLE_TOKEN",
    "Require this bearer token from OPA (prefer the environment variable).",
)
@click.option(
    "--opa-signing",
    is_flag=True,
    help="Make OPA verify the bundles' OPA-native signatures itself: the printed config "
    "gets `keys` (the --key keys) and a `signing` block (as `publish` signs).",
)
@trust_options(required=True, state=True)
@registry_options
@json_option
def serve(
    references: tuple[str, ...],
    directory: str,
    addr: str,
    interval: float,
    on_expiry: str,
    server_token: str | None,
    opa_signing: bool,
    trust: TrustOptions,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Serve verified bundles to OPA's bundle plugin, following each tag in REFERENCES.

    Each tag is re-resolved every --interval seconds; a new digest is served
    only once it verifies, atomically. A rejected one is logged and the last
    good bundle stays served. Prints the OPA configuration to use, then runs
    until interrupted.

    With --max-signature-age, each served bundle's age is checked at start-up
    and every round even if the tag did not move: one whose newest signature
    is too old is logged (event policysupply.bundle_expired) and handled as
    --on-expiry says. The exit status is 1 if a bundle is expired when the
    server stops.

    \b
    Examples:
      policysupply serve registry.example.com/acme/policy:prod --key cosign.pub
      policysupply serve reg.example.com/acme/authz:prod reg.example.com/acme/k8s:prod \
          -k cosign.pub --addr 0.0.0.0:8282 --state trust.json > opa-config.yaml
    """
    import logging

    from policysupply import BundleServer

    verifier = require_verifier(verifier_from_options(trust, as_json))
    signing = None
    if opa_signing:
        from policysupply.native import NativeTrust

        with reported(as_json, code=EXIT_USAGE):
            signing = NativeTrust.from_cosign_keys(verifier.policy.keys)
    host, port = _parse_addr(addr)
    targets = [open_target(r, net, param="REFERENCES") for r in references]
    _log_rejections(as_json)
    with reported(as_json, code=EXIT_USAGE):
        server = BundleServer(directory, host=host, port=port, token=server_token).start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        state = trust.trust_state()
        watches = []
        with reported(as_json):
            for t in targets:
                watches.append(
                    server.watch(
                        t.registry,
                        t.ref,
                        verifier,
                        interval=interval,
                        state=state,
                        on_expiry="serve" if on_expiry == "serve" else "withdraw",
                    )
                )
        for w in watches:
            w.check()  # settle the first round before reporting what is served
        names = [w.name for w in watches]
        config = server.opa_config(names, signing=signing)
        status = {}
        for w in watches:
            served = server.served(w.name)
            status[w.name] = {
                "reference": str(served.reference) if served else None,
                "revision": served.revision if served else None,
                "error": w.last_error,
            }
        if as_json:
            emit_json({"ok": True, "url": server.url, "bundles": status, "opa_config": config})
        else:
            click.echo(f"# serving on {server.url}; OPA configuration:", err=True)
            for n, s in status.items():
                line = (
                    f"# {n}: {s['reference']} (revision {s['revision']!r})"
                    if s["reference"]
                    else f"# {n}: nothing verified yet ({s['error']})"
                )
                click.echo(line, err=True)
            click.echo(server.opa_config_yaml(names, signing=signing), nl=False)
        sys.stdout.flush()
        # Expiry needs no round: the clock alone ends a bundle's life.
        while not stop.wait(1.0):
            if on_expiry == "exit" and any(w.expired for w in watches):
                # Report it now (structured log, last_error): the watch's own
                # round may not have come round to it before we exit.
                for w in watches:
                    w.check_age()
                break
        expired = sorted(w.name for w in watches if w.expired)
    finally:
        server.stop()
        for t in targets:
            t.registry.close()
        logging.getLogger("policysupply.loaders").handlers.clear()
    if expired:
        click.echo(f"error: expired (signature too old): {', '.join(expired)}", err=True)
    sys.exit(EXIT_FAIL if expired else EXIT_OK)


def _log_rejections(as_json: bool) -> None:
    """Sends the bundle server's structured events to stderr (JSON lines with --json)."""
    import logging

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            if not as_json:
                return f"{record.levelname.lower()}: {record.getMessage()}"
            doc = {"level": record.levelname.lower(), "message": record.getMessage()}
            for key in ("event", "bundle", "reference", "digest", "reason", "detail", "serving"):
                if hasattr(record, key):
                    doc[key] = getattr(record, key)
            return json.dumps(doc, sort_keys=True)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    log = logging.getLogger("policysupply.loaders")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
