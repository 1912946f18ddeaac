"""Attack tests on a local layout: each raises its specific error and yields nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from policysupply import (
    Bundle,
    NoSignatureError,
    Registry,
    Signer,
    SigningError,
    ThresholdNotMetError,
    TrustPolicy,
    UntrustedSignatureError,
    VerificationError,
    Verifier,
)
from policysupply._internal import cosign, oci
from policysupply.verifier import VerifiedArtifact, VerifiedBundle


@pytest.fixture
def setup(tmp_path: Path, fixtures_dir: Path) -> tuple[Registry, Bundle, Signer]:
    reg = Registry.local(tmp_path / "oci")
    bundle = Bundle.from_directory(fixtures_dir / "pinned")
    reg.push(bundle, "acme/a:1")
    return reg, bundle, Signer.generate()


def verifier(*signers: Signer, threshold: int = 1, **kw: object) -> Verifier:
    return Verifier(
        TrustPolicy(keys=[s.public_key_pem for s in signers], threshold=threshold, **kw)
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_signed_verifies_and_pulls_by_digest(
    setup: tuple[Registry, Bundle, Signer], scheme: str
) -> None:
    reg, bundle, signer = setup
    sig = signer.sign(reg, "acme/a:1", annotations={"env": "prod"}, scheme=scheme)  # type: ignore[arg-type]
    verified = verifier(signer, annotations={"env": "prod"}).verify_bundle(reg, "acme/a:1")
    assert verified.bundle == bundle
    assert verified.reference.digest == sig.reference.digest
    assert verified.artifact.key_ids == (signer.key_id,)


def test_only_the_verifier_constructs_verified_values(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    _, bundle, _ = setup
    with pytest.raises(TypeError):
        VerifiedArtifact(reference=oci.Reference(repository="x"), signatures=(), _token=object())
    with pytest.raises(TypeError):
        VerifiedBundle(artifact=None, bundle=bundle, _token=None)  # type: ignore[arg-type]


def test_unsigned(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, _, signer = setup
    with pytest.raises(NoSignatureError):
        verifier(signer).verify_bundle(reg, "acme/a:1")


def test_untrusted_key(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, _, signer = setup
    Signer.generate().sign(reg, "acme/a:1")
    with pytest.raises(UntrustedSignatureError):
        verifier(signer).verify_bundle(reg, "acme/a:1")


def test_signatures_accumulate_and_threshold_needs_distinct_keys(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    reg, _, signer = setup
    second = Signer.generate()
    signer.sign(reg, "acme/a:1")
    signer.sign(reg, "acme/a:1")  # the same key twice does not make two
    with pytest.raises(ThresholdNotMetError):
        verifier(signer, second, threshold=2).verify(reg, "acme/a:1")
    second.sign(reg, "acme/a:1")  # appended, not clobbering the first signer's
    assert len(verifier(signer, second, threshold=2).verify(reg, "acme/a:1").key_ids) == 2


def test_mix_and_match_signature_copied_to_another_image(
    setup: tuple[Registry, Bundle, Signer], fixtures_dir: Path
) -> None:
    reg, bundle, signer = setup
    a = signer.sign(reg, "acme/a:1")
    other = Bundle(
        manifest=bundle.manifest, modules=dict(bundle.modules), data={"acme": {"other": True}}
    )
    b = reg.push(other, "acme/a:2")
    sig_manifest, _ = reg.get_manifest(f"acme/a:{a.location}")
    reg.put_manifest(f"acme/a:{cosign.sig_tag(str(b.digest))}", sig_manifest)
    with pytest.raises(VerificationError, match="signature is for"):
        verifier(signer).verify_bundle(reg, "acme/a:2")


def _rewrite_sig(
    reg: Registry, digest: str, payload: bytes | None, signature: bytes | None
) -> None:
    tag = cosign.sig_tag(digest)
    manifest = json.loads(reg.get_manifest(f"acme/a:{tag}")[0])
    layer = manifest["layers"][0]
    if payload is not None:
        desc = reg.put_blob("acme/a", payload, media_type=cosign.SIMPLESIGNING)
        layer.update(digest=desc.digest, size=desc.size)
    if signature is not None:
        layer["annotations"][cosign.ANN_SIGNATURE] = base64.b64encode(signature).decode()
    reg.put_manifest(f"acme/a:{tag}", oci.canonical_json(manifest))


def test_tampered_payload(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, _, signer = setup
    sig = signer.sign(reg, "acme/a:1")
    _rewrite_sig(
        reg,
        str(sig.reference.digest),
        sig.payload.replace(b'"optional":null', b'"optional":{"env":"prod"}'),
        None,
    )
    with pytest.raises(UntrustedSignatureError):
        verifier(signer, annotations={"env": "prod"}).verify(reg, "acme/a:1")


def test_tampered_signature_bytes(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, _, signer = setup
    sig = signer.sign(reg, "acme/a:1")
    flipped = bytes([sig.signature[0]]) + bytes([sig.signature[1] ^ 1]) + sig.signature[2:]
    _rewrite_sig(reg, str(sig.reference.digest), None, flipped)
    with pytest.raises(UntrustedSignatureError):
        verifier(signer).verify(reg, "acme/a:1")


def test_bundle_blob_replaced_in_registry(
    setup: tuple[Registry, Bundle, Signer], tmp_path: Path
) -> None:
    from policysupply import DigestMismatchError

    reg, bundle, signer = setup
    sig = signer.sign(reg, "acme/a:1")
    path = tmp_path / "oci" / "acme" / "a" / "blobs" / "sha256" / bundle.digest.split(":")[1]
    path.write_bytes(Bundle(manifest=bundle.manifest, modules={}, data={}).to_bytes())
    with pytest.raises(DigestMismatchError):
        verifier(signer).verify_bundle(reg, "acme/a:1")
    assert sig.reference.digest


def test_required_annotation_and_docker_reference(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, _, signer = setup
    signer.sign(reg, "acme/a:1", annotations={"env": "dev"})
    with pytest.raises(VerificationError, match="required annotation"):
        verifier(signer, annotations={"env": "prod"}).verify(reg, "acme/a:1")
    # Copied into another repository, the signed docker-reference no longer matches.
    target = Registry.local(reg._store.root.parent / "copy")  # type: ignore[attr-defined]
    reg.copy("acme/a:1", to=target, to_ref="evil/b:1")
    with pytest.raises(VerificationError, match="names"):
        verifier(signer).verify(target, "evil/b:1")
    assert verifier(signer, docker_reference="off").verify(target, "evil/b:1")


def test_key_file_errors(tmp_path: Path) -> None:
    signer = Signer.generate()
    key, _ = signer.write_key_pair(tmp_path, password="right")
    assert Signer.from_key_file(key, password="right").key_id == signer.key_id
    with pytest.raises(SigningError, match="wrong password"):
        Signer.from_key_file(key, password="wrong")
    with pytest.raises(SigningError, match="password is needed"):
        Signer.from_key_file(key)
    with pytest.raises(SigningError, match="exists"):
        signer.write_key_pair(tmp_path, password="x")
    (tmp_path / "bad.key").write_bytes(b"not a key")
    with pytest.raises(SigningError, match="no PEM block"):
        Signer.from_key_file(tmp_path / "bad.key")
    body = key.read_text().replace("A", "B", 5)
    (tmp_path / "corrupt.key").write_text(body)
    with pytest.raises(SigningError):
        Signer.from_key_file(tmp_path / "corrupt.key", password="right")
    with pytest.raises(SigningError, match="cannot read"):
        Signer.from_key_file(tmp_path / "missing.key")
    assert "right" not in repr(signer)
