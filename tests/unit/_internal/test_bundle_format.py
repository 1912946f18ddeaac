"""Pure bundle rules: data documents kept as the bundle's own text."""

from __future__ import annotations

from typing import Any

import pytest

from policysupply.errors import BundleError

# -- documents as the bundle's own bytes (loaders send them to OPA unchanged) --


def _sources_of(entries: dict[str, bytes]) -> tuple[Any, Any]:
    from policysupply import Bundle
    from policysupply._internal import tarball

    bundle = Bundle.from_bytes(tarball.write_entries({".manifest": b"{}", **entries}))
    return bundle, bundle._cache.sources


@pytest.mark.parametrize(
    ("entries", "root", "expected"),
    [
        ({"a/data.json": b' {"x": 1} '}, ("a",), b' {"x": 1} '),
        ({"data.json": b'{"a": [1, 2] , "b": 2}'}, ("a",), b"[1, 2]"),
        ({"data.json": b'{"a": 1, "a": {"y": 2}}'}, ("a",), b'{"y": 2}'),  # the last, as Go
        ({"a/b/data.json": b"1", "a/c/d/data.json": b'"s"'}, ("a",), b'{"b":1,"c":{"d":"s"}}'),
        ({"a/b/data.json": b"1"}, ("a",), b'{"b":1}'),
        ({"data.json": b'{"a": {"b": 1}}'}, ("a", "b"), None),  # deeper than one member
        ({"a/data.json": b'{"b": {}}', "a/b/data.json": b"{}"}, ("a",), None),  # merged
        ({"a/data.yaml": b"x: 1\n"}, ("a",), None),  # YAML: encoded
        ({"data.json": b'{"a": "\\ud800"}'}, ("a",), b'"\\ud800"'),  # OPA reads U+FFFD
        ({"data.json": b'{"\\ud800": 1, "\\ufffd": 2}'}, ("\ufffd",), b"2"),  # keys as Go
        ({"a/data.json": b'"\\ud800"'}, ("a",), b'"\\ud800"'),  # whole file: OPA reads U+FFFD
        ({"b/data.json": b"1"}, ("a",), None),  # nothing there
    ],
)
def test_raw_document_is_the_bundle_text_that_reads_as_the_value(
    entries: dict[str, bytes], root: tuple[str, ...], expected: bytes | None
) -> None:
    from policysupply._internal.bundle_format import parse_json, raw_document
    from policysupply.loaders._core import value_at

    bundle, sources = _sources_of(entries)
    got = raw_document(sources, root)
    assert got == expected
    if got is not None:
        assert parse_json(got, entry="x") == value_at(bundle.data, root)


def test_member_parse_agrees_with_json_loads_and_its_errors() -> None:
    from policysupply._internal.bundle_format import parse_json, parse_json_source

    for raw in [b'{"a": 1e400}', b'{"a": NaN}', b'{"a": 1,}', b'{"a" 1}', b"{} x"]:
        with pytest.raises(BundleError) as want:
            parse_json(raw, entry="e")
        with pytest.raises(BundleError) as got:
            parse_json_source(raw, entry="e", path=())
        assert str(got.value) == str(want.value)
    for raw in [b"[1]", b"{}", b' { "a" : { "b" : [ 1 , 2.5 ] } , "c" : null } ']:
        expected: Any = parse_json(raw, entry="e")
        assert parse_json_source(raw, entry="e", path=())[0] == expected
