"""OPA-native bundle signatures against real OPA, both directions.

OPA signs (``opa build --signing-key``) and we verify; we sign
(``Bundle.sign``) and OPA verifies: ``opa build --verification-key``, ``opa
run --server --bundle --verification-key``, and OPA's bundle plugin with a
``signing`` block pulling from our BundleServer and, through its OCI
downloader, from a loopback registry. Tampered bundles are refused by both.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from policysupply import Bundle, Registry, Signer, TrustPolicy, Verifier
from policysupply._internal import opa_signatures as osig
from policysupply._internal.tarball import read_entries, write_entries
from policysupply.errors import (
    FileDigestMismatchError,
    MissingSignedFileError,
    ScopeMismatchError,
    UnsafeExclusionError,
    UnsignedFileError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.loaders import BundleServer, publish
from policysupply.native import NativeKey, NativeTrust, verify_native
from tests.interop._loader_fixtures import opa_revision, wait_for
from tests.interop.conftest import OpaServer, RegistryServer, run_opa

pytestmark = pytest.mark.interop


@attrs.frozen
class Key:
    alg: str
    private: Path  # PEM file, or the secret file for HS*
    public: Path
    material: Any  # for Bundle.sign

    def native(self, **kw: Any) -> NativeKey:
        return NativeKey(key=self.public.read_bytes(), algorithm=self.alg, **kw)


def _write_key(tmp: Path, alg: str, key: Any) -> Key:
    priv = tmp / f"{alg}.pem"
    pub = tmp / f"{alg}.pub"
    if isinstance(key, bytes):
        priv.write_bytes(key)
        pub.write_bytes(key)
        return Key(alg, priv, pub, key)
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Key(alg, priv, pub, key)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    tmp = tmp_path_factory.mktemp("keys")
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "RS256": _write_key(tmp, "RS256", r),
        "PS384": _write_key(tmp, "PS384", r),
        "ES256": _write_key(tmp, "ES256", ec.generate_private_key(ec.SECP256R1())),
        "ES512": _write_key(tmp, "ES512", ec.generate_private_key(ec.SECP521R1())),
        "HS256": _write_key(tmp, "HS256", b"interop-shared-secret"),
    }


FAMILIES = ["RS256", "PS384", "ES256", "ES512", "HS256"]


def policy_tree(tmp: Path) -> Path:
    src = tmp / "src"
    (src / "authz").mkdir(parents=True)
    (src / "authz" / "allow.rego").write_text(
        "package authz\n\nallow if input.user in data.authz.admins\n"
    )
    (src / "authz" / "data.json").write_text(
        json.dumps({"admins": ["alice"], "limit": 1.5, "note": "<&> \u2028"})
    )
    return src


def opa_ok(
    opa_bin: Path, bundle: Path, key: Key, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    """``opa build`` reading ``bundle`` with verification on (OPA's bundle Reader)."""
    return run_opa(
        opa_bin,
        "build",
        "-b",
        str(bundle),
        "--verification-key",
        str(key.public),
        "--signing-alg",
        key.alg,
        "-o",
        str(bundle.with_suffix(".rebuilt.tar.gz")),
        *extra,
    )


# -- OPA signs, we verify --------------------------------------------------------------


@pytest.mark.parametrize("alg", FAMILIES)
@pytest.mark.parametrize("variant", ["plain", "kid", "claims"])
def test_opa_signed_bundles_verify_here(
    opa_bin: Path, keys: dict[str, Key], tmp_path: Path, alg: str, variant: str
) -> None:
    key = keys[alg]
    out = tmp_path / "opa.tar.gz"
    args = ["build", "-b", str(policy_tree(tmp_path)), "-o", str(out)]
    args += ["--signing-key", str(key.private), "--signing-alg", alg]
    trust_kw: dict[str, Any] = {}
    kid = "default"
    if variant == "kid":
        kid = "ci-2026"
        args += ["--verification-key-id", kid]
    if variant == "claims":
        claims = tmp_path / "claims.json"
        claims.write_text(json.dumps({"scope": "prod", "iss": "ci", "iat": 1700000000}))
        args += ["--claims-file", str(claims)]
        trust_kw = {"key_id": "ci", "scope": "prod"}
        kid = "ci"
    proc = run_opa(opa_bin, *args)
    assert proc.returncode == 0, proc.stderr.decode()
    trust = NativeTrust(keys={kid: key.native()}, **trust_kw)
    b = Bundle.from_file(out, native=trust)
    assert b.data["authz"]["admins"] == ["alice"]
    sig = verify_native(out, trust).signatures[0]
    assert sig.algorithm == alg
    if variant == "claims":
        assert sig.scope == "prod"
        assert sig.claims["iss"] == "ci"
    # A key OPA did not sign with is refused.
    other = keys["ES256"] if alg != "ES256" else keys["ES512"]
    with pytest.raises(VerificationError):
        verify_native(out, NativeTrust(keys={kid: other.native()}, **trust_kw))


def test_opa_sign_directory_verifies_here(
    opa_bin: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    src = policy_tree(tmp_path)
    (src / ".manifest").write_text('{"revision": "r7", "roots": ["authz"]}')
    proc = run_opa(opa_bin, "sign", ".", "--bundle", "--signing-key", str(keys["RS256"].private),
                   cwd=src)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    entries = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    b = Bundle.from_bytes(
        write_entries(entries),
        native=NativeTrust(keys={"k": keys["RS256"].native()}, key_id="k"),
    )
    assert b.manifest.revision == "r7"


def test_our_signature_is_opas_own_byte_for_byte(
    opa_bin: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    src = policy_tree(tmp_path)
    unsigned = tmp_path / "unsigned.tar.gz"
    signed = tmp_path / "signed.tar.gz"
    assert run_opa(opa_bin, "build", "-b", str(src), "-o", str(unsigned)).returncode == 0
    for alg in ("RS256", "HS256"):  # deterministic algorithms
        key = keys[alg]
        proc = run_opa(opa_bin, "build", "-b", str(src), "-o", str(signed),
                       "--signing-key", str(key.private), "--signing-alg", alg)  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
        ours = Bundle.from_file(unsigned).sign(key.material, alg=alg, key_id="default")
        theirs = read_entries(signed.read_bytes())[".signatures.json"]
        assert ours.files[".signatures.json"] == theirs
        # opa inspect shows our signatures config as it shows its own.
        ours_path = tmp_path / "ours.tar.gz"
        ours.write(ours_path)
        inspect = [
            json.loads(run_opa(opa_bin, "inspect", "--format", "json", str(p)).stdout)
            for p in (ours_path, signed)
        ]
        assert inspect[0]["signatures_config"] == inspect[1]["signatures_config"]


# -- we sign, OPA verifies ------------------------------------------------------------


@pytest.mark.parametrize("alg", FAMILIES)
def test_our_signed_bundles_verify_in_opa(
    opa_bin: Path,
    keys: dict[str, Key],
    tmp_path: Path,
    start_opa: Callable[..., OpaServer],
    alg: str,
) -> None:
    key = keys[alg]
    b = Bundle.from_directory(policy_tree(tmp_path), revision="r1")
    for kw in ({"key_id": "default"}, {}, {"claims": {"iss": "ci"}}):
        path = tmp_path / "ours.tar.gz"
        b.sign(key.material, alg=alg, **kw).write(path)
        proc = opa_ok(opa_bin, path, key)
        assert proc.returncode == 0, (kw, proc.stderr.decode())
    # With a scope, OPA checks it (and refuses another).
    b.sign(key.material, alg=alg, key_id="default", scope="prod").write(path)
    assert opa_ok(opa_bin, path, key, "--scope", "prod").returncode == 0
    refused = opa_ok(opa_bin, path, key, "--scope", "staging")
    assert refused.returncode != 0
    assert b"scope mismatch" in refused.stdout + refused.stderr
    # opa run --server --bundle --verification-key starts on it and serves it.
    b.sign(key.material, alg=alg, key_id="default").write(path)
    opa = start_opa("--bundle", str(path), "--verification-key", str(key.public),
                    "--signing-alg", alg)  # fmt: skip
    assert opa.post("/v1/data/authz/allow", {"input": {"user": "alice"}})["result"] is True


def _tampered(b: Bundle, key: Key, how: str) -> tuple[bytes, dict[str, str]]:
    """A signed bundle, then changed after signing; and the extra OPA/our options."""
    signed = b.sign(key.material, alg=key.alg, key_id="default")
    e = read_entries(signed.to_bytes())
    opts: dict[str, str] = {}
    if how == "added":
        e["authz/backdoor.rego"] = b"package authz\n\nbackdoor := true\n"
    elif how == "removed":
        del e["authz/allow.rego"]
    elif how == "changed":
        e["authz/allow.rego"] = e["authz/allow.rego"].replace(b"in data", b"not in data")
    elif how == "data-number-text":
        e["data.json"] = e["data.json"].replace(b"1.5", b"1.50")
    elif how == "scope":
        e = read_entries(
            b.sign(key.material, alg=key.alg, key_id="default", scope="dev").to_bytes()
        )
        opts["scope"] = "prod"
    elif how == "untrusted-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        e = read_entries(b.sign(other, alg="RS256", key_id="default").to_bytes())
    return write_entries(e), opts


TAMPERING = {
    "added": UnsignedFileError,
    "removed": MissingSignedFileError,
    "changed": FileDigestMismatchError,
    "data-number-text": FileDigestMismatchError,
    "scope": ScopeMismatchError,
    "untrusted-key": UntrustedSignatureError,
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_opa_and_we_refuse_the_same_tampered_bundles(
    opa_bin: Path, keys: dict[str, Key], tmp_path: Path, how: str
) -> None:
    key = keys["RS256"]
    b = Bundle.from_directory(policy_tree(tmp_path), revision="r1")
    raw, opts = _tampered(b, key, how)
    path = tmp_path / f"{how}.tar.gz"
    path.write_bytes(raw)
    extra = ["--scope", opts["scope"]] if "scope" in opts else []
    proc = opa_ok(opa_bin, path, key, *extra)
    assert proc.returncode != 0, f"OPA accepted the {how} bundle"
    trust = NativeTrust(keys={"default": key.native()}, scope=opts.get("scope"))
    with pytest.raises(TAMPERING[how]):
        Bundle.from_bytes(raw, native=trust)


def test_exclude_files_slipping_rego_opa_warns_nothing_we_refuse(
    opa_bin: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    key = keys["RS256"]
    b = Bundle.from_directory(policy_tree(tmp_path), revision="r1")
    e = read_entries(b.sign(key.material, key_id="default").to_bytes())
    e["authz/allow.rego"] = b"package authz\n\nallow := true\n"
    path = tmp_path / "excluded.tar.gz"
    path.write_bytes(write_entries(e))
    # OPA, told to exclude authz/*, loads the replaced module unverified.
    assert opa_ok(opa_bin, path, key, "--exclude-files-verify", "authz/*").returncode == 0
    trust = NativeTrust(keys={"default": key.native()}, exclude_files=("authz/*",))
    with pytest.raises(UnsafeExclusionError):
        Bundle.from_bytes(path.read_bytes(), native=trust)
    warned = attrs.evolve(trust, excluded_content="warn")
    assert verify_native(path, warned).excluded == ("authz/allow.rego",)


def test_opa_refuses_two_tokens_so_we_never_write_them_by_default(
    opa_bin: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    key = keys["RS256"]
    b = Bundle.from_directory(policy_tree(tmp_path), revision="r1")
    two = b.sign(key.material, key_id="default").sign(key.material, key_id="x", append=True)
    path = tmp_path / "two.tar.gz"
    two.write(path)
    proc = opa_ok(opa_bin, path, key)
    assert proc.returncode != 0
    assert b"multiple JWTs" in proc.stdout + proc.stderr
    one = b.sign(key.material, key_id="default").sign(key.material, key_id="default")
    one.write(path)
    assert opa_ok(opa_bin, path, key).returncode == 0


# -- OPA's bundle plugin: BundleServer and the OCI downloader ------------------------------


def _signing_config(trust: NativeTrust, name: str, base: dict[str, Any]) -> dict[str, Any]:
    frag = trust.to_opa_config(name)
    config = dict(base)
    config["keys"] = frag["keys"]
    for n, source in config["bundles"].items():
        source["signing"] = frag["bundles"][name]["signing"] if n == name else {}
    return config


def test_publish_defence_in_depth_through_bundle_server(
    tmp_path: Path, start_opa: Callable[..., OpaServer]
) -> None:
    # publish() signs the bundle OPA-natively with the cosign key, and the
    # BundleServer's OPA config makes OPA check that signature itself.
    signer = Signer.generate()
    reg = Registry.local(tmp_path / "oci")
    src = policy_tree(tmp_path)
    verifier = Verifier(TrustPolicy(keys=[signer.public_key_pem]))

    def release(revision: str, *, native: bool) -> Any:
        ref = f"acme/authz:{revision}"
        publish(Bundle.from_directory(src, revision=revision), reg, ref, signer, native=native)
        return verifier.verify_bundle(reg, ref)

    server = BundleServer(tmp_path / "served").start()
    try:
        server.publish(release("v1", native=True), "authz")
        config = tmp_path / "opa.yaml"
        signing = NativeTrust.from_cosign_keys(verifier.policy.keys)
        config.write_text(
            server.opa_config_yaml(
                ["authz"], min_delay_seconds=1, max_delay_seconds=1, signing=signing
            )
        )
        opa = start_opa("-c", str(config))
        wait_for(lambda: opa_revision(opa, "authz") == "v1", what="v1 active")
        assert opa.post("/v1/data/authz/allow", {"input": {"user": "alice"}})["result"] is True
        # A bundle without the native signature (cosign-verified, but e.g.
        # published by older tooling) is refused by OPA itself: v1 stays.
        server.publish(release("v2", native=False), "authz")
        wait_for(lambda: "missing .signatures.json" in opa.log.read_text(), what="OPA refusing v2")
        assert opa_revision(opa, "authz") == "v1"
        server.publish(release("v3", native=True), "authz")
        wait_for(lambda: opa_revision(opa, "authz") == "v3", what="v3 active")
    finally:
        server.stop()


def test_oci_downloader_with_signing_from_loopback_registry(
    keys: dict[str, Key],
    tmp_path: Path,
    distribution: RegistryServer,
    start_opa: Callable[..., OpaServer],
) -> None:
    key = keys["ES256"]
    trust = NativeTrust(keys={"ci": key.native()})
    src = policy_tree(tmp_path)
    with Registry.remote(distribution.host, insecure=True) as reg:
        reg.push(Bundle.from_directory(src, revision="v1").sign(key.material, key_id="ci"),
                 "acme/authz:latest")  # fmt: skip
        base = {
            "services": {"registry": {"url": distribution.url, "type": "oci"}},
            "bundles": {
                "authz": {
                    "service": "registry",
                    "resource": f"{distribution.host}/acme/authz:latest",
                    "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1},
                }
            },
            "persistence_directory": str(tmp_path / "opa-persist"),
        }
        config = tmp_path / "opa.json"
        config.write_text(json.dumps(_signing_config(trust, "authz", base)))
        opa = start_opa("-c", str(config))
        wait_for(lambda: opa_revision(opa, "authz") == "v1", timeout=60, what="v1 active")
        # Tampered after signing: OPA keeps v1.
        signed = Bundle.from_directory(src, revision="v2").sign(key.material, key_id="ci")
        e = read_entries(signed.to_bytes())
        e["authz/backdoor.rego"] = b"package authz\n\nbackdoor := true\n"
        reg.push(Bundle.from_bytes(write_entries(e)), "acme/authz:latest")
        wait_for(
            lambda: "authz/backdoor.rego not included in bundle signature" in opa.log.read_text(),
            timeout=60,
            what="OPA refusing the tampered bundle",
        )
        assert opa_revision(opa, "authz") == "v1"
        reg.push(Bundle.from_directory(src, revision="v3").sign(key.material, key_id="ci"),
                 "acme/authz:latest")  # fmt: skip
        wait_for(lambda: opa_revision(opa, "authz") == "v3", timeout=60, what="v3 active")


def test_rotation_with_two_keys_in_opa_and_here(
    keys: dict[str, Key], tmp_path: Path, start_opa: Callable[..., OpaServer]
) -> None:
    # OPA 1.22 with a `signing` block and no keyid picks the key by kid: old
    # and new keys trusted at once, a signature required throughout.
    old, new = keys["RS256"], keys["ES256"]
    trust = NativeTrust(keys={"2025": old.native(), "2026": new.native()})
    src = policy_tree(tmp_path)
    served = tmp_path / "file-bundles"
    served.mkdir()
    for kid, key in (("2025", old), ("2026", new)):
        b = Bundle.from_directory(src, revision=kid).sign(key.material, key_id=kid)
        b.verify_native(trust)
        path = served / f"{kid}.tar.gz"
        b.write(path)
        config = {
            "keys": trust.to_opa_config("authz")["keys"],
            "bundles": {"authz": {"resource": f"file://{path}", "signing": {}}},
        }
        cfg = tmp_path / f"opa-{kid}.json"
        cfg.write_text(json.dumps(config))
        opa = start_opa("-c", str(cfg))
        wait_for(lambda opa=opa, kid=kid: opa_revision(opa, "authz") == kid, what=f"{kid}")
    token = json.loads(b.files[".signatures.json"])["signatures"][0]
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == "2026"
    assert osig.is_signatures_file(".signatures.json")


def test_cli_build_with_cosign_key_and_serve_opa_signing(
    distribution: RegistryServer, tmp_path: Path, start_opa: Callable[..., OpaServer]
) -> None:
    import os
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONFIG"}
    env.update(HOME=str(home), COSIGN_PASSWORD="cli-pass")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "policysupply", *args],
            capture_output=True, text=True, env=env, cwd=home, timeout=180, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    cli("keygen")
    ref = f"{distribution.host}/acme/authz:prod"
    bundle = tmp_path / "b.tar.gz"
    cli("build", str(policy_tree(tmp_path)), "-o", str(bundle), "--revision", "r1",
        "--signing-key", "cosign.key")  # fmt: skip
    cli("push", str(bundle), ref)
    cli("sign", ref, "--key", "cosign.key")
    err = (tmp_path / "serve.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "policysupply", "serve", ref, "-k", "cosign.pub",
         "--opa-signing", "--addr", "127.0.0.1:0", "-d", str(tmp_path / "store"), "--json"],
        stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=home,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, (tmp_path / "serve.err").read_text()
        config = json.loads(line)["opa_config"]
        assert config["bundles"]["authz"]["signing"] == {}
        (tmp_path / "opa.yaml").write_text(json.dumps(config))
        opa = start_opa("-c", str(tmp_path / "opa.yaml"))
        wait_for(lambda: opa_revision(opa, "authz") == "r1", what="r1 active in OPA")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        err.close()


def test_reformatted_data_still_verifies_and_opa_loads_what_we_load(
    keys: dict[str, Key], tmp_path: Path, start_opa: Callable[..., OpaServer]
) -> None:
    # Same document, other bytes (indentation, key order, escapes): OPA's
    # canonical hash matches, so both verify, and both load the same value.
    key = keys["RS256"]
    b = Bundle.from_directory(policy_tree(tmp_path), revision="r1")
    e = read_entries(b.sign(key.material, key_id="default").to_bytes())
    doc = json.loads(e["data.json"])
    e["data.json"] = json.dumps(
        dict(reversed(list(doc.items()))), indent=4, ensure_ascii=True
    ).encode()
    path = tmp_path / "reformatted.tar.gz"
    path.write_bytes(write_entries(e))
    ours = Bundle.from_file(path, native=NativeTrust(keys={"default": key.native()}))
    opa = start_opa("--bundle", str(path), "--verification-key", str(key.public))
    assert opa.get("/v1/data/authz")["result"]["limit"] == ours.data["authz"]["limit"] == 1.5
    assert opa.get("/v1/data/authz")["result"]["note"] == ours.data["authz"]["note"]
    assert opa.get("/v1/data/authz")["result"]["admins"] == ours.data["authz"]["admins"]


def test_opa_without_keys_refuses_a_signed_bundle(
    opa_bin: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    # Why BundleServer.opa_config always carries the keys of natively signed
    # bundles: OPA with no key configured does not ignore a signature, it
    # refuses the bundle.
    path = tmp_path / "signed.tar.gz"
    Bundle.from_directory(policy_tree(tmp_path)).sign(keys["ES256"].material, key_id="k").write(
        path
    )
    proc = subprocess.run(
        [str(opa_bin), "run", "--server", "--addr", "127.0.0.1:0", "--bundle", str(path)],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert b"verification key not provided" in proc.stdout + proc.stderr
