"""The bodies of ``build`` and ``check``, without click.

The click commands in ``_bundle_cmds`` and the lean dispatch (``_lean``) both
call these with the parsed options, so the two paths share every step after
parsing: reading, checking, writing, output and exit codes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply.cli._output import emit_json, reported, say, usage_error
from policysupply.errors import BundleError

if TYPE_CHECKING:
    from collections.abc import Callable

    from policysupply import Bundle


def load_bundle(source: str, *, param: str = "SOURCE", v0_compatible: bool = False) -> Bundle:
    """A bundle from a directory or a ``.tar.gz`` file (usage error if neither exists).

    With ``v0_compatible``, modules are Rego v0 unless the bundle's manifest
    sets a ``rego_version`` (OPA's ``--v0-compatible``).
    """
    from policysupply.bundle import Bundle

    p = Path(source)
    if p.is_dir():
        # The text as given: Path drops a trailing slash, which decides
        # whether a symlinked directory is read through (as `opa check` does).
        b = Bundle.from_directory(source)
    elif not p.exists():
        usage_error(f"{source} does not exist (give a policy directory or a .tar.gz bundle)", param)
    else:
        b = Bundle.from_file(p)
    if v0_compatible and b.manifest.rego_version is None:
        b = attrs.evolve(b, manifest=attrs.evolve(b.manifest, rego_version=0))
    return b


def _meanwhile(work: Callable[[], object], finish: Callable[[], None]) -> None:
    """Runs ``work`` while a check runs, then ``finish`` (the check's result).

    ``work``'s result is cached on the bundle (``to_bytes``, ``entries``); an
    error is dropped here and raised again, unchanged, when the command asks
    for the same value after the check. An interrupt during ``work`` wins over
    the check's result: Ctrl-C reaches ``opa check`` too, and its death is not
    a verdict on the bundle.
    """
    try:
        with contextlib.suppress(Exception):  # recomputed (and raised) at its usual place
            work()
    except BaseException:
        with contextlib.suppress(Exception):
            finish()  # collects the process and removes its directory
        raise
    finish()


@attrs.frozen(kw_only=True)
class BuildRequest:
    """The options of ``policysupply build``, as either parser gives them.

    Attributes:
        directory: The policy directory.
        output: Where the tarball goes.
        revision: Manifest revision.
        roots: Manifest roots.
        no_check: Skip the Rego check.
        v0_compatible: Rego v0 unless the manifest says otherwise.
        engine: The Rego engine name (``None``: the default).
        signing_key: Key for an OPA-native signature.
        signing_alg: Its algorithm.
        claims_file: Extra claims for the signature.
        scope: The signature's scope claim.
        key_id: The signature's kid.
        as_json: ``--json`` output.
    """

    directory: str
    output: str = "bundle.tar.gz"
    revision: str | None = None
    roots: tuple[str, ...] = ()
    no_check: bool = False
    v0_compatible: bool = False
    engine: str | None = None
    signing_key: str | None = None
    signing_alg: str | None = None
    claims_file: str | None = None
    scope: str | None = None
    key_id: str | None = None
    as_json: bool = False


def run_build(req: BuildRequest) -> None:
    """``policysupply build``: see its help in ``_bundle_cmds``."""
    from policysupply.bundle import Bundle

    if req.signing_key is None and any(
        v is not None for v in (req.claims_file, req.scope, req.key_id, req.signing_alg)
    ):
        usage_error("--signing-alg, --claims-file, --scope and --key-id need --signing-key")
    with reported(req.as_json, verdict=(BundleError,)):
        b = Bundle.from_directory(
            req.directory, revision=req.revision, roots=list(req.roots) or None
        )
        if req.v0_compatible and b.manifest.rego_version is None:
            # As opa build --v0-compatible: the manifest's own rego_version wins.
            b = Bundle.from_directory(
                req.directory, revision=req.revision, roots=list(req.roots) or None, rego_version=0
            )
        if not req.no_check:
            finish = b._start_check(req.engine)
            # The tarball (or, to be signed, its entries) is written while
            # `opa check` runs; a bundle that does not check is not written.
            _meanwhile(b.to_bytes if req.signing_key is None else b.entries, finish)
    if req.signing_key is not None:
        with reported(req.as_json):
            b = _sign_native(b, req.signing_key, req)
    with reported(req.as_json):
        try:
            b.write(req.output)
        except OSError as exc:
            raise BundleError(f"cannot write {req.output}: {exc.strerror or exc}") from None
    if req.as_json:
        emit_json(
            {
                "ok": True,
                "path": req.output,
                "digest": b.digest,
                "revision": b.manifest.revision,
                "modules": len(b.modules),
            }
        )
    else:
        say(f"wrote {req.output} ({len(b.to_bytes()):,} bytes, {len(b.modules)} modules)")
        say(f"digest {b.digest}", essential=True)


def _sign_native(b: Bundle, key: str, req: BuildRequest) -> Bundle:
    from policysupply._internal.opa_signatures import parse_claims
    from policysupply.cli._common import key_is_encrypted, read_password
    from policysupply.errors import SigningError

    claims_file, scope, key_id = req.claims_file, req.scope, req.key_id
    claims = None
    if claims_file is not None:
        try:
            claims = parse_claims(Path(claims_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise SigningError(f"cannot read claims file {claims_file}: {exc}") from None
    signing_key: Any = key
    if Path(key).is_file() and key_is_encrypted(Path(key)):
        from policysupply.signer import Signer

        # A cosign.key: signed under its cosign key id, as publish() does, so
        # `serve --opa-signing -k cosign.pub` configures OPA to match.
        signer = Signer.from_key_file(key, password=read_password(confirm=False))
        signing_key, key_id = signer, key_id or signer.key_id
    if key_id is None and claims is None and scope is None:
        key_id = "default"  # what opa build writes (its --verification-key-id default)
    return b.sign(signing_key, alg=req.signing_alg, key_id=key_id, scope=scope, claims=claims)


def run_check(
    source: str, strict: bool, v0_compatible: bool, engine: str | None, as_json: bool
) -> None:
    """``policysupply check``: see its help in ``_bundle_cmds``."""
    with reported(as_json, verdict=(BundleError,)):
        b = load_bundle(source, v0_compatible=v0_compatible)
        finish = b._start_check(engine, strict=strict)
        _meanwhile(b.to_bytes, finish)  # the digest printed below, while `opa check` runs
    if as_json:
        emit_json(
            {
                "ok": True,
                "digest": b.digest,
                "revision": b.manifest.revision,
                "modules": len(b.modules),
            }
        )
    else:
        say(f"ok: {len(b.modules)} modules, digest {b.digest}")
