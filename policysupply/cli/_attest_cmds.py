"""``attest``, ``verify-attestation``, ``sign-blob`` and ``verify-blob`` (cosign's names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from policysupply.cli._common import (
    KEY_PROMPT_HELP,
    REFERENCE_HELP,
    Command,
    emit_json,
    json_option,
    reported,
    say,
    usage_error,
)
from policysupply.cli._options import existing_file_option
from policysupply.cli._sign_cmds import (
    SIGNER_HELP,
    SignerOptions,
    artifact_json,
    made_json,
    make_signer,
    print_artifact,
    scheme_option,
    sign_target,
    signer_options,
)
from policysupply.cli._targets import NetOptions, open_target, read_json_argument, registry_options
from policysupply.cli._trust import (
    TrustOptions,
    signature_json,
    trust_options,
    verifier_from_options,
)

# cosign attest --type short names.
PREDICATE_TYPES = {
    "slsaprovenance": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance02": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance1": "https://slsa.dev/provenance/v1",
    "link": "https://in-toto.io/Link/v1",
    "spdx": "https://spdx.dev/Document",
    "spdxjson": "https://spdx.dev/Document",
    "cyclonedx": "https://cyclonedx.org/bom",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
    "openvex": "https://openvex.dev/ns",
    "custom": "https://cosign.sigstore.dev/attestation/v1",
}

TYPE_HELP = (
    "Predicate type: a URI, or cosign's short names (" + ", ".join(sorted(PREDICATE_TYPES)) + ")."
)


def predicate_type(value: str) -> str:
    """A ``--type`` value as the predicate type URI."""
    if value in PREDICATE_TYPES:
        return PREDICATE_TYPES[value]
    if "://" not in value:
        usage_error(
            f"{value!r} is neither a predicate type URI nor one of cosign's names", "--type"
        )
    return value


@click.command(cls=Command, epilog=SIGNER_HELP + "\n" + KEY_PROMPT_HELP + "\n" + REFERENCE_HELP)
@click.argument("reference")
@click.option(
    "--predicate",
    "predicate_path",
    required=True,
    metavar="FILE|-",
    help="The predicate: a JSON object in a file, or - for stdin.",
)
@click.option("--type", "type_", default="custom", show_default=True, help=TYPE_HELP)
@signer_options
@scheme_option("legacy: cosign's .att tag; bundle: a Sigstore bundle referrer (cosign 3).")
@registry_options
@json_option
def attest(
    reference: str,
    predicate_path: str,
    type_: str,
    signing: SignerOptions,
    scheme: str,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Attest a predicate about REFERENCE (an in-toto statement, as cosign attest).

    The statement names the resolved digest as its subject and is signed as
    a DSSE envelope, stored where cosign stores attestations; `cosign
    verify-attestation` and `policysupply verify-attestation` check it.

    \b
    Examples:
      policysupply attest registry.example.com/acme/app:1.4 --key cosign.key \
          --predicate provenance.json --type slsaprovenance1
      policysupply attest oci:./layout:acme/policy:1.0 -k cosign.key \
          --predicate review.json --type https://acme.example/review/v1
    """
    kind = predicate_type(type_)
    predicate = read_json_argument(predicate_path, param="--predicate", what="the predicate")
    if not isinstance(predicate, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--predicate")
    pinned, sig = sign_target(
        reference,
        net,
        signing,
        as_json,
        lambda signer, target: signer.attest(
            target.registry,
            target.ref,
            predicate_type=kind,
            predicate=predicate,
            scheme=scheme,  # type: ignore[arg-type]
        ),
    )
    if as_json:
        emit_json(made_json(pinned, sig, predicate_type=kind))
    else:
        say(f"attested {pinned}", essential=True)
        say(f"{kind} by {sig.key_id}, {sig.scheme} attestation at {sig.location}")


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@click.option(
    "--type",
    "types",
    multiple=True,
    default=("custom",),
    show_default=True,
    help=TYPE_HELP + " Repeatable: every type is required.",
)
@trust_options(required=True)
@registry_options
@json_option
def verify_attestation(
    reference: str,
    types: tuple[str, ...],
    trust: TrustOptions,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Verify that trusted signers attested REFERENCE (as cosign verify-attestation).

    Exit code 0 when, for each --type, a trusted key or identity signed an
    attestation naming the resolved digest; 1 when one is missing or
    untrusted; 2 for setup errors; 3 when the registry cannot be reached.
    With --json the verified predicates are printed.

    \b
    Examples:
      policysupply verify-attestation registry.example.com/acme/app:1.4 --key cosign.pub \
          --type slsaprovenance1
    """
    kinds = tuple(predicate_type(t) for t in types)
    verifier = verifier_from_options(trust, as_json, attestations=kinds)
    assert verifier is not None  # noqa: S101 - a key, identity or policy is required
    target = open_target(reference, net, param="REFERENCE")
    with reported(as_json), target.registry:
        artifact = verifier.verify(target.registry, target.ref, attestations=True)
    pinned = target.pinned(artifact.digest)
    if as_json:
        doc = artifact_json(pinned, artifact)
        doc["attestations"] = [
            {
                "predicate_type": a.predicate_type,
                "predicate": dict(a.predicate),
                **signature_json(a.signature),
            }
            for a in artifact.attestations
            if a.predicate_type in kinds
        ]
        emit_json(doc)
    else:
        print_artifact(pinned, artifact)


def _bundle_path(file: str, bundle: str | None) -> Path:
    return Path(bundle) if bundle else Path(f"{file}.sigstore.json")


@click.command(cls=Command, epilog=SIGNER_HELP + "\n" + KEY_PROMPT_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False),
    help="Where to write the Sigstore bundle (default: FILE.sigstore.json).",
)
@signer_options
@json_option
def sign_blob(file: str, bundle: str | None, signing: SignerOptions, as_json: bool) -> None:
    r"""Sign a file; writes a Sigstore bundle (as cosign sign-blob --bundle).

    For artifacts that are files, not images: a bundle tarball served over
    HTTP, a release asset. `cosign verify-blob --bundle` and `policysupply
    verify-blob` check the result.

    \b
    Examples:
      policysupply sign-blob bundle.tar.gz --key cosign.key
      policysupply sign-blob bundle.tar.gz --bundle bundle.tar.gz.sigstore.json   # keyless
    """
    out = _bundle_path(file, bundle)
    signer = make_signer(signing, as_json)
    with reported(as_json):
        made = signer.sign_blob(Path(file))
        made.write(out)
    if as_json:
        emit_json({"ok": True, "path": file, "bundle": str(out), "keyless": made.keyless})
    else:
        say(f"wrote {out}", essential=True)


@click.command(cls=Command)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@existing_file_option(
    "--bundle",
    help="The Sigstore bundle (default: FILE.sigstore.json).",
)
@trust_options(required=True)
@json_option
def verify_blob(file: str, bundle: str | None, trust: TrustOptions, as_json: bool) -> None:
    r"""Verify a file against its Sigstore bundle (as cosign verify-blob --bundle).

    Exit code 0 when a trusted key or identity signed exactly this file's
    bytes; 1 when not; 2 for setup errors (no bundle, malformed bundle).

    \b
    Examples:
      policysupply verify-blob bundle.tar.gz --key cosign.pub
      policysupply verify-blob bundle.tar.gz --bundle b.sigstore.json \
          --certificate-identity release@acme.example --certificate-oidc-issuer https://accounts.google.com
    """
    path = _bundle_path(file, bundle)
    if not path.is_file():
        usage_error(f"no Sigstore bundle at {path}; give --bundle", "--bundle")
    verifier = verifier_from_options(trust, as_json)
    assert verifier is not None  # noqa: S101
    with reported(as_json):
        artifact = verifier.verify_blob(Path(file), bundle=path)
    doc: dict[str, Any] = artifact_json(file, artifact)
    doc["bundle"] = str(path)
    if as_json:
        emit_json(doc)
    else:
        print_artifact(file, artifact)
