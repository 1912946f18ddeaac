"""Optional parts of the install (``pip install 'policysupply[keyless]'``, ``[opa]``).

The base install signs and verifies with keys, builds and checks bundles with
the embedded engine, and talks to registries. Keyless signing and verification
need sigstore-python (``keyless``); the OPA REST loader needs
opa-python-client (``opa``). Code that needs one asks here first, so a missing
extra is a clear error naming the command to run, not an ImportError.
"""

from __future__ import annotations

import importlib.util

from policysupply.errors import PolicySupplyError

# top-level module -> the extra that installs it
EXTRA_FOR = {
    "sigstore": "keyless",
    "opa_client": "opa",
    "requests": "opa",
    "uvicorn": "admission",
    "prometheus_client": "admission",
    "redis": "admission",
}


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def hint(module: str) -> str:
    """The install command that brings ``module``."""
    return f"pip install 'policysupply[{EXTRA_FOR.get(module, 'all')}]'"


def require(module: str, what: str, error: type[PolicySupplyError] = PolicySupplyError) -> None:
    """Raises ``error`` naming the extra to install when ``module`` is missing."""
    if not available(module):
        raise error(
            f"{what} needs the optional dependency {module!r}, which is not installed: "
            f"{hint(module)}"
        )
