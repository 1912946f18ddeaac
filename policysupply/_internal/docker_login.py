"""``login`` and ``logout``: writing registry credentials where docker, oras and cosign read them.

The docker CLI's rules: a ``credHelpers[host]`` entry, else ``credsStore``,
receives the credentials through ``docker-credential-<name> store`` /
``erase``; without a helper they go inline into ``auths[host].auth``
(base64 ``user:password``). The file is rewritten atomically with mode
0600 and every other key kept.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from policysupply._internal.credentials import (
    Credentials,
    docker_config_path,
    read_docker_config,
)
from policysupply.errors import AuthenticationError

_HELPER_TIMEOUT = 30.0


def _read(path: Path) -> dict[str, Any]:
    return read_docker_config(path, empty_ok=True, hint="; fix or move it, then log in again")


def _write(path: Path, config: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(config, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise AuthenticationError(
            f"cannot write docker config {path}: {exc.strerror or exc}"
        ) from None


def _helper_for(config: dict[str, Any], host: str) -> str | None:
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict) and isinstance(helpers.get(host), str):
        return str(helpers[host])
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def _run_helper(helper: str, action: str, payload: bytes, host: str) -> None:
    binary = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [binary, action],
            input=payload,
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise AuthenticationError(
            f"docker config names credential helper {helper!r}, but {binary} is not on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise AuthenticationError(f"credential helper {binary} did not answer") from None
    if proc.returncode != 0:
        if action == "erase" and b"not found" in (proc.stdout + proc.stderr).lower():
            return
        # What a helper prints may contain secrets: never repeat it.
        raise AuthenticationError(
            f"credential helper {binary} {action} failed for {host} (exit {proc.returncode})"
        )


def store(host: str, creds: Credentials, path: Path | None = None) -> str:
    """Stores ``creds`` for ``host``; returns where (``helper <name>`` or the file)."""
    path = path or docker_config_path()
    config = _read(path)
    helper = _helper_for(config, host)
    if helper is not None:
        payload = json.dumps(
            {"ServerURL": host, "Username": creds.username, "Secret": creds.password}
        ).encode()
        _run_helper(helper, "store", payload, host)
        return f"credential helper docker-credential-{helper}"
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    auths[host] = {"auth": token}
    config["auths"] = auths
    _write(path, config)
    return str(path)


def erase(host: str, path: Path | None = None) -> bool:
    """Removes the credentials for ``host``; returns whether there were any in the file."""
    path = path or docker_config_path()
    config = _read(path)
    helper = _helper_for(config, host)
    if helper is not None:
        _run_helper(helper, "erase", host.encode(), host)
    auths = config.get("auths")
    found = False
    if isinstance(auths, dict):
        for key in [k for k in auths if isinstance(k, str) and _host_of(k) == host]:
            del auths[key]
            found = True
    if found:
        _write(path, config)
    return found or helper is not None


def _host_of(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0]


def check(registry: Any, host: str) -> None:
    """Asks ``registry`` (built with the credentials to check) for ``GET /v2/``.

    Raises:
        AuthenticationError: The registry refused the credentials.
        RegistryError: Anything else went wrong (``TransientRegistryError``
            when it cannot be reached).
    """
    client = registry._store.client

    def ping() -> None:
        resp = client.send("GET", "/v2/", scope="", what=f"login to {host}")
        resp.close()

    client.retrying(f"login to {host}", ping)
