"""Key files (``policysupply._internal.keys``): cosign.key (encrypted), PEM private and public keys.

Users pass key files; a trust policy names public keys. The first byte picks
the password (none, the seeds', a wrong one); the rest is the file.
"""

from __future__ import annotations

import contextlib

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply._internal import keys
    from policysupply.errors import PolicySupplyError

PASSWORD = b"fuzz-password"  # the seeds' encrypted keys use it


def one_input(data: bytes) -> None:
    if not data:
        return
    password = (None, PASSWORD, b"wrong")[data[0] % 3]
    body = data[1:]
    keys.pem_blocks(body)
    with contextlib.suppress(PolicySupplyError):
        key = keys.load_private_key(body, password, what="fuzz.key")
        signature = keys.sign(key, b"message")
        assert keys.verify(key.public_key(), signature, b"message"), "sign/verify disagree"
    with contextlib.suppress(PolicySupplyError):
        pub = keys.load_public_key(body, what="fuzz.pub")
        keys.key_id(pub)
        keys.verify(pub, b"\x30\x06\x02\x01\x01\x02\x01\x01", b"message")


if __name__ == "__main__":
    _harness.run(one_input)
