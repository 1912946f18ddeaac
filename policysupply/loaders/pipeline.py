"""The pipeline in one call each: publish (push + sign) and fetch_verified."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from policysupply._internal.oci import Reference
from policysupply.verifier import VerifiedBundle

if TYPE_CHECKING:
    from policysupply.bundle import Bundle
    from policysupply.registry import Registry
    from policysupply.signer import Signer
    from policysupply.trust_state import TrustState
    from policysupply.verifier import Verifier


def publish(
    bundle: Bundle,
    registry: Registry,
    ref: str | Reference,
    signer: Signer,
    *,
    annotations: Mapping[str, str] | None = None,
) -> Reference:
    """Pushes ``bundle`` as a policy image, then signs the pushed digest.

    Args:
        bundle: The bundle to publish.
        registry: Where to push it.
        ref: Target reference (its tag is moved to the new image).
        signer: Signs the digest that was pushed (never a tag).
        annotations: Extra signed claims (``cosign sign -a``).

    Returns:
        The digest reference of the pushed image.

    Raises:
        RegistryError: The push or storing the signature failed.
        SigningError: The signature could not be made.
    """
    pushed = registry.push(bundle, ref)
    signer.sign(registry, pushed, annotations=annotations)
    return pushed


def fetch_verified(
    registry: Registry,
    ref: str | Reference,
    verifier: Verifier,
    *,
    state: TrustState | None = None,
) -> VerifiedBundle:
    """Resolves, verifies and pulls a policy image: :meth:`Verifier.verify_bundle`.

    Args:
        registry: Where the image lives.
        ref: Tag or digest reference.
        verifier: The trust policy to apply.
        state: Rollback protection (last accepted revision per reference).

    Raises:
        VerificationError: Unsigned, untrusted, below threshold, or a rollback.
        RegistryError: The image cannot be resolved or pulled.
        BundleError: The verified image does not hold a valid bundle.
    """
    return verifier.verify_bundle(registry, ref, state=state)
