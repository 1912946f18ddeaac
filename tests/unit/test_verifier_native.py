"""TrustPolicy(native=...): OPA-native signatures as a requirement of verify_bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from policysupply import (
    Bundle,
    BundleError,
    ClaimMismatchError,
    NoSignatureError,
    Registry,
    RollbackError,
    Signer,
    StaleSignatureError,
    TrustPolicy,
    TrustState,
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
    verifier = Verifier(TrustPolicy(native=native_for(signer), docker_reference="any"))
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
        Verifier(TrustPolicy(native=native_for(signer), docker_reference="any")).verify_bundle(
            reg, "acme/p:1"
        )


def test_native_by_another_key_is_refused(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, bundle, signer = setup
    reg.push(bundle.sign(Signer.generate(), key_id="ci"), "acme/p:1")
    with pytest.raises(UntrustedSignatureError):
        Verifier(TrustPolicy(native=native_for(signer), docker_reference="any")).verify_bundle(
            reg, "acme/p:1"
        )


def test_policy_needs_some_trust() -> None:
    with pytest.raises(VerificationError):
        TrustPolicy()


# -- native-only: held to the same freeze, rollback and repository rules ------------


def _copy(reg: Registry, src: str, dst: str) -> None:
    """Re-publishes an image under another name, as anyone with push access can."""
    manifest, _ = reg.get_manifest(src)
    import json

    src_repo, dst_repo = src.split(":")[0], dst.split(":")[0]
    doc = json.loads(manifest)
    for desc in [doc["config"], *doc["layers"]]:
        reg.put_blob(dst_repo, reg.get_blob(src_repo, desc["digest"]), media_type=desc["mediaType"])
    reg.put_manifest(dst, manifest)


def test_native_only_bundle_republished_under_another_repository_is_refused(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    # An OPA-native token names files and a scope, never a repository: a bundle
    # signed for acme/staging-policy copied to acme/prod-policy must not pass a
    # policy that binds the repository (the default), as with cosign 3.
    reg, bundle, signer = setup
    reg.push(bundle.sign(signer, key_id="ci"), "acme/staging-policy:1")
    _copy(reg, "acme/staging-policy:1", "acme/prod-policy:1")
    with pytest.raises(ClaimMismatchError, match='docker_reference="any"'):
        Verifier(TrustPolicy(native=native_for(signer))).verify_bundle(reg, "acme/prod-policy:1")
    # Opted out (bind with the token's scope instead): accepted.
    loose = Verifier(TrustPolicy(native=native_for(signer), docker_reference="any"))
    loose.verify_bundle(reg, "acme/prod-policy:1")


def test_native_only_freeze_limit_fails_closed(setup: tuple[Registry, Bundle, Signer]) -> None:
    # Native tokens carry no signing time: a freeze limit cannot be met, never skipped.
    import datetime as dt

    reg, bundle, signer = setup
    reg.push(bundle.sign(signer, key_id="ci"), "acme/p:1")
    policy = TrustPolicy(
        native=native_for(signer), docker_reference="any", max_signature_age=dt.timedelta(days=1)
    )
    with pytest.raises(StaleSignatureError):
        Verifier(policy).verify_bundle(reg, "acme/p:1")


def test_native_only_rollback_is_refused(
    setup: tuple[Registry, Bundle, Signer], tmp_path: Path
) -> None:
    import attrs

    reg, bundle, signer = setup
    verifier = Verifier(TrustPolicy(native=native_for(signer), docker_reference="any"))
    state = TrustState(tmp_path / "trust.json")
    old = attrs.evolve(bundle, manifest=attrs.evolve(bundle.manifest, revision="1.0.0"))
    new = attrs.evolve(bundle, manifest=attrs.evolve(bundle.manifest, revision="1.1.0"))
    reg.push(old.sign(signer, key_id="ci"), "acme/p:prod")
    verifier.verify_bundle(reg, "acme/p:prod", state=state)
    reg.push(new.sign(signer, key_id="ci"), "acme/p:prod")
    verifier.verify_bundle(reg, "acme/p:prod", state=state)
    reg.push(old.sign(signer, key_id="ci"), "acme/p:prod")  # the older release again
    with pytest.raises(RollbackError):
        verifier.verify_bundle(reg, "acme/p:prod", state=state)


@pytest.mark.parametrize(
    "requirement",
    [{"annotations": {"env": "prod"}}, {"attestations": ["https://slsa.dev/provenance/v1"]}],
)
def test_native_only_policy_silently_drops_cosign_requirements(
    setup: tuple[Registry, Bundle, Signer], requirement: dict[str, object]
) -> None:
    # Required annotations and attestations are checked on cosign signatures;
    # a policy with none to check them on must not read as if it did.
    _, _, signer = setup
    with pytest.raises(VerificationError, match="key or identity"):
        TrustPolicy(native=native_for(signer), **requirement)  # type: ignore[arg-type]


def test_native_only_module_hidden_from_the_tar_reader_reaches_opa(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    # The attacker holds no key: it takes a natively signed bundle and appends
    # a member whose header tarfile takes for the end of the archive and Go's
    # archive/tar (OPA) reads. Every file this reader sees is signed, so the
    # native check passed, and BundleServer served the layer as it came (a
    # BundleError is the only right answer). OPA runs package b unsigned.
    import gzip

    from policysupply._internal import oci
    from tests._tar_differential import EVIL, block, checksum, header

    reg, bundle, signer = setup
    raw = gzip.decompress(bundle.sign(signer, key_id="ci").to_bytes()).rstrip(b"\0")
    raw = block(raw) + bytes(checksum(header("/evil.rego", len(EVIL)), lead=b"\0"))
    layer = gzip.compress(raw + block(EVIL) + b"\0" * 1024)
    manifest, config = oci.policy_manifest(
        layer, title="p", created="2026-01-01T00:00:00Z", revision=None
    )
    reg.put_blob("acme/p", layer, media_type=oci.LAYER_TAR_GZIP)
    reg.put_blob("acme/p", config, media_type=oci.CONFIG_V1)
    reg.put_manifest("acme/p:1", manifest)
    verifier = Verifier(TrustPolicy(native=native_for(signer), docker_reference="any"))
    # Without the defence, verification passes: VerifiedBundle.bundle has no
    # evil.rego, and VerifiedBundle.tarball (what BundleServer serves) has it.
    with pytest.raises(BundleError):
        verifier.verify_bundle(reg, "acme/p:1")


def test_native_only_signed_rule_renamed_with_a_trailing_slash_is_dropped_by_opa(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    # The attacker holds no key. It rewrites the natively signed tarball, only
    # appending '/' to one module's tar name: the reader here strips it, so
    # every signed file is present with its signed bytes; OPA keeps the name,
    # which no longer ends in .rego, and silently drops the module (checked
    # against OPA 1.22 in tests/interop/test_opa_bundle_layout.py).
    import gzip
    import io
    import tarfile

    from policysupply._internal import oci

    reg, bundle, signer = setup
    signed = gzip.decompress(bundle.sign(signer, key_id="ci").to_bytes())
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(signed)) as src,
        tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src:
            body = src.extractfile(member)
            if member.name.endswith(".rego"):
                member.name += "/"
            dst.addfile(member, body)
    layer = gzip.compress(out.getvalue())
    manifest, config = oci.policy_manifest(
        layer, title="p", created="2026-01-01T00:00:00Z", revision=None
    )
    reg.put_blob("acme/p", layer, media_type=oci.LAYER_TAR_GZIP)
    reg.put_blob("acme/p", config, media_type=oci.CONFIG_V1)
    reg.put_manifest("acme/p:1", manifest)
    verifier = Verifier(TrustPolicy(native=native_for(signer), docker_reference="any"))
    with pytest.raises(BundleError):
        verifier.verify_bundle(reg, "acme/p:1")
