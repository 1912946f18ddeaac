"""``push``, ``pull`` and ``copy``: moving policy images between disk and registries."""

from __future__ import annotations

from pathlib import Path

import click

from policysupply.cli._common import (
    Command,
    NetOptions,
    by_digest,
    emit_json,
    json_option,
    on_terminal,
    open_target,
    progress_bar,
    registry_options,
    reported,
)
from policysupply.cli._trust import (
    TrustOptions,
    signature_json,
    trust_options,
    verifier_from_options,
)
from policysupply.errors import BundleError

REFERENCE_HELP = """\b
References:
  HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry (HTTPS; plain HTTP for loopback
                                   hosts or with --insecure; credentials from
                                   the docker config)
  oci:DIR:REPO[:TAG|@DIGEST]       an OCI image layout under DIR (no server)
"""


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("source", type=click.Path(exists=True))
@click.argument("reference")
@click.option("--revision", help="Manifest revision when SOURCE is a directory.")
@click.option("--image-version", "version", help="org.opencontainers.image.version annotation.")
@click.option("--no-check", is_flag=True, help="Skip compiling the Rego before pushing.")
@registry_options
@json_option
def push(
    source: str,
    reference: str,
    revision: str | None,
    version: str | None,
    no_check: bool,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Push a bundle (directory or .tar.gz) to REFERENCE as a policy image.

    Prints the digest reference: sign and deploy that, not the tag.

    \b
    Examples:
      policysupply push bundle.tar.gz registry.example.com/acme/policy:1.0
      policysupply push policies/ localhost:5000/acme/policy:dev --revision "$(git rev-parse HEAD)"
      policysupply push bundle.tar.gz oci:./layout:acme/policy:1.0
    """
    from policysupply import Bundle

    target = open_target(reference, net, param="REFERENCE")
    with reported(as_json), target.registry:
        p = Path(source)
        if p.is_dir():
            bundle = Bundle.from_directory(p, revision=revision)
        else:
            if revision is not None:
                raise click.BadParameter(
                    "--revision applies to a directory; a built bundle keeps its own",
                    param_hint="--revision",
                )
            bundle = Bundle.from_file(p)
        if not no_check:
            bundle.check()
        with progress_bar("push", on_terminal() and not as_json) as progress:
            pushed = target.registry.push(bundle, target.ref, version=version, progress=progress)
    digest = str(pushed.digest)
    pinned = target.pinned(digest)
    if as_json:
        emit_json(
            {
                "ok": True,
                "reference": pinned,
                "digest": digest,
                "bundle_digest": bundle.digest,
                "revision": bundle.manifest.revision,
            }
        )
    else:
        click.echo(f"pushed {target.text}")
        click.echo(pinned)


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="bundle.tar.gz",
    show_default=True,
    help="Where to write the bundle tarball.",
)
@click.option(
    "--verify",
    "verify",
    is_flag=True,
    help="Verify signatures before writing anything (needs --key; implied by --key).",
)
@trust_options(required=False, state=True)
@registry_options
@json_option
def pull(
    reference: str,
    output: str,
    verify: bool,
    trust: TrustOptions,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Pull a policy image's bundle tarball from REFERENCE.

    Every byte is checked against its digest. With --key the signatures are
    verified first and the bundle is pulled by the verified digest (and, with
    --state, must not roll back); without a key nothing vouches for who made
    the bundle.

    \b
    Examples:
      policysupply pull registry.example.com/acme/policy:1.0 --key cosign.pub -o policy.tar.gz
      policysupply pull reg.example.com/acme/policy:stable -k cosign.pub --state trust.json
      policysupply pull oci:./layout:acme/policy:1.0 -o policy.tar.gz
    """
    from policysupply import Bundle

    if verify and not trust.keys:
        raise click.UsageError("--verify needs at least one --key")
    verifier = verifier_from_options(trust, as_json)
    target = open_target(reference, net, param="REFERENCE")
    signatures: list[dict[str, object]] = []
    with reported(as_json), target.registry:
        if verifier is not None:
            # The library's verified path (digest-pinned pull, rollback check),
            # then the verified bundle is written; no second download.
            verified = verifier.verify_bundle(
                target.registry, target.ref, state=trust.trust_state()
            )
            digest = verified.artifact.digest
            bundle = verified.bundle
            bundle.write(output)
            size = len(bundle.to_bytes())
            signatures = [signature_json(s) for s in verified.artifact.signatures]
        else:
            digest = target.registry.resolve(target.ref)
            # Download by the digest just resolved, never by the tag again.
            with progress_bar("pull", on_terminal() and not as_json) as progress:
                layer = target.registry.download(
                    by_digest(target.ref, digest), output, progress=progress
                )
            size = layer.size
            try:
                bundle = Bundle.from_file(output)
            except BundleError:
                # Digest-correct but not a bundle: leave nothing that looks usable.
                Path(output).unlink(missing_ok=True)
                raise
    pinned = target.pinned(digest)
    if as_json:
        emit_json(
            {
                "ok": True,
                "reference": pinned,
                "digest": digest,
                "path": output,
                "bundle_digest": bundle.digest,
                "revision": bundle.manifest.revision,
                "verified": verifier is not None,
                "signatures": signatures,
            }
        )
    else:
        click.echo(f"pulled {pinned}")
        click.echo(f"wrote {output} ({size:,} bytes, revision {bundle.manifest.revision!r})")
        if verifier is not None:
            n = len({s.get("subject") or s["key_id"] for s in signatures})
            click.secho(f"verified: signed by {n} trusted signer(s)", fg="green")
        else:
            click.secho("not signature-checked (pass --key to verify)", fg="yellow", err=True)


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("source")
@click.argument("destination")
@click.option(
    "--with-signatures/--without-signatures",
    default=True,
    show_default=True,
    help="Also copy cosign signatures, attestations and OCI referrers.",
)
@registry_options
@json_option
def copy(
    source: str,
    destination: str,
    with_signatures: bool,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Copy an artifact (and by default its signatures) from SOURCE to DESTINATION.

    Works between any two registries or layouts; signatures made offline in a
    layout travel with the bundle, so a mirror verifies like the original.

    \b
    Examples:
      policysupply copy oci:./layout:acme/policy:1.0 registry.example.com/acme/policy:1.0
      policysupply copy ghcr.io/acme/policy:1.0 mirror.internal/acme/policy:1.0
      policysupply copy reg.a/acme/policy:1.0 reg.b/acme/policy:1.0 --without-signatures
    """
    src = open_target(source, net, param="SOURCE")
    dst = open_target(destination, net, param="DESTINATION")
    bar = progress_bar("copy", on_terminal() and not as_json)
    with reported(as_json), src.registry, dst.registry, bar as progress:
        copied = src.registry.copy(
            src.ref,
            to=dst.registry,
            to_ref=dst.ref,
            with_signatures=with_signatures,
            progress=progress,
        )
    pinned = dst.pinned(str(copied.digest))
    if as_json:
        emit_json(
            {
                "ok": True,
                "source": source,
                "destination": pinned,
                "digest": copied.digest,
                "with_signatures": with_signatures,
            }
        )
    else:
        extra = " with signatures" if with_signatures else " without signatures"
        click.echo(f"copied {source} → {destination}{extra}")
        click.echo(pinned)
