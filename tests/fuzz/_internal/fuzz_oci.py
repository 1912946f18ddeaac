"""OCI manifests, image indexes and references (``policysupply._internal.oci``, ``stores``).

Registries serve manifests and indexes; users type references. The bytes are
parsed as a manifest or index, as a referrer (``subject``/``artifactType``),
and, decoded, as a reference.
"""

from __future__ import annotations

import contextlib

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply._internal import oci, stores
    from policysupply.errors import PolicySupplyError

_DIGEST = "sha256:" + "0" * 64


def one_input(data: bytes) -> None:
    stores.media_type_of(data)
    stores.media_type_of(data, "application/x-declared")
    with contextlib.suppress(PolicySupplyError):
        manifest = oci.parse_manifest(data, what="fuzz")
        if "manifests" not in manifest:
            with contextlib.suppress(PolicySupplyError):
                oci.bundle_layer(manifest, what="fuzz")
        desc = stores.referrer_descriptor(data, _DIGEST)
        if desc is not None:
            desc.to_json()
    text = data.decode("utf-8", "replace")
    ref = oci.Reference.parse(text)
    str(ref)
    ref.name  # noqa: B018 - the property computes
    ref.with_digest(_DIGEST)


if __name__ == "__main__":
    _harness.run(one_input)
