"""TrustPolicy(native=...): OPA-native signatures as a requirement of verify_bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from policysupply import (
    Bundle,
    NoSignatureError,
    Registry,
    Signer,
    TrustPolicy,
    UnsignedFileError,
    UntrustedSignatureError,
    VerificationError,
    Verifier,
)
from policysupply._internal.tarball import read_entries
from policysupply.native import NativeKey, NativeTrust


@pytest.fixture
def setup(tmp_path: Path, fixtures_dir: Path) -> tuple[Registry, Bundle, Signer]:
    return (
        Registry.local(tmp_path / "oci"),
        Bundle.from_directory(fixtures_dir / "pinned"),
        (Signer.generate()),
    )


def native_for(signer: Signer, kid: str = "ci") -> NativeTrust:
    return NativeTrust(keys={kid: NativeKey(key=signer.public_key_pem, algorithm="ES256")})


def test_cosign_and_native_both_required(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, bundle, signer = setup
    reg.push(bundle.sign(signer, key_id="ci"), "acme/p:1")
    signer.sign(reg, "acme/p:1")
    policy = TrustPolicy(keys=[signer.public_key_pem], native=native_for(signer))
    verified = Verifier(policy).verify_bundle(reg, "acme/p:1")
    schemes = sorted(s.scheme for s in verified.artifact.signatures)
    assert schemes[-1] == "opa-native"
    assert len(schemes) == 2
    assert "ci" in verified.artifact.key_ids


def test_cosign_signed_but_no_native_signature_is_refused(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    reg, bundle, signer = setup
    reg.push(bundle, "acme/p:1")
    signer.sign(reg, "acme/p:1")
    policy = TrustPolicy(keys=[signer.public_key_pem], native=native_for(signer))
    with pytest.raises(NoSignatureError):
        Verifier(policy).verify_bundle(reg, "acme/p:1")


def test_native_only_needs_no_cosign_signature(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, bundle, signer = setup
    reg.push(bundle.sign(signer, key_id="ci"), "acme/p:1")
    verifier = Verifier(TrustPolicy(native=native_for(signer)))
    verified = verifier.verify_bundle(reg, "acme/p:1")
    assert [s.scheme for s in verified.artifact.signatures] == ["opa-native"]
    assert verified.bundle.manifest == bundle.manifest
    # ...and it has nothing to check images (or other artifacts) with.
    with pytest.raises(VerificationError, match="only OPA-native"):
        verifier.verify(reg, "acme/p:1")


def test_native_only_refuses_tampered_bundle(setup: tuple[Registry, Bundle, Signer]) -> None:
    import attrs

    reg, bundle, signer = setup
    signed = bundle.sign(signer, key_id="ci")
    entries = read_entries(signed.to_bytes())
    # Re-push with a module added after signing (keeps the stale signature).
    name = sorted(n for n in entries if n.endswith(".rego"))[0]
    tampered = attrs.evolve(
        signed, modules={**signed.modules, "extra/" + name: signed.modules[name]}
    )
    reg.push(tampered, "acme/p:1")
    with pytest.raises(UnsignedFileError):
        Verifier(TrustPolicy(native=native_for(signer))).verify_bundle(reg, "acme/p:1")


def test_native_by_another_key_is_refused(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, bundle, signer = setup
    reg.push(bundle.sign(Signer.generate(), key_id="ci"), "acme/p:1")
    with pytest.raises(UntrustedSignatureError):
        Verifier(TrustPolicy(native=native_for(signer))).verify_bundle(reg, "acme/p:1")


def test_policy_needs_some_trust() -> None:
    with pytest.raises(VerificationError):
        TrustPolicy()
