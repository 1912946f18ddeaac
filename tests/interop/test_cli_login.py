"""login / logout against a real registry with basic auth: inline, and via a credential helper."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.conftest import REGISTRY_PASSWORD, REGISTRY_USER, RegistryServer

pytestmark = pytest.mark.interop

# A docker credential helper speaking the real protocol (store/get/erase on
# stdin/stdout), keeping its secrets in a JSON file beside it.
HELPER = """#!{python}
import json, sys
from pathlib import Path
db = Path(__file__).with_suffix(".json")
data = json.loads(db.read_text()) if db.exists() else {{}}
action = sys.argv[1]
if action == "store":
    item = json.loads(sys.stdin.read())
    data[item["ServerURL"]] = [item["Username"], item["Secret"]]
elif action == "get":
    host = sys.stdin.read().strip()
    if host not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": host, "Username": data[host][0], "Secret": data[host][1]}}))
elif action == "erase":
    data.pop(sys.stdin.read().strip(), None)
db.write_text(json.dumps(data))
"""


def cli(
    *args: str, home: Path, stdin: str = "", path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(home / ".docker"), "HOME": str(home)}
    if path:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", "policysupply", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=home,
        env=env,
        timeout=120,
        check=False,
    )


def test_login_checks_stores_and_logout_removes(
    distribution_auth: RegistryServer, tmp_path: Path, example_dir: Path
) -> None:
    host = distribution_auth.host
    config = tmp_path / ".docker" / "config.json"
    ref = f"{host}/acme/policy:1"

    anonymous = cli("push", str(example_dir), ref, "--json", home=tmp_path)
    assert anonymous.returncode == 2
    assert json.loads(anonymous.stdout)["error"]["type"] == "AuthenticationError"

    wrong = cli(
        "login", host, "-u", REGISTRY_USER, "--password-stdin", "--json",
        home=tmp_path, stdin="not-the-password\n",
    )  # fmt: skip
    assert wrong.returncode == 2
    assert json.loads(wrong.stdout)["error"]["type"] == "AuthenticationError"
    assert "not-the-password" not in wrong.stdout + wrong.stderr
    assert not config.exists()

    ok = cli(
        "login", host, "-u", REGISTRY_USER, "--password-stdin",
        home=tmp_path, stdin=REGISTRY_PASSWORD + "\n",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "Login Succeeded" in ok.stdout
    assert REGISTRY_PASSWORD not in ok.stdout + ok.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert host in json.loads(config.read_text())["auths"]

    pushed = cli("push", str(example_dir), ref, home=tmp_path)
    assert pushed.returncode == 0, pushed.stderr

    out = cli("logout", host, home=tmp_path)
    assert out.returncode == 0
    assert host not in json.loads(config.read_text())["auths"]
    again = cli("push", str(example_dir), ref, home=tmp_path)
    assert again.returncode == 2


def test_login_goes_through_the_configured_credential_helper(
    distribution_auth: RegistryServer, tmp_path: Path, example_dir: Path
) -> None:
    host = distribution_auth.host
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(HELPER.format(python=sys.executable))
    helper.chmod(0o755)
    config = tmp_path / ".docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"credsStore": "fake", "experimental": "keep-me"}))

    ok = cli(
        "login", host, "-u", REGISTRY_USER, "--password-stdin", "--json",
        home=tmp_path, stdin=REGISTRY_PASSWORD + "\n", path=str(bin_dir),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "docker-credential-fake" in json.loads(ok.stdout)["stored_in"]
    kept = json.loads(config.read_text())
    assert kept == {"credsStore": "fake", "experimental": "keep-me"}  # nothing inline
    assert json.loads(helper.with_suffix(".json").read_text())[host][0] == REGISTRY_USER

    pushed = cli("push", str(example_dir), f"{host}/acme/policy:1", home=tmp_path,
                 path=str(bin_dir))  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr

    out = cli("logout", host, home=tmp_path, path=str(bin_dir))
    assert out.returncode == 0
    assert host not in json.loads(helper.with_suffix(".json").read_text())
