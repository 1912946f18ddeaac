"""TrustPolicy.from_file, its shipped JSON Schema, allowed_registries, and --policy."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from policysupply import (
    Bundle,
    ClaimMismatchError,
    Registry,
    Signer,
    TrustPolicy,
    VerificationError,
    Verifier,
)
from policysupply.cli import cli


def schema() -> dict[str, object]:
    text = (resources.files("policysupply") / "schemas" / "trust-policy.schema.json").read_text()
    doc: dict[str, object] = json.loads(text)
    return doc


def test_the_shipped_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, Signer]:
    a, b = Signer.generate(), Signer.generate()
    (tmp_path / "a.pub").write_bytes(a.public_key_pem)
    (tmp_path / "b.pub").write_bytes(b.public_key_pem)
    return a, b


FULL = """\
version: 1
keys: [a.pub, b.pub]
identities:
  - issuer: https://token.actions.githubusercontent.com
    subject_regex: https://github\\.com/acme/.*
    extensions: {github_workflow_repository: acme/policies}
threshold: 2
annotations: {env: prod}
docker_reference: exact
attestations: [https://slsa.dev/provenance/v1]
allowed_registries: [ghcr.io/acme]
signing_time: {max_age: 7d}
transparency_log: required
require_sct: true
"""


def test_every_field_is_read_and_the_file_validates_against_the_schema(
    tmp_path: Path, keys: tuple[Signer, Signer]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(FULL)
    jsonschema.validate(yaml.safe_load(FULL), schema())
    policy = TrustPolicy.from_file(path)
    assert len(policy.keys) == 2  # paths are relative to the file, not the working directory
    assert policy.identities[0].subject_regex == "https://github\\.com/acme/.*"
    assert policy.identities[0].extensions == {"github_workflow_repository": "acme/policies"}
    assert policy.threshold == 2
    assert policy.annotations == {"env": "prod"}
    assert policy.docker_reference == "exact"
    assert policy.attestations == ("https://slsa.dev/provenance/v1",)
    assert policy.allowed_registries == ("ghcr.io/acme",)
    assert policy.max_signature_age == dt.timedelta(days=7)
    assert policy.require_tlog is True
    assert TrustPolicy.from_file(path, threshold=1).threshold == 1


def test_json_files_and_the_shipped_example(tmp_path: Path, keys: tuple[Signer, Signer]) -> None:
    (tmp_path / "p.json").write_text(json.dumps({"keys": ["a.pub"], "threshold": 1}))
    assert len(TrustPolicy.from_file(tmp_path / "p.json").keys) == 1
    example = resources.files("policysupply") / "examples" / "trust-policy.yaml"
    jsonschema.validate(yaml.safe_load(example.read_text()), schema())
    (tmp_path / "trust-policy.yaml").write_text(example.read_text())
    (tmp_path / "cosign.pub").write_bytes(keys[0].public_key_pem)
    assert TrustPolicy.from_file(tmp_path / "trust-policy.yaml").max_signature_age


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("keys: [a.pub]\nthreshhold: 2\n", "threshhold: unknown field"),
        ("keys: [a.pub]\nidentities: [{issuer: x, subjet: y}]\n", "unknown field(s) subjet"),
        ("keys: a.pub\n", "keys: must be a list"),
        ("keys: [a.pub]\nthreshold: 'two'\n", "threshold: must be a whole number"),
        ("keys: [a.pub]\nthreshold: 3\n", "threshold 3 cannot be met"),
        ("keys: [a.pub]\nsigning_time: {max_age: 99999999999d}\n", "longer than 100 years"),
        ("keys: [a.pub]\nsigning_time: {max_age: soon}\n", "not a duration"),
        ("keys: [missing.pub]\n", "cannot read public key"),
        ("keys: [a.pub]\ntransparency_log: sometimes\n", "must be default, required or ignore"),
        ("version: 2\nkeys: [a.pub]\n", "only version 1"),
        ("[1, 2]\n", "must be a mapping"),
        ("keys: [a.pub\n", "not valid YAML"),
        ("{}\n", "needs at least one key or identity"),
    ],
)
def test_a_typo_or_a_wrong_type_is_refused_never_ignored(
    tmp_path: Path, keys: tuple[Signer, Signer], text: str, complaint: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(VerificationError) as err:
        TrustPolicy.from_file(path)
    assert complaint in str(err.value)


def test_deeply_nested_policy_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VerificationError, match="nested too deeply"):
        TrustPolicy.from_file(path)


def test_signed_image_from_a_registry_outside_allowed_registries_is_refused(
    tmp_path: Path,
) -> None:
    # Attack: a correctly signed artifact pushed under another name (or copied to
    # an attacker's registry) must not verify when the policy pins the location.
    signer = Signer.generate()
    reg = Registry.local(tmp_path / "layout")
    bundle = Bundle(modules={"p.rego": "package p\n"})
    for name in ("acme/policy:1", "evil/policy:1"):
        reg.push(bundle, name)
        signer.sign(reg, name)
    policy = TrustPolicy(keys=[signer.public_key_pem], allowed_registries=["acme"])
    assert Verifier(policy).verify(reg, "acme/policy:1").digest
    with pytest.raises(ClaimMismatchError, match="not under an allowed registry"):
        Verifier(policy).verify(reg, "evil/policy:1")
    prefix_trick = TrustPolicy(keys=[signer.public_key_pem], allowed_registries=["acm"])
    with pytest.raises(ClaimMismatchError):  # whole path components only
        Verifier(prefix_trick).verify(reg, "acme/policy:1")


def test_cli_policy_flag_is_read_by_verify_and_gate(tmp_path: Path) -> None:
    signer = Signer.generate()
    (tmp_path / "cosign.pub").write_bytes(signer.public_key_pem)
    reg = Registry.local(tmp_path / "layout")
    bundle = Bundle(modules={"p.rego": "package p\n"})
    for name in ("acme/web:1", "evil/web:1"):
        reg.push(bundle, name)
        signer.sign(reg, name)
    (tmp_path / "policy.yaml").write_text("keys: [cosign.pub]\nallowed_registries: [acme]\n")
    base = f"oci:{tmp_path / 'layout'}:"
    policy = ["--policy", str(tmp_path / "policy.yaml")]
    run = CliRunner().invoke
    assert run(cli, ["verify", base + "acme/web:1", *policy]).exit_code == 0
    refused = run(cli, ["verify", base + "evil/web:1", *policy, "--json"])
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["error"]["type"] == "ClaimMismatchError"
    denied = run(cli, ["gate", base + "evil/web:1", *policy])
    assert denied.exit_code == 1
    assert "allowed_registries:" in denied.stdout
    # Flags add to the file: a second key raises what the threshold can reach.
    (tmp_path / "other.pub").write_bytes(Signer.generate().public_key_pem)
    short = run(cli, ["verify", base + "acme/web:1", *policy, "-k", str(tmp_path / "other.pub"),
                      "--threshold", "2"])  # fmt: skip
    assert short.exit_code == 1
