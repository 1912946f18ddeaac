"""``policysupply gate`` on local layouts: verdicts, exit codes, rules from a signed image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result

from policysupply import Signer
from tests.unit.cli.test_commands import PASSWORD, as_json, invoke

CUSTOM_RULES = """package custom

import rego.v1

default allow := false

allow if input.context.env == "dev"

deny contains {"rule": "dev_only", "message": "only dev deployments"} if not allow

decision := {"allow": allow, "deny": deny}
"""


@pytest.fixture
def signer_files(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "keys"
    d.mkdir()
    return Signer.generate().write_key_pair(d, password=PASSWORD)


@pytest.fixture
def image(tmp_path: Path, example_dir: Path) -> str:
    ref = f"oci:{tmp_path / 'layout'}:acme/app:1.4"
    assert invoke("push", str(example_dir), ref).exit_code == 0
    return ref


def gate(*args: str, stdin: str | None = None) -> Result:
    return invoke("gate", *args, stdin=stdin)


def test_unsigned_image_is_denied_with_exit_1(image: str, signer_files: tuple[Path, Path]) -> None:
    result = gate(image, "--key", str(signer_files[1]))
    assert result.exit_code == 1
    assert result.stdout.startswith("DENY oci:")
    assert "unsigned: no signature on acme/app:1.4" in result.stdout


def test_signed_image_is_allowed_and_json_carries_the_evidence(
    image: str, signer_files: tuple[Path, Path]
) -> None:
    assert invoke("sign", image, "--key", str(signer_files[0])).exit_code == 0
    result = gate(image, "-k", str(signer_files[1]), "--context", '{"env": "prod"}', "--json")
    assert result.exit_code == 0, result.output
    doc = as_json(result)
    assert (doc["allowed"], doc["decision"], doc["reasons"]) == (True, "allow", [])
    evidence = doc["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["input"]["context"] == {"env": "prod"}
    assert evidence["input"]["verification"]["verified"] is True


def test_rules_violation_names_the_rule(image: str, signer_files: tuple[Path, Path]) -> None:
    assert invoke("sign", image, "--key", str(signer_files[0])).exit_code == 0
    result = gate(image, "-k", str(signer_files[1]), "--allow-registry", "ghcr.io/acme")
    assert result.exit_code == 1
    assert "allowed_registries: acme/app is not from an allowed registry" in result.stdout


def test_untrusted_signer_is_denied(
    image: str, signer_files: tuple[Path, Path], tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    other_key, _ = Signer.generate().write_key_pair(tmp_path / "other", password=PASSWORD)
    assert invoke("sign", image, "--key", str(other_key)).exit_code == 0
    result = gate(image, "-k", str(signer_files[1]), "--json")
    assert result.exit_code == 1
    assert as_json(result)["reasons"][0].startswith("untrusted_signer:")  # type: ignore[index]


def test_rules_from_a_signed_policy_image(
    image: str, signer_files: tuple[Path, Path], tmp_path: Path
) -> None:
    key, pub = signer_files
    assert invoke("sign", image, "--key", str(key)).exit_code == 0
    src = tmp_path / "rules"
    src.mkdir()
    (src / "custom.rego").write_text(CUSTOM_RULES)
    rules_ref = f"oci:{tmp_path / 'layout'}:acme/gate-rules:1"
    assert invoke("push", str(src), rules_ref).exit_code == 0
    args = [image, "-k", str(pub), "--rules", rules_ref, "--query", "data.custom.decision"]

    # Unsigned rules are refused before any decision (exit 1, verification failure).
    refused = gate(*args, "--rules-key", str(pub), "--json")
    assert refused.exit_code == 1
    assert as_json(refused)["error"]["type"] == "NoSignatureError"

    assert invoke("sign", rules_ref, "--key", str(key)).exit_code == 0
    allowed = gate(*args, "--rules-key", str(pub), "--context", "-", stdin='{"env": "dev"}')
    assert allowed.exit_code == 0, allowed.output
    denied = gate(*args, "--context", json.dumps({"env": "prod"}))
    assert denied.exit_code == 1
    assert "dev_only: only dev deployments" in denied.stdout


def test_rules_from_a_directory(
    image: str, signer_files: tuple[Path, Path], tmp_path: Path
) -> None:
    assert invoke("sign", image, "--key", str(signer_files[0])).exit_code == 0
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "custom.rego").write_text(CUSTOM_RULES)
    ctx = tmp_path / "ctx.json"
    ctx.write_text('{"env": "dev"}')
    result = gate(
        image,
        "-k",
        str(signer_files[1]),
        "--rules",
        str(tmp_path / "r"),
        "--query",
        "data.custom.decision",
        "--context",
        str(ctx),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ALLOW")


@pytest.mark.parametrize(
    "extra",
    [
        ["--context", "[1, 2]"],
        ["--context", "{not json"],
        ["--context", "/nonexistent/ctx.json"],
        ["--rules-key", "{pub}"],
        ["--rules", "/nonexistent/rules"],
    ],
)
def test_configuration_errors_exit_2(
    image: str, signer_files: tuple[Path, Path], extra: list[str]
) -> None:
    args = [a.replace("{pub}", str(signer_files[1])) for a in extra]
    result = gate(image, "-k", str(signer_files[1]), *args)
    assert result.exit_code == 2, result.output


def test_missing_image_is_exit_2_not_a_deny(image: str, signer_files: tuple[Path, Path]) -> None:
    result = gate(image.replace(":1.4", ":nope"), "-k", str(signer_files[1]), "--json")
    assert result.exit_code == 2
    assert as_json(result)["error"]["type"] == "NotFoundError"
