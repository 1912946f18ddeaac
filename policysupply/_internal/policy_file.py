"""Trust policy files (YAML or JSON): what ``TrustPolicy.from_file`` reads.

The format is described by ``policysupply/schemas/trust-policy.schema.json``
(shipped for editors). This reader is stricter than the schema needs to be
and is the authority: an unknown key, a wrong type or an unreadable key file
is a ``VerificationError`` naming the file and the field, because a typo that
silently dropped a requirement would turn a NO into a YES.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policysupply.errors import VerificationError

SCHEMA_RESOURCE = "schemas/trust-policy.schema.json"

_TOP = {
    "version",
    "keys",
    "identities",
    "threshold",
    "annotations",
    "docker_reference",
    "attestations",
    "allowed_registries",
    "signing_time",
    "transparency_log",
    "require_sct",
}
_IDENTITY = {"issuer", "issuer_regex", "subject", "subject_regex", "extensions"}
_DURATION = re.compile(r"^([0-9]{1,30})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = dt.timedelta(days=36500)
_MAX_FILE = 1 << 20


def parse_duration(value: object, *, what: str) -> dt.timedelta:
    """``90``, ``"90s"``, ``"15m"``, ``"12h"`` or ``"7d"`` (at most 100 years).

    Raises:
        ValueError: Not such a duration (the message says which forms work).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{what}: {value!r} is not a duration like 90s, 15m, 12h or 7d")
    if seconds <= 0:
        raise ValueError(f"{what}: a duration must be positive")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{what}: {value!r} is longer than 100 years (36500d)")
    return dt.timedelta(seconds=seconds)


def _load(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_FILE + 1)
    except OSError as exc:
        raise VerificationError(f"cannot read trust policy {path}: {exc.strerror}") from None
    if len(raw) > _MAX_FILE:
        raise VerificationError(f"trust policy {path} is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(f"trust policy {path} is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except RecursionError:
        raise VerificationError(f"trust policy {path} is nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError
        raise VerificationError(f"trust policy {path} is not valid JSON: {exc}") from None
    except Exception as exc:  # yaml.YAMLError and its subclasses
        if type(exc).__module__.startswith("yaml"):
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise VerificationError(f"trust policy {path} is not valid YAML{where}") from None
        raise


def _fail(path: Path, field: str, message: str) -> VerificationError:
    return VerificationError(f"trust policy {path}: {field}: {message}")


def _strings(doc: Mapping[str, Any], key: str, path: Path) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, key, "must be a list of non-empty strings")
    return list(value)


def _string_map(value: Any, field: str, path: Path) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(path, field, "must be a mapping of strings to strings")
    return dict(value)


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keyword arguments of ``TrustPolicy`` that the file at ``path`` states.

    Raises:
        VerificationError: Unreadable, malformed, or an unknown or mistyped field.
    """
    from policysupply.identity import Identity

    p = Path(path)
    doc = _load(p)
    if not isinstance(doc, dict):
        raise VerificationError(f"trust policy {p} must be a mapping (YAML or JSON object)")
    unknown = sorted(str(k) for k in set(doc) - _TOP)
    if unknown:
        raise _fail(p, ", ".join(unknown), f"unknown field(s); known: {', '.join(sorted(_TOP))}")
    if doc.get("version", 1) != 1:
        raise _fail(p, "version", "only version 1 exists")
    out: dict[str, Any] = {}
    keys = []
    for item in _strings(doc, "keys", p):
        if item.lstrip().startswith("-----BEGIN"):
            keys.append(item)
        else:  # a path, relative to the policy file
            key_path = Path(item)
            keys.append(str(key_path if key_path.is_absolute() else p.parent / key_path))
    out["keys"] = keys
    identities = []
    raw_ids = doc.get("identities", [])
    if not isinstance(raw_ids, list):
        raise _fail(p, "identities", "must be a list of mappings")
    for i, entry in enumerate(raw_ids):
        field = f"identities[{i}]"
        if not isinstance(entry, dict):
            raise _fail(p, field, "must be a mapping (issuer/issuer_regex, subject/subject_regex)")
        extra = sorted(str(k) for k in set(entry) - _IDENTITY)
        if extra:
            raise _fail(p, field, f"unknown field(s) {', '.join(extra)}")
        for k in _IDENTITY - {"extensions"}:
            if k in entry and not (isinstance(entry[k], str) and entry[k]):
                raise _fail(p, f"{field}.{k}", "must be a non-empty string")
        try:
            identities.append(
                Identity(
                    issuer=entry.get("issuer"),
                    issuer_regex=entry.get("issuer_regex"),
                    subject=entry.get("subject"),
                    subject_regex=entry.get("subject_regex"),
                    extensions=_string_map(entry.get("extensions", {}), f"{field}.extensions", p),
                )
            )
        except VerificationError as exc:
            raise _fail(p, field, str(exc)) from None
    out["identities"] = identities
    if "threshold" in doc:
        t = doc["threshold"]
        if not isinstance(t, int) or isinstance(t, bool) or t < 1:
            raise _fail(p, "threshold", "must be a whole number of at least 1")
        out["threshold"] = t
    if "annotations" in doc:
        out["annotations"] = _string_map(doc["annotations"], "annotations", p)
    if "docker_reference" in doc:
        if doc["docker_reference"] not in ("repository", "exact", "any", "off"):
            raise _fail(p, "docker_reference", "must be repository, exact or any")
        out["docker_reference"] = doc["docker_reference"]
    out["attestations"] = _strings(doc, "attestations", p)
    out["allowed_registries"] = _strings(doc, "allowed_registries", p)
    signing = doc.get("signing_time", {})
    if not isinstance(signing, dict) or set(signing) - {"max_age", "insecure_witnessed_age"}:
        raise _fail(p, "signing_time", "must be a mapping with max_age, insecure_witnessed_age")
    if "max_age" in signing:
        try:
            out["max_signature_age"] = parse_duration(signing["max_age"], what="max_age")
        except ValueError as exc:
            raise _fail(p, "signing_time.max_age", str(exc)) from None
    if "insecure_witnessed_age" in signing:
        if not isinstance(signing["insecure_witnessed_age"], bool):
            raise _fail(p, "signing_time.insecure_witnessed_age", "must be true or false")
        out["insecure_witnessed_age"] = signing["insecure_witnessed_age"]
    tlog = doc.get("transparency_log", "default")
    if tlog not in ("default", "required", "ignore"):
        raise _fail(p, "transparency_log", "must be default, required or ignore")
    out["require_tlog"] = {"default": None, "required": True, "ignore": False}[tlog]
    if "require_sct" in doc:
        if not isinstance(doc["require_sct"], bool):
            raise _fail(p, "require_sct", "must be true or false")
        out["require_sct"] = doc["require_sct"]
    return out
