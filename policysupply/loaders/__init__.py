"""Getting verified bundles to a policy engine: OPA's REST API, a bundle server, a directory.

Every loader here accepts only a :class:`~policysupply.verifier.VerifiedBundle`,
which only a :class:`~policysupply.verifier.Verifier` can create, so nothing
reaches OPA without passing verification first.

- :class:`OPA` pushes a bundle's modules and data into a running OPA through
  its REST API and rolls back to what was there if any step fails.
- :class:`BundleServer` serves verified bundles over OPA's bundle HTTP
  protocol (ETag, ``304``, long polling), so OPA activates each bundle
  atomically; it can watch a registry tag and publish only what verifies.
- :func:`extract_verified` writes a bundle to a directory atomically, for
  file-based loaders (``opa run -b DIR``, sidecars).
- :func:`publish` and :func:`fetch_verified` are the pipeline in one call each.
"""

from policysupply.loaders._http import BUNDLE_MEDIA_TYPE as BUNDLE_MEDIA_TYPE
from policysupply.loaders.extract import extract_verified
from policysupply.loaders.opa import OPA, LoadResult
from policysupply.loaders.pipeline import fetch_verified, publish
from policysupply.loaders.server import BundleServer
from policysupply.loaders.store import ServedBundle
from policysupply.loaders.watch import BundleWatch

__all__ = [
    "OPA",
    "BundleServer",
    "BundleWatch",
    "LoadResult",
    "ServedBundle",
    "extract_verified",
    "fetch_verified",
    "publish",
]
