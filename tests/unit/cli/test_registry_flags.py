"""--ca-file, --insecure and --plain-http, against a loopback TLS server.

``login`` is the probe: it sends ``GET /v2/`` with the credentials, which the
test server answers, and writes docker's config only when that succeeded.
Loopback hosts get plain HTTP unless a TLS option is given, so these tests
always pass one. (The system trust store with ``SSL_CERT_FILE`` is covered
by tests/unit/_internal/test_tls.py through ``Registry.remote``.)
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from policysupply.cli import cli
from tests.unit._internal.test_tls import tls_server

__all__ = ["tls_server"]


def login(host: str, config: Path, *extra: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(
        cli,
        ["login", host, "-u", "ci", "--password-stdin", "--docker-config", str(config), *extra],
        input="s3cret\n",
        env={"SSL_CERT_FILE": None, "SSL_CERT_DIR": None, **(env or {})},
    )


def test_a_certificate_from_another_ca_is_refused(
    tls_server: tuple[str, Path],
    tmp_path: Path,
) -> None:
    from tests.unit._internal.test_tls import _self_signed

    host, _ = tls_server
    (tmp_path / "other").mkdir()
    other_ca, _ = _self_signed(tmp_path / "other")
    result = login(host, tmp_path / "config.json", "--ca-file", str(other_ca), "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert "TLS certificate of 127.0.0.1 is not trusted" in error["message"]
    assert not (tmp_path / "config.json").exists()


def test_ca_file_trusts_that_ca(tls_server: tuple[str, Path], tmp_path: Path) -> None:
    host, cert = tls_server
    config = tmp_path / "config.json"
    result = login(host, config, "--ca-file", str(cert))
    assert result.exit_code == 0, result.output
    assert "Login Succeeded" in result.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["auths"][host]["auth"]


def test_insecure_skips_verification(tls_server: tuple[str, Path], tmp_path: Path) -> None:
    host, _ = tls_server
    assert login(host, tmp_path / "config.json", "--insecure").exit_code == 0


def test_a_ca_file_that_is_not_pem_is_a_clear_error(
    tls_server: tuple[str, Path],
    tmp_path: Path,
) -> None:
    host, _ = tls_server
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    result = login(host, tmp_path / "config.json", "--ca-file", str(bogus), "--json")
    assert result.exit_code == 2
    assert "cannot use the CA file" in json.loads(result.stdout)["error"]["message"]


@pytest.mark.parametrize("extra", [["--insecure"], ["--ca-file", "ca.pem"]])
def test_plain_http_with_tls_options_is_a_usage_error(tmp_path: Path, extra: list[str]) -> None:
    (tmp_path / "ca.pem").write_text("x")
    extra = [str(tmp_path / e) if e == "ca.pem" else e for e in extra]
    result = CliRunner().invoke(
        cli, ["verify", "registry.example.com/a/b:1", "-k", "x", "--plain-http", *extra]
    )
    assert result.exit_code == 2
