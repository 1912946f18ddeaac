"""The body of ``verify``, without click.

The click command in ``_sign_cmds`` and the lean dispatch (``_lean``) both call
:func:`run_verify` with the parsed options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from policysupply.cli._output import emit_json, reported, say
from policysupply.cli._targets import NetOptions, open_target
from policysupply.cli._trust import TrustOptions, signature_json, verifier_from_options

if TYPE_CHECKING:
    from policysupply import VerifiedArtifact


def run_verify(
    reference: str,
    trust: TrustOptions,
    required_attestations: tuple[str, ...],
    net: NetOptions,
    as_json: bool,
) -> None:
    """``policysupply verify``: see its help in ``_sign_cmds``."""
    verifier = verifier_from_options(trust, as_json, attestations=required_attestations)
    assert verifier is not None  # noqa: S101 - a key, identity or policy is required
    target = open_target(reference, net, param="REFERENCE")
    with reported(as_json), target.registry:
        artifact = verifier.verify(target.registry, target.ref)
    pinned = target.pinned(artifact.digest)
    if as_json:
        emit_json(artifact_json(pinned, artifact))
    else:
        print_artifact(pinned, artifact)


def artifact_json(pinned: str, artifact: VerifiedArtifact) -> dict[str, Any]:
    """A verified artifact for ``--json`` (``verify``, ``verify-attestation``)."""
    return {
        "ok": True,
        "verified": True,
        "reference": pinned,
        "digest": artifact.digest,
        "key_ids": list(artifact.key_ids),
        "signatures": [signature_json(s) for s in artifact.signatures],
        "attestations": [
            {"predicate_type": a.predicate_type, **signature_json(a.signature)}
            for a in artifact.attestations
        ],
    }


def print_artifact(pinned: str, artifact: VerifiedArtifact) -> None:
    """The human form of a verified artifact."""
    say(f"verified {pinned}", essential=True, fg="green")
    for s in artifact.signatures:
        extra = "".join(f" {k}={v}" for k, v in sorted(s.annotations.items()))
        who = f"{s.subject} ({s.issuer})" if s.subject else s.key_id
        say(f"  {s.scheme} signature by {who}{extra}")
    for a in artifact.attestations:
        s = a.signature
        who = f"{s.subject} ({s.issuer})" if s.subject else s.key_id
        say(f"  {s.scheme} attestation {a.predicate_type} by {who}")
