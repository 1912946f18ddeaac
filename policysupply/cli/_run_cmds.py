"""``gate``, ``load`` and ``serve``: verified material meets what uses it."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from policysupply.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    OUT,
    REFERENCE_HELP,
    Command,
    emit_json,
    engine_option,
    exit_code_for,
    json_option,
    reported,
    say,
    unavailable_reason,
    usage_error,
)
from policysupply.cli._targets import NetOptions, open_target, read_json_document, registry_options
from policysupply.cli._trust import (
    TrustOptions,
    rules_trust_options,
    rules_verifier,
    trust_options,
    verifier_from_options,
)
from policysupply.errors import PolicySupplyError

if TYPE_CHECKING:
    from policysupply import Bundle, Gate, Verifier
    from policysupply.cli._reports import GateResult


def _require(verifier: Verifier | None) -> Verifier:
    # trust_options(required=True) guarantees a key, identity or policy file.
    assert verifier is not None  # noqa: S101
    return verifier


def _read_context(value: str | None) -> dict[str, Any]:
    """``--context``: a JSON object, inline, from a file, or ``-`` for stdin."""
    if value is None:
        return {}
    if value == "-":
        text = sys.stdin.read()
    elif value.lstrip().startswith("{"):
        text = value
    else:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise click.BadParameter(
                f"cannot read {value}: {reason}", param_hint="--context"
            ) from None
    doc = read_json_document(text, param="--context", what="the context")
    if not isinstance(doc, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--context")
    return doc


def _local_rules(path: str) -> Bundle:
    from policysupply import Bundle

    p = Path(path)
    return Bundle.from_directory(p) if p.is_dir() else Bundle.from_file(p)


def _images(images: tuple[str, ...], images_from: str | None) -> list[str]:
    refs = list(images)
    if images_from is not None:
        try:
            text = (
                sys.stdin.read()
                if images_from == "-"
                else Path(images_from).read_text(encoding="utf-8")
            )
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            usage_error(f"cannot read {images_from}: {reason}", "--images-from")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                refs.append(line)
    if not refs:
        usage_error("give at least one IMAGE, or --images-from FILE", "IMAGES")
    return refs


def _judge(g: Gate, text: str, net: NetOptions, ctx: dict[str, Any]) -> GateResult:
    """One image: a decision, or the error that prevented one (never raised)."""
    from policysupply.cli._reports import GateResult

    target = open_target(text, net, param="IMAGES")
    try:
        with target.registry:
            decision = g.decide(target.registry, target.ref, context=ctx)
    except PolicySupplyError as exc:
        code = exit_code_for(exc) if unavailable_reason(exc) else EXIT_USAGE
        error = {"type": type(exc).__name__, "message": str(exc), "exit_code": code}
        return GateResult(given=text, reference=text, error=error, code=code)
    except TypeError as exc:  # a context the engine cannot take
        error = {"type": "UsageError", "message": str(exc), "exit_code": EXIT_USAGE}
        return GateResult(given=text, reference=text, error=error, code=EXIT_USAGE)
    pinned = target.pinned(decision.reference.rsplit("@", 1)[-1])
    return GateResult(
        given=text, reference=pinned, decision=decision, code=0 if decision.allowed else 1
    )


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("images", nargs=-1)
@click.option(
    "--images-from",
    metavar="FILE|-",
    help="Also judge the references in FILE (one per line, # comments), or - for stdin.",
)
@trust_options(required=True)
@click.option(
    "--rules",
    metavar="PATH|REFERENCE",
    help="Rule bundle: a directory, a .tar.gz, or a signed policy image (verified with "
    "--rules-key or --rules-certificate-* before use). Default: policysupply's built-in rules.",
)
@rules_trust_options
@click.option("--query", help="Query the rules answer (default: the built-in rules' decision).")
@click.option(
    "--allow-registry",
    "allowed_registries",
    multiple=True,
    metavar="HOST[/REPO]",
    help="Only images under this host or repository prefix are allowed (repeatable).",
)
@click.option(
    "--require-attestation",
    "required_attestations",
    multiple=True,
    metavar="PREDICATE_TYPE",
    help="Require a trusted attestation of this predicate type (repeatable).",
)
@click.option(
    "--context",
    metavar="JSON|FILE|-",
    help="Extra input for the rules (input.context): inline JSON, a file, or - for stdin.",
)
@click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(["text", "json", "junit", "sarif", "markdown"]),
    default=None,
    help="Report format: text (default), json, junit (GitLab, Jenkins), sarif (code "
    "scanning) or markdown (a job summary). --json is -o json.",
)
@engine_option
@click.option(
    "--output-file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report to this file instead of stdout (a one-line verdict per image "
    "still goes to stderr).",
)
@registry_options
@json_option
def gate(
    images: tuple[str, ...],
    images_from: str | None,
    trust: TrustOptions,
    rules: str | None,
    rules_trust: TrustOptions | None,
    query: str | None,
    allowed_registries: tuple[str, ...],
    required_attestations: tuple[str, ...],
    context: str | None,
    output_format: str | None,
    engine: str | None,
    output_file: str | None,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Decide whether IMAGES may be deployed: their signatures, then the rules.

    Prints ALLOW or DENY per image with one reason per rule that fired.
    Exit code: the worst result of all images: 0 all allowed, 1 some
    denied (an unsigned or untrusted image is a DENY, not an error), 2 when
    some decision could not be made (image not found, rules broken), 3 when
    a registry could not be reached.

    \b
    Examples:
      policysupply gate registry.example.com/acme/app:1.4 --key cosign.pub
      policysupply gate reg.example.com/acme/app:1.4 reg.example.com/acme/api:2.0 \
          -k cosign.pub --allow-registry reg.example.com/acme -o junit --output-file gate.xml
      policysupply gate --images-from images.txt --policy trust-policy.yaml -o markdown
      policysupply gate reg.example.com/acme/app:1.4 -k build.pub \
          --rules reg.example.com/acme/gate-rules:prod --rules-key policy.pub \
          --context '{"env": "prod"}'
    """
    from policysupply import Gate, __version__
    from policysupply.cli import _reports

    fmt = output_format or ("json" if as_json else "text")
    if as_json and output_format not in (None, "json"):
        usage_error("--json is -o json; give one format", "--output")
    OUT.json = fmt == "json" and output_file is None
    refs = _images(images, images_from)
    verifier = _require(verifier_from_options(trust, OUT.json))
    ctx = _read_context(context)
    settings: dict[str, Any] = {}
    if allowed_registries or verifier.policy.allowed_registries:
        settings["allowed_registries"] = [
            *verifier.policy.allowed_registries,
            *allowed_registries,
        ]
    if required_attestations:
        settings["required_attestations"] = list(required_attestations)
    # Only an explicit --query overrides the rules' own default.
    q: dict[str, Any] = {"query": query} if query else {}
    q["engine"] = engine
    if rules is not None and not Path(rules).exists():
        # A policy image: verified (with the --rules-* trust, or the image's) before use.
        source = open_target(rules, net, param="--rules")
        for_rules = rules_verifier(rules_trust, trust, OUT.json) or verifier
        # Rules that fail verification are refused like any unverified material (exit 1).
        with reported(OUT.json), source.registry:
            g = Gate.from_registry(
                source.registry,
                source.ref,
                verifier,
                rules_verifier=for_rules,
                settings=settings or None,
                **q,
            )
    else:
        if rules_trust is not None:
            usage_error("--rules-key and --rules-certificate-* apply to a --rules policy image")
        with reported(OUT.json, code=EXIT_USAGE):
            bundle = _local_rules(rules) if rules is not None else None
            g = Gate(verifier, bundle, settings=settings or None, **q)
    results = [_judge(g, ref, net, ctx) for ref in refs]
    default_rules = rules is None and not query
    if fmt == "text":
        for line, colour, err in _reports.render_text(results):
            say(line, essential=True, fg=colour, err=err)
        sys.exit(_reports.worst(results))
    if fmt == "json":
        report = _reports.render_json(results)
    elif fmt == "junit":
        report = _reports.render_junit(results, default_rules=default_rules)
    elif fmt == "sarif":
        report = _reports.render_sarif(results, default_rules=default_rules, version=__version__)
    else:
        report = _reports.render_markdown(results, default_rules=default_rules)
    if output_file is not None:
        try:
            Path(output_file).write_text(report if report.endswith("\n") else report + "\n")
        except OSError as exc:
            usage_error(f"cannot write {output_file}: {exc.strerror or exc}", "--output-file")
        for line, colour, _ in _reports.render_text(results):
            if not line.startswith("  - "):
                click.secho(line, err=True, fg=colour)
    else:
        click.echo(report, nl=not report.endswith("\n"))
    sys.exit(_reports.worst(results))


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@click.option(
    "--opa",
    "opa_url",
    default="http://127.0.0.1:8181",
    show_default=True,
    help="OPA's base URL.",
)
@click.option(
    "--opa-token",
    envvar="POLICYSUPPLY_OPA_TOKEN",
    show_envvar=True,
    help="Bearer token for OPA (prefer the environment variable to the flag).",
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
    verifier = _require(verifier_from_options(trust, as_json))
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
@click.option(
    "-d",
    "--directory",
    type=click.Path(file_okay=False),
    default=".policysupply-bundles",
    show_default=True,
    help="Keeps the last good bundle of each name, so a restart serves it at once.",
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
@click.option(
    "--server-token",
    envvar="POLICYSUPPLY_BUNDLE_TOKEN",
    show_envvar=True,
    help="Require this bearer token from OPA (prefer the environment variable).",
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

    verifier = _require(verifier_from_options(trust, as_json))
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
