"""What every loader shares: only a VerifiedBundle gets through; one logger."""

from __future__ import annotations

import logging

from policysupply.verifier import VerifiedBundle

logger = logging.getLogger("policysupply.loaders")


def _require_verified(value: object, where: str) -> VerifiedBundle:
    if not isinstance(value, VerifiedBundle):
        raise TypeError(
            f"{where} accepts only a VerifiedBundle (from Verifier.verify_bundle or "
            f"fetch_verified), not {type(value).__name__}"
        )
    return value
