"""Tar archives that Python's ``tarfile`` and Go's ``archive/tar`` (OPA) read differently.

Each case is an uncompressed tar holding ``/a.rego`` (package ``a``) and a
second module, package ``b``, that real OPA (1.22) loads but that
``tarfile`` either does not see at all, sees empty, sees inside another
member's bytes, or sees under another path. A bundle reader built on
``tarfile`` must refuse all of them: the served layer is what OPA parses,
so whatever the reader misses reaches OPA unverified.
"""

from __future__ import annotations

import tarfile

GOOD = b"package a\n\nallow := true\n"
EVIL = b"package b\n\nevil := true\n"
END = b"\0" * 1024


def block(data: bytes) -> bytes:
    """``data`` padded to whole 512-byte tar blocks."""
    return data + b"\0" * (-len(data) % 512)


def header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytearray:
    """A ustar header block, for editing in place (call :func:`checksum` after)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = 0o644
    return bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))


def checksum(h: bytearray, *, lead: bytes = b"") -> bytearray:
    """Recomputes ``h``'s checksum, written as ``lead`` + six octal digits + padding."""
    h[148:156] = b" " * 8
    digits = b"%06o" % sum(h)
    h[148:156] = (lead + digits + b"\0 ")[:8]
    return h


def record(rec: bytes, *, sign: bytes = b"") -> bytes:
    """One PAX record ``<length> <rec>``; ``sign`` goes before the length digits."""
    n = len(rec) + 2
    while len(b"%s%d " % (sign, n) + rec) != n:
        n += 1
    return b"%s%d " % (sign, n) + rec


def _first() -> bytes:
    return bytes(header("/a.rego", len(GOOD))) + block(GOOD)


def checksum_leading_nul() -> bytes:
    # tarfile cuts the field at its first NUL (checksum 0: "bad header", which
    # past the first member silently ends the archive); Go trims leading NULs.
    h = checksum(header("/b.rego", len(EVIL)), lead=b"\0")
    return _first() + bytes(h) + block(EVIL) + END


def size_leading_nul() -> bytes:
    # The same field rule on the size: tarfile reads an empty b.rego, Go the module.
    h = header("/b.rego", 0)
    h[124:136] = b"\0%010o\0" % len(EVIL)
    return _first() + bytes(checksum(h)) + block(EVIL) + END


def pax_record_with_plus_length() -> bytes:
    # Go's ParseInt takes "+31" as a record length; tarfile's regex stops at
    # it and ignores the record, so the two name the member differently.
    body = record(b"path=/b.rego\n", sign=b"+")
    pax = header("././@PaxHeader", len(body), tarfile.XHDTYPE)
    return (
        _first()
        + bytes(pax)
        + block(body)
        + bytes(header("/c.rego", len(EVIL)))
        + block(EVIL)
        + END
    )


def global_pax_size() -> bytes:
    # tarfile applies a global header's "size" to the members after it; Go
    # returns the global header as an entry of its own and applies nothing.
    body = record(b"size=1536\n")
    glob = header("pax_global_header", len(body), tarfile.XGLTYPE)
    cover = header("/c.txt", 0)  # 1536 bytes for tarfile: b.rego's header and body
    return (
        _first()
        + bytes(glob)
        + block(body)
        + bytes(cover)
        + bytes(header("/b.rego", len(EVIL)))
        + block(EVIL)
        + b"\0" * 512
        + END
    )


def prefix_without_ustar_magic() -> bytes:
    # tarfile prepends the ustar prefix field whatever the magic; Go reads it
    # only in ustar/PAX headers, so a v7 header names another path.
    h = header("b.rego", len(EVIL))
    h[257:265] = b"\0" * 8
    h[345:351] = b"hidden"
    return _first() + bytes(checksum(h)) + block(EVIL) + END


def two_extended_headers() -> bytes:
    # Two PAX headers in a row: Go keeps only the second; tarfile applies the
    # first over the second (here: size 0 over the real size).
    def pax(rec: bytes) -> bytes:
        body = record(rec)
        return bytes(header("././@PaxHeader", len(body), tarfile.XHDTYPE)) + block(body)

    return (
        _first()
        + pax(b"size=0\n")
        + pax(b"size=%d\n" % len(EVIL))
        + bytes(header("/b.rego", 0))
        + block(EVIL)
        + END
    )


def solaris_extended_header() -> bytes:
    # tarfile takes type 'X' (Solaris) as a PAX header for the next member;
    # Go sees an entry of an unknown type, which OPA skips.
    body = record(b"size=0\n")
    x = header("x", len(body), b"X")
    return (
        _first() + bytes(x) + block(body) + bytes(header("/b.rego", len(EVIL))) + block(EVIL) + END
    )


def gnu_long_name_past_its_size() -> bytes:
    # A GNU long name whose size stops before its NUL: Go reads the name
    # within the size (".rego"), tarfile up to the NUL in the padded block
    # (".regox", not a module).
    import io

    name = "/" + "p" * 110 + ".rego"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(EVIL)
        tf.addfile(info, io.BytesIO(EVIL))
    raw = bytearray(buf.getvalue())
    long_name = bytearray(raw[:512])  # then the name and its NUL, then the member
    size = len(name)  # without the NUL tarfile's writer counts
    long_name[124:136] = b"%011o\0" % size
    raw[:512] = checksum(long_name)
    raw[512 + size] = ord("x")
    return _first() + bytes(raw)


def pax_record_in_the_padding() -> bytes:
    # tarfile parses PAX records on through the block's padding past the
    # header's size, Go reads only the size: a "size" record there makes
    # tarfile's c.txt swallow b.rego's header and body.
    body = record(b"comment=x\n")
    pax = header("././@PaxHeader", len(body), tarfile.XHDTYPE)
    cover = header("/c.txt", 0)
    return (
        _first()
        + bytes(pax)
        + block(body + record(b"size=1024\n"))
        + bytes(cover)
        + bytes(header("/b.rego", len(EVIL)))
        + block(EVIL)
        + END
    )


def old_style_type_after_a_pax_path() -> bytes:
    # An old-style regular file (type NUL) named "x/" with a PAX path: tarfile
    # decides "directory" from the ustar name, Go from the PAX path (b.rego: a
    # file). tarfile then reads b.rego's body as the next header; a body that
    # is a valid header too would hide the module behind it.
    body = record(b"path=/b.rego\n")
    pax = header("././@PaxHeader", len(body), tarfile.XHDTYPE)
    old = header("x/", len(EVIL), tarfile.AREGTYPE)
    return _first() + bytes(pax) + block(body) + bytes(old) + block(EVIL) + END


CASES = {
    "checksum_leading_nul": checksum_leading_nul,
    "size_leading_nul": size_leading_nul,
    "pax_record_with_plus_length": pax_record_with_plus_length,
    "global_pax_size": global_pax_size,
    "prefix_without_ustar_magic": prefix_without_ustar_magic,
    "two_extended_headers": two_extended_headers,
    "solaris_extended_header": solaris_extended_header,
    "gnu_long_name_past_its_size": gnu_long_name_past_its_size,
    "pax_record_in_the_padding": pax_record_in_the_padding,
    "old_style_type_after_a_pax_path": old_style_type_after_a_pax_path,
}


def regular_file_named_like_a_directory(name: str = "/deny.rego/") -> bytes:
    """The reverse case: a regular file (type '0') whose name ends in '/'.

    A name normaliser that drops the slash reads module ``deny.rego``; Go keeps
    the name, and OPA, seeing no ``.rego`` suffix, does not load it.
    """
    deny = b"package d\n\ndeny := true\n"
    return _first() + bytes(header(name, len(deny))) + block(deny) + END


def regular_file_named_like_a_directory_by_pax() -> bytes:
    """As :func:`regular_file_named_like_a_directory`, the name in a PAX path record.

    tarfile strips a PAX path's trailing slashes, so the member's name no longer shows it.
    """
    deny = b"package d\n\ndeny := true\n"
    body = record(b"path=/deny.rego/\n")
    pax = header("././@PaxHeader", len(body), tarfile.XHDTYPE)
    return (
        _first()
        + bytes(pax)
        + block(body)
        + bytes(header("/x.rego", len(deny)))
        + block(deny)
        + END
    )


SLASH_CASES = {
    "ustar_name": regular_file_named_like_a_directory,
    "pax_path": regular_file_named_like_a_directory_by_pax,
}
