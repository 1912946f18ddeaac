"""The admission service's configuration file (YAML or JSON), read strictly.

Unknown keys are refused: a misspelt ``mode`` or ``exclude`` must not turn
a check off. Paths are relative to the file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from policysupply.errors import AdmissionConfigError

Mode = Literal["enforce", "warn", "audit"]
MODES: tuple[str, ...] = ("enforce", "warn", "audit")
_MAX_FILE = 1 << 20


@attrs.frozen(kw_only=True)
class LabelSelector:
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions``)."""

    match_labels: Mapping[str, str] = attrs.field(factory=dict)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement (Kubernetes semantics)."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for key, op, values in self.match_expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True

    def to_kubernetes(self) -> dict[str, Any]:
        """The selector as a webhook configuration's ``namespaceSelector``."""
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [
                {"key": k, "operator": op, **({"values": list(v)} if v else {})}
                for k, op, v in self.match_expressions
            ]
        return out


@attrs.frozen(kw_only=True)
class RedisConfig:
    """Where the shared verification cache lives."""

    url: str
    hmac_key: bytes
    timeout: float = 0.1
    retry_after: float = 5.0


@attrs.frozen(kw_only=True)
class AdmissionConfig:
    """Everything the service needs; see docs/howto/admission.md for the file format."""

    mode: Mode = "enforce"
    trust_policy: Path
    trusted_root: Path | None = None
    rules_directory: Path | None = None
    rules_bundle: Path | None = None
    rules_image: str | None = None
    rules_trust_policy: Path | None = None
    rules_refresh: float = 300.0
    rules_state: Path | None = None
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    mutate: bool = False
    unknown_kinds: Literal["deny", "allow"] = "deny"
    namespace_selector: LabelSelector | None = None
    exclude_namespaces: tuple[str, ...] = ("kube-system",)
    include_images: tuple[str, ...] = ("*",)
    exclude_images: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    registry_ca_file: Path | None = None
    docker_config: Path | None = None
    cache_ttl: float = 300.0
    cache_entries: int = 10000
    tag_ttl: float = 10.0
    redis: RedisConfig | None = None
    deadline: float = 8.0
    registry_concurrency: int = 16
    registry_share: int | None = None
    max_request_bytes: int = 3 << 20
    max_images: int = 256
    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on its pod IP
    port: int = 8443
    cert_file: Path | None = None
    key_file: Path | None = None
    cert_reload_interval: float = 30.0
    allow_http: bool = False
    kubernetes_api: str | None = None
    engine: str | None = None

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> AdmissionConfig:
        """Reads a configuration file; ``overrides`` replace its fields.

        Raises:
            AdmissionConfigError: The file is unreadable, malformed, or names
                an unknown key or an invalid value.
        """
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise AdmissionConfigError(
                f"cannot read admission config {p}: {exc.strerror}"
            ) from None
        if len(raw) > _MAX_FILE:
            raise AdmissionConfigError(f"admission config {p} is larger than 1 MiB")
        try:
            if p.suffix.lower() == ".json":
                doc = json.loads(raw)
            else:
                import yaml

                doc = yaml.safe_load(raw)
        except Exception as exc:
            raise AdmissionConfigError(
                f"admission config {p} is not valid YAML/JSON: {exc}"
            ) from None
        fields = parse(doc if doc is not None else {}, base=p.parent, where=str(p))
        fields.update(overrides)
        try:
            return cls(**fields)
        except TypeError as exc:
            raise AdmissionConfigError(f"admission config {p}: {exc}") from None


# -- parsing ------------------------------------------------------------------------------

_TOP = {
    "mode",
    "trust_policy",
    "trusted_root",
    "rules",
    "settings",
    "mutate",
    "unknown_kinds",
    "scope",
    "registries",
    "cache",
    "limits",
    "server",
    "kubernetes_api",
    "engine",
}


def _fail(where: str, field: str, message: str) -> AdmissionConfigError:
    return AdmissionConfigError(f"admission config {where}: {field}: {message}")


def _obj(value: Any, where: str, field: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, field, f"must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(where, field, f"unknown key(s) {unknown}; known: {sorted(allowed)}")
    return value


def _str_list(value: Any, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(where, field, "must be a list of non-empty strings")
    return tuple(value)


def _seconds(value: Any, where: str, field: str, *, zero: bool = False) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        from policysupply._internal.policy_file import parse_duration

        text = value.strip()
        if zero and text in ("0", "0s"):
            return 0.0
        try:
            if text.endswith("ms") and text[:-2].isdigit():
                return int(text[:-2]) / 1000
            seconds = parse_duration(text, what=field).total_seconds()
        except ValueError as exc:
            raise _fail(where, field, str(exc)) from None
    else:
        raise _fail(where, field, f"{value!r} is not a duration like 500ms, 90s or 5m")
    if seconds < 0 or (seconds == 0 and not zero):
        raise _fail(where, field, "must be positive")
    return seconds


def _int(value: Any, where: str, field: str, *, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(where, field, f"must be an integer from {low} to {high}")
    return value


def _bool(value: Any, where: str, field: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, field, "must be true or false")
    return value


def _path(value: Any, base: Path, where: str, field: str) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(where, field, "must be a path")
    return (base / value).resolve()


def parse_selector(value: Any, where: str, field: str) -> LabelSelector:
    """A ``{matchLabels, matchExpressions}`` mapping as a :class:`LabelSelector`."""
    doc = _obj(value, where, field, {"matchLabels", "matchExpressions"})
    labels = doc.get("matchLabels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise _fail(where, f"{field}.matchLabels", "must map label keys to string values")
    exprs = []
    for i, item in enumerate(doc.get("matchExpressions") or []):
        spot = f"{field}.matchExpressions[{i}]"
        e = _obj(item, where, spot, {"key", "operator", "values"})
        key, op = e.get("key"), e.get("operator")
        if not isinstance(key, str) or not key:
            raise _fail(where, spot, "needs a key")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise _fail(where, spot, "operator must be In, NotIn, Exists or DoesNotExist")
        values = _str_list(e.get("values") or [], where, f"{spot}.values") if "values" in e else ()
        if op in ("In", "NotIn") and not values:
            raise _fail(where, spot, f"{op} needs values")
        if op in ("Exists", "DoesNotExist") and values:
            raise _fail(where, spot, f"{op} takes no values")
        exprs.append((key, str(op), values))
    return LabelSelector(match_labels=dict(labels), match_expressions=tuple(exprs))


def parse(doc: Any, *, base: Path, where: str) -> dict[str, Any]:
    """The keyword arguments of :class:`AdmissionConfig` for a parsed document."""
    top = _obj(doc, where, "(top level)", _TOP)
    out: dict[str, Any] = {}
    if "mode" in top:
        if top["mode"] not in MODES:
            raise _fail(where, "mode", f"must be one of {list(MODES)}, got {top['mode']!r}")
        out["mode"] = top["mode"]
    if "trust_policy" not in top:
        raise _fail(where, "trust_policy", "is required (a trust policy file)")
    out["trust_policy"] = _path(top["trust_policy"], base, where, "trust_policy")
    if "trusted_root" in top:
        out["trusted_root"] = _path(top["trusted_root"], base, where, "trusted_root")
    rules = _obj(
        top.get("rules"),
        where,
        "rules",
        {"directory", "bundle", "image", "trust_policy", "refresh", "state"},
    )
    sources = [k for k in ("directory", "bundle", "image") if k in rules]
    if len(sources) > 1:
        raise _fail(where, "rules", f"give one of directory, bundle, image (got {sources})")
    if "directory" in rules:
        out["rules_directory"] = _path(rules["directory"], base, where, "rules.directory")
    if "bundle" in rules:
        out["rules_bundle"] = _path(rules["bundle"], base, where, "rules.bundle")
    if "image" in rules:
        if not isinstance(rules["image"], str) or not rules["image"]:
            raise _fail(where, "rules.image", "must be an image reference")
        out["rules_image"] = rules["image"]
    if "trust_policy" in rules:
        out["rules_trust_policy"] = _path(rules["trust_policy"], base, where, "rules.trust_policy")
    if "state" in rules:
        out["rules_state"] = _path(rules["state"], base, where, "rules.state")
    if "refresh" in rules:
        out["rules_refresh"] = _seconds(rules["refresh"], where, "rules.refresh")
    if "settings" in top:
        if not isinstance(top["settings"], dict):
            raise _fail(where, "settings", "must be a mapping (the gate settings)")
        out["settings"] = top["settings"]
    if "mutate" in top:
        out["mutate"] = _bool(top["mutate"], where, "mutate")
    if "unknown_kinds" in top:
        if top["unknown_kinds"] not in ("deny", "allow"):
            raise _fail(where, "unknown_kinds", "must be deny or allow")
        out["unknown_kinds"] = top["unknown_kinds"]
    if "kubernetes_api" in top:
        if not isinstance(top["kubernetes_api"], str):
            raise _fail(where, "kubernetes_api", "must be a URL")
        out["kubernetes_api"] = top["kubernetes_api"]
    if "engine" in top:
        if top["engine"] not in ("auto", "opa", "embedded"):
            raise _fail(where, "engine", "must be auto, opa or embedded")
        out["engine"] = top["engine"]
    scope = _obj(top.get("scope"), where, "scope", {"namespaces", "images"})
    ns = _obj(scope.get("namespaces"), where, "scope.namespaces", {"selector", "exclude"})
    if "selector" in ns:
        out["namespace_selector"] = parse_selector(
            ns["selector"], where, "scope.namespaces.selector"
        )
    if "exclude" in ns:
        out["exclude_namespaces"] = _str_list(ns["exclude"], where, "scope.namespaces.exclude")
    images = _obj(scope.get("images"), where, "scope.images", {"include", "exclude"})
    if "include" in images:
        out["include_images"] = _str_list(images["include"], where, "scope.images.include")
    if "exclude" in images:
        out["exclude_images"] = _str_list(images["exclude"], where, "scope.images.exclude")
    reg = _obj(top.get("registries"), where, "registries", {"insecure", "ca_file", "docker_config"})
    if "insecure" in reg:
        out["insecure_registries"] = _str_list(reg["insecure"], where, "registries.insecure")
    if "ca_file" in reg:
        out["registry_ca_file"] = _path(reg["ca_file"], base, where, "registries.ca_file")
    if "docker_config" in reg:
        out["docker_config"] = _path(reg["docker_config"], base, where, "registries.docker_config")
    cache = _obj(top.get("cache"), where, "cache", {"ttl", "entries", "tag_ttl", "redis"})
    if "ttl" in cache:
        out["cache_ttl"] = _seconds(cache["ttl"], where, "cache.ttl", zero=True)
    if "entries" in cache:
        out["cache_entries"] = _int(cache["entries"], where, "cache.entries", low=0, high=10**7)
    if "tag_ttl" in cache:
        out["tag_ttl"] = _seconds(cache["tag_ttl"], where, "cache.tag_ttl", zero=True)
    if "redis" in cache:
        r = _obj(cache["redis"], where, "cache.redis", {"url", "hmac_key_file", "timeout"})
        url = r.get("url")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise _fail(where, "cache.redis.url", "must be a redis://, rediss:// or unix:// URL")
        if "hmac_key_file" not in r:
            # Without it, anyone who can write to Redis could plant a
            # "verified" result and have an unsigned image admitted.
            raise _fail(
                where,
                "cache.redis.hmac_key_file",
                "is required with Redis: the replicas' shared secret that authenticates "
                "cached results (at least 16 bytes)",
            )
        kp = _path(r["hmac_key_file"], base, where, "cache.redis.hmac_key_file")
        try:
            key = kp.read_bytes().strip()
        except OSError as exc:
            raise _fail(where, "cache.redis.hmac_key_file", str(exc.strerror)) from None
        if len(key) < 16:
            raise _fail(where, "cache.redis.hmac_key_file", "needs at least 16 bytes")
        timeout = _seconds(r.get("timeout", 0.1), where, "cache.redis.timeout")
        out["redis"] = RedisConfig(url=url, hmac_key=key, timeout=timeout)
    limits = _obj(
        top.get("limits"),
        where,
        "limits",
        {"deadline", "registry_concurrency", "registry_share", "max_request_bytes", "max_images"},
    )
    if "deadline" in limits:
        out["deadline"] = _seconds(limits["deadline"], where, "limits.deadline")
        if out["deadline"] > 29:
            raise _fail(where, "limits.deadline", "must stay below the webhook timeout (max 30s)")
    if "registry_concurrency" in limits:
        out["registry_concurrency"] = _int(
            limits["registry_concurrency"], where, "limits.registry_concurrency", low=1, high=1024
        )
    if "registry_share" in limits:
        out["registry_share"] = _int(
            limits["registry_share"], where, "limits.registry_share", low=1, high=1024
        )
        concurrency = attrs.fields(AdmissionConfig).registry_concurrency.default
        if out["registry_share"] > out.get("registry_concurrency", concurrency):
            raise _fail(
                where, "limits.registry_share", "must not exceed limits.registry_concurrency"
            )
    if "max_request_bytes" in limits:
        out["max_request_bytes"] = _int(
            limits["max_request_bytes"], where, "limits.max_request_bytes", low=1024, high=64 << 20
        )
    if "max_images" in limits:
        out["max_images"] = _int(
            limits["max_images"], where, "limits.max_images", low=1, high=10000
        )
    server = _obj(
        top.get("server"),
        where,
        "server",
        {"host", "port", "cert_file", "key_file", "cert_reload_interval", "allow_http"},
    )
    if "host" in server:
        if not isinstance(server["host"], str):
            raise _fail(where, "server.host", "must be an address")
        out["host"] = server["host"]
    if "port" in server:
        out["port"] = _int(server["port"], where, "server.port", low=0, high=65535)
    for field in ("cert_file", "key_file"):
        if field in server:
            out[field] = _path(server[field], base, where, f"server.{field}")
    if ("cert_file" in out) != ("key_file" in out):
        raise _fail(where, "server", "cert_file and key_file go together")
    if "cert_reload_interval" in server:
        out["cert_reload_interval"] = _seconds(
            server["cert_reload_interval"], where, "server.cert_reload_interval"
        )
    if "allow_http" in server:
        out["allow_http"] = _bool(server["allow_http"], where, "server.allow_http")
    return out


def max_age(value: dt.timedelta | None) -> float | None:
    """``max_signature_age`` in seconds (``None`` when unset)."""
    return None if value is None else value.total_seconds()
