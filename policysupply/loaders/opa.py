"""Loading verified bundles into a running OPA through its REST API."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

import attrs

from policysupply._internal.closing import Closing
from policysupply._internal.oci import Reference
from policysupply.errors import LoadError
from policysupply.loaders._api import OpaApi, Rejected
from policysupply.loaders._common import _require_verified
from policysupply.loaders._core import (
    RECORDS,
    check_load_name,
    check_roots,
    effective_roots,
    module_prefix,
    split_path,
)
from policysupply.loaders._load import Change, Held, apply
from policysupply.verifier import VerifiedBundle


@attrs.frozen(kw_only=True)
class LoadResult:
    """What :meth:`OPA.load` did.

    Attributes:
        name: The load name (module ids and the load record are keyed by it).
        reference: The verified image, by digest.
        revision: The bundle's manifest revision.
        roots: The data roots the bundle owns in OPA.
        modules: Policy ids that now hold the bundle's modules.
        removed: Policy ids deleted because the new revision no longer has them.
        changed: Number of writes OPA accepted (0 when it already held this bundle).
    """

    name: str
    reference: Reference
    revision: str
    roots: tuple[str, ...]
    modules: tuple[str, ...]
    removed: tuple[str, ...]
    changed: int


class OPA(Closing):
    """A running OPA server, loaded through its REST API.

    ``load`` puts a verified bundle's modules (as policies with ids derived
    from the image and the module path) and its data (one document per
    manifest root) into OPA, removes what the bundle's previous revision had
    and this one does not, and records the load under
    ``data.system.policysupply.bundles``. If any step fails, every step already
    taken is undone, so OPA keeps serving the previous bundle.

    The REST API has no multi-request transaction: while a load runs,
    queries can see some modules of the new revision and some of the old.
    For atomic activation use :class:`BundleServer`.

    Example:
        >>> opa = OPA("http://127.0.0.1:8181")                      # doctest: +SKIP
        >>> opa.load(fetch_verified(registry, "acme/policy:1", verifier))  # doctest: +SKIP
        >>> opa.query("k8s/admission/allow", {"kind": "Pod"})      # doctest: +SKIP
        True
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        verify: bool | str = True,
    ) -> None:
        """Describes the server; no connection is made until the first call.

        Args:
            url: OPA's base URL (``http://127.0.0.1:8181``; a path prefix is kept).
            token: Bearer token for OPA's ``--authentication=token``; never
                shown in ``repr`` or error messages.
            timeout: Seconds for each request (connect and read).
            retries: Retries of a request after a connection error or a
                500/502/504 answer (opa-python-client's policy).
            verify: For ``https``: ``False``, or a CA bundle path.

        Raises:
            LoadError: ``url`` is not an ``http``/``https`` URL, or carries
                credentials (use ``token=``).
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoadError(f"OPA URL must be http:// or https://host[:port]; got {url!r}")
        if parts.username or parts.password:
            raise LoadError("OPA URL must not carry credentials; pass token= instead")
        if parts.query or parts.fragment:
            raise LoadError("OPA URL must not have a query or fragment")
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._retries = retries
        self._verify = verify
        self._client: OpaApi | None = None
        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}  # what this object last wrote, per load name

    def __repr__(self) -> str:
        return f"OPA({self.url!r})"

    def _api(self) -> OpaApi:
        if self._client is None:
            from policysupply.loaders._opa_http import HttpOpa

            self._client = HttpOpa(
                self.url, self._token, self._timeout, self._retries, self._verify
            )
        return self._client

    def close(self) -> None:
        """Closes the HTTP session."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def healthy(self) -> bool:
        """Whether OPA answers ``GET /health`` with 200."""
        return self._api().healthy()

    def query(self, path: str, input: Any = None) -> Any:
        """Evaluates a document: ``POST /v1/data/<path>`` with ``input``.

        Args:
            path: ``k8s/admission/allow``, ``k8s.admission.allow`` or
                ``data.k8s.admission.allow``.
            input: The input document (omitted when ``None``).

        Returns:
            The result, or ``None`` when the document is undefined.

        Raises:
            LoadError: OPA is unreachable or refused the query.
        """
        api = self._api()
        try:
            return api.query(split_path(path), input)
        except Rejected as exc:
            raise LoadError(
                f"OPA at {self.url} refused the query for {path!r}: {exc.code}: {exc.message}"
            ) from None

    def loaded(self) -> dict[str, dict[str, Any]]:
        """The load records OPA holds, by load name (reference, digest, revision, roots)."""
        api = self._api()
        try:
            records = api.get_data(RECORDS)
        except Rejected as exc:
            raise LoadError(f"OPA at {self.url}: cannot read load records: {exc}") from None
        if not isinstance(records, dict):
            return {}
        return {str(r.get("name", k)): r for k, r in records.items() if isinstance(r, dict)}

    def load(self, verified: VerifiedBundle, *, name: str | None = None) -> LoadResult:
        """Loads a verified bundle; on any failure, OPA is put back as it was.

        Steps (each undone in reverse order if a later one fails):

        1. read the load records; take this load's modules and the data at
           every root involved as the rollback snapshot: from this object's
           memory of its last load while OPA's record still matches it, else
           from OPA (the recorded policy ids one by one, the data per root).
           Nothing else OPA holds is read, so a load costs what it changes,
           however much else is loaded;
        2. if the bundle brings policy ids or roots its record does not list,
           list them in the record first (so a failed load stays findable);
        3. delete this bundle's modules that the new revision dropped (and
           old modules whose rules sit where the new data goes);
        4. write each changed root's data document (or delete it), sent as
           the verified bundle's own bytes where its data files hold the
           document in one piece;
        5. write changed modules, retrying ones that depend on modules not
           yet written or removed;
        6. write the load record.

        The roots belong to the load, as bundle roots do in OPA: writes
        there by anyone else may be overwritten or lost on rollback.

        Args:
            verified: The bundle (only a :class:`VerifiedBundle` is accepted).
            name: Load name; revisions with the same name replace each other.
                Default: the image's ``host/repository``.

        Returns:
            What was done.

        Raises:
            TypeError: ``verified`` is not a :class:`VerifiedBundle`.
            LoadError: OPA refused or failed a step (the message says which,
                and whether the rollback completed), or the bundle cannot be
                loaded over REST (Rego v0 modules; Wasm entrypoints; roots
                overlapping another load).
        """
        verified = _require_verified(verified, "OPA.load")
        bundle = verified.bundle
        load_name = check_load_name(name or verified.reference.name)
        v0 = sorted(m for m in bundle.modules if bundle.rego_version_of(m) == 0)
        if v0:
            raise LoadError(
                f"{verified.reference}: module {v0[0]} is Rego v0; OPA's REST API parses "
                "modules as the server's Rego version. Serve it with BundleServer, "
                "where OPA honours the manifest's rego_version"
            )
        if bundle.manifest.wasm:
            raise LoadError(
                f"{verified.reference}: the manifest maps entrypoints to Wasm modules, which "
                "OPA's REST API cannot load (its answers would come from the Rego instead). "
                "Serve it with BundleServer: OPA's bundle plugin runs the Wasm (where OPA is "
                "built with it)"
            )
        roots = effective_roots(bundle)
        check_roots(verified.reference, roots)
        prefix = module_prefix(load_name)
        modules = {prefix + path: src for path, src in bundle.modules.items()}
        record = {
            "name": load_name,
            "reference": str(verified.reference),
            "digest": verified.artifact.digest,
            "revision": bundle.manifest.revision,
            "roots": ["/".join(r) for r in roots],
            "modules": sorted(modules),
        }
        with self._lock:
            removed, writes = apply(
                self._api(),
                Change(
                    name=load_name,
                    roots=roots,
                    modules=modules,
                    data=bundle.data,
                    record=record,
                    # Each root's document as the verified bundle's own bytes
                    # where its data files hold it as one piece; else encoded.
                    bodies=bundle._raw_document,
                ),
                self._held,
                self.url,
            )
        return LoadResult(
            name=load_name,
            reference=verified.reference,
            revision=bundle.manifest.revision,
            roots=tuple(record["roots"]),
            modules=tuple(sorted(modules)),
            removed=removed,
            changed=writes,
        )

    def unload(self, name: str) -> None:
        """Removes a load: its modules, the data at its roots and its record.

        Raises:
            LoadError: OPA refused or failed a step (rolled back as in :meth:`load`).
        """
        with self._lock:
            apply(self._api(), Change(name=check_load_name(name)), self._held, self.url)
