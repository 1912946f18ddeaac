"""gate -o text|json|junit|sarif|markdown over several images, checked structurally."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner, Result

from policysupply import Bundle, Registry, Signer
from policysupply.cli import cli

# The parts of the SARIF 2.1.0 schema (OASIS) that consumers such as GitHub code
# scanning rely on; the full schema is not available offline.
SARIF_ESSENTIALS = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string", "format": "uri"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "version": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": {
                                                    "type": "object",
                                                    "required": ["text"],
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {
                                    "type": "object",
                                    "required": ["text"],
                                    "properties": {"text": {"type": "string"}},
                                },
                                "locations": {"type": "array"},
                            },
                        },
                    },
                    "invocations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["executionSuccessful"],
                            "properties": {"executionSuccessful": {"type": "boolean"}},
                        },
                    },
                },
            },
        },
    },
}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, str, str, str]:
    """A signed image, an unsigned one, a missing one (in a layout), and the public key."""
    signer = Signer.generate()
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(signer.public_key_pem)
    reg = Registry.local(tmp_path / "layout")
    bundle = Bundle(modules={"p.rego": "package p\n"})
    reg.push(bundle, "acme/web:1")
    signer.sign(reg, "acme/web:1")
    reg.push(bundle, "acme/miner:1")
    base = f"oci:{tmp_path / 'layout'}:"
    return pub, base + "acme/web:1", base + "acme/miner:1", base + "acme/gone:1"


def test_json_for_several_images_keeps_the_user_facing_reference(
    images: tuple[Path, str, str, str],
) -> None:
    pub, good, bad, _ = images
    result = invoke("gate", good, bad, "-k", str(pub), "--json")
    assert result.exit_code == 1  # the worst: a DENY
    doc = json.loads(result.stdout)
    assert [r["decision"] for r in doc["results"]] == ["allow", "deny"]
    assert doc["allowed"] is False
    assert doc["exit_code"] == 1
    for r, given in zip(doc["results"], (good, bad), strict=True):
        # The layout prefix the text shows is kept (it was dropped on the old CLI).
        assert r["reference"].startswith(given.rsplit(":", 1)[0] + "@sha256:")
    single = json.loads(invoke("gate", good, "-k", str(pub), "--json").stdout)
    assert single["reference"].startswith("oci:")
    assert single["allowed"] is True
    assert single["decision"] == "allow"


def test_junit_has_a_case_per_rule_with_reasons_and_evidence(
    images: tuple[Path, str, str, str],
) -> None:
    pub, good, bad, gone = images
    result = invoke("gate", good, bad, gone, "-k", str(pub), "-o", "junit")
    assert result.exit_code == 2  # no decision for the missing image: worse than a DENY
    root = ET.fromstring(result.stdout.split("\n", 1)[1])  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 3
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases)
        assert int(suite.get("failures", "-1")) == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors", "-1")) == len(suite.findall("testcase/error"))
    allowed, denied, missing = suites
    assert allowed.get("failures") == "0"
    assert {c.get("name") for c in allowed.findall("testcase")} >= {"unsigned", "verification"}
    failed = denied.findall("testcase/failure")
    assert [f.get("type") for f in failed] == ["unsigned"]
    assert "no signature on" in (failed[0].get("message") or "")
    assert '"verification"' in (failed[0].text or "")  # the evidence: the gate input
    assert missing.findall("testcase/error")[0].get("type") == "NotFoundError"
    assert int(root.get("tests", "0")) == sum(int(s.get("tests", "0")) for s in suites)


def test_sarif_is_valid_2_1_0_with_a_result_per_fired_rule(
    images: tuple[Path, str, str, str], tmp_path: Path
) -> None:
    pub, good, bad, _ = images
    out = tmp_path / "gate.sarif"
    result = invoke("gate", good, bad, "-k", str(pub), "-o", "sarif", "--output-file", str(out))
    assert result.exit_code == 1
    assert "DENY" in result.stderr  # a one-line verdict per image still shows
    sarif = json.loads(out.read_text())
    jsonschema.validate(sarif, SARIF_ESSENTIALS)
    run = sarif["runs"][0]
    rule_ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert [r["ruleId"] for r in run["results"]] == ["unsigned"]
    assert all(r["ruleId"] in rule_ids for r in run["results"])
    assert run["results"][0]["properties"]["evidence"]["verification"]["verified"] is False
    assert run["invocations"][0]["exitCode"] == 1


def test_markdown_summary_and_images_from_a_file(
    images: tuple[Path, str, str, str], tmp_path: Path
) -> None:
    pub, good, bad, _ = images
    listing = tmp_path / "images.txt"
    listing.write_text(f"# images to deploy\n{good}\n\n{bad}  # the miner\n")
    result = invoke("gate", "--images-from", str(listing), "-k", str(pub), "-o", "markdown")
    assert result.exit_code == 1
    md = result.stdout
    assert md.startswith("## policysupply gate: 1 of 2 images allowed")
    assert "| Image | Verdict | Reasons |" in md
    assert "✅ ALLOW" in md
    assert "❌ DENY" in md
    assert "<details>" in md
    assert "❌ `unsigned`" in md


def test_text_is_the_default_and_json_flag_conflicts_with_other_formats(
    images: tuple[Path, str, str, str],
) -> None:
    pub, good, bad, _ = images
    result = invoke("gate", good, bad, "-k", str(pub))
    assert result.exit_code == 1
    assert result.stdout.startswith("ALLOW ")
    assert "\nDENY " in result.stdout
    assert "  - unsigned: no signature on" in result.stdout
    clash = invoke("gate", good, "-k", str(pub), "--json", "-o", "junit")
    assert clash.exit_code == 2
