"""``gate``: verified images meet the deployment rules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from policysupply.cli._common import (
    EXIT_USAGE,
    OUT,
    REFERENCE_HELP,
    Command,
    engine_option,
    exit_code_for,
    json_option,
    reported,
    require_verifier,
    say,
    unavailable_reason,
    usage_error,
)
from policysupply.cli._targets import (
    NetOptions,
    open_target,
    read_json_document,
    read_text_argument,
    registry_options,
)
from policysupply.cli._trust import (
    TrustOptions,
    rules_trust_options,
    rules_verifier,
    trust_options,
    verifier_from_options,
)
from policysupply.errors import PolicySupplyError

if TYPE_CHECKING:
    from policysupply import Bundle, Gate
    from policysupply.cli._reports import GateResult


def _read_context(value: str | None) -> dict[str, Any]:
    """``--context``: a JSON object, inline, from a file, or ``-`` for stdin."""
    if value is None:
        return {}
    if value != "-" and value.lstrip().startswith("{"):
        text = value
    else:
        text = read_text_argument(value, param="--context")
    doc = read_json_document(text, param="--context", what="the context")
    if not isinstance(doc, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--context")
    return doc


def _local_rules(path: str) -> Bundle:
    from policysupply import Bundle

    p = Path(path)
    # The text as given: a trailing slash decides whether a symlink is read through.
    return Bundle.from_directory(path) if p.is_dir() else Bundle.from_file(p)


def _images(images: tuple[str, ...], images_from: str | None) -> list[str]:
    refs = list(images)
    if images_from is not None:
        try:
            text = read_text_argument(images_from, param="--images-from")
        except click.BadParameter as exc:  # reported without click's usage text
            usage_error(exc.message, "--images-from")
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
    verifier = require_verifier(verifier_from_options(trust, OUT.json))
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
