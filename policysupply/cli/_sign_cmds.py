"""``keygen``, ``sign`` and ``verify``: cosign-compatible keys and signatures."""

from __future__ import annotations

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
from policysupply.cli._trust import TrustOptions, trust_options, verifier_from_options

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
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Private key: cosign.key (encrypted) or a PEM private key.",
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
    key: str,
    scheme: str,
    annotations: tuple[str, ...],
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Sign the artifact at REFERENCE with a key, where cosign looks for signatures.

    The tag is resolved once; the signature covers that digest. Other
    signers' signatures on the same digest are kept.

    \b
    Examples:
      policysupply sign registry.example.com/acme/policy:1.0 --key cosign.key
      policysupply sign localhost:5000/acme/policy@sha256:... --key cosign.key -a env=prod
      policysupply sign oci:./layout:acme/policy:1.0 --key cosign.key --scheme bundle
    """
    from policysupply import Signer

    claims = parse_annotations(annotations)
    target = open_target(reference, net, param="REFERENCE")
    password = read_password(confirm=False) if key_is_encrypted(Path(key)) else None
    with reported(as_json, code=EXIT_USAGE):
        signer = Signer.from_key_file(key, password=password)
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
            }
        )
    else:
        click.echo(f"signed {pinned}")
        click.echo(f"key id {sig.key_id}, {sig.scheme} signature at {sig.location}")


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@trust_options(required=True)
@registry_options
@json_option
def verify(
    reference: str,
    trust: TrustOptions,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Verify the signatures on REFERENCE (a policy image or any OCI artifact).

    Exit code 0 when at least --threshold distinct trusted keys signed the
    resolved digest with the required annotations; 1 when verification fails
    (unsigned, untrusted, threshold not met, claims wrong); 2 for setup errors.

    \b
    Examples:
      policysupply verify registry.example.com/acme/policy:1.0 --key cosign.pub
      policysupply verify localhost:5000/app:1 -k a.pub -k b.pub --threshold 2 -a env=prod
    """
    verifier = verifier_from_options(trust, as_json)
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
                "signatures": [
                    {"key_id": s.key_id, "scheme": s.scheme, "annotations": dict(s.annotations)}
                    for s in artifact.signatures
                ],
            }
        )
    else:
        click.secho(f"verified {pinned}", fg="green")
        for s in artifact.signatures:
            extra = "".join(f" {k}={v}" for k, v in sorted(s.annotations.items()))
            click.echo(f"  {s.scheme} signature by {s.key_id}{extra}")
