"""Property: a genuinely signed artifact with any signed byte or field changed never verifies.

For each way policysupply stores a signature (cosign's legacy ``.sig`` tag and
the Sigstore bundle referrer), made with a key and keyless (an in-process
Sigstore, real crypto), the genuine material is taken apart once: the signed
subject manifest, the payload or in-toto statement, the signature, the
certificate, cosign's annotations, every field of the Sigstore bundle and its
transparency log entry. Hypothesis then changes one of them (a byte flipped,
dropped or added in its decoded bytes, or a JSON leaf replaced), reassembles
the artifact in a fresh OCI layout and verifies it: the answer must be a
``PolicySupplyError``, never a verified result. The unchanged reassembly is
checked to verify, so the property is not vacuous.

Left out, on purpose, because they are not signed and select nothing: the
bundle's ``mediaType`` and the log entry's ``kindVersion`` (labels; an
unknown one is refused anyway), the public-key ``hint`` (a lookup hint) and
cosign's chain annotation (untrusted path hints: the trusted root decides).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policysupply import Bundle, Registry, Signer, TrustPolicy, Verifier
from policysupply._internal import cosign, keys, oci
from policysupply.bundle import Manifest
from policysupply.errors import PolicySupplyError
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity
from tests.unit._sigstore_pki import FakeBackend, FakeSigstore

REPO = "acme/policy"
SUBJECT = "https://github.com/acme/policies/.github/workflows/release.yml@refs/heads/main"
EXAMPLES = 60  # per case; four cases
_CERT = "dev.sigstore.cosign/certificate"
_UNSIGNED_BUNDLE_KEYS = {"mediaType", "kindVersion", "hint"}
_B64_KEYS = {
    "rawBytes",
    "payload",
    "sig",
    "signedEntryTimestamp",
    "canonicalizedBody",
    "rootHash",
    "hashes",
    "keyId",
}


@dataclass
class Case:
    """One genuinely signed artifact, taken apart into mutable fields."""

    name: str
    base: Path  # a layout holding the subject only
    verifier: Verifier
    manifest: bytes  # the subject's manifest
    fields: dict[str, bytes] = field(default_factory=dict)
    assemble: Callable[[Registry, dict[str, bytes], str], None] = lambda r, f, d: None


def _json_leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k not in _UNSIGNED_BUNDLE_KEYS:
                out += _json_leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _json_leaves(v, (*path, i))
    else:
        out.append((path, doc))
    return out


def _is_b64(path: tuple[Any, ...]) -> bool:
    return any(p in _B64_KEYS for p in path if isinstance(p, str))


def _leaf_bytes(path: tuple[Any, ...], value: Any) -> bytes:
    if _is_b64(path) and isinstance(value, str):
        return base64.b64decode(value)
    return json.dumps(value).encode()


def _set_leaf(doc: Any, path: tuple[Any, ...], raw: bytes) -> None:
    node = doc
    for p in path[:-1]:
        node = node[p]
    if _is_b64(path):
        node[path[-1]] = base64.b64encode(raw).decode()
    else:
        try:
            node[path[-1]] = json.loads(raw)
        except (ValueError, RecursionError):
            node[path[-1]] = raw.decode("utf-8", "replace")


def _legacy_case(name: str, base: Path, signer: Signer, verifier: Verifier) -> Case:
    work = base.parent / f"{name}-signed"
    shutil.copytree(base, work)
    reg = Registry.local(work)
    digest = reg.resolve(f"{REPO}:1")
    signer.sign(reg, f"{REPO}:1", annotations={"env": "prod"}, scheme="legacy")
    sig = json.loads(reg.get_manifest(f"{REPO}:{cosign.sig_tag(digest)}")[0])
    (layer,) = sig["layers"]
    annotations = dict(layer["annotations"])
    fields = {
        "payload": reg.get_blob(REPO, layer["digest"]),
        "signature": base64.b64decode(annotations.pop(cosign.ANN_SIGNATURE)),
    }
    if _CERT in annotations:
        pem = annotations.pop(_CERT).encode()
        fields["certificate"] = x509.load_pem_x509_certificate(pem).public_bytes(
            serialization.Encoding.DER
        )
    for key in list(annotations):
        if key != "dev.sigstore.cosign/chain":
            fields[f"annotation {key}"] = annotations.pop(key).encode()
    kept = annotations  # the chain: untrusted hints

    def assemble(reg: Registry, f: dict[str, bytes], digest: str) -> None:
        ann = {**kept, cosign.ANN_SIGNATURE: base64.b64encode(f["signature"]).decode()}
        if "certificate" in f:
            ann[_CERT] = keys.pem_encode("CERTIFICATE", f["certificate"]).decode()
        for key, value in f.items():
            if key.startswith("annotation "):
                ann[key.removeprefix("annotation ")] = value.decode("utf-8", "replace")
        blob = reg.put_blob(REPO, f["payload"], media_type=cosign.SIMPLESIGNING)
        layer = oci.Descriptor(
            media_type=cosign.SIMPLESIGNING, digest=blob.digest, size=blob.size, annotations=ann
        ).to_json()
        config = cosign.signature_config([layer["digest"]])
        reg.put_blob(REPO, config, media_type=oci.CONFIG_V1)
        reg.put_manifest(
            f"{REPO}:{cosign.sig_tag(digest)}", cosign.signature_manifest(config, [layer])
        )

    return Case(name, base, verifier, b"", fields, assemble)


def _bundle_case(name: str, base: Path, signer: Signer, verifier: Verifier) -> Case:
    work = base.parent / f"{name}-signed"
    shutil.copytree(base, work)
    reg = Registry.local(work)
    digest = reg.resolve(f"{REPO}:1")
    signer.sign(reg, f"{REPO}:1", annotations={"env": "prod"}, scheme="bundle")
    (desc,) = reg.referrers(f"{REPO}@{digest}")
    manifest = json.loads(reg.get_manifest(f"{REPO}@{desc.digest}")[0])
    doc = json.loads(reg.get_blob(REPO, manifest["layers"][0]["digest"]))
    leaves = dict(_json_leaves(doc))
    fields = {json.dumps(path): _leaf_bytes(path, value) for path, value in leaves.items()}

    def assemble(reg: Registry, f: dict[str, bytes], digest: str) -> None:
        bundle_doc = json.loads(json.dumps(doc))
        for key, raw in f.items():
            _set_leaf(bundle_doc, tuple(json.loads(key)), raw)
        bundle = json.dumps(bundle_doc).encode()
        subject = oci.Descriptor(media_type=oci.MANIFEST_V1, digest=digest, size=1)
        m, config = cosign.bundle_manifest(
            bundle, subject, "2024-01-01T00:00:00Z", cosign.SIGN_PREDICATE
        )
        reg.put_blob(REPO, config, media_type=oci.EMPTY_V1)
        reg.put_blob(REPO, bundle, media_type=cosign.BUNDLE_V03)
        reg.put_manifest(REPO, m)

    return Case(name, base, verifier, b"", fields, assemble)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    tmp = tmp_path_factory.mktemp("mutations")
    fake = FakeSigstore()
    root = fake.write_trusted_root(tmp / "trusted_root.json")
    base = tmp / "base"
    reg = Registry.local(base)
    subject = Bundle(
        modules={"a.rego": "package a\n\nallow := true\n"}, manifest=Manifest(revision="1.0.0")
    )
    ref = reg.push(subject, f"{REPO}:1", created="2024-01-01T00:00:00Z")
    manifest = reg.get_manifest(f"{REPO}@{ref.digest}")[0]
    key = Signer.generate()
    keyless = Signer._with_keyless(FakeBackend(fake, subject=SUBJECT))
    by_key = Verifier(
        TrustPolicy(keys=[key.public_key_pem], annotations={"env": "prod"}), trusted_root=root
    )
    by_identity = Verifier(
        TrustPolicy(
            identities=[Identity(issuer=GITHUB_ACTIONS_ISSUER, subject=SUBJECT)],
            annotations={"env": "prod"},
        ),
        trusted_root=root,
    )
    out = {}
    for name, make, signer, verifier in (
        ("key-legacy", _legacy_case, key, by_key),
        ("key-bundle", _bundle_case, key, by_key),
        ("keyless-legacy", _legacy_case, keyless, by_identity),
        ("keyless-bundle", _bundle_case, keyless, by_identity),
    ):
        case = make(name, base, signer, verifier)
        case.manifest = manifest
        out[name] = case
    return out


def _materialise(case: Case, fields: dict[str, bytes], manifest: bytes, where: Path) -> Registry:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(case.base, where)
    reg = Registry.local(where)
    store: Any = reg._store
    digest = store.put_bytes(REPO, manifest)  # stored as is: a hostile registry
    with store.editing_index(REPO) as index:
        index["manifests"] = [
            {
                "mediaType": oci.MANIFEST_V1,
                "digest": digest,
                "size": len(manifest),
                "annotations": {oci.ANN_REF_NAME: "1"},
            }
        ]
    case.assemble(reg, fields, digest)
    return reg


def _mutate(data: bytes, kind: str, index: int, value: int) -> bytes:
    if not data:
        return bytes([value or 1])
    i = index % len(data)
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (value or 1)]) + data[i + 1 :]
    if kind == "drop":
        return data[:i] + data[i + 1 :]
    return data[:i] + bytes([value]) + data[i:]


@pytest.mark.parametrize("name", ["key-legacy", "key-bundle", "keyless-legacy", "keyless-bundle"])
def test_unchanged_reassembly_verifies(cases: dict[str, Case], name: str, tmp_path: Path) -> None:
    case = cases[name]
    reg = _materialise(case, case.fields, case.manifest, tmp_path / "reg")
    artifact = case.verifier.verify(reg, f"{REPO}:1")
    assert artifact.signatures
    assert len(case.fields) >= 2


@pytest.mark.parametrize("name", ["key-legacy", "key-bundle", "keyless-legacy", "keyless-bundle"])
def test_changing_any_signed_byte_or_field_never_verifies(
    cases: dict[str, Case], name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    case = cases[name]
    where = tmp_path_factory.mktemp(f"{name}-mutated") / "reg"
    targets = ["subject manifest", *sorted(case.fields)]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        target=st.sampled_from(targets),
        kind=st.sampled_from(["flip", "drop", "insert"]),
        index=st.integers(min_value=0, max_value=1 << 16),
        value=st.integers(min_value=0, max_value=255),
    )
    def changed_never_verifies(target: str, kind: str, index: int, value: int) -> None:
        fields = dict(case.fields)
        manifest = case.manifest
        if target == "subject manifest":
            manifest = _mutate(manifest, kind, index, value)
        else:
            fields[target] = _mutate(fields[target], kind, index, value)
        if fields == case.fields and manifest == case.manifest:
            return  # the JSON round trip gave back the same bytes
        reg = _materialise(case, fields, manifest, where)
        try:
            result = case.verifier.verify(reg, f"{REPO}:1")
        except PolicySupplyError:
            return  # refused: anything else (another exception, a result) fails
        pytest.fail(f"{name}: {target} changed ({kind} at {index}) still verified: {result}")

    changed_never_verifies()
