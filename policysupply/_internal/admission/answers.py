"""What the admission service's answers say: evidence, where an image is, labels.

Pure functions over the engine's results and the review's containers, used by
:mod:`policysupply._internal.admission.service`.
"""

from __future__ import annotations

import json
from typing import Any

from policysupply._internal.admission import review as rv
from policysupply._internal.admission.engine import ImageResult

EXTERNAL_DATA_API = "externaldata.gatekeeper.sh/v1beta1"
MAX_AUDIT_CHARS = 8192


def evidence_annotation(results: list[ImageResult]) -> str:
    """Per-image evidence as JSON within the annotation limit, images not allowed first.

    Whole entries are left out, never cut, so the value stays JSON; the last
    entry then says how many were left out. In audit mode this annotation is
    the only record in the cluster of what would have been denied.
    """
    ordered = sorted(results, key=lambda r: r.allowed)  # stable: denied, then allowed
    entries = [json.dumps(r.evidence(), separators=(",", ":")) for r in ordered]
    kept: list[str] = []
    size = 2  # the brackets
    for i, entry in enumerate(entries):
        left = len(entries) - i
        tail = len(json.dumps({"omitted": left})) + 1 if left > 1 else 0
        if size + len(entry) + 1 + tail > MAX_AUDIT_CHARS:
            kept.append(json.dumps({"omitted": left}, separators=(",", ":")))
            break
        kept.append(entry)
        size += len(entry) + 1
    return "[" + ",".join(kept) + "]"


def where(containers: list[rv.ContainerImage], image: str) -> str:
    """``container a, b`` and/or ``volume v``: where ``image`` is used."""
    out = []
    for what, fields in (("container", rv.CONTAINER_FIELDS), ("volume", ("volumes",))):
        names = sorted({c.container for c in containers if c.image == image and c.field in fields})
        if names:
            out.append(f"{what} {', '.join(names)}")
    return ", ".join(out)


def images_of(obj: Any, path: tuple[str, ...]) -> set[str]:
    """The images of the PodSpec at ``path`` in ``obj``; none when it cannot be read."""
    if obj is None:
        return set()
    try:
        return {c.image for c in rv.container_images(obj, path)}
    except rv.ReviewError:
        return set()  # judge every image, as for a CREATE


def reason_label(r: ImageResult) -> str:
    """The metrics label for a result: its first reason's code, or its outcome."""
    if r.outcome in ("allow", "skipped"):
        return ""
    if not r.reasons:
        return r.outcome
    head = r.reasons[0].split(":", 1)[0]
    return head if head.replace("_", "").isalnum() and len(head) <= 40 else r.outcome


def provider_response(items: list[dict[str, Any]], *, system_error: str = "") -> dict[str, Any]:
    """A Gatekeeper ProviderResponse (answers depend only on the key: idempotent)."""
    return {
        "apiVersion": EXTERNAL_DATA_API,
        "kind": "ProviderResponse",
        "response": {"idempotent": True, "items": items, "systemError": system_error},
    }
