r"""Keyless signer identities: who (OIDC issuer + subject) may have signed.

A Fulcio certificate binds an ephemeral key to an OIDC identity: the token's
issuer (certificate extension) and subject (Subject Alternative Name), plus
claims such as the GitHub workflow repository and ref. :class:`Identity`
states which of those a :class:`~policysupply.verifier.TrustPolicy` trusts.

Regular expressions always match the **whole** value (``re.fullmatch``), so
``https://github\\.com/acme/.*`` does not accept
``https://evil.example/github.com/acme/...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from policysupply.errors import VerificationError

if TYPE_CHECKING:
    from policysupply._internal.keyless import CertificateIdentity

__all__ = ["GITHUB_ACTIONS_ISSUER", "Identity"]

GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"

# Mirrors policysupply._internal.keyless.EXTENSIONS without importing it (import stays cheap).
_FULCIO = "1.3.6.1.4.1.57264.1"
_EXTENSION_NAMES = {
    "github_workflow_trigger": 2,
    "github_workflow_sha": 3,
    "github_workflow_name": 4,
    "github_workflow_repository": 5,
    "github_workflow_ref": 6,
    "build_signer_uri": 9,
    "build_signer_digest": 10,
    "runner_environment": 11,
    "source_repository_uri": 12,
    "source_repository_digest": 13,
    "source_repository_ref": 14,
    "source_repository_identifier": 15,
    "source_repository_owner_uri": 16,
    "source_repository_owner_identifier": 17,
    "build_config_uri": 18,
    "build_config_digest": 19,
    "build_trigger": 20,
    "run_invocation_uri": 21,
    "source_repository_visibility_at_signing": 22,
}
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def _oid_for(name: str) -> str:
    if name in _EXTENSION_NAMES:
        return f"{_FULCIO}.{_EXTENSION_NAMES[name]}"
    if _OID.fullmatch(name):
        return name
    raise VerificationError(
        f"unknown certificate extension {name!r}: use a dotted OID or one of "
        + ", ".join(sorted(_EXTENSION_NAMES))
    )


def _extensions(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def _compile(pattern: str | None, what: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise VerificationError(f"{what} {pattern!r} is not a valid regex: {exc}") from None


@attrs.frozen(kw_only=True)
class Identity:
    r"""A trusted keyless signer: OIDC issuer, subject, and optional certificate claims.

    Exactly one of ``issuer``/``issuer_regex`` and one of
    ``subject``/``subject_regex`` must be given (as cosign's
    ``--certificate-oidc-issuer[-regexp]`` and ``--certificate-identity[-regexp]``).

    Example:
        ``Identity(issuer=GITHUB_ACTIONS_ISSUER,
        subject_regex=r"https://github\\.com/acme/policies/\\.github/workflows/.*@refs/tags/v.*",
        extensions={"github_workflow_repository": "acme/policies"})``

    Attributes:
        issuer: The OIDC issuer, exactly.
        issuer_regex: A regex the whole issuer must match.
        subject: A Subject Alternative Name value (email, URI, ...), exactly.
        subject_regex: A regex some whole SAN value must match.
        extensions: Certificate claims that must be equal, by name
            (``github_workflow_repository``, ``github_workflow_ref``,
            ``source_repository_uri``, ...) or dotted OID.
    """

    issuer: str | None = None
    issuer_regex: str | None = None
    subject: str | None = None
    subject_regex: str | None = None
    extensions: Mapping[str, str] = attrs.field(factory=dict, converter=_extensions)
    _issuer_re: re.Pattern[str] | None = attrs.field(
        init=False, repr=False, eq=False, hash=False, default=None
    )
    _subject_re: re.Pattern[str] | None = attrs.field(
        init=False, repr=False, eq=False, hash=False, default=None
    )
    _oids: Mapping[str, str] = attrs.field(
        init=False, repr=False, eq=False, hash=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        if (self.issuer is None) == (self.issuer_regex is None):
            raise VerificationError("an Identity needs exactly one of issuer= or issuer_regex=")
        if (self.subject is None) == (self.subject_regex is None):
            raise VerificationError("an Identity needs exactly one of subject= or subject_regex=")
        object.__setattr__(self, "_issuer_re", _compile(self.issuer_regex, "issuer_regex"))
        object.__setattr__(self, "_subject_re", _compile(self.subject_regex, "subject_regex"))
        object.__setattr__(self, "_oids", {_oid_for(k): v for k, v in self.extensions.items()})

    @classmethod
    def github(
        cls, repository: str, *, workflow: str | None = None, ref: str | None = None
    ) -> Identity:
        """A GitHub Actions workflow identity.

        Args:
            repository: ``owner/name``.
            workflow: Workflow file path (``.github/workflows/release.yml``);
                any workflow of the repository when omitted.
            ref: Git ref (``refs/heads/main``, ``refs/tags/v1``); any when omitted.
        """
        base = re.escape(f"https://github.com/{repository}/")
        wf = re.escape(workflow) if workflow else r"\.github/workflows/[^@]+"
        at = re.escape(ref) if ref else r".+"
        claims = {"github_workflow_repository": repository}
        if ref:
            claims["github_workflow_ref"] = ref
        return cls(
            issuer=GITHUB_ACTIONS_ISSUER, subject_regex=f"{base}{wf}@{at}", extensions=claims
        )

    def describe(self) -> str:
        """A short, stable text naming this identity (used to count distinct signers)."""
        issuer = self.issuer if self.issuer is not None else f"~{self.issuer_regex}"
        subject = self.subject if self.subject is not None else f"~{self.subject_regex}"
        extra = "".join(f" {k}={v}" for k, v in sorted(self.extensions.items()))
        return f"{subject} ({issuer}){extra}"

    def mismatch(self, cert: CertificateIdentity) -> str | None:
        """Why a certificate's identity is not this one, or ``None`` if it is."""
        if cert.issuer is None:
            return "certificate has no OIDC issuer extension"
        if self.issuer is not None and cert.issuer != self.issuer:
            return f"issuer {cert.issuer!r} is not {self.issuer!r}"
        if self._issuer_re is not None and not self._issuer_re.fullmatch(cert.issuer):
            return f"issuer {cert.issuer!r} does not fully match {self.issuer_regex!r}"
        if self.subject is not None and self.subject not in cert.sans:
            return f"subject {cert.subject!r} is not {self.subject!r}"
        if self._subject_re is not None and not any(
            self._subject_re.fullmatch(s) for s in cert.sans
        ):
            return f"subject {cert.subject!r} does not fully match {self.subject_regex!r}"
        for oid, wanted in self._oids.items():
            got = cert.extensions.get(oid)
            if got != wanted:
                name = next(
                    (k for k, v in _EXTENSION_NAMES.items() if f"{_FULCIO}.{v}" == oid), oid
                )
                return f"certificate claim {name} is {got!r}, not {wanted!r}"
        return None
