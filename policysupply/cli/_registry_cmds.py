"""``push``, ``pull``, ``copy``, ``tree``, ``login`` and ``logout``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from policysupply.cli._common import (
    REFERENCE_HELP,
    Command,
    emit_json,
    json_option,
    on_terminal,
    progress_bar,
    reported,
    say,
    stdin_is_terminal,
    usage_error,
)
from policysupply.cli._options import bundle_output_option
from policysupply.cli._targets import NetOptions, by_digest, open_target, registry_options
from policysupply.cli._trust import (
    TrustOptions,
    signature_json,
    trust_options,
    verifier_from_options,
)
from policysupply.errors import BundleError, NotFoundError

if TYPE_CHECKING:
    from policysupply import Bundle

# Re-exported for the commands that share the epilog.
__all__ = ["REFERENCE_HELP", "copy", "login", "logout", "pull", "push", "tree"]


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

    Prints the digest reference: sign and deploy that, not the tag. Exit code
    2 for an invalid bundle, reference or credentials, 3 when the registry
    cannot be reached.

    \b
    Examples:
      policysupply push bundle.tar.gz registry.example.com/acme/policy:1.0
      policysupply push policies/ localhost:5000/acme/policy:dev --revision "$(git rev-parse HEAD)"
      policysupply push bundle.tar.gz oci:./layout:acme/policy:1.0
    """
    from policysupply import Bundle

    p = Path(source)
    if revision is not None and not p.is_dir():
        usage_error("--revision applies to a directory; a built bundle keeps its own", "--revision")
    target = open_target(reference, net, param="REFERENCE")
    with reported(as_json), target.registry:
        # The text as given: a trailing slash decides whether a symlink is read through.
        bundle = (
            Bundle.from_directory(source, revision=revision) if p.is_dir() else Bundle.from_file(p)
        )
        if not no_check:
            bundle.check()
        with progress_bar("push", on_terminal()) as progress:
            pushed = target.registry.push(bundle, target.ref, version=version, progress=progress)
    digest = str(pushed.digest)
    pinned = target.pinned(digest)
    if as_json:
        emit_json(_bundle_json(pinned, digest, bundle))
    else:
        say(f"pushed {target.text}")
        say(pinned, essential=True)


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@bundle_output_option("the bundle tarball")
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

    Every byte is checked against its digest. With --key (or an identity or
    --policy) the signatures are verified first and the bundle is pulled by
    the verified digest (and, with --state, must not roll back); without
    them nothing vouches for who made the bundle. Exit code 1 when
    verification fails.

    \b
    Examples:
      policysupply pull registry.example.com/acme/policy:1.0 --key cosign.pub -o policy.tar.gz
      policysupply pull reg.example.com/acme/policy:stable -k cosign.pub --state trust.json
      policysupply pull oci:./layout:acme/policy:1.0 -o policy.tar.gz
    """
    from policysupply import Bundle

    verifier = verifier_from_options(trust, as_json)
    if verify and verifier is None:
        usage_error("--verify needs a --key, a keyless identity or a --policy file")
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
            try:
                bundle.write(output)
            except OSError as exc:
                raise BundleError(f"cannot write {output}: {exc.strerror or exc}") from None
            size = len(bundle.to_bytes())
            signatures = [signature_json(s) for s in verified.artifact.signatures]
        else:
            digest = target.registry.resolve(target.ref)
            # Download by the digest just resolved, never by the tag again.
            with progress_bar("pull", on_terminal()) as progress:
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
            _bundle_json(
                pinned,
                digest,
                bundle,
                path=output,
                verified=verifier is not None,
                signatures=signatures,
            )
        )
    else:
        say(f"pulled {pinned}")
        say(f"wrote {output} ({size:,} bytes, revision {bundle.manifest.revision!r})")
        if verifier is not None:
            n = len({s.get("subject") or s["key_id"] for s in signatures})
            say(f"verified: signed by {n} trusted signer(s)", fg="green")
        else:
            say("not signature-checked (pass --key to verify)", fg="yellow", err=True)


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
    bar = progress_bar("copy", on_terminal())
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
                "reference": pinned,
                "destination": pinned,
                "digest": copied.digest,
                "with_signatures": with_signatures,
            }
        )
    else:
        extra = " with signatures" if with_signatures else " without signatures"
        say(f"copied {source} → {destination}{extra}")
        say(pinned, essential=True)


_COSIGN_TAGS = (("signatures", ".sig"), ("attestations", ".att"), ("sboms", ".sbom"))


def _layers(registry: Any, ref: str) -> list[dict[str, Any]]:
    import json

    data, _ = registry.get_manifest(ref)
    manifest = json.loads(data)
    return [
        {
            "digest": layer.get("digest"),
            "media_type": layer.get("mediaType"),
            "size": layer.get("size"),
            "annotations": layer.get("annotations") or {},
        }
        for layer in manifest.get("layers") or []
        if isinstance(layer, dict)
    ]


@click.command(cls=Command, epilog=REFERENCE_HELP)
@click.argument("reference")
@registry_options
@json_option
def tree(reference: str, net: NetOptions, as_json: bool) -> None:
    r"""Show what is attached to REFERENCE: signatures, attestations, referrers.

    Lists cosign's .sig, .att and .sbom tags for the resolved digest (with one
    line per signature layer) and the OCI 1.1 referrers (Sigstore bundles,
    SBOMs, anything with a subject), as `cosign tree` and `oras discover` do.
    Nothing is verified: use `verify` for that.

    \b
    Examples:
      policysupply tree registry.example.com/acme/policy:1.0
      policysupply tree oci:./layout:acme/policy:1.0 --json
    """
    from policysupply._internal.oci import fallback_tag

    target = open_target(reference, net, param="REFERENCE")
    doc: dict[str, Any] = {"ok": True}
    with reported(as_json), target.registry:
        digest = target.registry.resolve(target.ref)
        pinned = target.pinned(digest)
        doc.update(reference=pinned, digest=digest)
        base = by_digest(target.ref, digest).split("@", 1)[0]
        for name, suffix in _COSIGN_TAGS:
            tag = fallback_tag(digest) + suffix
            try:
                layers = _layers(target.registry, f"{base}:{tag}")
            except NotFoundError:
                doc[name] = None
                continue
            doc[name] = {"tag": tag, "layers": layers}
        doc["referrers"] = [
            {
                "digest": d.digest,
                "artifact_type": d.artifact_type,
                "media_type": d.media_type,
                "size": d.size,
                "annotations": dict(d.annotations),
            }
            for d in target.registry.referrers(by_digest(target.ref, digest))
        ]
    if as_json:
        emit_json(doc)
        return
    click.echo(pinned)
    sections = [(n, doc[n]) for n, _ in _COSIGN_TAGS if doc[n]]
    items: list[tuple[str, list[str]]] = [
        (
            f"{name} (cosign tag {entry['tag']})",
            [f"{layer['digest']} {layer['media_type']}" for layer in entry["layers"]],
        )
        for name, entry in sections
    ]
    if doc["referrers"]:
        items.append(
            (
                "referrers (OCI 1.1)",
                [
                    f"{r['digest']} {r['artifact_type'] or r['media_type']}"
                    for r in doc["referrers"]
                ],
            )
        )
    if not items:
        click.echo("└── nothing attached (no signatures, attestations or referrers)")
    for i, (title, lines) in enumerate(items):
        last = i == len(items) - 1
        click.echo(f"{'└──' if last else '├──'} {title}")
        for j, line in enumerate(lines):
            branch = "└──" if j == len(lines) - 1 else "├──"
            click.echo(f"{'    ' if last else '│   '}{branch} {line}")


@click.command(cls=Command)
@click.argument("registry")
@click.option("-u", "--username", help="User name (prompted for on a terminal when missing).")
@click.option(
    "-p",
    "--password",
    help="Password or token. Prefer --password-stdin: a flag shows up in ps and shell history.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@registry_options
@json_option
def login(
    registry: str,
    username: str | None,
    password: str | None,
    password_stdin: bool,
    net: NetOptions,
    as_json: bool,
) -> None:
    r"""Store credentials for REGISTRY in docker's config.

    The credentials are checked against the registry first, then stored as
    `docker login` stores them: through the credential helper the config
    names (credHelpers, credsStore), else in config.json ($DOCKER_CONFIG,
    or --docker-config) with mode 0600. docker, oras, cosign and every
    policysupply command read them from there.

    \b
    Examples:
      echo "$TOKEN" | policysupply login ghcr.io -u my-user --password-stdin
      policysupply login registry.example.com -u ci
    """
    from policysupply import Credentials, Registry, RetryPolicy, Timeout
    from policysupply._internal import docker_login
    from policysupply.cli._targets import check_net, plain_http

    check_net(net)
    host = _login_host(registry)
    if password is not None and password_stdin:
        usage_error("give --password or --password-stdin, not both", "--password-stdin")
    if username is None:
        if not stdin_is_terminal() or password_stdin:
            usage_error("give --username (-u)", "--username")
        username = click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None:
        if not stdin_is_terminal():
            usage_error("give --password-stdin (or --password) off a terminal", "--password")
        password = click.prompt("Password", hide_input=True, err=True)
    if not username or not password:
        usage_error("the user name and the password must not be empty")
    creds = Credentials(username=username, password=password)
    config = Path(net.docker_config) if net.docker_config else None
    reg = Registry.remote(
        host,
        insecure=plain_http(net, host),
        auth=creds,
        timeout=Timeout(connect=min(10.0, net.timeout), pool=min(10.0, net.timeout)),
        retry=RetryPolicy(deadline=net.timeout),
        ca_file=net.ca_file,
        verify_tls=not net.insecure,
    )
    with reported(as_json), reg:
        docker_login.check(reg, host)
        where = docker_login.store(host, creds, config)
    if as_json:
        emit_json({"ok": True, "registry": host, "username": username, "stored_in": where})
    else:
        say(f"Login Succeeded ({username} at {host}; stored in {where})", essential=True)


def _login_host(text: str) -> str:
    host = text
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.rstrip("/")
    if not host or "/" in host or "@" in host:
        usage_error(f"{text!r} is not a registry host: use HOST[:PORT]", "REGISTRY")
    return host


@click.command(cls=Command)
@click.argument("registry")
@click.option(
    "--docker-config",
    type=click.Path(dir_okay=False),
    envvar="POLICYSUPPLY_DOCKER_CONFIG",
    help="Docker config.json (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).",
)
@json_option
def logout(registry: str, docker_config: str | None, as_json: bool) -> None:
    r"""Remove the credentials for REGISTRY from docker's config.

    \b
    Example:
      policysupply logout ghcr.io
    """
    from policysupply._internal import docker_login

    host = _login_host(registry)
    with reported(as_json):
        removed = docker_login.erase(host, Path(docker_config) if docker_config else None)
    if as_json:
        emit_json({"ok": True, "registry": host, "removed": removed})
    elif removed:
        say(f"Removed login credentials for {host}")
    else:
        say(f"Not logged in to {host}")


def _bundle_json(pinned: str, digest: str, bundle: Bundle, **extra: Any) -> dict[str, Any]:
    """A bundle pushed or pulled, for ``--json``."""
    return {
        "ok": True,
        "reference": pinned,
        "digest": digest,
        "bundle_digest": bundle.digest,
        "revision": bundle.manifest.revision,
        **extra,
    }
