"""httpx is imported without its CLI, and stays fully usable afterwards."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_remote_registry_does_not_load_httpx_cli_and_httpx_still_works() -> None:
    out = run(
        "import sys\n"
        "from policysupply import Registry\n"
        "Registry.remote('127.0.0.1:5000').close()\n"
        "print(sorted(m for m in ('httpx._main', 'rich', 'pygments') if m in sys.modules))\n"
        "import httpx._main, httpx\n"
        "print(httpx._main.__file__.endswith('_main.py'), callable(httpx.main))\n"
    )
    loaded, real = out.splitlines()
    assert loaded == "[]"
    assert real == "True True"


def test_httpx_imported_first_is_left_alone() -> None:
    out = run(
        "import httpx, sys\n"
        "from policysupply import Registry\n"
        "Registry.remote('127.0.0.1:5000').close()\n"
        "print('httpx._main' in sys.modules, 'httpx_without_cli' in repr(httpx.main))\n"
    )
    assert out == "True False"
