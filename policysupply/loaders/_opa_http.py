"""The one adapter that speaks HTTP to OPA (opa-python-client and its ``requests`` session).

Nothing else in policysupply imports ``opa_client`` or reaches into it.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from policysupply.errors import LoadError
from policysupply.loaders._api import MISSING, DataPath, Rejected


def _url_path(path: DataPath) -> str:
    return "/".join(urllib.parse.quote(s, safe="") for s in path)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "<redacted>") if secret else text


class HttpOpa:
    """:class:`~policysupply.loaders._api.OpaApi` over HTTP, with opa-python-client.

    opa-python-client's methods are used where they fit (module PUT/DELETE,
    data DELETE); reads, data writes and queries go over the same ``requests``
    session (ADR 0008 says why). That session is the client's private
    ``_session``: this class is the only place that touches it, and
    ``tests/unit/loaders/test_opa_http.py`` pins what it relies on (the
    session carries the token, and ``root_url`` set after construction is
    where the client's own calls go).
    """

    def __init__(
        self, url: str, token: str | None, timeout: float, retries: int, verify: Any
    ) -> None:
        from opa_client import OpaClient

        parts = urllib.parse.urlsplit(url)
        https = parts.scheme == "https"
        self.client = OpaClient(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (443 if https else 80),
            ssl=https,
            token=token,
            timeout=timeout,
            retries=retries,
        )
        # OpaClient builds "scheme://host:port/v1"; a path prefix (OPA behind a
        # gateway) or an IPv6 host need the URL as given.
        self.base = url.rstrip("/")
        self.client.root_url = f"{self.base}/v1"
        self.session = self.client._session
        if https:
            self.session.verify = verify
        self.timeout = timeout
        self.token = token

    def close(self) -> None:
        self.client.close_connection()

    # Every request funnels through here so transport errors become LoadError.
    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        import requests
        from opa_client import errors as oe

        try:
            return fn()
        except Rejected:
            raise
        except oe.RegoParseError as exc:
            details = [e.get("message", "") for e in (exc.errors or []) if isinstance(e, Mapping)]
            parse = any(
                isinstance(e, Mapping) and e.get("code") == "rego_parse_error"
                for e in exc.errors or []
            )
            msg = "; ".join(d for d in details if d) or str(exc.message)
            raise Rejected(400, str(exc.expression), msg, parse) from None
        except (
            oe.DeletePolicyError,
            oe.DeleteDataError,
            oe.PolicyNotFoundError,
            oe.TypeException,
        ) as exc:
            raise Rejected(400, str(exc.expression), str(exc.message), False) from None
        except requests.RequestException as exc:
            raise LoadError(
                f"OPA at {self.base}: {what} failed: {type(exc).__name__}: "
                f"{_redact(str(exc), self.token)}"
            ) from None
        except ValueError as exc:  # a body that is not JSON (a proxy's error page)
            raise LoadError(
                f"OPA at {self.base}: {what}: unreadable answer ({_redact(str(exc), self.token)})"
            ) from None

    def _check(self, resp: Any, ok: tuple[int, ...]) -> Any:
        if resp.status_code in ok:
            return resp
        try:
            body = resp.json()
        except ValueError:
            body = {}
        code = str(body.get("code") or resp.status_code)
        errs = body.get("errors") or []
        detail = "; ".join(str(e.get("message", "")) for e in errs if isinstance(e, Mapping))
        message = detail or str(body.get("message") or resp.reason or "")
        raise Rejected(
            resp.status_code,
            code,
            _redact(message, self.token),
            any(isinstance(e, Mapping) and e.get("code") == "rego_parse_error" for e in errs),
        )

    def list_policies(self) -> list[Mapping[str, Any]]:
        def go() -> list[Mapping[str, Any]]:
            resp = self._check(
                self.session.get(f"{self.base}/v1/policies", timeout=self.timeout), (200,)
            )
            return list(resp.json().get("result") or [])

        return list(self.call("listing policies", go))

    def get_data(self, path: DataPath) -> Any:
        def go() -> Any:
            resp = self._check(
                self.session.get(f"{self.base}/v1/data/{_url_path(path)}", timeout=self.timeout),
                (200,),
            )
            body = resp.json()
            return body.get("result", MISSING)

        return self.call(f"reading data/{'/'.join(path)}", go)

    def put_data(self, path: DataPath, value: Any) -> None:
        # Not OpaClient.update_or_create_data: it takes objects only and sends
        # spaced JSON; a compact body is smaller for OPA to read.
        where = _url_path(path)
        body = json.dumps(value, separators=(",", ":")).encode()  # ASCII: the fastest path
        self.call(
            f"writing data/{'/'.join(path)}", lambda: self._send_json("PUT", where, body, (204,))
        )

    def delete_data(self, path: DataPath) -> None:
        self._delete(
            f"deleting data/{'/'.join(path)}",
            lambda: self.client.delete_data(_url_path(path)),
        )

    def put_policy(self, pid: str, raw: str) -> None:
        quoted = urllib.parse.quote(pid, safe="/:~@")
        self.call(
            f"writing policy {pid}",
            # rego_compat=False: the client would otherwise rewrite "v0" syntax
            # and upload something other than the verified module.
            lambda: self.client.update_policy_from_string(raw, quoted, rego_compat=False),
        )

    def delete_policy(self, pid: str) -> None:
        quoted = urllib.parse.quote(pid, safe="/:~@")
        self._delete(f"deleting policy {pid}", lambda: self.client.delete_policy(quoted))

    def query(self, path: DataPath, input: Any) -> Any:
        payload = {} if input is None else {"input": input}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

        def go() -> Any:
            resp = self._send_json("POST", _url_path(path), body, (200,))
            return resp.json().get("result")

        return self.call(f"querying data/{'/'.join(path)}", go)

    def _send_json(self, method: str, where: str, body: bytes, ok: tuple[int, ...]) -> Any:
        """Sends JSON ``body`` to ``/v1/data/<where>``; the response if its status is in ``ok``."""
        return self._check(
            self.session.request(
                method,
                f"{self.base}/v1/data/{where}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            ),
            ok,
        )

    def _delete(self, what: str, fn: Callable[[], Any]) -> None:
        """``call(what, fn)`` for a delete: what OPA does not have is already gone."""
        try:
            self.call(what, fn)
        except Rejected as exc:
            if exc.code != "resource_not_found":
                raise

    def healthy(self) -> bool:
        import requests

        try:
            resp = self.session.get(f"{self.base}/health", timeout=self.timeout)
        except requests.RequestException:
            return False
        return bool(resp.status_code == 200)
