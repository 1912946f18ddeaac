"""Attack tests on a local layout: each raises its specific error and yields nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from policysupply import (
    Bundle,
    ClaimMismatchError,
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


def test_verified_values_cannot_be_altered_with_evolve(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    import attrs

    reg, bundle, signer = setup
    signer.sign(reg, "acme/a:1")
    verified = verifier(signer).verify_bundle(reg, "acme/a:1")
    evil = Bundle(manifest=bundle.manifest, modules={}, data={"acme": {"evil": True}})
    with pytest.raises(TypeError, match="cannot be altered"):
        attrs.evolve(verified, bundle=evil)
    other = oci.Reference(repository="acme/a", digest="sha256:" + "0" * 64)
    with pytest.raises(TypeError, match="cannot be altered"):
        attrs.evolve(verified.artifact, reference=other)
    with pytest.raises(TypeError, match="cannot be altered"):
        attrs.evolve(verified.artifact, signatures=())
    assert attrs.evolve(verified) == verified  # an unchanged copy is still the same value


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
    with pytest.raises(ClaimMismatchError, match="signature is for"):
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
    doc = json.loads(sig.payload)
    doc["optional"]["env"] = "prod"
    _rewrite_sig(reg, str(sig.reference.digest), json.dumps(doc).encode(), None)
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
    with pytest.raises(ClaimMismatchError, match="required annotation"):
        verifier(signer, annotations={"env": "prod"}).verify(reg, "acme/a:1")
    # Copied into another repository, the signed docker-reference no longer matches.
    target = Registry.local(reg._store.root.parent / "copy")  # type: ignore[attr-defined]
    reg.copy("acme/a:1", to=target, to_ref="evil/b:1")
    with pytest.raises(ClaimMismatchError, match="names"):
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


def test_tag_moved_between_resolve_and_pull_yields_the_verified_content(
    setup: tuple[Registry, Bundle, Signer], monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, bundle, signer = setup
    signer.sign(reg, "acme/a:1")
    evil = Bundle(manifest=bundle.manifest, modules={}, data={"acme": {"evil": True}})
    real_resolve = reg.resolve

    def resolve_then_move(ref: object) -> str:
        digest = real_resolve(ref)  # type: ignore[arg-type]
        reg.push(evil, "acme/a:1")  # the attacker moves the tag right after
        return digest

    monkeypatch.setattr(reg, "resolve", resolve_then_move)
    verified = verifier(signer).verify_bundle(reg, "acme/a:1")
    monkeypatch.undo()
    assert verified.bundle == bundle  # pulled by the verified digest, not the tag
    assert reg.resolve("acme/a:1") != verified.reference.digest
    with pytest.raises(NoSignatureError):  # and the moved tag itself is unsigned
        verifier(signer).verify_bundle(reg, "acme/a:1")


def test_registry_answering_a_digest_with_other_bytes_is_refused(
    setup: tuple[Registry, Bundle, Signer], tmp_path: Path
) -> None:
    from policysupply import DigestMismatchError

    reg, bundle, signer = setup
    sig = signer.sign(reg, "acme/a:1")
    digest = str(sig.reference.digest)
    other = reg.push(Bundle(manifest=bundle.manifest, modules={}, data={}), "acme/a:2")
    blobs = tmp_path / "oci" / "acme" / "a" / "blobs" / "sha256"
    (blobs / digest.split(":")[1]).write_bytes(
        (blobs / str(other.digest).split(":")[1]).read_bytes()
    )
    with pytest.raises(DigestMismatchError):
        verifier(signer).verify_bundle(reg, "acme/a:1")


def _release(reg: Registry, bundle: Bundle, revision: str, **data: object) -> Bundle:
    import attrs

    b = Bundle(
        manifest=attrs.evolve(bundle.manifest, revision=revision),
        modules=dict(bundle.modules),
        data={"acme": dict(data)},
    )
    reg.push(b, "acme/a:stable")
    return b


def test_rollback_to_an_older_signed_revision_is_refused(
    setup: tuple[Registry, Bundle, Signer], tmp_path: Path
) -> None:
    from policysupply import RollbackError, TrustState

    reg, bundle, signer = setup
    state = TrustState(tmp_path / "state.json")
    v = verifier(signer)
    old = _release(reg, bundle, "1.4.0", hole=True)
    old_sig = signer.sign(reg, "acme/a:stable")
    assert v.verify_bundle(reg, "acme/a:stable", state=state).bundle == old
    _release(reg, bundle, "1.5.0", hole=False)
    signer.sign(reg, "acme/a:stable")
    assert v.verify_bundle(reg, "acme/a:stable", state=state).bundle.manifest.revision == "1.5.0"
    # The attacker points the tag back at the old, correctly signed release.
    reg.put_manifest("acme/a:stable", reg.get_manifest(old_sig.reference)[0])
    assert v.verify(reg, "acme/a:stable").digest == old_sig.reference.digest  # still validly signed
    with pytest.raises(RollbackError, match="replaced"):
        v.verify_bundle(reg, "acme/a:stable", state=state)
    # A fresh state accepts it (trust on first use); a state that saw 1.5.0 does not.
    assert v.verify_bundle(reg, "acme/a:stable", state=TrustState(tmp_path / "new.json"))
    record = state.get("acme/a:stable")
    assert record is not None
    assert record.revision == "1.5.0"
    assert old_sig.reference.digest in record.superseded


def test_older_revision_never_seen_and_same_revision_other_content(
    setup: tuple[Registry, Bundle, Signer], tmp_path: Path
) -> None:
    from policysupply import RollbackError, TrustState

    reg, bundle, signer = setup
    state = TrustState(tmp_path / "state.json")
    v = verifier(signer)
    _release(reg, bundle, "v2.0.0")
    signer.sign(reg, "acme/a:stable")
    v.verify_bundle(reg, "acme/a:stable", state=state)
    _release(reg, bundle, "v1.9.9")  # signed, never accepted here, but older
    signer.sign(reg, "acme/a:stable")
    with pytest.raises(RollbackError, match="older than the accepted"):
        v.verify_bundle(reg, "acme/a:stable", state=state)
    _release(reg, bundle, "v2.0.0", different=True)  # same revision, other bytes
    signer.sign(reg, "acme/a:stable")
    with pytest.raises(RollbackError, match="same revision"):
        v.verify_bundle(reg, "acme/a:stable", state=state)
    (record,) = state.records().values()
    assert record.revision == "v2.0.0"


def test_signature_older_than_the_freeze_limit(
    setup: tuple[Registry, Bundle, Signer],
) -> None:
    import datetime as dt

    from policysupply import StaleSignatureError

    reg, _, signer = setup
    day = dt.timedelta(days=1)
    old = (dt.datetime.now(dt.timezone.utc) - 3 * day).strftime("%Y-%m-%dT%H:%M:%SZ")
    signer.sign(reg, "acme/a:1", annotations={cosign.ANN_SIGNED_AT: old})
    with pytest.raises(StaleSignatureError, match="past the"):
        verifier(signer, max_signature_age=day).verify_bundle(reg, "acme/a:1")
    assert verifier(signer, max_signature_age=7 * day).verify(reg, "acme/a:1").signed_at
    signer.sign(reg, "acme/a:1")  # a fresh signature from the same key
    assert verifier(signer, max_signature_age=day).verify_bundle(reg, "acme/a:1")


def test_freeze_limit_needs_a_signed_time(setup: tuple[Registry, Bundle, Signer]) -> None:
    import datetime as dt

    from policysupply import StaleSignatureError

    reg, _, signer = setup
    signer.sign(reg, "acme/a:1", timestamp=False)  # as cosign signs: no signed time
    assert verifier(signer).verify(reg, "acme/a:1").signed_at is None
    with pytest.raises(StaleSignatureError, match="no trusted signature carries a signing time"):
        verifier(signer, max_signature_age=dt.timedelta(days=1)).verify(reg, "acme/a:1")


def test_forged_signed_time_is_not_trusted(setup: tuple[Registry, Bundle, Signer]) -> None:
    reg, _, signer = setup
    sig = signer.sign(reg, "acme/a:1", annotations={cosign.ANN_SIGNED_AT: "yesterday"})
    with pytest.raises(VerificationError, match="not an RFC 3339"):
        verifier(signer).verify(reg, "acme/a:1")
    assert sig.payload
