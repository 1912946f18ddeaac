"""Trust-policy options shared by ``verify``, ``pull``, ``load``, ``serve`` and ``gate``."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from policysupply.cli._output import EXIT_USAGE, reported, usage_error
from policysupply.cli._targets import parse_annotations

if TYPE_CHECKING:
    import click

    from policysupply import TrustState, VerifiedSignature, Verifier

F = TypeVar("F", bound=Callable[..., Any])


def parse_duration(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dt.timedelta | None:
    """``90``, ``90s``, ``15m``, ``12h`` or ``7d`` as a timedelta, at most 100 years."""
    if value is None:
        return None
    from policysupply._internal.policy_file import parse_duration as parse

    try:
        return parse(value, what="duration")
    except ValueError as exc:
        import click

        raise click.BadParameter(str(exc).removeprefix("duration: ")) from None


@attrs.frozen(kw_only=True)
class TrustOptions:
    """The trust options as given on the command line.

    Attributes:
        keys: Paths of trusted public keys.
        threshold: Distinct trusted keys required.
        annotations: ``KEY=VALUE`` annotations every counted signature must carry.
        docker_reference: ``repository``, ``exact``, ``any`` (or its alias ``off``).
        max_signature_age: Freeze protection, or ``None``.
        insecure_witnessed_age: Judge signatures without a signer-produced time
            by their log or timestamp time (``TrustPolicy.insecure_witnessed_age``).
        state: Path of a rollback-protection state file, or ``None``.
        identity: ``--certificate-identity`` (exact SAN), or ``None``.
        identity_regexp: ``--certificate-identity-regexp`` (full match), or ``None``.
        issuer: ``--certificate-oidc-issuer`` (exact), or ``None``.
        issuer_regexp: ``--certificate-oidc-issuer-regexp`` (full match), or ``None``.
        github_repository: Required ``github_workflow_repository`` certificate claim.
        trusted_root: Sigstore ``trusted_root.json`` path, ``staging``, or ``None``
            for the public-good root.
        policy: A trust policy file (``--policy``) the other options add to.
        ignore_tlog: ``--insecure-ignore-tlog``: no signature needs a log entry.
    """

    keys: tuple[str, ...]
    threshold: int | None = None
    annotations: tuple[str, ...] = ()
    docker_reference: str | None = None
    max_signature_age: dt.timedelta | None = None
    insecure_witnessed_age: bool = False
    state: str | None = None
    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None
    github_repository: str | None = None
    trusted_root: str | None = None
    policy: str | None = None
    ignore_tlog: bool = False

    @property
    def keyless(self) -> bool:
        """Whether any keyless identity option was given."""
        return any(
            (self.identity, self.identity_regexp, self.issuer, self.issuer_regexp,
             self.github_repository)
        )  # fmt: skip

    def trust_state(self) -> TrustState | None:
        """The :class:`~policysupply.TrustState` for ``--state``, if given."""
        from policysupply import TrustState

        return TrustState(self.state) if self.state else None


def trust_options(*, required: bool, state: bool = False) -> Callable[[F], F]:
    """Adds ``--key`` (repeatable), ``--threshold``, ``-a``, ``--docker-reference``,
    ``--max-signature-age`` (and ``--state``); the command receives ``trust: TrustOptions``.
    """  # noqa: D205 - the summary needs both lines
    # click loads here, when the click commands are built, not for the lean path.
    import click

    from policysupply.cli._options import existing_file_option, option_group

    def check(trust: TrustOptions) -> None:
        if required and not trust.keys and not trust.keyless and not trust.policy:
            usage_error(
                "give a trusted --key, a keyless identity (--certificate-identity and "
                "--certificate-oidc-issuer), or a trust policy file (--policy)"
            )

    options = [
        existing_file_option(
            "-k",
            "--key",
            "keys",
            multiple=True,
            help="Trusted public key (cosign.pub); repeatable."
            + (" Required unless a keyless identity or --policy is given." if required else ""),
        ),
        click.option(
            "--threshold",
            type=click.IntRange(min=1),
            help="Distinct trusted keys that must have signed (default 1).",
        ),
        click.option(
            "-a",
            "--annotation",
            "annotations",
            multiple=True,
            metavar="KEY=VALUE",
            help="Annotation every counted signature must carry (repeatable).",
        ),
        click.option(
            "--docker-reference",
            type=click.Choice(["repository", "exact", "any", "off"]),
            help="How the repository a signature names must match: same repository on any "
            "host (survives mirroring; the default), exact host too, or not checked ('any', "
            "as cosign; 'off' is the same). cosign 3's signatures name no repository: they "
            "need 'any'.",
        ),
        click.option(
            "--max-signature-age",
            metavar="DURATION",
            callback=parse_duration,
            help="Refuse material whose newest trusted signature is older than this "
            "(freeze protection), e.g. 7d.",
        ),
        click.option(
            "--insecure-witnessed-age",
            is_flag=True,
            help="With --max-signature-age: judge signatures that carry no time their "
            "signer produced (cosign 3's sign --key) by their transparency-log or timestamp "
            "time. Anyone can log an old signature again, so this weakens freeze protection.",
        ),
        existing_file_option(
            "--policy",
            envvar="POLICYSUPPLY_POLICY",
            help="Trust policy file (YAML/JSON: keys, identities, threshold, attestations, "
            "allowed registries, signing-time rules); the other options add to it.",
        ),
        click.option(
            "--insecure-ignore-tlog",
            "ignore_tlog",
            is_flag=True,
            help="No signature needs a transparency log entry (cosign's flag; key "
            "signatures need none by default, keyless ones then need a timestamp).",
        ),
    ]
    for flag, field, what in (
        ("--certificate-identity", "identity",
         "Keyless: the signer's identity (certificate SAN: e-mail, URI), exactly."),
        ("--certificate-identity-regexp", "identity_regexp",
         "Keyless: a regex some whole certificate SAN must match."),
        ("--certificate-oidc-issuer", "issuer", "Keyless: the signer's OIDC issuer, exactly."),
        ("--certificate-oidc-issuer-regexp", "issuer_regexp",
         "Keyless: a regex the whole OIDC issuer must match."),
        ("--certificate-github-workflow-repository", "github_repository",
         "Keyless: the certificate's GitHub workflow repository (owner/name)."),
        ("--trusted-root", "trusted_root", "Sigstore trusted_root.json for keyless signatures "
         "and transparency logs (offline), or 'staging'. Default: public-good Sigstore."),
    ):  # fmt: skip
        options.append(click.option(flag, field, metavar="TEXT", help=what))
    if state:
        options.append(
            click.option(
                "--state",
                type=click.Path(dir_okay=False),
                help="Rollback protection: refuse an older revision or a superseded digest "
                "than this state file last accepted, and record what is accepted.",
            )
        )
    return option_group(TrustOptions, "trust", options, check)


def verifier_from_options(
    trust: TrustOptions, as_json: bool, *, attestations: tuple[str, ...] = ()
) -> Verifier | None:
    """A Verifier for the options, or ``None`` when no key or identity was given.

    A key file that is not a public key, an incomplete identity, or a
    threshold the signers cannot meet is a configuration error (exit code 2).

    Args:
        trust: The trust options as given.
        as_json: Report configuration errors as JSON.
        attestations: Predicate types a trusted signer must have attested
            (``TrustPolicy.attestations``; ``verify --require-attestation``).
    """
    from policysupply import Identity, TrustPolicy, Verifier

    required = parse_annotations(trust.annotations)
    if not trust.keys and not trust.keyless and not trust.policy:
        if (
            trust.threshold is not None
            or required
            or trust.max_signature_age
            or trust.insecure_witnessed_age
            or trust.state
            or attestations
        ):
            usage_error(
                "--threshold, -a, --max-signature-age, --insecure-witnessed-age, --state and "
                "--require-attestation need a --key, an identity or a --policy file"
            )
        return None
    with reported(as_json, code=EXIT_USAGE):
        fields: dict[str, Any] = {}
        if trust.policy:
            from policysupply._internal import policy_file

            fields = policy_file.read(trust.policy)
        identities = list(fields.get("identities", []))
        if trust.keyless:
            claims = (
                {"github_workflow_repository": trust.github_repository}
                if trust.github_repository
                else {}
            )
            identities.append(
                Identity(
                    issuer=trust.issuer,
                    issuer_regex=trust.issuer_regexp,
                    subject=trust.identity,
                    subject_regex=trust.identity_regexp,
                    extensions=claims,
                )
            )
        fields["identities"] = identities
        fields["keys"] = [*fields.get("keys", []), *trust.keys]
        fields["annotations"] = {**fields.get("annotations", {}), **required}
        fields["attestations"] = [*fields.get("attestations", []), *attestations]
        if trust.threshold is not None:
            fields["threshold"] = trust.threshold
        if trust.docker_reference is not None:
            fields["docker_reference"] = trust.docker_reference
        if trust.max_signature_age is not None:
            fields["max_signature_age"] = trust.max_signature_age
        if trust.insecure_witnessed_age:
            fields["insecure_witnessed_age"] = True
        if trust.ignore_tlog:
            fields["require_tlog"] = False
        policy = TrustPolicy(**fields)
    return Verifier(policy, trusted_root=trust.trusted_root)


def require_attestation_option(f: F) -> F:
    """Adds ``--require-attestation PREDICATE_TYPE`` (repeatable) as ``required_attestations``.

    The same flag as ``gate --require-attestation``; for ``verify`` it becomes
    ``TrustPolicy(attestations=...)``.
    """
    import click

    return click.option(
        "--require-attestation",
        "required_attestations",
        multiple=True,
        metavar="PREDICATE_TYPE",
        help="Require an attestation of this predicate type (e.g. "
        "https://slsa.dev/provenance/v1) signed by a trusted key or identity (repeatable).",
    )(f)


def rules_trust_options(f: F) -> F:
    """Adds ``gate``'s trust options for a ``--rules`` policy image.

    ``--rules-key`` (repeatable), ``--rules-certificate-identity`` and
    ``--rules-certificate-oidc-issuer``; the command receives
    ``rules_trust: TrustOptions | None`` (``None`` when none was given, so the
    image's trust applies to the rules too); :func:`rules_verifier` turns it
    into a Verifier.
    """
    import click

    from policysupply.cli._options import existing_file_option

    @functools.wraps(f)
    def wrapper(
        *args: Any,
        rules_keys: tuple[str, ...],
        rules_certificate_identity: str | None,
        rules_certificate_oidc_issuer: str | None,
        **kwargs: Any,
    ) -> Any:
        given = rules_keys or rules_certificate_identity or rules_certificate_oidc_issuer
        rules_trust = (
            TrustOptions(
                keys=rules_keys,
                identity=rules_certificate_identity,
                issuer=rules_certificate_oidc_issuer,
            )
            if given
            else None
        )
        return f(*args, rules_trust=rules_trust, **kwargs)

    g: Any = wrapper
    g = click.option(
        "--rules-certificate-oidc-issuer",
        metavar="TEXT",
        help="Keyless: the OIDC issuer of the --rules image's signer, exactly.",
    )(g)
    g = click.option(
        "--rules-certificate-identity",
        metavar="TEXT",
        help="Keyless: the --rules image signer's identity (certificate SAN), exactly "
        "(with --rules-certificate-oidc-issuer; checked against --trusted-root).",
    )(g)
    g = existing_file_option(
        "--rules-key",
        "rules_keys",
        multiple=True,
        help="Public key trusted to sign a --rules image (repeatable). Without --rules-key "
        "or a --rules-certificate-* identity, the image's trust options apply.",
    )(g)
    return g  # type: ignore[no-any-return]


def rules_verifier(
    rules_trust: TrustOptions | None, trust: TrustOptions, as_json: bool
) -> Verifier | None:
    """The Verifier for a ``--rules`` image, or ``None`` to use the image's.

    Keyless rules identities are checked against the image options'
    ``--trusted-root``. An identity without its issuer (or the reverse) is a
    configuration error (exit code 2), as for the image's own options.
    """
    if rules_trust is None:
        return None
    if bool(rules_trust.identity) != bool(rules_trust.issuer):
        usage_error("--rules-certificate-identity and --rules-certificate-oidc-issuer go together")
    return verifier_from_options(
        attrs.evolve(
            rules_trust, trusted_root=trust.trusted_root, docker_reference=trust.docker_reference
        ),
        as_json,
    )


def signature_json(sig: VerifiedSignature) -> dict[str, Any]:
    """One verified signature for ``--json`` output (identity fields when keyless)."""
    doc: dict[str, Any] = {
        "key_id": sig.key_id,
        "scheme": sig.scheme,
        "annotations": dict(sig.annotations),
        "signed_at": sig.signed_at.isoformat() if sig.signed_at else None,
        "witnessed_at": sig.witnessed_at.isoformat() if sig.witnessed_at else None,
    }
    if sig.subject is not None:
        doc.update(subject=sig.subject, issuer=sig.issuer)
    return doc
