"""Property tests: round-trips, determinism, and that hostile bytes only raise BundleError."""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policysupply import Bundle, BundleError, Manifest

ident = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in {"if", "in", "as", "not", "some", "else", "with", "every", "default",
                        "import", "package", "contains", "true", "false", "null", "data",
                        "input"})

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)


@st.composite
def bundles(draw: Any) -> Bundle:
    roots = draw(st.lists(ident, min_size=1, max_size=3, unique=True))
    modules: dict[str, str] = {}
    for i in range(draw(st.integers(0, 4))):
        root = draw(st.sampled_from(roots))
        sub = draw(st.lists(ident, max_size=2))
        pkg = ".".join([root, *sub])
        body = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
        modules[f"{'/'.join([root, *sub])}/m{i}.rego"] = f"package {pkg}\n\n# {body!r}\n"
    data = {r: draw(st.dictionaries(ident, json_value, max_size=3)) for r in roots
            if draw(st.booleans())}
    manifest = Manifest(
        revision=draw(st.text(max_size=12)),
        roots=roots,
        metadata=draw(st.none() | st.dictionaries(st.text(max_size=5), json_value, max_size=2)),
        rego_version=draw(st.sampled_from([None, 0, 1])),
    )
    files = draw(st.dictionaries(
        st.sampled_from(["policy.wasm", "plan.json", ".signatures.json", "docs/README.md"]),
        st.binary(max_size=30), max_size=2))
    return Bundle(manifest=manifest, modules=modules, data=data, files=files)


@given(bundles())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip_bytes(b: Bundle) -> None:
    data = b.to_bytes()
    again = Bundle.from_bytes(data)
    assert again == b
    assert again.to_bytes() == data
    assert again.digest == b.digest


@given(st.binary(max_size=2048))
@settings(max_examples=400)
def test_arbitrary_bytes_only_raise_bundle_error(data: bytes) -> None:
    with contextlib.suppress(BundleError):
        Bundle.from_bytes(data)


@given(st.binary(max_size=4096))
@settings(max_examples=300)
def test_arbitrary_gzipped_bytes_only_raise_bundle_error(data: bytes) -> None:
    with contextlib.suppress(BundleError):
        Bundle.from_bytes(gzip.compress(data))


_SEED = Bundle(
    manifest=Manifest(revision="r", roots=["a"]),
    modules={"a/x.rego": "package a\n\nallow if input.ok\n"},
    data={"a": {"k": [1, 2, {"z": "y"}]}},
).to_bytes()
_SEED_TAR = gzip.decompress(_SEED)


@given(st.lists(st.tuples(st.integers(0, len(_SEED_TAR) - 1), st.integers(0, 255)),
                min_size=1, max_size=8))
@settings(max_examples=400)
def test_corrupted_tar_only_raises_bundle_error(flips: list[tuple[int, int]]) -> None:
    raw = bytearray(_SEED_TAR)
    for pos, value in flips:
        raw[pos] = value
    with contextlib.suppress(BundleError):
        Bundle.from_bytes(gzip.compress(bytes(raw)))


@given(st.integers(1, len(_SEED) - 1))
def test_every_truncation_is_refused(cut: int) -> None:
    try:
        Bundle.from_bytes(_SEED[:cut])
    except BundleError:
        return
    raise AssertionError("a truncated bundle was accepted")


@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.binary(max_size=40)),
                max_size=5))
@settings(max_examples=300)
def test_arbitrary_member_names_only_raise_bundle_error(members: list[tuple[str, bytes]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    with contextlib.suppress(BundleError):
        Bundle.from_bytes(buf.getvalue())
