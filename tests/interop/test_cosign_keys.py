"""Key-based signing and verification against real cosign 2.x and 3.x, both directions."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import attrs
import pytest

from policysupply import (
    Bundle,
    ClaimMismatchError,
    Registry,
    Signer,
    TrustPolicy,
    UntrustedSignatureError,
    Verifier,
)
from policysupply._internal import cosign
from tests.interop._cosign import (
    BAD_DSSE_SIGNATURE,
    BAD_SIGNATURE,
    COSIGN_SIGN_FLAGS,
    COSIGN_VERIFY_FLAGS,
    assert_refused,
    push_policy,
    run_cosign,
)
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop


@pytest.fixture
def image(distribution: RegistryServer, example_dir: Path) -> tuple[Registry, str]:
    reg, ref, _ = push_policy(distribution, example_dir)
    return reg, ref


@pytest.mark.parametrize("version", ["2", "3"])
def test_cosign_key_files_load(version: str, tmp_path: Path) -> None:
    run_cosign(version, "generate-key-pair", cwd=tmp_path, password="s3cret")
    signer = Signer.from_key_file(tmp_path / "cosign.key", password="s3cret")
    assert signer.public_key_pem == (tmp_path / "cosign.pub").read_bytes()


@pytest.mark.parametrize("version", ["2", "3"])
def test_our_key_files_work_in_cosign_and_our_signature_verifies(
    version: str, image: tuple[Registry, str], tmp_path: Path
) -> None:
    reg, ref = image
    signer = Signer.generate()
    key, pub = signer.write_key_pair(tmp_path, password="pw")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # cosign signs with our key file ...
    run_cosign(version, "sign", "--key", str(key), *COSIGN_SIGN_FLAGS[version], ref, cwd=tmp_path)
    # cosign 2's payload names the repository; cosign 3's bundle names none.
    mode = "any" if version == "3" else "repository"
    result = Verifier(TrustPolicy(keys=[pub], docker_reference=mode)).verify(
        reg, ref.split("/", 1)[1]
    )
    assert result.key_ids == (signer.key_id,)
    # ... and verifies our own signature on another image.
    other = reg.push(
        Bundle.from_directory(Path(__file__).parents[1] / "fixtures" / "pinned"), "acme/other:1"
    )
    signer.sign(reg, other)
    run_cosign(
        version,
        "verify",
        "--key",
        str(pub),
        *COSIGN_VERIFY_FLAGS,
        f"{reg.host}/acme/other@{other.digest}",
        cwd=tmp_path,
    )


@pytest.mark.parametrize("version", ["2", "3"])
def test_cosign_rejects_our_signature_with_another_key(
    version: str, image: tuple[Registry, str], tmp_path: Path
) -> None:
    reg, ref = image
    Signer.generate().sign(reg, ref.split("/", 1)[1])
    _, other_pub = Signer.generate().write_key_pair(tmp_path, password="pw")
    proc = run_cosign(
        version,
        "verify",
        "--key",
        str(other_pub),
        *COSIGN_VERIFY_FLAGS,
        ref,
        cwd=tmp_path,
        check=False,
    )
    assert_refused(proc, BAD_SIGNATURE)


def test_cosign3_bundle_referrer_verifies_on_both_registries(
    referrers_registry: RegistryServer,
    distribution: RegistryServer,
    example_dir: Path,
    tmp_path: Path,
) -> None:
    run_cosign("3", "generate-key-pair", cwd=tmp_path)
    for server in (referrers_registry, distribution):
        reg = Registry.remote(server.host, insecure=True)
        pushed = reg.push(Bundle.from_directory(example_dir), "acme/policy:1.0")
        run_cosign(
            "3",
            "sign",
            "--key",
            "cosign.key",
            *COSIGN_SIGN_FLAGS["3"],
            f"{server.host}/acme/policy@{pushed.digest}",
            cwd=tmp_path,
        )
        assert reg.referrers(pushed), server.kind  # stored as a referrer, not a .sig tag
        # cosign 3 names no repository: verifying it is an explicit choice.
        verified = Verifier(
            TrustPolicy(keys=[tmp_path / "cosign.pub"], docker_reference="any")
        ).verify(reg, "acme/policy:1.0")
        assert [s.scheme for s in verified.signatures] == ["bundle"]
        with pytest.raises(UntrustedSignatureError):
            Verifier(TrustPolicy(keys=[Signer.generate().public_key_pem])).verify(
                reg, "acme/policy:1.0"
            )


def cosign3_statement(reg: Registry, ref: str) -> dict[str, object]:
    """The in-toto statement inside the one Sigstore bundle referring to ``ref``."""
    (referrer,) = reg.referrers(ref)
    repository = ref.split("@")[0]
    manifest = json.loads(reg.get_manifest(f"{repository}@{referrer.digest}")[0])
    bundle = json.loads(reg.get_blob(repository, manifest["layers"][0]["digest"]))
    statement: dict[str, object] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return statement


def test_cosign3_bundle_signature_names_no_repository(
    referrers_registry: RegistryServer, example_dir: Path, tmp_path: Path
) -> None:
    # What real cosign 3 signs for an image: the digest and -a annotations only,
    # so a signature for acme/policy is as valid for acme/prod-policy.
    host = referrers_registry.host
    reg = Registry.remote(host, insecure=True)
    pushed = reg.push(Bundle.from_directory(example_dir), "acme/policy:1.0")
    run_cosign("3", "generate-key-pair", cwd=tmp_path)
    ref = f"{host}/acme/policy@{pushed.digest}"
    sign = ["sign", "--key", "cosign.key", *COSIGN_SIGN_FLAGS["3"]]
    run_cosign("3", *sign, "-a", "repository=acme/policy", ref, cwd=tmp_path)
    statement = cosign3_statement(reg, f"acme/policy@{pushed.digest}")
    assert statement["predicateType"] == cosign.SIGN_PREDICATE
    assert statement["predicate"] == {}
    assert statement["subject"] == [
        {
            "digest": {"sha256": str(pushed.digest).split(":")[1]},
            "annotations": {"repository": "acme/policy"},
        }
    ]
    pub = tmp_path / "cosign.pub"
    # The attack: the image and its signature copied under another repository name.
    reg.copy("acme/policy:1.0", to=reg, to_ref="acme/prod-policy:1.0")
    for name in ("acme/policy", "acme/prod-policy"):
        for mode in ("repository", "exact"):
            with pytest.raises(ClaimMismatchError, match=r'docker_reference="any"'):
                Verifier(TrustPolicy(keys=[pub], docker_reference=mode)).verify(reg, f"{name}:1.0")
    # An explicit policy verifies it, and can bind the repository by annotation.
    bound = TrustPolicy(
        keys=[pub], docker_reference="any", annotations={"repository": "acme/policy"}
    )
    assert Verifier(bound).verify(reg, "acme/policy:1.0")
    with pytest.raises(ClaimMismatchError, match="required annotation"):
        Verifier(attrs.evolve(bound, annotations={"repository": "acme/prod-policy"})).verify(
            reg, "acme/prod-policy:1.0"
        )


@pytest.mark.parametrize("registry", ["referrers_registry", "distribution"])
def test_our_bundle_scheme_verifies_in_cosign3(
    registry: str, request: pytest.FixtureRequest, example_dir: Path, tmp_path: Path
) -> None:
    # ggcr serves the referrers API; Debian's distribution 2.8 does not, so the
    # bundle is found through the fallback tag sha256-<hex>.
    server: RegistryServer = request.getfixturevalue(registry)
    reg = Registry.remote(server.host, insecure=True)
    pushed = reg.push(Bundle.from_directory(example_dir), "acme/policy:1.0")
    signer = Signer.generate()
    _, pub = signer.write_key_pair(tmp_path, password="pw")
    sig = signer.sign(reg, pushed, scheme="bundle")
    assert reg.referrers(pushed), server.kind
    # Ours names the repository (the subject's name), and cosign 3 still accepts it.
    assert json.loads(sig.payload)["subject"][0]["name"] == f"{server.host}/acme/policy"
    ref = f"{server.host}/acme/policy@{pushed.digest}"
    out = run_cosign("3", "verify", "--key", str(pub), *COSIGN_VERIFY_FLAGS, ref, cwd=tmp_path)
    assert pushed.digest in out.stdout
    _, other_pub = Signer.generate().write_key_pair(tmp_path, password="pw", name="other")
    wrong = run_cosign(
        "3", "verify", "--key", str(other_pub), *COSIGN_VERIFY_FLAGS, ref, cwd=tmp_path, check=False
    )
    assert_refused(wrong, BAD_DSSE_SIGNATURE)
