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
from tests import _tar_differential as tar_differential


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
    [
        "../evil.rego",
        "a/../../evil.rego",
        "a/..",
        "//etc/passwd",
        "C:/evil.rego",
        "a\\b.rego",
        "a//b.rego",
        "a/./b.rego",
    ],
)
def test_refuses_escaping_or_absolute_names(name: str) -> None:
    data = make_tar(lambda tf: add_file(tf, name, b"package a\n"))
    with pytest.raises(BundleError) as err:
        read_entries(data)
    assert err.value.entry == name


@pytest.mark.parametrize(
    ("kind", "linkname"),
    [
        (tarfile.SYMTYPE, "/etc/passwd"),
        (tarfile.LNKTYPE, "a.rego"),
        (tarfile.CHRTYPE, ""),
        (tarfile.BLKTYPE, ""),
        (tarfile.FIFOTYPE, ""),
    ],
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


# -- members that expand, or that tar readers interpret in their own way --------

EXPANDED = 48 << 20  # what a hole-expanding reader would materialise


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def old_gnu_sparse(name: bytes, realsize: int, data: bytes = b"x") -> bytes:
    """One old-GNU sparse member ('S'): ``data`` at the end of ``realsize`` bytes of holes.

    Built by hand: tarfile reads these but cannot write them.
    """
    hdr = bytearray(512)
    hdr[0 : len(name)] = name
    hdr[100:108] = _octal(0o644, 8)
    hdr[108:116] = _octal(0, 8)
    hdr[116:124] = _octal(0, 8)
    hdr[124:136] = _octal(len(data), 12)  # bytes stored in the archive
    hdr[136:148] = _octal(0, 12)
    hdr[156:157] = tarfile.GNUTYPE_SPARSE
    hdr[257:265] = tarfile.GNU_MAGIC + b"\0"  # "ustar  \0"
    hdr[386:398] = _octal(realsize - len(data), 12)  # sparse[0].offset
    hdr[398:410] = _octal(len(data), 12)  # sparse[0].numbytes
    hdr[483:495] = _octal(realsize, 12)  # realsize
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    body = data + b"\0" * (-len(data) % 512)
    return bytes(hdr) + body + b"\0" * 1024


def pax_sparse(version: str, name: str, realsize: int, data: bytes = b"x") -> bytes:
    """One member in a GNU PAX sparse format (0.0, 0.1 or 1.0), through tarfile's PAX writer."""
    offset = realsize - len(data)
    stored = data
    if version == "0.0":
        pax = {
            "GNU.sparse.size": str(realsize),
            "GNU.sparse.numblocks": "1",
            "GNU.sparse.offset": str(offset),
            "GNU.sparse.numbytes": str(len(data)),
        }
    elif version == "0.1":
        pax = {"GNU.sparse.size": str(realsize), "GNU.sparse.map": f"{offset},{len(data)}"}
    else:  # 1.0: the map is a text block in front of the data
        pax = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": name,
            "GNU.sparse.realsize": str(realsize),
        }
        sparse_map = f"1\n{offset}\n{len(data)}\n".encode()
        stored = sparse_map + b"\0" * (-len(sparse_map) % 512) + data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(name if version != "1.0" else "GNUSparseFile.0/" + name)
        info.size = len(stored)
        info.pax_headers = pax
        tf.addfile(info, io.BytesIO(stored))
    return buf.getvalue()


def test_old_gnu_sparse_member_cannot_expand_past_limits() -> None:
    # The reported attack: a ~200-byte .tar.gz whose one member declares 48 MiB
    # of holes. The old reader materialised all of it, with max_uncompressed
    # at 1 MiB (and max_entry_size far above it).
    data = gzip.compress(old_gnu_sparse(b"data.json", EXPANDED))
    assert len(data) < 400
    with pytest.raises(BundleError, match="sparse") as err:
        read_entries(data, Limits(max_uncompressed=1 << 20))
    assert err.value.entry == "data.json"
    with pytest.raises(BundleError, match="sparse"):
        read_entries(data)  # refused under the default limits too


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0"])
def test_pax_sparse_members_are_refused(version: str) -> None:
    data = gzip.compress(pax_sparse(version, "data.json", EXPANDED))
    assert len(data) < 1000
    with pytest.raises(BundleError, match="sparse"):
        read_entries(data, Limits(max_uncompressed=1 << 20))


def test_gnu_long_names_are_read_as_names() -> None:
    name = "a/" + "n" * 200 + ".rego"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.GNU_FORMAT) as tf:
        add_file(tf, name, b"package a\n")
    assert read_entries(gzip.compress(buf.getvalue())) == {name: b"package a\n"}


def test_gnu_long_link_names_are_still_links() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.GNU_FORMAT) as tf:
        add_special(tf, "evil.rego", tarfile.SYMTYPE, "/" + "x" * 300)
    with pytest.raises(BundleError, match="link") as err:
        read_entries(gzip.compress(buf.getvalue()))
    assert err.value.entry == "evil.rego"


@pytest.mark.parametrize("kind", [tarfile.CONTTYPE, b"M", b"V", b"Z"])
def test_other_member_types_are_refused(kind: bytes) -> None:
    # OPA loads only regular files ('0'); a contiguous file, a multi-volume
    # continuation, a volume label or an unknown type is not one.
    def add(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("x.rego")
        info.type = kind
        info.size = 10
        tf.addfile(info, io.BytesIO(b"package a\n"))

    with pytest.raises(BundleError) as err:
        read_entries(make_tar(add))
    assert err.value.entry == "x.rego"


def test_pax_size_override_cannot_claim_more_than_the_archive_holds() -> None:
    def add(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("a.rego")
        info.size = 10
        info.pax_headers = {"size": str(EXPANDED)}
        tf.addfile(info, io.BytesIO(b"package a\n"))

    with pytest.raises(BundleError):
        read_entries(make_tar(add), Limits(max_uncompressed=1 << 20))


# -- PAX headers: tarfile's own parsing is the target (CVE-2024-6232 class) ------------


def pax_member(pax_body: bytes, *, kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A raw tar: one PAX header with ``pax_body`` as is, then a regular file, then the end."""

    def block(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 512)

    header = tarfile.TarInfo("././@PaxHeader")
    header.type = kind
    header.size = len(pax_body)
    member = tarfile.TarInfo("/data.json")
    member.size = 2
    return (
        header.tobuf(format=tarfile.USTAR_FORMAT)
        + block(pax_body)
        + member.tobuf(format=tarfile.USTAR_FORMAT)
        + block(b"{}")
        + b"\0" * 1024
    )


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE])
def test_pax_header_digit_run_makes_the_tar_reader_quadratic(kind: bytes) -> None:
    # Python < 3.11.10's tarfile searches PAX headers with a backtracking regex
    # (`\d+ hdrcharset=`): a run of n digits costs ~n²/2 steps. 64 KiB of
    # digits compress to ~100 bytes and would hold a verifier for minutes; this
    # test uses 20 000 (~2·10⁸ steps) so the undefended reader still returns.
    attack = gzip.compress(pax_member(b"1" * 20_000, kind=kind))
    assert len(attack) < 300
    with pytest.raises(BundleError, match="PAX"):
        read_entries(attack)


def test_pax_length_field_past_int_digit_limit_is_a_bundle_error() -> None:
    # A 5000-digit record length: int() refuses it with a ValueError that
    # tarfile does not catch (an untyped exception out of the bundle reader).
    attack = gzip.compress(pax_member(b"9" * 5000 + b" path=x\n"))
    with pytest.raises(BundleError, match="PAX"):
        read_entries(attack)


def test_genuine_pax_headers_still_read() -> None:
    long_name = "d" * 120 + "/data.json"  # over ustar's 100 bytes: needs a PAX path record

    def add(tf: tarfile.TarFile) -> None:
        add_file(tf, long_name, b"{}")
        info = tarfile.TarInfo("x.rego")
        info.size = 11
        info.pax_headers = {"comment": "é" * 100, "mtime": "1700000000.123456789"}
        tf.addfile(info, io.BytesIO(b"package x\n\n"))

    entries = read_entries(make_tar(add))
    assert entries[long_name] == b"{}"
    assert entries["x.rego"] == b"package x\n\n"


def test_many_pax_headers_add_up_past_the_per_header_bound() -> None:
    # Each header under the per-header bounds, but hundreds of them: the regex
    # work adds up. The PAX bytes in one archive are bounded too.
    import random

    rng = random.Random(7)  # digits that do not compress past the ratio limit

    def block(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 512)

    raw = b""
    for i in range(200):
        noise = rng.randbytes(61_000).translate(bytes(48 + b % 10 for b in range(256)))
        body = b"x".join(noise[j : j + 60] for j in range(0, 61_000, 61))
        header = tarfile.TarInfo("././@PaxHeader")
        header.type = tarfile.XHDTYPE
        header.size = len(body)
        member = tarfile.TarInfo(f"/d{i}.json")
        member.size = 2
        raw += header.tobuf(format=tarfile.USTAR_FORMAT) + block(body)
        raw += member.tobuf(format=tarfile.USTAR_FORMAT) + block(b"{}")
    with pytest.raises(BundleError, match="PAX"):
        read_entries(gzip.compress(raw + b"\0" * 1024, compresslevel=1))


def test_pax_header_with_a_negative_size_is_refused() -> None:
    # Base-256 size fields can be negative; tarfile then reads the rest of the
    # archive as the header. Refused by name before that.
    raw = bytearray(pax_member(b"", kind=tarfile.XHDTYPE))
    raw[124:136] = b"\xff" + ((-1024) & ((1 << 88) - 1)).to_bytes(11, "big")
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    with pytest.raises(BundleError, match="negative"):
        read_entries(gzip.compress(bytes(raw)))


# -- archives OPA's Go tar reader reads differently from tarfile ---------------------


@pytest.mark.parametrize("case", sorted(tar_differential.CASES))
def test_archive_opa_reads_differently_is_refused(case: str) -> None:
    # Each archive holds a module (package b) that real OPA loads (pinned by
    # tests/interop/test_opa_bundle_layout.py); read here, it is hidden,
    # emptied, swallowed by another member or renamed. Verification (OPA-native
    # file lists, bundle checks, what a reviewer inspects) would be about other
    # files than the ones OPA runs from the served layer.
    with pytest.raises(BundleError):
        read_entries(gzip.compress(tar_differential.CASES[case]()))


@pytest.mark.parametrize(
    "case",
    [
        "ustar_name",
        "pax_path",
    ],
)
def test_regular_file_with_a_trailing_slash_is_refused(case: str) -> None:
    with pytest.raises(BundleError):
        read_entries(gzip.compress(tar_differential.SLASH_CASES[case]()))
