"""``verify --require-attestation`` and ``gate``'s keyless ``--rules-certificate-*`` flags.

On local OCI layouts through click's runner: attestations made with
``Signer.attest``; keyless rules signatures from an in-process Sigstore
(real crypto) whose ``trusted_root.json`` is passed as ``--trusted-root``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policysupply import Registry, Signer
from policysupply.identity import GITHUB_ACTIONS_ISSUER
from tests.unit._sigstore_pki import FakeBackend, FakeSigstore
from tests.unit.cli.test_commands import PASSWORD, as_json, invoke
from tests.unit.cli.test_gate_cmd import CUSTOM_RULES

SLSA = "https://slsa.dev/provenance/v1"
SBOM = "https://spdx.dev/Document"
WORKFLOW = "https://github.com/acme/gate-rules/.github/workflows/release.yml@refs/heads/main"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, Path]:
    """A signer and its public key file."""
    (tmp_path / "keys").mkdir()
    signer = Signer.generate()
    _, pub = signer.write_key_pair(tmp_path / "keys", password=PASSWORD)
    return signer, pub


@pytest.fixture
def layout(tmp_path: Path, example_dir: Path) -> tuple[Registry, str]:
    """A local layout holding the example bundle as ``acme/policy:1.0``, and its CLI ref."""
    ref = f"oci:{tmp_path / 'layout'}:acme/policy:1.0"
    assert invoke("push", str(example_dir), ref).exit_code == 0
    return Registry.local(tmp_path / "layout"), ref


# -- verify --require-attestation ------------------------------------------------------


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_verify_requires_each_attested_predicate_type(
    scheme: str, keys: tuple[Signer, Path], layout: tuple[Registry, str]
) -> None:
    signer, pub = keys
    reg, ref = layout
    signer.sign(reg, "acme/policy:1.0", scheme=scheme)  # type: ignore[arg-type]

    # Signed, but not attested: a verification failure (exit 1), not a setup error.
    missing = invoke("verify", ref, "-k", str(pub), "--require-attestation", SLSA, "--json")
    assert (missing.exit_code, as_json(missing)["error"]["type"]) == (1, "MissingAttestationError")
    assert SLSA in str(as_json(missing)["error"]["message"])
    # Without the flag the attestation is not asked for.
    assert invoke("verify", ref, "-k", str(pub)).exit_code == 0

    signer.attest(
        reg,
        "acme/policy:1.0",
        predicate_type=SLSA,
        predicate={"buildDefinition": {"buildType": "https://example.com/ci"}},
        scheme=scheme,  # type: ignore[arg-type]
    )
    ok = invoke("verify", ref, "-k", str(pub), "--require-attestation", SLSA, "--json")
    assert ok.exit_code == 0, ok.output
    doc = as_json(ok)
    assert doc["attestations"] == [
        {
            "predicate_type": SLSA,
            "key_id": signer.key_id,
            "scheme": scheme,
            "annotations": {},
            "signed_at": None,
            "witnessed_at": None,
        }
    ]
    text = invoke("verify", ref, "-k", str(pub), "--require-attestation", SLSA)
    assert text.exit_code == 0, text.output
    assert f"{scheme} attestation {SLSA} by {signer.key_id}" in text.stdout

    # Repeatable: every type is required, so one missing type fails.
    both = invoke(
        "verify", ref, "-k", str(pub), "--require-attestation", SLSA,
        "--require-attestation", SBOM, "--json",
    )  # fmt: skip
    assert (both.exit_code, as_json(both)["error"]["type"]) == (1, "MissingAttestationError")
    assert SBOM in str(as_json(both)["error"]["message"])


def test_verify_refuses_an_attestation_by_an_untrusted_key(
    keys: tuple[Signer, Path], layout: tuple[Registry, str]
) -> None:
    signer, pub = keys
    reg, ref = layout
    signer.sign(reg, "acme/policy:1.0")
    Signer.generate().attest(reg, "acme/policy:1.0", predicate_type=SLSA, predicate={"x": 1})
    result = invoke("verify", ref, "-k", str(pub), "--require-attestation", SLSA, "--json")
    assert (result.exit_code, as_json(result)["error"]["type"]) == (1, "UntrustedSignatureError")


# -- gate --rules-certificate-identity / --rules-certificate-oidc-issuer ----------------


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def gate_setup(
    fake: FakeSigstore, keys: tuple[Signer, Path], layout: tuple[Registry, str], tmp_path: Path
) -> list[str]:
    """A key-signed image and a keyless-signed rules image; the common gate arguments."""
    signer, pub = keys
    reg, image = layout
    signer.sign(reg, "acme/policy:1.0")
    src = tmp_path / "rules"
    src.mkdir()
    (src / "custom.rego").write_text(CUSTOM_RULES)
    rules_ref = f"oci:{tmp_path / 'layout'}:acme/gate-rules:1"
    assert invoke("push", str(src), rules_ref).exit_code == 0
    Signer._with_keyless(FakeBackend(fake, subject=WORKFLOW)).sign(reg, "acme/gate-rules:1")
    root = fake.write_trusted_root(tmp_path / "trusted_root.json")
    return [
        image, "-k", str(pub), "--trusted-root", str(root),
        "--rules", rules_ref, "--query", "data.custom.decision",
    ]  # fmt: skip


def test_gate_rules_image_signed_keyless_by_the_named_identity(gate_setup: list[str]) -> None:
    identity = [
        "--rules-certificate-identity", WORKFLOW,
        "--rules-certificate-oidc-issuer", GITHUB_ACTIONS_ISSUER,
    ]  # fmt: skip
    allowed = invoke("gate", *gate_setup, *identity, "--context", '{"env": "dev"}')
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.startswith("ALLOW")
    denied = invoke("gate", *gate_setup, *identity, "--context", '{"env": "prod"}')
    assert denied.exit_code == 1
    assert "dev_only: only dev deployments" in denied.stdout

    # The image's key does not vouch for the rules: without --rules-* trust they are refused.
    by_image_key = invoke("gate", *gate_setup, "--json")
    assert (by_image_key.exit_code, as_json(by_image_key)["error"]["type"]) == (
        1,
        "UntrustedSignatureError",
    )


def test_gate_rules_signed_by_another_identity_are_refused(gate_setup: list[str]) -> None:
    other = WORKFLOW.replace("acme/gate-rules", "evil/gate-rules")
    result = invoke(
        "gate", *gate_setup, "--rules-certificate-identity", other,
        "--rules-certificate-oidc-issuer", GITHUB_ACTIONS_ISSUER, "--json",
    )  # fmt: skip
    assert (result.exit_code, as_json(result)["error"]["type"]) == (1, "IdentityMismatchError")


@pytest.mark.parametrize(
    "extra",
    [
        ["--rules-certificate-identity", WORKFLOW],
        ["--rules-certificate-oidc-issuer", GITHUB_ACTIONS_ISSUER],
    ],
)
def test_gate_rules_identity_needs_both_flags(gate_setup: list[str], extra: list[str]) -> None:
    result = invoke("gate", *gate_setup, *extra)
    assert result.exit_code == 2
    assert "go together" in result.output


def test_gate_rules_identity_with_local_rules_is_a_usage_error(
    keys: tuple[Signer, Path], layout: tuple[Registry, str], tmp_path: Path
) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "custom.rego").write_text(CUSTOM_RULES)
    result = invoke(
        "gate", layout[1], "-k", str(keys[1]), "--rules", str(tmp_path / "r"),
        "--rules-certificate-identity", WORKFLOW,
        "--rules-certificate-oidc-issuer", GITHUB_ACTIONS_ISSUER,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "apply to a --rules policy image" in result.output
