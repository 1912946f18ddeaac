"""Signing certificates and trusted roots (``policysupply._internal.keyless``).

Registries serve Fulcio certificates (bundle verification material, cosign's
certificate and chain annotations); users pass ``trusted_root.json`` files.
The first byte picks what the rest is: a certificate (DER or PEM), a PEM
chain, or a trusted root file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply._internal import keyless

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-trusted-root-"))
_ROOT = _DIR / "trusted_root.json"


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 3, data[1:]
    if kind == 0:
        cert = keyless.load_certificate(body)
        identity = keyless.certificate_identity(cert)
        identity.subject  # noqa: B018 - the property computes
    elif kind == 1:
        for der in keyless.pem_chain(body)[:4]:
            keyless.certificate_identity(keyless.load_certificate(der))
    else:
        _ROOT.write_bytes(body)
        keyless.TrustMaterial.load(_ROOT)


if __name__ == "__main__":
    _harness.run(one_input)
