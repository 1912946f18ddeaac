"""Reading and writing OPA bundle tarballs (gzip-compressed tar), as pure functions.

Reading treats the input as hostile: it is decompressed in bounded chunks,
every tar member is vetted before its bytes are used, and nothing touches the
disk. Writing is deterministic: the same entries give the same bytes on every
run and machine (sorted names, fixed metadata, a gzip header we write
ourselves so that no timestamp, file name or OS byte leaks in).
"""

from __future__ import annotations

import io
import re
import struct
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from policysupply.errors import BundleError

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
# Compression ratios above this are normal for tiny text files, so the ratio
# limit only applies once this much has been inflated.
_RATIO_GRACE = 8 << 20
# PAX extended headers hold a few records (a long path, times, sizes). Python
# before 3.11.10/3.12.6 parses them with backtracking regular expressions
# (CVE-2024-6232): a run of n digits costs ~n²/2 steps, and a record length
# past 4300 digits raises ValueError from int(). Headers and digit runs are
# bounded before tarfile reads them; real bundles stay far below both.
_MAX_PAX_HEADER = 64 << 10
_MAX_PAX_TOTAL = 8 << 20  # all PAX headers of one archive (50 000 entries x ~160 bytes)
_MAX_PAX_DIGITS = 64  # tarfile's work is at most ~this much per header byte
_DIGITS = re.compile(rb"[0-9]+")
# Where tarfile and Go's archive/tar (OPA) read one header differently, the
# layer OPA loads holds other files than the ones verified here (a member
# hidden, emptied, swallowed by another, or renamed), so such headers are
# refused. A number field both read alike: octal digits after optional
# spaces, then spaces or NULs (a NUL first ends tarfile's field, Go skips it),
# or base-256 with the first byte 0x80 or 0xff (the only ones tarfile takes).
_NUMBER_FIELDS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156))
_OCTAL_FIELD = re.compile(rb" *[0-7]*[ \0]*")
_USTAR = b"ustar\x0000"
_PAX_RECORD = re.compile(rb"([0-9]+) ")
# Headers that change how the next header is read.
_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds applied while reading an untrusted bundle.

    Defaults fit real policy bundles (thousands of modules, tens of megabytes
    of data) while refusing archive bombs long before memory is at risk.

    Attributes:
        max_compressed: Largest accepted ``.tar.gz``, in bytes.
        max_uncompressed: Largest accepted inflated tar stream, in bytes.
        max_entries: Most tar members accepted.
        max_entry_size: Largest accepted single member, in bytes; also bounds
            the JSON a YAML data file expands to through aliases.
        max_ratio: Largest inflated/compressed ratio, checked past 8 MiB inflated.
        max_depth: Most path components in one entry name.
    """

    max_compressed: int = 256 << 20
    max_uncompressed: int = 1 << 30
    max_entries: int = 50_000
    max_entry_size: int = 512 << 20
    max_ratio: int = 200
    max_depth: int = 32


DEFAULT_LIMITS = Limits()


def _inflate(data: bytes, limits: Limits) -> bytes:
    """Gunzips ``data`` (all members) within ``limits``."""
    if len(data) > limits.max_compressed:
        raise BundleError(
            f"bundle is {len(data)} bytes compressed, over the limit of "
            f"{limits.max_compressed}; raise Limits.max_compressed if it is genuine"
        )
    if not data.startswith(_GZIP_MAGIC):
        raise BundleError("not a gzip file: an OPA bundle is a .tar.gz archive")
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        pos = len(rest)
        chunk = rest
        while not d.eof:
            # Each call may produce at most one byte past what the limits
            # allow (the size limit, and the ratio to the compressed size),
            # so a bomb never inflates past them; a genuine bundle inflates
            # in one call.
            allowed = max(len(data) * limits.max_ratio, _RATIO_GRACE)
            budget = min(limits.max_uncompressed, allowed) - len(out) + 1
            try:
                out += d.decompress(chunk, max(budget, 1))
            except zlib.error as exc:
                raise BundleError(f"corrupt gzip stream: {exc}") from None
            _check_inflated(len(out), len(data), limits)
            chunk = d.unconsumed_tail
            if not chunk:
                break
        if not d.eof:
            raise BundleError("truncated gzip stream: the bundle was cut short")
        rest = d.unused_data + rest[pos:]
        if rest and not rest.startswith(_GZIP_MAGIC):
            if rest.strip(b"\0"):
                raise BundleError("unexpected bytes after the end of the gzip stream")
            break
    return bytes(out)


def _check_inflated(inflated: int, compressed: int, limits: Limits) -> None:
    if inflated > limits.max_uncompressed:
        raise BundleError(
            f"bundle inflates past {limits.max_uncompressed} bytes; "
            "refusing it (raise Limits.max_uncompressed if it is genuine)"
        )
    if inflated > _RATIO_GRACE and inflated > limits.max_ratio * compressed:
        raise BundleError(
            f"bundle compression ratio exceeds {limits.max_ratio}:1; refusing a likely archive bomb"
        )


def normalize_entry_name(raw: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """Returns the bundle-relative name of a tar entry, or raises ``BundleError``.

    ``opa build`` writes names with one leading ``/`` (``/data.json``) and tools
    like ``tar -C dir .`` write ``./``; both are read as relative to the bundle
    root. Anything that would still be absolute or escape the root after that
    is refused.
    """
    name = raw
    if "\0" in name or "\\" in name:
        raise BundleError("entry name contains a NUL byte or backslash", entry=raw)
    if name.startswith("//") or (len(name) > 1 and name[1] == ":"):
        raise BundleError("absolute path in bundle", entry=raw)
    if name.startswith("/"):
        name = name[1:]
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if name.endswith("/"):
        parts = parts[:-1]
    if any(p == ".." for p in parts):
        raise BundleError("path traversal ('..') in bundle", entry=raw)
    if any(p in ("", ".") for p in parts):
        raise BundleError("empty or '.' path component in bundle", entry=raw)
    if len(parts) > limits.max_depth:
        raise BundleError(f"path deeper than {limits.max_depth} components", entry=raw)
    return "/".join(parts)


class _BoundedPaxTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose headers are checked before tarfile's own parser sees them.

    PAX headers are bounded (see ``_check_pax``), and every header must read
    the same to tarfile as to Go's ``archive/tar``, which OPA reads the
    served layer with (see ``_check_header``).
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        obj = super().frombuf(buf, encoding, errors)
        _check_header(bytes(buf))
        return obj

    def _proc_pax(self, tf: Any) -> Any:
        if self.type not in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            # Solaris 'X': tarfile takes it for a PAX header, Go for an entry OPA skips.
            raise BundleError(f"tar header of type {self.type!r} in bundle", entry=self.name)
        # The bytes tarfile is about to parse: the header padded to whole blocks.
        buf, following = _peek(tf, self.size, _MAX_PAX_HEADER + tarfile.BLOCKSIZE)
        total = getattr(tf, "_policysupply_pax_total", 0) + self.size
        tf._policysupply_pax_total = total
        _check_pax(self.size, total, buf)
        _check_pax_records(buf[: self.size], glob=self.type == tarfile.XGLTYPE)
        if buf[self.size : self.size + 1] not in (b"", b"\0"):
            # tarfile parses records on into the padding; Go reads the size only.
            raise BundleError("PAX extended header with bytes in its padding in bundle")
        if self.type == tarfile.XHDTYPE:
            _check_single_meta(following)
        return super()._proc_pax(tf)  # type: ignore[misc]

    def _proc_gnulong(self, tf: Any) -> Any:
        if not 0 <= self.size <= _MAX_PAX_HEADER:
            raise BundleError(f"GNU long name of {self.size} bytes in bundle")
        buf, following = _peek(tf, self.size, self.size + tarfile.BLOCKSIZE)
        # tarfile reads the name up to a NUL in the padded blocks, Go up to
        # a NUL within the size: they agree when the name ends where both look.
        if b"\0" not in buf[: self.size] and buf[self.size : self.size + 1] not in (b"", b"\0"):
            raise BundleError("GNU long name not terminated within its size in bundle")
        _check_single_meta(following)
        return super()._proc_gnulong(tf)  # type: ignore[misc]


def _peek(tf: Any, size: int, most: int) -> tuple[bytes, bytes]:
    """An extended header's data and the header block after it; the read position stays.

    The data is ``size`` bytes padded to whole blocks, at most ``most`` bytes.
    """
    fileobj = tf.fileobj
    where = fileobj.tell()
    padded = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    buf = fileobj.read(max(0, min(padded, most)))
    following = fileobj.read(tarfile.BLOCKSIZE)
    fileobj.seek(where)
    return buf, following


def _check_header(buf: bytes) -> None:
    """Refuses a header block that tarfile and Go's archive/tar would read differently."""
    for start, end in _NUMBER_FIELDS:
        field = buf[start:end]
        if field[0] in (0x80, 0xFF) and start != 148:
            if start == 124 and field[0] == 0xFF:
                raise BundleError("tar header with a negative size in bundle")
            continue
        if not _OCTAL_FIELD.fullmatch(field):
            raise BundleError(
                f"tar header field at byte {start} ({field!r}) is read differently by "
                "other tar readers (OPA's); refusing the bundle"
            )
    prefix = buf[345:500].split(b"\0", 1)[0]
    # tarfile prepends the prefix field whatever the magic; Go only for ustar
    # (and only its first 131 bytes when the header carries star's trailer).
    if prefix and (
        buf[257:265] != _USTAR or (buf[508:512] == b"tar\0" and b"\0" not in buf[345:476])
    ):
        raise BundleError("tar header with a name prefix outside the ustar format in bundle")


def _check_pax_records(data: bytes, *, glob: bool) -> None:
    """Refuses PAX records other than ``<decimal length> <key>=<value>`` plus a newline.

    tarfile stops at the first record it cannot match and ignores the rest,
    where Go reads each record strictly (a ``+`` before the length, say), so
    only records both read alike pass. A global header may carry only a
    ``comment`` (as ``git archive`` writes): tarfile applies global records
    to every later member, Go to none.
    """
    pos = 0
    while pos < len(data):
        m = _PAX_RECORD.match(data, pos)
        end = pos + int(m.group(1)) if m else 0
        if m is None or end <= m.end() or end > len(data) or data[end - 1 : end] != b"\n":
            raise BundleError("malformed PAX record in bundle")
        key, eq, _ = data[m.end() : end - 1].partition(b"=")
        if not eq or not key:
            raise BundleError("malformed PAX record in bundle")
        if glob and key != b"comment":
            raise BundleError(
                f"PAX global header record {key[:40]!r} in bundle (other tar readers, "
                "such as OPA's, do not apply it to the members that follow)"
            )
        pos = end


def _check_single_meta(following: bytes) -> None:
    """Refuses a PAX or GNU long-name header followed by another one, or by an old-style file.

    For two in a row Go keeps the last one's values (and a GNU long name over
    a PAX path), tarfile lays the first over the second. An old-style regular
    file (type NUL) is a directory when its name ends in "/": tarfile judges
    the header's own name, Go the name the extended header gives it.
    """
    if len(following) != tarfile.BLOCKSIZE:
        return
    if following[156:157] in _META_TYPES:
        raise BundleError("two extended tar headers in a row in bundle")
    if following[156:157] == tarfile.AREGTYPE:
        raise BundleError("old-style (type NUL) tar member after an extended header in bundle")


def _check_pax(size: int, total: int, buf: bytes) -> None:
    if size < 0:  # base-256 sizes can be negative; nothing real is
        raise BundleError(f"PAX extended header with a negative size ({size})")
    if size > _MAX_PAX_HEADER:
        raise BundleError(
            f"PAX extended header of {size} bytes, over the limit of {_MAX_PAX_HEADER}"
        )
    if total > _MAX_PAX_TOTAL:
        raise BundleError(f"PAX extended headers add up to more than {_MAX_PAX_TOTAL} bytes")
    longest = max((len(m) for m in _DIGITS.findall(buf)), default=0)
    if longest > _MAX_PAX_DIGITS:
        raise BundleError(
            f"PAX extended header with a run of {longest} digits (at most "
            f"{_MAX_PAX_DIGITS}); refusing a header built to stall the tar parser"
        )


def read_entries(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Reads a ``.tar.gz`` bundle into ``{relative name: bytes}``, fully vetted.

    Directory entries are skipped (OPA ignores them). Only regular files are
    read: links, devices, FIFOs, contiguous files and other special members
    are refused, and so are sparse members (old GNU or PAX 0.0/0.1/1.0),
    whose holes a reader expands into bytes the archive never held (``opa
    build`` never writes them). Duplicate names are refused, since a later
    duplicate would silently shadow content that was reviewed. The bytes
    materialised in all are bounded by ``limits.max_uncompressed``.

    Raises:
        BundleError: Not gzip, not tar, truncated, over a limit, or a bad entry
            (the error names it).
    """
    raw = _inflate(data, limits)
    entries: dict[str, bytes] = {}
    count = 0
    total = 0
    try:
        tf = tarfile.open(  # noqa: SIM115 - closed below
            fileobj=io.BytesIO(raw), mode="r:", tarinfo=_BoundedPaxTarInfo
        )
    except tarfile.ReadError as exc:
        raise BundleError(f"not a tar archive inside the gzip stream: {exc}") from None
    with tf:
        while True:
            try:
                member = tf.next()
            except tarfile.TarError as exc:
                raise BundleError(f"corrupt or truncated tar archive: {exc}") from None
            if member is None:
                break
            count += 1
            if count > limits.max_entries:
                raise BundleError(f"more than {limits.max_entries} entries in bundle")
            if member.issparse() or any(k.startswith("GNU.sparse.") for k in member.pax_headers):
                raise BundleError(
                    "sparse member in bundle; sparse files are not allowed", entry=member.name
                )
            if member.isdir():
                if member.name in (".", "./", "/"):  # the root itself (`tar -C dir .`)
                    continue
                normalize_entry_name(member.name, limits)
                continue
            if member.issym() or member.islnk():
                raise BundleError(
                    f"link to {member.linkname!r} in bundle; links are not allowed",
                    entry=member.name,
                )
            # OPA reads only regular files ('0', or the old '\0'); tarfile's
            # isreg() also counts contiguous files ('7'), which OPA skips.
            if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise BundleError(
                    "special file (device, FIFO or unknown type) in bundle",
                    entry=member.name,
                )
            if member.name.endswith("/") or member.pax_headers.get("path", "").endswith("/"):
                # Go keeps the slash, so OPA skips "deny.rego/" (no .rego
                # suffix); read as deny.rego here, it would be a verified
                # module that never runs. (tarfile strips it from a PAX path.)
                raise BundleError("regular file with a directory name in bundle", entry=member.name)
            name = normalize_entry_name(member.name, limits)
            if member.size > limits.max_entry_size:
                raise BundleError(
                    f"entry is {member.size} bytes, over the per-entry limit of "
                    f"{limits.max_entry_size}",
                    entry=name,
                )
            if name in entries:
                raise BundleError("duplicate entry in bundle", entry=name)
            f = tf.extractfile(member)
            if f is None:  # pragma: no cover - isreg() members always have data
                raise BundleError("entry has no data", entry=name)
            try:
                body = f.read()
            except tarfile.TarError:
                body = b""
            if len(body) != member.size:
                raise BundleError("truncated tar archive: entry is cut short", entry=name)
            total += len(body)
            if total > limits.max_uncompressed:  # whatever a member type expands to
                raise BundleError(
                    f"bundle entries add up to more than {limits.max_uncompressed} bytes",
                    entry=name,
                )
            entries[name] = body
        end = tf.offset
    if count == 0 and not raw.strip(b"\0"):
        raise BundleError("empty tar archive")
    # tarfile ends the archive at any header it cannot read (past the first
    # member); Go's archive/tar reads on, or fails. Only zeros may follow.
    if raw[end : end + 2 * tarfile.BLOCKSIZE].strip(b"\0"):
        raise BundleError(
            f"unreadable tar header at byte {end}: other tar readers (OPA's) may read "
            "members past it; refusing the bundle"
        )
    return entries


def _tar_header(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_entries(entries: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> bytes:
    """Writes ``{relative name: bytes}`` as a deterministic ``.tar.gz``.

    Names get OPA's leading ``/``. Entries are sorted by name; every header has
    mtime 0, mode 0644, uid/gid 0 and no owner names; the gzip header carries
    no mtime, no file name and OS "unknown".
    """
    items = sorted(entries.items() if isinstance(entries, Mapping) else entries)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for name, body in items:
            tf.addfile(_tar_header("/" + name, len(body)), io.BytesIO(body))
    return gzip_deterministic(buf.getvalue())


def gzip_deterministic(raw: bytes, level: int = 6) -> bytes:
    """Gzips ``raw`` with a fixed header (RFC 1952: no mtime, no name, OS 255)."""
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
    body = comp.compress(raw) + comp.flush()
    trailer = struct.pack("<II", zlib.crc32(raw) & 0xFFFFFFFF, len(raw) & 0xFFFFFFFF)
    return header + body + trailer
