"""Registry credentials: explicit ones, and the user's docker ``config.json``.

Lookup order for a host follows the docker CLI: ``credHelpers[host]``, then
``credsStore``, then an inline ``auths[host]`` entry. Helpers are run as
``docker-credential-<name> get`` with a timeout; a helper that says it has no
credentials means anonymous access, any other failure is an
``AuthenticationError`` that never repeats what the helper printed (it may
contain secrets).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

import attrs

from policysupply.errors import AuthenticationError

_HELPER_TIMEOUT = 10.0


@attrs.frozen(kw_only=True)
class Credentials:
    """A user name and password (or token) for one registry.

    The password never appears in ``repr`` or in any error message.

    Attributes:
        username: User name (``<token>`` when ``password`` is an identity token).
        password: Password or token.
    """

    username: str
    password: str = attrs.field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"

    def basic_header(self) -> str:
        """The ``Authorization`` header value for HTTP basic auth."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def _normalise_host(key: str) -> str:
    # config.json keys come as "host", "https://host", "http://host/v1/" ...
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0]


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def read_docker_config(path: Path, *, empty_ok: bool = False, hint: str = "") -> dict[str, Any]:
    """A docker ``config.json`` as a JSON object (``{}`` when the file does not exist).

    Args:
        path: The file.
        empty_ok: An empty file reads as ``{}`` (as ``docker login`` treats it).
        hint: Appended to the message when the file is not valid JSON.

    Raises:
        AuthenticationError: The file cannot be read, or is not a JSON object.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AuthenticationError(f"cannot read docker config {path}: {exc.strerror}") from None
    try:
        obj = json.loads(raw) if raw.strip() or not empty_ok else {}
    except (ValueError, RecursionError):
        raise AuthenticationError(f"docker config {path} is not valid JSON{hint}") from None
    if not isinstance(obj, dict):
        raise AuthenticationError(f"docker config {path} is not a JSON object")
    return obj


def _from_helper(helper: str, host: str) -> Credentials | None:
    import subprocess  # only when a helper is configured: keeps import policysupply fast

    binary = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [binary, "get"],
            input=host.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise AuthenticationError(
            f"docker config names credential helper {helper!r} for {host}, "
            f"but {binary} is not on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise AuthenticationError(
            f"credential helper {binary} did not answer for {host} within {_HELPER_TIMEOUT:g}s"
        ) from None
    if proc.returncode != 0:
        if b"credentials not found" in proc.stdout.lower() + proc.stderr.lower():
            return None
        raise AuthenticationError(
            f"credential helper {binary} failed for {host} (exit {proc.returncode})"
        )
    try:
        payload = json.loads(proc.stdout)
        username, secret = payload["Username"], payload["Secret"]
    except (ValueError, KeyError, TypeError):
        raise AuthenticationError(
            f"credential helper {binary} returned malformed output for {host}"
        ) from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise AuthenticationError(f"credential helper {binary} returned non-string fields")
    return Credentials(username=username, password=secret)


def _from_auths(auths: dict[str, Any], host: str, path: Path) -> Credentials | None:
    entry = None
    for key, value in auths.items():
        if isinstance(key, str) and _normalise_host(key) == host:
            entry = value
            break
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(username=entry["username"], password=entry["password"])
    encoded = entry.get("auth")
    if not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, TypeError):
        sep = ""
    if not sep:
        raise AuthenticationError(f"docker config {path}: the auth entry for {host} is malformed")
    return Credentials(username=user, password=password)


def from_docker_config(host: str, path: Path | None = None) -> Credentials | None:
    """Credentials for ``host`` from the docker config, or None for anonymous.

    Raises:
        AuthenticationError: The config or a credential helper is broken.
    """
    path = path or docker_config_path()
    config = read_docker_config(path)
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if isinstance(key, str) and _normalise_host(key) == host and isinstance(helper, str):
                return _from_helper(helper, host)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, host)
        if found is not None:
            return found
    auths = config.get("auths") or {}
    return _from_auths(auths, host, path) if isinstance(auths, dict) else None
