"""The configuration the bundle server hands out: OPA's, and a registry's notifications.

Pure functions over what :class:`~policysupply.loaders.BundleServer` knows
(its URL, token, served bundles and the keys that verified them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from policysupply.errors import LoadError
from policysupply.loaders._http import EVENTS_PATH
from policysupply.loaders.store import check_bundle_name

if TYPE_CHECKING:
    from policysupply.loaders.watch import BundleWatch
    from policysupply.native import NativeTrust


def opa_config(
    chosen: list[str],
    *,
    url: str,
    has_token: bool,
    service: str,
    min_delay_seconds: int,
    max_delay_seconds: int,
    long_polling_timeout_seconds: int | None,
    token_env: str,
    signing: NativeTrust | None,
    native_keys: Callable[[list[str]], dict[str, Any]],
) -> dict[str, Any]:
    """OPA's ``keys``/``services``/``bundles`` for ``chosen``; see ``BundleServer.opa_config``."""
    svc: dict[str, Any] = {"url": url}
    if has_token:
        svc["credentials"] = {"bearer": {"token": f"${{{token_env}}}"}}
    polling: dict[str, Any] = {
        "min_delay_seconds": min_delay_seconds,
        "max_delay_seconds": max_delay_seconds,
    }
    if long_polling_timeout_seconds is not None:
        polling["long_polling_timeout_seconds"] = long_polling_timeout_seconds
    bundles: dict[str, Any] = {
        check_bundle_name(n): {
            "service": service,
            "resource": f"bundles/{n}",
            "polling": dict(polling),
        }
        for n in chosen
    }
    if signing is not None:
        fragment = signing.to_opa_config(chosen[0])
        keys = fragment["keys"]
        for source in bundles.values():
            source["signing"] = dict(fragment["bundles"][chosen[0]]["signing"])
    else:
        keys = native_keys(chosen)
    # Keys first: a reader that stops at the bundles still has them.
    config: dict[str, Any] = {"keys": keys} if keys else {}
    config["services"] = {service: svc}
    config["bundles"] = bundles
    return config


def native_keys(
    names: list[str],
    *,
    watches: Sequence[BundleWatch],
    served: Mapping[str, bytes | None],
    published: Mapping[str, list[Any]],
) -> dict[str, Any]:
    """OPA ``keys`` for ``names``: every public key that may have signed them natively.

    ``served`` holds each name's served tarball and ``published`` the keys
    that verified it; see ``BundleServer._opa_keys``.

    Raises:
        LoadError: A served bundle carries an OPA-native signature by none of these keys.
    """
    from policysupply._internal.opa_signatures import is_signatures_file
    from policysupply._internal.tarball import read_entries
    from policysupply.errors import VerificationError
    from policysupply.native import NativeTrust, verify_entries

    out: dict[str, Any] = {}
    for name in names:
        candidates = published[name] + [
            k for w in watches if w.name == name for k in w.verifier.policy.keys
        ]
        trust = None
        with contextlib.suppress(VerificationError):
            trust = NativeTrust.from_cosign_keys(candidates)
        entry = served[name]
        if entry is not None:
            entries = read_entries(entry)
            if any(is_signatures_file(n) for n in entries):
                try:
                    if trust is None:
                        raise VerificationError("no key OPA could verify it with")
                    verify_entries(entries, trust)
                except VerificationError as exc:
                    raise LoadError(
                        f"bundle {name} carries an OPA-native signature this server has "
                        f"no matching key for ({exc}); OPA refuses a signed bundle without "
                        "its key: pass signing=NativeTrust(...) with it"
                    ) from None
        if trust is not None:
            out.update(trust.to_opa_config(name)["keys"])
    return out


def registry_notifications(
    *, url: str, events_token: str, name: str, timeout: str, backoff: str
) -> dict[str, Any]:
    """A distribution config's ``notifications``; see ``BundleServer.registry_notifications``."""
    return {
        "events": {"includereferences": False},
        "endpoints": [
            {
                "name": name,
                "url": url + EVENTS_PATH,
                "headers": {"Authorization": [f"Bearer {events_token}"]},
                "timeout": timeout,
                "threshold": 3,
                "backoff": backoff,
                # Only manifest pushes matter (a tag moving, a signature
                # arriving): fewer events queue ahead of the one that does.
                "ignoredmediatypes": ["application/octet-stream"],
                "ignore": {
                    "mediatypes": ["application/octet-stream"],
                    "actions": ["pull", "delete", "mount"],
                },
            }
        ],
    }
