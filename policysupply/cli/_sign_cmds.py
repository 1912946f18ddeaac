"""``keygen``, ``sign`` and ``verify``: cosign-compatible keys and signatures."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click

from policysupply.cli._common import (
    EXIT_USAGE,
    KEY_PROMPT_HELP,
    REFERENCE_HELP,
    Command,
    emit_json,
    json_option,
    key_is_encrypted,
    on_terminal,
    read_password,
    reported,
    say,
    stdin_is_terminal,
    usage_error,
)
from policysupply.cli._options import directory_option, existing_file_option, option_group
from policysupply.cli._targets import (
    NetOptions,
    Target,
    open_target,
    parse_annotations,
    registry_options,
)
from policysupply.cli._trust import (
    require_attestation_option,
    trust_options,
)
from policysupply.cli._verify_run import artifact_json as artifact_json
from policysupply.cli._verify_run import print_artifact as print_artifact
from policysupply.cli._verify_run import run_verify

if TYPE_CHECKING:
    from policysupply import Signature, Signer

F = TypeVar("F", bound=Callable[..., Any])


@click.command(cls=Command, epilog=KEY_PROMPT_HELP)
@directory_option(".", "Where to write the key pair (created if missing).")
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
    overwritten (exit code 2).

    \b
    Examples:
      policysupply keygen
      COSIGN_PASSWORD="$PW" policysupply keygen -d keys/ --output-key-prefix release
    """
    from policysupply import Signer

    if not prefix or "/" in prefix or prefix in (".", ".."):
        usage_error(f"{prefix!r} is not a file name stem", "--output-key-prefix")
    d = Path(directory)
    for suffix in (".key", ".pub"):
        if (d / f"{prefix}{suffix}").exists():
            usage_error(f"{d / (prefix + suffix)} exists; refusing to overwrite a key")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        usage_error(
            f"cannot create the key directory {d}: {exc.strerror or exc}; "
            "choose a writable directory with -d",
            "--directory",
        )
    password = read_password(confirm=True)
    with reported(as_json, code=EXIT_USAGE):
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
        say(f"Private key written to {key_path}")
        say(f"Public key written to {pub_path}", essential=True)
        say(f"key id {signer.key_id}")


# -- how to sign: a key, or keyless ------------------------------------------------


@attrs.frozen(kw_only=True)
class SignerOptions:
    """How ``sign``, ``attest`` and ``sign-blob`` sign.

    Attributes:
        key: A private key file, or ``None`` for keyless.
        identity_token: An OIDC token or a file holding one (keyless).
        sigstore_trust: ``production``, ``staging`` or a client trust config file.
        oidc: ``auto``, ``ambient``, ``browser`` or ``off``: where a keyless
            token comes from when none was given.
    """

    key: str | None
    identity_token: str | None
    sigstore_trust: str
    oidc: str


SIGNER_HELP = """\b
Signing: with --key PRIVATE_KEY, or keyless (no --key): an OIDC token from
--identity-token / $SIGSTORE_ID_TOKEN, else the CI's ambient credential
(GitHub Actions, GitLab, Buildkite, Google Cloud, as sigstore-python detects
them), else a browser sign-in when on a terminal (--oidc picks one).
"""


signer_options = option_group(
    SignerOptions,
    "signing",
    [
        existing_file_option(
            "-k",
            "--key",
            "key",
            help="Private key: cosign.key (encrypted) or a PEM private key.",
        ),
        click.option(
            "--identity-token",
            envvar="SIGSTORE_ID_TOKEN",
            show_envvar=True,
            metavar="TOKEN|FILE",
            help="Keyless: an OIDC identity token (audience sigstore), or a file holding one.",
        ),
        click.option(
            "--sigstore-trust",
            default="production",
            show_default=True,
            metavar="production|staging|FILE",
            help="Keyless: the Sigstore deployment; a client trust config JSON (trusted root "
            "plus signing config: Fulcio, Rekor, TSA and OIDC URLs) for a private one.",
        ),
        click.option(
            "--oidc",
            type=click.Choice(["auto", "ambient", "browser", "off"]),
            default="auto",
            show_default=True,
            help="Keyless without --identity-token: the CI's ambient credential, a browser "
            "sign-in (on a terminal), auto (ambient, then browser), or off.",
        ),
    ],
)
"""Adds ``--key``, ``--identity-token``, ``--sigstore-trust`` and ``--oidc`` (``signing``)."""


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


def _ambient_token() -> str | None:
    from sigstore.oidc import IdentityError, detect_credential

    try:
        return detect_credential()
    except IdentityError as exc:
        usage_error(f"the CI's ambient OIDC credential could not be read: {exc}", "--oidc")


def _browser_token(trust: str) -> str:
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityError, Issuer

    try:
        if trust == "staging":
            config = ClientTrustConfig.staging()
        elif trust == "production":
            config = ClientTrustConfig.production()
        else:
            config = ClientTrustConfig.from_json(Path(trust).read_text(encoding="utf-8"))
        issuer = Issuer(config.signing_config.get_oidc_url())
        say("Opening a browser to sign in for a Sigstore certificate…", err=True)
        return str(issuer.identity_token())
    except (IdentityError, OSError, ValueError) as exc:
        usage_error(f"the browser sign-in did not produce a token: {exc}", "--oidc")


def keyless_token(opts: SignerOptions) -> str:
    """The OIDC token for keyless signing: given, ambient, or from a browser sign-in."""
    from policysupply._internal import extras

    if not extras.available("sigstore"):
        usage_error(
            "nothing to sign with: give --key cosign.key; keyless signing needs "
            f"sigstore-python, which is not installed: {extras.hint('sigstore')}",
            "--key",
        )
    if opts.identity_token is not None:
        return _identity_token(opts.identity_token)
    if opts.oidc in ("auto", "ambient"):
        token = _ambient_token()
        if token:
            return token
    if opts.oidc in ("auto", "browser") and stdin_is_terminal() and on_terminal():
        return _browser_token(opts.sigstore_trust)
    usage_error(
        "nothing to sign with: give --key cosign.key, or an OIDC token for keyless "
        "signing (--identity-token or $SIGSTORE_ID_TOKEN); no ambient CI credential "
        "was found" + ("" if opts.oidc == "off" else " and this is not a terminal"),
        "--key",
    )


def scheme_option(help: str) -> Callable[[F], F]:
    """``--scheme legacy|bundle`` (default legacy): where a signature or attestation is stored."""
    return click.option(
        "--scheme",
        type=click.Choice(["legacy", "bundle"]),
        default="legacy",
        show_default=True,
        help=help,
    )


def make_signer(opts: SignerOptions, as_json: bool) -> Signer:
    """The Signer for the options (key password prompted for when needed)."""
    from policysupply import Signer

    if opts.key is not None:
        if opts.identity_token is not None and "SIGSTORE_ID_TOKEN" not in os.environ:
            usage_error("give --key or --identity-token, not both")
        password = read_password(confirm=False) if key_is_encrypted(Path(opts.key)) else None
        with reported(as_json, code=EXIT_USAGE):
            return Signer.from_key_file(opts.key, password=password)
    token = keyless_token(opts)
    with reported(as_json, code=EXIT_USAGE):
        return Signer.keyless(identity_token=token, trust=opts.sigstore_trust)


@click.command(cls=Command, epilog=SIGNER_HELP + "\n" + KEY_PROMPT_HELP + "\n" + REFERENCE_HELP)
@click.argument("reference")
@signer_options
@scheme_option(
    "legacy: cosign's .sig tag (cosign 2 reads it); "
    "bundle: a Sigstore bundle referrer (as cosign 3 writes)."
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
    signing: SignerOptions,
    scheme: str,
    annotations: tuple[str, ...],
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Sign the artifact at REFERENCE where cosign looks for signatures.

    With --key the signature is made with a key pair; without it, keyless:
    a short-lived Fulcio certificate for your OIDC identity, logged in
    Rekor. The tag is resolved once; the signature covers that digest.
    Other signers' signatures are kept.

    \b
    Examples:
      policysupply sign registry.example.com/acme/policy:1.0 --key cosign.key
      policysupply sign localhost:5000/acme/policy@sha256:... --key cosign.key -a env=prod
      policysupply sign oci:./layout:acme/policy:1.0 --key cosign.key --scheme bundle
      policysupply sign ghcr.io/acme/policy:1.0      # keyless, in GitHub Actions
    """
    claims = parse_annotations(annotations)
    pinned, sig = sign_target(
        reference,
        net,
        signing,
        as_json,
        lambda signer, target: signer.sign(
            target.registry,
            target.ref,
            annotations=claims or None,
            scheme=scheme,  # type: ignore[arg-type]
        ),
    )
    if as_json:
        emit_json(made_json(pinned, sig, annotations=claims))
    else:
        say(f"signed {pinned}", essential=True)
        if sig.certificate is not None:
            where = f", transparency log index {sig.log_index}" if sig.log_index is not None else ""
            say(f"keyless {sig.scheme} signature at {sig.location}{where}")
        else:
            say(f"key id {sig.key_id}, {sig.scheme} signature at {sig.location}")


def sign_target(
    reference: str,
    net: NetOptions,
    signing: SignerOptions,
    as_json: bool,
    act: Callable[[Signer, Target], Signature],
) -> tuple[str, Signature]:
    """Opens REFERENCE, signs or attests it with ``act``; returns the pinned reference."""
    target = open_target(reference, net, param="REFERENCE")
    signer = make_signer(signing, as_json)
    with reported(as_json), target.registry:
        sig = act(signer, target)
    return target.pinned(str(sig.reference.digest)), sig


def made_json(pinned: str, sig: Signature, **extra: Any) -> dict[str, Any]:
    """A signature or attestation just made, for ``--json`` (``sign``, ``attest``)."""
    return {
        "ok": True,
        "reference": pinned,
        "digest": sig.reference.digest,
        "key_id": sig.key_id,
        "scheme": sig.scheme,
        "location": sig.location,
        "keyless": sig.certificate is not None,
        "log_index": sig.log_index,
        **extra,
    }


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@trust_options(required=True)
@require_attestation_option
@registry_options
@json_option
def verify(**options: Any) -> None:
    r"""Verify the signatures on REFERENCE (a policy image or any OCI artifact).

    Exit code 0 when at least --threshold distinct trusted keys signed the
    resolved digest with the required annotations, and a trusted signer
    attested each --require-attestation predicate type; 1 when verification
    fails (unsigned, untrusted, threshold not met, claims wrong, attestation
    missing or untrusted); 2 for setup errors; 3 when the registry cannot be
    reached.

    \b
    Examples:
      policysupply verify registry.example.com/acme/policy:1.0 --key cosign.pub
      policysupply verify localhost:5000/app:1 -k a.pub -k b.pub --threshold 2 -a env=prod
      policysupply verify registry.example.com/acme/app:1.4 --policy trust-policy.yaml
      policysupply verify registry.example.com/acme/app:1.4 -k cosign.pub \
          --require-attestation https://slsa.dev/provenance/v1
    """
    # Options by name: run_verify's parameters are the click parameters.
    run_verify(**options)
