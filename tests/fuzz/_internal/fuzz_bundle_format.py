"""Bundle data files and ``.manifest`` (``_internal.bundle_format``, ``bundle.Manifest``).

The first byte picks the file kind: ``data.json``, ``data.yaml`` or
``.manifest``; a parsed data document must serialise back to JSON.
"""

from __future__ import annotations

import json

from tests.fuzz import _harness

with _harness.instrumented():
    import policysupply._internal.engines.rego_source  # noqa: F401 - lazily imported by Bundle
    from policysupply._internal import bundle_format as bf
    from policysupply.bundle import Manifest

_NAMES = ("a/data.json", "a/data.yaml", ".manifest")


def one_input(data: bytes) -> None:
    if not data:
        return
    name, raw = _NAMES[data[0] % len(_NAMES)], data[1:]
    if name == ".manifest":
        manifest = Manifest.from_json(raw)
        again = Manifest.from_json(json.dumps(manifest.to_json()).encode())
        assert again == manifest, "manifest does not round-trip"
        return
    value = bf.parse_data_file(name, raw)
    target: dict[str, object] = {}
    bf.insert_data(target, bf.data_path_of(name), value, entry=name)
    json.dumps(value, allow_nan=False)  # what we read we can write


if __name__ == "__main__":
    _harness.run(one_input)
