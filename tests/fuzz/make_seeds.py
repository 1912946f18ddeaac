"""Writes the fuzz targets' seed corpora and test material (run once; the output is committed).

    python -m tests.fuzz.make_seeds

Every seed is made here by policysupply itself (or by hand below): nothing is
fetched. The keyless material comes from the in-process Sigstore of the unit
tests (tests/unit/_sigstore_pki.py); its trusted root is written to
``material/`` with the seeds, which only verify against it. ``fuzz-only.key``
is a throwaway key for the harness to sign fuzzed claims with: it signs
nothing else and is trusted nowhere else.

Re-running replaces the generated seeds (names start with ``gen-``); the
regression seeds of findings (``regress-*``) are kept.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from policysupply import Bundle, Registry, Signer
from policysupply._internal import cosign, keys, oci, tarball
from policysupply.bundle import Manifest
from tests.unit._sigstore_pki import FakeBackend, FakeSigstore

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
MATERIAL = HERE / "material"
SUBJECT = "https://github.com/acme/policies/.github/workflows/release.yml@refs/heads/main"


def write(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"gen-{name}").write_bytes(data)


def clear() -> None:
    for f in CORPUS.glob("*/gen-*"):
        f.unlink()


def raw_tar(bundle: Bundle) -> bytes:
    return gzip.decompress(bundle.to_bytes())


def oci_seeds() -> None:
    b = Bundle(modules={"a.rego": "package a\n"}, manifest=Manifest(revision="1"))
    manifest, config = oci.policy_manifest(
        b.to_bytes(), title="acme/p", created="2024-01-01T00:00:00Z", revision="1"
    )
    write("_internal.oci", "policy-manifest", manifest)
    subject = oci.Descriptor.for_bytes(manifest, oci.MANIFEST_V1)
    bundle_manifest, _ = cosign.bundle_manifest(b"{}", subject, "2024", cosign.SIGN_PREDICATE)
    write("_internal.oci", "referrer-manifest", bundle_manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": oci.INDEX_V1,
        "manifests": [
            {**subject.to_json(), "annotations": {oci.ANN_REF_NAME: "1.0"}},
            {**subject.to_json(), "artifactType": cosign.BUNDLE_V03},
        ],
        "subject": subject.to_json(),
    }
    write("_internal.oci", "index", oci.canonical_json(index))
    write("_internal.oci", "sig-manifest", cosign.signature_manifest(config, [subject.to_json()]))
    for i, ref in enumerate(
        ["registry.example.com:5000/acme/policy:1.0", "acme/p@sha256:" + "a" * 64, "localhost/a/b"]
    ):
        write("_internal.oci", f"reference-{i}", ref.encode())


def key_seeds() -> None:
    password = b"fuzz-password"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = ec_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The lowest scrypt cost cosign accepts, so each execution stays fast.
    write(
        "_internal.keys", "cosign-key", b"\x01" + keys.encrypt_private_key(pkcs8, password, n=32768)
    )
    for name, key in (
        ("ec-p384", ec.generate_private_key(ec.SECP384R1())),
        ("ed25519", ed25519.Ed25519PrivateKey.generate()),
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505 - a seed
    ):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write("_internal.keys", f"{name}-pkcs8", b"\x00" + pem)
        write("_internal.keys", f"{name}-pub", b"\x00" + keys.public_pem(key))
    sec1 = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write("_internal.keys", "ec-sec1", b"\x00" + sec1)


def bundle_seeds(fixtures: Path) -> None:
    pinned = Bundle.from_directory(fixtures / "pinned", revision="1.2.3", roots=["acme"])
    small = Bundle(
        modules={"a/a.rego": "package a\n\nallow if input.x == 1\n"},
        data={"a": {"b": [1, 2.5, "x", None, True]}},
        manifest=Manifest(revision="v1", metadata={"k": "v"}),
    )
    for name, b in (("pinned", pinned), ("small", small)):
        write("bundle", name, raw_tar(b))
        write("_internal.tarball", name, raw_tar(b))
    write("_internal.tarball", "gzip-pinned", b"\0" + pinned.to_bytes())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.GNU_FORMAT) as tf:
        body = b"package long\n"
        info = tarfile.TarInfo("./d/" + "n" * 120 + ".rego")
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
        yaml_body = b"a: &x [1, 2]\nb: *x\n"
        info = tarfile.TarInfo("d/data.yaml")
        info.size = len(yaml_body)
        tf.addfile(info, io.BytesIO(yaml_body))
        info = tarfile.TarInfo("d/")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    write("_internal.tarball", "gnu-longname", buf.getvalue())
    write("bundle", "gnu-longname", buf.getvalue())
    assert tarball.read_entries(tarball.gzip_deterministic(buf.getvalue()))
    # data files and .manifest (first byte: 0 data.json, 1 data.yaml, 2 .manifest)
    write(
        "_internal.bundle_format",
        "json",
        b"\x00" + json.dumps({"a": [1, 2.5e3, "\u00e9", {"b": None}]}).encode(),
    )
    write("_internal.bundle_format", "json-escape", b"\x00" + b'{"s": "\\ud800\\u0041", "n": -0.0}')
    write(
        "_internal.bundle_format",
        "yaml",
        b"\x01" + b"a: &x {b: [1, 2, yes, ~, 0x1f, 1e3]}\nc: *x\nd: !!binary aGk=\n",
    )
    write(
        "_internal.bundle_format",
        "yaml-merge",
        b"\x01" + b"base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n'1': t\n",
    )
    manifest = {
        "revision": "1.2.3",
        "roots": ["acme", "b/c"],
        "metadata": {"k": ["v"]},
        "rego_version": 1,
        "file_rego_versions": {"/legacy/*.rego": 0},
        "wasm": [{"entrypoint": "a/b", "module": "/policy.wasm"}],
    }
    write("_internal.bundle_format", "manifest", b"\x02" + json.dumps(manifest).encode())


def trust_state_seeds() -> None:
    import datetime as dt

    from policysupply.trust_state import TrustState

    with tempfile.TemporaryDirectory() as tmp:
        state = TrustState(Path(tmp) / "t.json")
        state.accept(
            "r.test/a/b:1",
            digest="sha256:" + "0" * 64,
            revision="1.0.0",
            signed_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        )
        state.accept("r.test/a/b:1", digest="sha256:" + "2" * 64, revision="1.1.0", signed_at=None)
        state.accept("r.test/c:latest", digest="sha256:" + "3" * 64, revision=None, signed_at=None)
        write("trust_state", "state", state.path.read_bytes())


def credentials_seeds() -> None:
    auth = base64.b64encode(b"user:pass").decode()
    write(
        "_internal.credentials",
        "auths",
        json.dumps(
            {
                "auths": {
                    "https://registry.test/v1/": {"auth": auth},
                    "127.0.0.1:5000": {"username": "u", "password": "p"},
                }
            }
        ).encode(),
    )
    write(
        "_internal.credentials",
        "helpers",
        json.dumps({"credHelpers": {"registry.test": "missing"}, "credsStore": "desktop"}).encode(),
    )


def keyless_and_verifier_seeds(fixtures: Path) -> None:
    fake = FakeSigstore()
    MATERIAL.mkdir(exist_ok=True)
    fake.write_trusted_root(MATERIAL / "trusted_root.json")
    key = ec.generate_private_key(ec.SECP256R1())
    (MATERIAL / "fuzz-only.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    write("_internal.keyless", "root", b"\x02" + (MATERIAL / "trusted_root.json").read_bytes())
    backend = FakeBackend(fake, subject=SUBJECT)
    write("_internal.keyless", "leaf-der", b"\x00" + backend.cert)
    write("_internal.keyless", "leaf-pem", b"\x00" + backend.cert_pem)
    write("_internal.keyless", "chain", b"\x01" + backend.cert_pem + fake.ca.chain_pem())

    keyed = Signer(key)
    keyless = Signer._with_keyless(backend)
    # The fuzz_verifier subject, exactly as the target pushes it.
    subject = Bundle(
        modules={"a.rego": "package a\n\nallow := true\n"}, manifest=Manifest(revision="1.0.0")
    )
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry.local(Path(tmp) / "oci")
        digest = reg.push(subject, "acme/policy:1", created="2024-01-01T00:00:00Z").digest
        ann = {"env": "prod"}
        # 0: .sig payloads, signed by the harness (flag 0x80) or stored as cosign stores them
        payload = cosign.simple_signing_payload(
            "acme/policy", digest, {**ann, cosign.ANN_SIGNED_AT: "2030-01-01T00:00:00Z"}
        )
        write("verifier", "sig-signed-here", bytes([0x80 | 4 | 8]) + payload + b"\x1e\x1e\x1e")
        for scheme in ("legacy", "bundle"):
            for signer in (keyed, keyless):
                signer.sign(reg, "acme/policy:1", annotations=ann, scheme=scheme)  # type: ignore[arg-type]
        sig_manifest = json.loads(reg.get_manifest(f"acme/policy:{cosign.sig_tag(digest)}")[0])
        for i, layer in enumerate(sig_manifest["layers"]):
            payload = reg.get_blob("acme/policy", layer["digest"])
            anns = dict(layer.get("annotations") or {})
            sig = anns.pop(cosign.ANN_SIGNATURE)
            ann_raw = b"\x1d".join(f"{k}\x1f{v}".encode() for k, v in anns.items())
            flags = 4 | 8 | (0x40 if anns.get("dev.sigstore.cosign/certificate") else 0)
            write(
                "verifier",
                f"sig-stored-{i}",
                bytes([flags]) + payload + b"\x1e" + ann_raw + b"\x1e" + sig.encode() + b"\x1e",
            )
        # 1: bundle referrers
        statement = cosign.sign_statement(digest, ann)
        write(
            "verifier",
            "bundle-signed-here",
            bytes([0x80 | 1 | 4 | 8]) + statement + b"\x1e\x1e\x1e",
        )
        for i, desc in enumerate(reg.referrers(f"acme/policy@{digest}")):
            m = json.loads(reg.get_manifest(f"acme/policy@{desc.digest}")[0])
            bundle = reg.get_blob("acme/policy", m["layers"][0]["digest"])
            flags = 1 | 4 | 8 | (0x40 if b"certificate" in bundle else 0)
            write("verifier", f"bundle-stored-{i}", bytes([flags]) + bundle + b"\x1e\x1e\x1e")
        # 2: .att attestations
        slsa = json.dumps(
            {
                "_type": cosign.STATEMENT_V1,
                "subject": [{"name": "acme/policy", "digest": {"sha256": digest.split(":", 1)[1]}}],
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {"buildDefinition": {"buildType": "x"}},
            }
        ).encode()
        write("verifier", "att-signed-here", bytes([0x80 | 2]) + slsa + b"\x1e\x1e\x1e")
        keyed.attest(
            reg,
            "acme/policy:1",
            predicate_type="https://slsa.dev/provenance/v1",
            predicate={"a": 1},
        )
        att_tag = cosign.sig_tag(digest)[: -len(".sig")] + ".att"
        att = json.loads(reg.get_manifest(f"acme/policy:{att_tag}")[0])
        env = reg.get_blob("acme/policy", att["layers"][0]["digest"])
        write("verifier", "att-stored", bytes([2]) + env + b"\x1e\x1e\x1e")
    # 3: blobs and their Sigstore bundles
    blob = b"policy tarball bytes\n"
    for name, signer in (("key", keyed), ("keyless", keyless)):
        bundle = signer.sign_blob(blob).to_json()
        write(
            "verifier",
            f"blob-{name}",
            bytes([3 | (0x40 if name == "keyless" else 0)]) + bundle + b"\x1e\x1e\x1e" + blob,
        )
        write("_internal.sigstore_bundle", f"blob-{name}", bundle)
    _, env_json = backend.sign_dsse_envelope(cosign.sign_statement("sha256:" + "0" * 64, None))
    write("_internal.sigstore_bundle", "dsse-envelope", env_json)
    dsse_bundle = backend.sign_dsse(cosign.sign_statement("sha256:" + "0" * 64, None))
    write("_internal.sigstore_bundle", "dsse-bundle", dsse_bundle.to_json())
    entry = dsse_bundle.tlog_entries[0]
    write("_internal.sigstore_bundle", "cosign-annotation", entry.to_cosign_annotation().encode())


def distribution_seeds() -> None:
    # fuzz_distribution: records separated by 0x1e; each is
    # status(1) content-type(1) headers "\n\n" body (see the target).
    b = Bundle(modules={"a.rego": "package a\n"})
    manifest, _ = oci.policy_manifest(b.to_bytes(), title="t", created="2024", revision=None)
    digest = oci.sha256_digest(manifest)
    index = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.INDEX_V1,
            "manifests": [
                {
                    "mediaType": oci.MANIFEST_V1,
                    "digest": digest,
                    "size": len(manifest),
                    "artifactType": cosign.BUNDLE_V03,
                }
            ],
        }
    )
    records = [
        b"\x00\x01" + f"docker-content-digest: {digest}".encode() + b"\n\n",  # HEAD tag
        b"\x00\x01\n\n" + manifest,  # GET
        b'\x00\x00link: </v2/acme/p/tags/list?n=2&last=b>; rel="next"\n\n' + b'{"tags":["a","b"]}',
        b"\x00\x00\n\n" + b'{"tags":["c"]}',
        b"\x00\x02oci-filters-applied: artifactType\n\n" + index,
    ]
    write("_internal.distribution", "happy", b"\x1e".join(records))
    challenge = [
        b'\x04\x00www-authenticate: Bearer realm="https://auth.test/token",service="r",scope="repository:acme/p:pull"\n\n',
        b"\x00\x00\n\n" + b'{"token":"t","expires_in":300}',
        b"\x00\x01" + f"docker-content-digest: {digest}".encode() + b"\n\n",
        b"\x06\x00retry-after: 0\n\n",
        b"\x05\x00\n\n" + b'{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}',
    ]
    write("_internal.distribution", "challenge", b"\x1e".join(challenge))


def main() -> None:
    fixtures = HERE.parent / "fixtures"
    clear()
    oci_seeds()
    key_seeds()
    bundle_seeds(fixtures)
    trust_state_seeds()
    credentials_seeds()
    keyless_and_verifier_seeds(fixtures)
    distribution_seeds()
    print(f"seeds written under {CORPUS}")


if __name__ == "__main__":
    main()
