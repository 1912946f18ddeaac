"""``keygen``, ``sign`` and ``verify``: cosign-compatible keys and signatures."""

from __future__ import annotations

import re
from pathlib import Path

import click

from policysupply.cli._common import (
    EXIT_USAGE,
    Command,
    NetOptions,
    emit_json,
    json_option,
    key_is_encrypted,
    open_target,
    parse_annotations,
    read_password,
    registry_options,
    reported,
)
from policysupply.cli._registry_cmds import REFERENCE_HELP
from policysupply.cli._trust import (
    TrustOptions,
    require_attestation_option,
    signature_json,
    trust_options,
    verifier_from_options,
)

KEY_PROMPT_HELP = """\b
Password: taken from $COSIGN_PASSWORD when set, otherwise asked for on the
terminal (hidden), or read as one line from stdin when that is not a terminal.
"""


@click.command(cls=Command, epilog=KEY_PROMPT_HELP)
@click.option(
    "-d",
    "--directory",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Where to write the key pair.",
)
@click.option(
    "--output-key-prefix",
    "prefix",
    default="cosign",
    show_default=True,
    help="File name stem: PREFIX.key and PREFIX.pub.",
)
@json_option
def keygen(directory: str, prefix: str, as_json: bool) -> None:
    r"""Create an ECDSA P-256 key pair as `cosign generate-key-pair` does.

    Writes PREFIX.key (encrypted with the password, mode 0600) and PREFIX.pub.
    Both work with cosign, and cosign's work here. Existing files are never
    overwritten.

    \b
    Examples:
      policysupply keygen
      COSIGN_PASSWORD="$PW" policysupply keygen -d keys/ --output-key-prefix release
    """
    from policysupply import Signer

    d = Path(directory)
    for suffix in (".key", ".pub"):
        if (d / f"{prefix}{suffix}").exists():
            raise click.UsageError(f"{d / (prefix + suffix)} exists; refusing to overwrite a key")
    password = read_password(confirm=True)
    with reported(as_json, code=EXIT_USAGE):
        d.mkdir(parents=True, exist_ok=True)
        signer = Signer.generate()
        key_path, pub_path = signer.write_key_pair(d, password=password, name=prefix)
    if as_json:
        emit_json(
            {
                "ok": True,
                "private_key": str(key_path),
                "public_key": str(pub_path),
                "key_id": signer.key_id,
            }
        )
    else:
        click.echo(f"Private key written to {key_path}")
        click.echo(f"Public key written to {pub_path}")
        click.echo(f"key id {signer.key_id}")


@click.command(cls=Command, epilog=KEY_PROMPT_HELP + "\n" + REFERENCE_HELP)
@click.argument("reference")
@click.option(
    "-k",
    "--key",
    "key",
    type=click.Path(exists=True, dir_okay=False),
    help="Private key: cosign.key (encrypted) or a PEM private key.",
)
@click.option(
    "--identity-token",
    envvar="SIGSTORE_ID_TOKEN",
    show_envvar=True,
    metavar="TOKEN|FILE",
    help="Keyless signing instead of --key: an OIDC identity token (audience sigstore), "
    "or a file holding one, for a Fulcio certificate and a Rekor entry.",
)
@click.option(
    "--sigstore-trust",
    default="production",
    show_default=True,
    metavar="production|staging|FILE",
    help="Keyless: the Sigstore deployment (a client trust config JSON for a private one).",
)
@click.option(
    "--scheme",
    type=click.Choice(["legacy", "bundle"]),
    default="legacy",
    show_default=True,
    help="legacy: cosign's .sig tag (cosign 2 reads it); "
    "bundle: a Sigstore bundle referrer (as cosign 3 writes).",
)
@click.option(
    "-a",
    "--annotation",
    "annotations",
    multiple=True,
    metavar="KEY=VALUE",
    help="Annotation signed with the payload (repeatable).",
)
@registry_options
@json_option
def sign(
    reference: str,
    key: str | None,
    identity_token: str | None,
    sigstore_trust: str,
    scheme: str,
    annotations: tuple[str, ...],
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Sign the artifact at REFERENCE where cosign looks for signatures.

    With --key the signature is made with a key pair; with --identity-token
    (or $SIGSTORE_ID_TOKEN) it is keyless: a short-lived Fulcio certificate
    for your OIDC identity, logged in Rekor. The tag is resolved once; the
    signature covers that digest. Other signers' signatures are kept.

    \b
    Examples:
      policysupply sign registry.example.com/acme/policy:1.0 --key cosign.key
      policysupply sign localhost:5000/acme/policy@sha256:... --key cosign.key -a env=prod
      policysupply sign oci:./layout:acme/policy:1.0 --key cosign.key --scheme bundle
      SIGSTORE_ID_TOKEN="$(cat token.jwt)" policysupply sign ghcr.io/acme/policy:1.0
    """
    from policysupply import Signer

    if (key is None) == (identity_token is None):
        raise click.UsageError("give exactly one of --key and --identity-token")
    claims = parse_annotations(annotations)
    target = open_target(reference, net, param="REFERENCE")
    if key is not None:
        password = read_password(confirm=False) if key_is_encrypted(Path(key)) else None
        with reported(as_json, code=EXIT_USAGE):
            signer = Signer.from_key_file(key, password=password)
    else:
        assert identity_token is not None  # noqa: S101 - checked above
        token = _identity_token(identity_token)
        with reported(as_json, code=EXIT_USAGE):
            signer = Signer.keyless(identity_token=token, trust=sigstore_trust)
    with reported(as_json), target.registry:
        sig = signer.sign(
            target.registry,
            target.ref,
            annotations=claims or None,
            scheme=scheme,  # type: ignore[arg-type]
        )
    pinned = target.pinned(str(sig.reference.digest))
    if as_json:
        emit_json(
            {
                "ok": True,
                "reference": pinned,
                "digest": sig.reference.digest,
                "key_id": sig.key_id,
                "scheme": sig.scheme,
                "location": sig.location,
                "annotations": claims,
                "keyless": sig.certificate is not None,
                "log_index": sig.log_index,
            }
        )
    else:
        click.echo(f"signed {pinned}")
        if sig.certificate is not None:
            where = f", transparency log index {sig.log_index}" if sig.log_index is not None else ""
            click.echo(f"keyless {sig.scheme} signature at {sig.location}{where}")
        else:
            click.echo(f"key id {sig.key_id}, {sig.scheme} signature at {sig.location}")


_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def _identity_token(value: str) -> str:
    """The token itself, or the contents of the file it names (never echoed back)."""
    value = value.strip()
    if _JWT.match(value):
        return value
    try:
        token = Path(value).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        raise click.BadParameter(
            "neither an OIDC token (header.payload.signature) nor a readable file",
            param_hint="--identity-token",
        ) from None
    if not _JWT.match(token):
        raise click.BadParameter(
            "the file does not hold an OIDC token", param_hint="--identity-token"
        )
    return token


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@trust_options(required=True)
@require_attestation_option
@registry_options
@json_option
def verify(
    reference: str,
    trust: TrustOptions,
    required_attestations: tuple[str, ...],
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Verify the signatures on REFERENCE (a policy image or any OCI artifact).

    Exit code 0 when at least --threshold distinct trusted keys signed the
    resolved digest with the required annotations, and a trusted signer
    attested each --require-attestation predicate type; 1 when verification
    fails (unsigned, untrusted, threshold not met, claims wrong, attestation
    missing or untrusted); 2 for setup errors.

    \b
    Examples:
      policysupply verify registry.example.com/acme/policy:1.0 --key cosign.pub
      policysupply verify localhost:5000/app:1 -k a.pub -k b.pub --threshold 2 -a env=prod
      policysupply verify registry.example.com/acme/app:1.4 -k cosign.pub \
          --require-attestation https://slsa.dev/provenance/v1
    """
    verifier = verifier_from_options(trust, as_json, attestations=required_attestations)
    assert verifier is not None  # noqa: S101 - --key is required
    target = open_target(reference, net, param="REFERENCE")
    with reported(as_json), target.registry:
        artifact = verifier.verify(target.registry, target.ref)
    pinned = target.pinned(artifact.digest)
    if as_json:
        emit_json(
            {
                "ok": True,
                "reference": pinned,
                "digest": artifact.digest,
                "key_ids": list(artifact.key_ids),
                "signatures": [signature_json(s) for s in artifact.signatures],
                "attestations": [
                    {"predicate_type": a.predicate_type, **signature_json(a.signature)}
                    for a in artifact.attestations
                ],
            }
        )
    else:
        click.secho(f"verified {pinned}", fg="green")
        for s in artifact.signatures:
            extra = "".join(f" {k}={v}" for k, v in sorted(s.annotations.items()))
            who = f"{s.subject} ({s.issuer})" if s.subject else s.key_id
            click.echo(f"  {s.scheme} signature by {who}{extra}")
        for a in artifact.attestations:
            s = a.signature
            who = f"{s.subject} ({s.issuer})" if s.subject else s.key_id
            click.echo(f"  {s.scheme} attestation {a.predicate_type} by {who}")
