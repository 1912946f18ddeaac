from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from policysupply import AuthenticationError
from policysupply._internal.credentials import Credentials, from_docker_config


def write(tmp_path: Path, obj: object) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(obj))
    return p


def test_auths_forms(tmp_path: Path) -> None:
    b64 = base64.b64encode(b"alice:pa:ss").decode()
    p = write(
        tmp_path,
        {
            "auths": {
                "https://reg.test/v1/": {"auth": b64},
                "other.test": {"username": "bob", "password": "pw"},
            }
        },
    )
    assert from_docker_config("reg.test", p) == Credentials(username="alice", password="pa:ss")
    assert from_docker_config("other.test", p) == Credentials(username="bob", password="pw")
    assert from_docker_config("unknown.test", p) is None
    assert from_docker_config("reg.test", tmp_path / "absent.json") is None


def test_malformed_config_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(AuthenticationError, match="not valid JSON"):
        from_docker_config("reg.test", p)
    p = write(tmp_path, {"auths": {"reg.test": {"auth": "!!!"}}})
    with pytest.raises(AuthenticationError, match="malformed"):
        from_docker_config("reg.test", p)


def test_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"auths": {"reg.test": {"username": "u", "password": "p"}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert from_docker_config("reg.test") == Credentials(username="u", password="p")
