"""The gate's verdict: :class:`Decision` (re-exported by :mod:`policysupply.gate`)."""

from __future__ import annotations

import html
import json
import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from policysupply._internal.gate_input import plain as _plain

__all__ = ["Decision"]


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class Decision:
    """The gate's verdict on one image.

    Attributes:
        allowed: ``True`` only if verification passed (unless the gate was
            built with ``require_verification=False``) and the rules allowed.
        reasons: Why not, one line per violation, each starting with the rule
            that fired (``"allowed_registries: ..."``); empty when allowed.
        reference: The image that was judged, pinned to its digest.
        evidence: What was judged and how: ``input`` (the Rego input
            document), ``violations`` (``[{rule, message}]``), ``fired``
            (rule names), ``query``, ``result`` (the raw rule output) and
            ``rules`` (digest, revision and, when pulled from a registry,
            the verified reference of the rule bundle).
    """

    allowed: bool
    reasons: tuple[str, ...] = attrs.field(converter=_strings)
    reference: str
    evidence: Mapping[str, Any] = attrs.field(converter=_freeze)

    @property
    def fired(self) -> tuple[str, ...]:
        """Names of the rules that denied (empty when allowed)."""
        return tuple(self.evidence.get("fired", ()))

    @property
    def input(self) -> Mapping[str, Any]:
        """The Rego input document the rules judged."""
        value: Mapping[str, Any] = self.evidence.get("input", {})
        return value

    def to_json(self) -> dict[str, Any]:
        """The decision as a JSON-ready object (what ``policysupply gate --json`` prints)."""
        return {
            "allowed": self.allowed,
            "decision": "allow" if self.allowed else "deny",
            "reference": self.reference,
            "reasons": list(self.reasons),
            "evidence": _plain(self.evidence),
        }

    def __str__(self) -> str:
        head = f"{'ALLOW' if self.allowed else 'DENY'} {self.reference}"
        return "\n".join([head, *(f"  - {r}" for r in self.reasons)])

    def _repr_html_(self) -> str:
        """A verdict card for Jupyter: verdict, reasons, signers, and the input."""
        e = html.escape
        colour = "#1a7f37" if self.allowed else "#cf222e"
        verdict = "ALLOW" if self.allowed else "DENY"
        reasons = "".join(f"<li>{e(r)}</li>" for r in self.reasons) or "<li>(none)</li>"
        verification = self.input.get("verification", {})
        sigs = verification.get("signatures") or []
        rows = "".join(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>".format(
                e(str(s.get("key_id") or "")[:23]),
                e(str(s.get("scheme") or "")),
                e(_describe_identity(s.get("identity"))),
            )
            for s in sigs
        )
        status = (
            "verified"
            if verification.get("verified")
            else f"not verified ({e(str(verification.get('error')))})"
        )
        table = (
            "<table><tr><th>key</th><th>scheme</th><th>identity</th></tr>" + rows + "</table>"
            if rows
            else ""
        )
        doc = e(json.dumps(_plain(self.input), indent=2, sort_keys=True))
        return (
            f"<div><b style='color:{colour}'>{verdict}</b> <code>{e(self.reference)}</code>"
            f"<div>Signatures: {status}</div>{table}"
            f"<div>Reasons:</div><ul>{reasons}</ul>"
            f"<details><summary>Rego input</summary><pre>{doc}</pre></details></div>"
        )


def _describe_identity(identity: Any) -> str:
    if isinstance(identity, Mapping):
        return f"{identity.get('subject', '?')} ({identity.get('issuer', '?')})"
    return ""
