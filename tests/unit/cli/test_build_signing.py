"""`policysupply build --signing-key`: OPA-native signatures from the CLI."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from click.testing import CliRunner

from policysupply import Bundle
from policysupply.cli import cli
from policysupply.native import NativeKey, NativeTrust

VECTORS = Path(__file__).resolve().parents[2] / "fixtures" / "opa_signed"


def _header(b: Bundle) -> dict[str, str]:
    token = json.loads(b.files[".signatures.json"])["signatures"][0]
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))  # type: ignore[no-any-return]


def test_build_with_signing_key_defaults_like_opa_build(tmp_path: Path, example_dir: Path) -> None:
    out = tmp_path / "b.tar.gz"
    res = CliRunner().invoke(
        cli,
        ["build", str(example_dir), "-o", str(out), "--signing-key", str(VECTORS / "keys/rsa.pem")],
    )
    assert res.exit_code == 0, res.output
    trust = NativeTrust(keys={"default": NativeKey(key=VECTORS / "keys/rsa.pub")})
    b = Bundle.from_file(out, native=trust)
    assert _header(b) == {"alg": "RS256", "kid": "default", "typ": "JWT"}


def test_build_with_alg_scope_claims_and_key_id(tmp_path: Path, example_dir: Path) -> None:
    out = tmp_path / "b.tar.gz"
    claims = tmp_path / "claims.json"
    claims.write_text('{"iss": "ci", "n": 2.50}')
    res = CliRunner().invoke(
        cli,
        [
            "build", str(example_dir), "-o", str(out),
            "--signing-key", str(VECTORS / "keys/ec-P-384.pem"), "--signing-alg", "ES384",
            "--claims-file", str(claims), "--scope", "prod", "--key-id", "ci-2026",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    key = NativeKey(key=VECTORS / "keys/ec-P-384.pub", algorithm="ES384", scope="prod")
    b = Bundle.from_file(out, native=NativeTrust(keys={"ci-2026": key}))
    token = json.loads(b.files[".signatures.json"])["signatures"][0]
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert b'"n":2.50' in payload  # number text kept, as OPA keeps it
    assert _header(b)["kid"] == "ci-2026"


def test_signing_options_need_a_key(tmp_path: Path, example_dir: Path) -> None:
    res = CliRunner().invoke(cli, ["build", str(example_dir), "--scope", "x"])
    assert res.exit_code != 0
    assert "--signing-key" in res.output


def test_bad_signing_key_is_a_clear_error(tmp_path: Path, example_dir: Path) -> None:
    res = CliRunner().invoke(
        cli,
        ["build", str(example_dir), "-o", str(tmp_path / "b"), "--signing-key", "/nope.pem"],
    )
    assert res.exit_code != 0
    assert "signing key" in res.output
    assert not (tmp_path / "b").exists()
