"""Hostile-input tests for the tarball reader and determinism of the writer."""

from __future__ import annotations

import gzip
import io
import sys
import tarfile
import zlib
from collections.abc import Callable

import pytest

from policysupply._internal.tarball import Limits, read_entries, write_entries
from policysupply.errors import BundleError


def make_tar(add: Callable[[tarfile.TarFile], None], *, compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        add(tf)
    raw = buf.getvalue()
    return gzip.compress(raw) if compress else raw


def add_file(tf: tarfile.TarFile, name: str, body: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(body)
    tf.addfile(info, io.BytesIO(body))


def add_special(tf: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tf.addfile(info)


def test_reads_opa_style_and_dot_slash_names() -> None:
    def add(tf: tarfile.TarFile) -> None:
        add_file(tf, "/a.rego", b"package a\n")
        add_file(tf, "./b/data.json", b"{}")
        add_special(tf, "./b/", tarfile.DIRTYPE)

    assert read_entries(make_tar(add)) == {"a.rego": b"package a\n", "b/data.json": b"{}"}


@pytest.mark.parametrize(
    "name",
    ["../evil.rego", "a/../../evil.rego", "a/..", "//etc/passwd", "C:/evil.rego", "a\\b.rego",
     "a//b.rego", "a/./b.rego"],
)
def test_refuses_escaping_or_absolute_names(name: str) -> None:
    data = make_tar(lambda tf: add_file(tf, name, b"package a\n"))
    with pytest.raises(BundleError) as err:
        read_entries(data)
    assert err.value.entry == name


@pytest.mark.parametrize(
    ("kind", "linkname"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "a.rego"), (tarfile.CHRTYPE, ""),
     (tarfile.BLKTYPE, ""), (tarfile.FIFOTYPE, "")],
)
def test_refuses_links_and_special_files(kind: bytes, linkname: str) -> None:
    def add(tf: tarfile.TarFile) -> None:
        add_file(tf, "a.rego", b"package a\n")
        add_special(tf, "evil", kind, linkname)

    with pytest.raises(BundleError) as err:
        read_entries(make_tar(add))
    assert err.value.entry == "evil"


def test_refuses_duplicate_entries_even_with_different_spelling() -> None:
    def add(tf: tarfile.TarFile) -> None:
        add_file(tf, "/a.rego", b"package a\n")
        add_file(tf, "./a.rego", b"package evil\n")

    with pytest.raises(BundleError, match="duplicate") as err:
        read_entries(make_tar(add))
    assert err.value.entry == "a.rego"


def test_refuses_not_gzip() -> None:
    with pytest.raises(BundleError, match="not a gzip"):
        read_entries(b"PK\x03\x04 this is a zip")


def test_refuses_gzip_that_is_not_tar() -> None:
    with pytest.raises(BundleError, match="tar"):
        read_entries(gzip.compress(b"hello, this is not a tar archive" * 40))


def test_refuses_truncated_gzip() -> None:
    data = make_tar(lambda tf: add_file(tf, "a.rego", b"package a\n" * 1000))
    with pytest.raises(BundleError, match="truncated"):
        read_entries(data[: len(data) // 2])


def test_refuses_truncated_tar_inside_complete_gzip() -> None:
    raw = make_tar(lambda tf: add_file(tf, "a.rego", b"x" * 5000), compress=False)
    with pytest.raises(BundleError, match=r"truncated|corrupt"):
        read_entries(gzip.compress(raw[:1500]))


def test_refuses_trailing_garbage() -> None:
    data = make_tar(lambda tf: add_file(tf, "a.rego", b"package a\n"))
    with pytest.raises(BundleError, match="after the end"):
        read_entries(data + b"garbage")


def test_reads_multi_member_gzip() -> None:
    raw = make_tar(lambda tf: add_file(tf, "a.rego", b"package a\n"), compress=False)
    data = gzip.compress(raw[:512]) + gzip.compress(raw[512:])
    assert read_entries(data) == {"a.rego": b"package a\n"}


def test_limit_compressed_size() -> None:
    data = make_tar(lambda tf: add_file(tf, "a.rego", b"package a\n"))
    with pytest.raises(BundleError, match="compressed"):
        read_entries(data, Limits(max_compressed=len(data) - 1))


def test_limit_uncompressed_size() -> None:
    data = make_tar(lambda tf: add_file(tf, "a.rego", b"a" * 100_000))
    with pytest.raises(BundleError, match="inflates past"):
        read_entries(data, Limits(max_uncompressed=50_000))


def test_gzip_bomb_stops_early_on_ratio() -> None:
    # 64 MiB of zeros compresses to ~64 KiB; the reader must stop at the ratio
    # limit long before inflating all of it.
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = comp.compress(b"\0" * (64 << 20)) + comp.flush()
    with pytest.raises(BundleError, match="ratio"):
        read_entries(bomb)


def test_limit_entry_count() -> None:
    def add(tf: tarfile.TarFile) -> None:
        for i in range(5):
            add_file(tf, f"m{i}.rego", b"package a\n")

    with pytest.raises(BundleError, match="more than 4 entries"):
        read_entries(make_tar(add), Limits(max_entries=4))


def test_limit_entry_size_names_entry() -> None:
    data = make_tar(lambda tf: add_file(tf, "big/data.json", b"[" + b"1," * 5000 + b"1]"))
    with pytest.raises(BundleError, match="per-entry") as err:
        read_entries(data, Limits(max_entry_size=1000))
    assert err.value.entry == "big/data.json"


def test_limit_depth() -> None:
    name = "/".join(["d"] * 40) + "/x.rego"
    with pytest.raises(BundleError, match="deeper"):
        read_entries(make_tar(lambda tf: add_file(tf, name, b"package a\n")))


def test_empty_input() -> None:
    with pytest.raises(BundleError):
        read_entries(b"")


def test_reading_writes_nothing_to_disk() -> None:
    # An audit hook sees every open() for writing made while reading.
    opened: list[str] = []
    active = True

    def hook(event: str, args: tuple[object, ...]) -> None:
        mode = args[1] if event == "open" and len(args) > 1 else None
        if active and isinstance(mode, str) and any(c in mode for c in "wax+"):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    try:
        def add(tf: tarfile.TarFile) -> None:
            add_file(tf, "a.rego", b"package a\n")
            add_file(tf, "data.json", b"{}")

        data = make_tar(add)
        read_entries(data)
        with pytest.raises(BundleError):
            read_entries(data[:-10])
    finally:
        active = False
    assert opened == []


def test_writer_is_deterministic_and_normalised() -> None:
    entries = {"b.rego": b"package b\n", "a/data.json": b"{}", ".manifest": b"{}"}
    one = write_entries(entries)
    two = write_entries(dict(reversed(list(entries.items()))))
    assert one == two
    assert one[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no mtime, no name
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(one))) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["/.manifest", "/a/data.json", "/b.rego"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.mode, m.uname, m.gname) == (0, 0, 0, 0o644, "", "")
    assert read_entries(one) == entries
