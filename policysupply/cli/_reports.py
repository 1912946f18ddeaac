"""Gate reports for CI: text, JSON, JUnit XML, SARIF 2.1.0 and Markdown.

Each image judged is one :class:`GateResult`; each report lists one entry per
rule (passed or fired, with its reason and the evidence) per image, and an
image that could not be judged as an error entry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from policysupply import Decision

FORMATS = ("text", "json", "junit", "sarif", "markdown")

# The built-in rules (policysupply/rules/gate.rego), so passing ones are listed too.
DEFAULT_RULES = {
    "unsigned": "The image carries a signature",
    "untrusted_signer": "A trusted key or identity signed the image",
    "signature_threshold": "Enough distinct trusted signers signed the image",
    "verification": "The image's signatures verify",
    "required_identities": "A required keyless identity signed the image",
    "allowed_registries": "The image comes from an allowed registry",
    "required_attestations": "Required attestations are present and trusted",
}


@attrs.frozen(kw_only=True)
class GateResult:
    """One image's outcome.

    Attributes:
        given: The reference as typed.
        reference: The user-facing reference pinned to the digest (``given`` on error).
        decision: The gate's decision, or ``None`` when none could be made.
        error: ``{"type", "message", "exit_code"}`` when no decision was made.
        code: This image's exit code (0 allow, 1 deny, 2/3/4 no decision).
    """

    given: str
    reference: str
    decision: Decision | None = None
    error: dict[str, Any] | None = None
    code: int = 0

    @property
    def verdict(self) -> str:
        """``allow``, ``deny`` or ``error``."""
        if self.decision is None:
            return "error"
        return "allow" if self.decision.allowed else "deny"

    def rules(self, default_rules: bool) -> list[dict[str, Any]]:
        """One entry per rule: ``{rule, passed, message}`` (known rules first)."""
        if self.decision is None:
            return []
        fired: dict[str, list[str]] = {}
        for v in self.decision.evidence.get("violations", ()):
            fired.setdefault(str(v.get("rule")), []).append(str(v.get("message")))
        names = list(DEFAULT_RULES) if default_rules else []
        names += [n for n in sorted(fired) if n not in names]
        return [{"rule": n, "passed": n not in fired, "messages": fired.get(n, [])} for n in names]

    def to_json(self) -> dict[str, Any]:
        """This result for ``--json`` (the decision's own fields, reference user-facing)."""
        doc: dict[str, Any] = {"given": self.given, "reference": self.reference}
        if self.decision is not None:
            doc.update(self.decision.to_json())
            doc["reference"] = self.reference
            doc["digest"] = self.decision.reference.rsplit("@", 1)[-1]
        else:
            doc.update(allowed=False, decision="error", error=self.error)
        doc["exit_code"] = self.code
        return doc


def worst(results: Sequence[GateResult]) -> int:
    """The exit code of the worst result (no decision > deny > allow)."""
    return max((r.code for r in results), default=0)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def render_json(results: Sequence[GateResult]) -> str:
    """One JSON document; with a single image its decision fields are also top-level."""
    code = worst(results)
    doc: dict[str, Any] = {
        "ok": all(r.decision is not None for r in results),
        "allowed": all(r.verdict == "allow" for r in results),
        "decision": "allow" if code == 0 else ("deny" if code == 1 else "error"),
        "exit_code": code,
        "results": [r.to_json() for r in results],
    }
    if len(results) == 1:
        single = doc["results"][0]
        doc.update({k: v for k, v in single.items() if k not in ("exit_code",)})
        doc["decision"] = single["decision"]
    return json.dumps(_plain(doc), sort_keys=True)


def render_text(results: Sequence[GateResult]) -> list[tuple[str, str | None, bool]]:
    """Lines, their colour, and whether they go to stderr (an image without a decision)."""
    lines: list[tuple[str, str | None, bool]] = []
    for r in results:
        if r.decision is None:
            assert r.error is not None  # noqa: S101 - an undecided result carries its error
            lines.append((f"error: {r.given}: {r.error['message']}", "red", True))
            continue
        verdict = "ALLOW" if r.decision.allowed else "DENY"
        lines.append((f"{verdict} {r.reference}", "green" if r.decision.allowed else "red", False))
        lines.extend((f"  - {reason}", None, False) for reason in r.decision.reasons)
    return lines


def render_junit(results: Sequence[GateResult], *, default_rules: bool) -> str:
    """JUnit XML: a test suite per image, a test case per rule (fired rules fail)."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="policysupply gate")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.reference)
        counts = {"tests": 0, "failures": 0, "errors": 0}
        if r.decision is None:
            assert r.error is not None  # noqa: S101
            case = ET.SubElement(suite, "testcase", classname="policysupply.gate", name="decision")
            err = ET.SubElement(
                case, "error", type=str(r.error["type"]), message=str(r.error["message"])
            )
            err.text = str(r.error["message"])
            counts["tests"] += 1
            counts["errors"] += 1
        else:
            evidence = json.dumps(_plain(r.decision.evidence.get("input", {})), sort_keys=True)
            for rule in r.rules(default_rules):
                case = ET.SubElement(
                    suite, "testcase", classname="policysupply.gate", name=rule["rule"]
                )
                counts["tests"] += 1
                if not rule["passed"]:
                    counts["failures"] += 1
                    text = "; ".join(rule["messages"])
                    fail = ET.SubElement(case, "failure", type=rule["rule"], message=text)
                    fail.text = f"{text}\n\nevidence (gate input):\n{evidence}"
            if not r.rules(default_rules):  # custom rules that allowed: one passing case
                ET.SubElement(suite, "testcase", classname="policysupply.gate", name="decision")
                counts["tests"] += 1
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def render_sarif(results: Sequence[GateResult], *, default_rules: bool, version: str) -> str:
    """SARIF 2.1.0: a result per fired rule (level error) and per image without a decision."""
    rule_ids: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for r in results:
        location = {"logicalLocations": [{"fullyQualifiedName": r.reference, "kind": "resource"}]}
        if r.decision is None:
            assert r.error is not None  # noqa: S101
            rule_ids.setdefault("gate-error", "The gate could not decide")
            out.append(
                {
                    "ruleId": "gate-error",
                    "level": "error",
                    "message": {"text": f"{r.given}: {r.error['message']}"},
                    "locations": [location],
                    "properties": {"error": r.error, "image": r.given},
                }
            )
            continue
        for rule in r.rules(default_rules):
            rule_ids.setdefault(rule["rule"], DEFAULT_RULES.get(rule["rule"], rule["rule"]))
            if rule["passed"]:
                continue
            out.append(
                {
                    "ruleId": rule["rule"],
                    "level": "error",
                    "message": {"text": f"{r.reference}: {'; '.join(rule['messages'])}"},
                    "locations": [location],
                    "properties": {
                        "image": r.reference,
                        "evidence": _plain(r.decision.evidence.get("input", {})),
                    },
                }
            )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "policysupply",
                        "version": version,
                        "rules": [
                            {"id": rid, "shortDescription": {"text": text}}
                            for rid, text in rule_ids.items()
                        ],
                    }
                },
                "results": out,
                "invocations": [
                    {
                        "executionSuccessful": all(r.decision is not None for r in results),
                        "exitCode": worst(results),
                    }
                ],
            }
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def render_markdown(results: Sequence[GateResult], *, default_rules: bool) -> str:
    """A job summary: a table of verdicts, then the fired rules of each denied image."""
    denied = sum(r.verdict != "allow" for r in results)
    head = (
        f"## policysupply gate: {len(results) - denied} of {len(results)} "
        f"image{'s' if len(results) != 1 else ''} allowed"
    )
    lines = [head, "", "| Image | Verdict | Reasons |", "|---|---|---|"]
    icon = {"allow": "✅ ALLOW", "deny": "❌ DENY", "error": "⚠️ ERROR"}
    for r in results:
        if r.decision is None:
            assert r.error is not None  # noqa: S101
            reasons = f"{r.error['type']}: {r.error['message']}"
        else:
            reasons = "<br>".join(_md(x) for x in r.decision.reasons)
        cell = _md(reasons) if r.decision is None else reasons
        lines.append(f"| `{_md(r.reference)}` | {icon[r.verdict]} | {cell} |")
    for r in results:
        if r.decision is None or r.decision.allowed:
            continue
        lines += [
            "",
            f"<details><summary>Evidence for <code>{_md(r.reference)}</code></summary>",
            "",
        ]
        for rule in r.rules(default_rules):
            mark = "✅" if rule["passed"] else "❌"
            lines.append(f"- {mark} `{rule['rule']}` {'; '.join(_md(m) for m in rule['messages'])}")
        lines += [
            "",
            "```json",
            json.dumps(_plain(r.decision.evidence.get("input", {})), indent=2, sort_keys=True),
            "```",
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"
