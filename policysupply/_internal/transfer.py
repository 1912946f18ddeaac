"""Moving bytes between stores: progress over many blobs, chunks, copying an artifact graph."""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from policysupply._internal import cosign_storage, fs, oci
from policysupply._internal.oci import Descriptor
from policysupply._internal.stores import Sink, Store
from policysupply.errors import RegistryError

CHUNK = 1024 * 1024
SPOOL = 8 * 1024 * 1024
Progress = Callable[[int, int], None]


class DownloadCancelled(Exception):
    """A download stopped because its caller no longer wants the bytes (never escapes the API)."""


def now_rfc3339() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
        if epoch and epoch.isdigit()
        else _dt.datetime.now(tz=_dt.timezone.utc)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def read_layer(
    store: Store,
    repository: str,
    layer: Descriptor,
    *,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> bytes:
    """A layer's bytes in memory, checked against its digest and size.

    See ``Registry.layer_bytes``.
    """
    buf = bytearray()
    tally = Tally(progress, layer.size)

    def write(chunk: bytes) -> None:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"download of {layer.digest} cancelled")
        buf.extend(chunk)

    store.read_blob(repository, layer.digest, layer.size, Sink(buf.clear, write, tally.blob()))
    return bytes(buf)


def read_small(store: Store, repository: str, digest: str, limit: int) -> bytes:
    """A blob of at most ``limit`` bytes in memory, digest-checked; see ``Registry.get_blob``."""
    buf = bytearray()

    def write(chunk: bytes) -> None:
        buf.extend(chunk)
        if len(buf) > limit:
            raise RegistryError(f"blob {digest} is larger than {limit} bytes")

    store.read_blob(repository, digest, None, Sink(buf.clear, write))
    return bytes(buf)


class Tally:
    """Turns per-blob byte counts into one ``(done, total)`` progress stream."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.base = 0

    def blob(self) -> Callable[[int], None] | None:
        if not self.progress:
            return None
        base, report, total = self.base, self.progress, self.total
        return lambda n: report(min(base + n, total), total)

    def advance(self, n: int) -> None:
        self.base += n
        if self.progress:
            self.progress(min(self.base, self.total), self.total)


def chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), CHUNK):
        yield bytes(view[i : i + CHUNK])


def copy(
    src: Store,
    src_repository: str,
    digest: str,
    dst: Store,
    dst_repository: str,
    dst_tag: str | None,
    *,
    with_signatures: bool,
    progress: Progress | None,
) -> None:
    """Copies ``digest``'s whole graph (and, optionally, cosign's tags and referrers of it).

    Blobs already at the destination are skipped; the destination tag is set last.
    """
    plan: list[tuple[str, str | None]] = [(digest, dst_tag)]
    if with_signatures:
        for sig_tag in cosign_storage.cosign_tags(digest):
            found = src.resolve(src_repository, sig_tag)
            if found:
                plan.append((found, sig_tag))
        for d in src.referrers(src_repository, digest, None):
            plan.append((d.digest, None))
    # The main artifact is tagged with the destination tag; cosign's tags
    # keep their names; referrers go by digest.
    graphs = [(graph(src, src_repository, d), tag) for d, tag in plan]
    wanted: dict[str, Descriptor] = {}
    for (_, blobs), _tag in graphs:
        for b in blobs:
            wanted.setdefault(b.digest, b)
    missing = [b for b in wanted.values() if not dst.has_blob(dst_repository, b.digest)]
    tally = Tally(progress, sum(b.size for b in missing))
    for blob in missing:
        transfer(src, src_repository, blob, dst, dst_repository, tally)
    for (manifests, _blobs), tag in graphs:
        *children, (top, top_type) = manifests
        for data, media_type in children:
            dst.put_manifest(dst_repository, data, media_type, None)
        dst.put_manifest(dst_repository, top, top_type, tag)
    if progress:
        progress(tally.total, tally.total)


def graph(
    store: Store, repository: str, digest: str
) -> tuple[list[tuple[bytes, str]], list[Descriptor]]:
    """Manifests (children first) and blobs reachable from ``digest``."""
    manifests: list[tuple[bytes, str]] = []
    blobs: dict[str, Descriptor] = {}

    def walk(d: str, depth: int) -> None:
        if depth > 8:
            raise RegistryError(f"{repository}@{digest}: manifest graph too deep")
        data, media_type = store.get_manifest(repository, d)
        obj = oci.parse_manifest(data, what=f"{repository}@{d}")
        for child in obj.get("manifests") or []:
            walk(Descriptor.from_json(child).digest, depth + 1)
        for item in [obj.get("config"), *(obj.get("layers") or [])]:
            if item is not None:
                desc = Descriptor.from_json(item)
                blobs.setdefault(desc.digest, desc)
        manifests.append((data, media_type))

    walk(digest, 0)
    return manifests, list(blobs.values())


def transfer(
    store: Store, repository: str, blob: Descriptor, to: Store, to_repository: str, tally: Tally
) -> None:
    """Copies one blob between stores.

    Spooled through a temporary file (memory up to 8 MiB), so big blobs
    stream and the upload can be replayed on retry.
    """
    import tempfile  # copies only

    with tempfile.SpooledTemporaryFile(max_size=SPOOL) as spool:

        def reset() -> None:
            spool.seek(0)
            spool.truncate()

        def spool_write(chunk: bytes) -> None:
            spool.write(chunk)

        store.read_blob(repository, blob.digest, blob.size, Sink(reset, spool_write))

        def source() -> Iterable[bytes]:
            spool.seek(0)
            return iter(lambda: spool.read(CHUNK), b"")

        to.write_blob(to_repository, blob.digest, blob.size, source, tally.blob())
    tally.advance(blob.size)


def push_image(
    store: Store,
    repository: str,
    tag: str | None,
    config: bytes,
    layer: bytes,
    layer_digest: str,
    manifest: bytes,
    progress: Progress | None,
) -> str:
    """Stores a one-layer image's blobs, then its manifest (tagged last); returns its digest."""
    tally = Tally(progress, len(config) + len(layer) + len(manifest))
    tally.advance(len(config))
    # The tiny config blob goes up on a second connection while the layer
    # streams: three round trips saved per push.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        config_done = pool.submit(
            store.write_blob,
            repository,
            oci.sha256_digest(config),
            len(config),
            lambda: [config],
            None,
        )
        store.write_blob(
            repository,
            layer_digest,
            len(layer),
            lambda: chunks(layer),
            tally.blob(),
        )
        tally.advance(len(layer))
        config_done.result()
    digest = store.put_manifest(repository, manifest, oci.MANIFEST_V1, tag)
    tally.advance(len(manifest))
    return digest


def download_to_file(
    store: Store,
    repository: str,
    digest: str,
    size: int | None,
    path: Path,
    *,
    progress: Progress | None,
    durable: bool,
) -> None:
    """Streams a blob into ``path``, which appears only once the bytes verified.

    Raises:
        RegistryError: Reading failed, or ``path`` cannot be written (it is
            then left as it was).
    """
    tally = Tally(progress, size or 0)
    try:
        with fs.atomic_file(path, durable=durable) as f:
            writer = fs.BackgroundWriter(f, durable=durable)
            try:
                store.read_blob(
                    repository, digest, size, Sink(writer.reset, writer.write, tally.blob())
                )
                writer.drain()
            finally:
                writer.close()
    except OSError as exc:  # full disk, file size limit, no permission...
        raise RegistryError(
            f"cannot write {path}: {exc.strerror or exc}; it was left as it was"
        ) from None
