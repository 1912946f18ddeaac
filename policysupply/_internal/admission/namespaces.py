"""Namespace labels from the Kubernetes API, for the admission service's namespace selector."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from policysupply._internal.admission.memo import TTLMap as _TTLMap

log = logging.getLogger("policysupply.admission")


class NamespaceLabels:
    """Namespace labels from the Kubernetes API (for the namespace selector), cached 30 s.

    In a pod: the API server at ``https://kubernetes.default.svc`` with the
    service account's token and CA. A lookup that fails leaves the namespace
    in scope: its images are checked (fail closed).
    """

    SA = "/var/run/secrets/kubernetes.io/serviceaccount"

    def __init__(self, api: str | None, *, timeout: float = 2.0) -> None:
        self._api = api or "https://kubernetes.default.svc"
        self._timeout = timeout
        self._cache = _TTLMap(4096)
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            import os

            import httpx

            headers = {}
            token = os.path.join(self.SA, "token")
            if os.path.exists(token):
                with open(token) as f:
                    headers["Authorization"] = f"Bearer {f.read().strip()}"
            ca = os.path.join(self.SA, "ca.crt")
            verify: Any = ca if os.path.exists(ca) else True
            self._client = httpx.AsyncClient(headers=headers, verify=verify, timeout=self._timeout)
        return self._client

    async def get(self, namespace: str) -> Mapping[str, str] | None:
        hit = self._cache.get(namespace)
        if hit is not None:
            return dict(hit)
        try:
            resp = await self._http().get(f"{self._api}/api/v1/namespaces/{namespace}")
            resp.raise_for_status()
            labels = (resp.json().get("metadata") or {}).get("labels") or {}
        except Exception as exc:
            log.warning(
                "namespace lookup failed", extra={"namespace": namespace, "error": str(exc)}
            )
            return None
        if not isinstance(labels, dict):
            return None
        clean = {str(k): str(v) for k, v in labels.items()}
        self._cache.put(namespace, clean, 30.0)
        return clean

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
