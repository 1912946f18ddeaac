"""Docker ``config.json`` files (``policysupply._internal.credentials``).

Credential helpers named by the file are looked up on an empty PATH, so none
runs: a helper that is missing must be a typed error too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply._internal import credentials

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-docker-config-"))
_PATH = _DIR / "config.json"


def one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    for host in ("registry.test", "127.0.0.1:5000"):
        creds = credentials.from_docker_config(host, _PATH)
        if creds is not None:
            assert repr(creds).endswith("password=***)"), "password in repr"
            creds.basic_header()


if __name__ == "__main__":
    os.environ["PATH"] = str(_DIR)  # no docker-credential-* helper can be found
    _harness.run(one_input)
