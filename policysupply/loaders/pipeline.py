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
    native: bool | None = None,
) -> Reference:
    """Pushes ``bundle`` as a policy image, signs the pushed digest, then moves the tag.

    The image is stored by digest and signed before ``ref``'s tag names it,
    so the tag never points at an unsigned image: a watch woken by the
    registry's push notification finds the signature already there.

    Defence in depth: with a key-based signer the bundle first gets an
    OPA-native signature by the same key (``kid`` = the cosign key id), so
    OPA verifies it itself even when it pulls the image without policysupply
    (configure it with :meth:`NativeTrust.from_cosign_keys
    <policysupply.native.NativeTrust.from_cosign_keys>` ``.to_opa_config``).
    OPA refuses a signed bundle when it has no key at all: an OPA pulling the
    image directly needs the key in its ``keys`` (``BundleServer`` configs
    carry it), or publish with ``native=False``.

    Args:
        bundle: The bundle to publish.
        registry: Where to push it.
        ref: Target reference (its tag is moved to the new image).
        signer: Signs the digest that was pushed (never a tag).
        annotations: Extra signed claims (``cosign sign -a``).
        native: Add the OPA-native signature. ``None`` (default): yes for a
            key-based signer whose key OPA can verify, unless the bundle
            already carries one (kept as it is); ``True``: always (replacing
            an existing one; an error for keyless signers); ``False``: never.

    Returns:
        The digest reference of the pushed image.

    Raises:
        RegistryError: The push or storing the signature failed.
        SigningError: A signature could not be made.
    """
    from policysupply._internal.opa_signatures import SIGNATURES_FILE
    from policysupply.native import native_algorithm

    if native is None:
        native = (
            not signer.is_keyless
            and SIGNATURES_FILE not in bundle.files
            and native_algorithm(signer._need_key("publish")) is not None
        )
    if native:
        bundle = bundle.sign(signer, key_id=signer.key_id)
    r = Reference.parse(ref) if isinstance(ref, str) else ref
    pushed = registry.push(bundle, Reference(host=r.host, repository=r.repository))
    signer.sign(registry, pushed, annotations=annotations)
    if r.tag:
        manifest, media_type = registry.get_manifest(pushed)
        registry.put_manifest(
            Reference(host=r.host, repository=r.repository, tag=r.tag),
            manifest,
            media_type=media_type,
        )
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
