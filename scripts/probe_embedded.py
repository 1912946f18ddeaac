#!/usr/bin/env python3
"""Probes the embedded engine (rego-cpp) against OPA's own compliance cases.

Two modes:

Besides OPA's suite, the cases under ``tests/fixtures/embedded_difffuzz``
(same format; found by ``scripts/difffuzz_rego.py``, answers captured from
``opa eval``) are run as the suite ``difffuzz``.

``--derive`` runs every case on bare rego-cpp (no refusals, strict builtin
errors, one worker process, restarted after a crash) and writes
``policysupply/_internal/engines/embedded_unsupported.json``: every builtin
that rego-cpp lacks, or that gives an answer different from OPA's (or no
error where OPA has one) in a case about that builtin.

Without ``--derive`` it runs every case through ``EmbeddedEngine`` (what
users get) and reports agree / refused / different / crash counts; the
embedded engine must have zero different answers and zero crashes.

The cases come from the OPA module the project pins (Go module cache, put
there by scripts/install-peers.sh)::

    python scripts/probe_embedded.py --derive
    python scripts/probe_embedded.py --json /tmp/embedded-compliance.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# How a case's expected bindings are read: the compliance runner's reading.
from tests.interop.compliance import values  # noqa: E402

OPA_VERSION = "v1.22.2"
CASES = Path.home() / f"go/pkg/mod/github.com/open-policy-agent/opa@{OPA_VERSION}/v1/test/cases"
OUT = ROOT / "policysupply/_internal/engines/embedded_unsupported.json"
# Cases in the same format that OPA's suite lacks: disagreements found by
# scripts/difffuzz_rego.py, reduced, with answers captured from `opa eval`.
EXTRA = {"difffuzz": ROOT / "tests/fixtures/embedded_difffuzz"}


class _Yaml12Loader(yaml.SafeLoader):
    """YAML as Go's yaml reads OPA's cases: only true/false are booleans (`on:` is a key)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_cases(suite: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every case of one compliance suite (``v1`` or ``v0``)."""
    base = EXTRA[suite] if suite in EXTRA else CASES / "testdata" / suite
    for path in sorted(base.rglob("*.yaml")):
        with path.open() as fh:
            for doc in yaml.load_all(fh, Loader=_Yaml12Loader):  # noqa: S506 - safe loader subclass
                for case in (doc or {}).get("cases", []):
                    yield str(path.relative_to(base)), case


def expected_bindings(case: dict[str, Any]) -> set[Any]:
    return values.expected_bindings(case["want_result"])


def got_bindings(results: list[dict[str, Any]], case: dict[str, Any]) -> set[Any]:
    return values.result_bindings(
        results,
        ignore_generated_vars=bool(case.get("ignore_generated_vars")),
        sort_bindings=bool(case.get("sort_bindings")),
    )


def builtins_called(case: dict[str, Any]) -> set[str]:
    from policysupply._internal.engines.rego_source import called_builtins

    names: set[str] = set()
    for src in case.get("modules", []):
        names |= called_builtins(src)
    return names | called_builtins(case["query"], query=True)


def _subject(note: str, candidates: set[str]) -> set[str]:
    """The builtins a case is about: those its directory/note is named after."""
    head = re.sub(r"[^a-z0-9]", "", note.split("/")[0].lower())
    hits = {
        b
        for b in candidates
        if (n := re.sub(r"[^a-z0-9]", "", b.lower())) in head or (len(head) > 4 and head in n)
    }
    if hits:
        longest = max(len(b) for b in hits)
        return {b for b in hits if len(b) == longest}
    # A case calling one builtin, filed under its namespace (uribuiltins/...).
    if len(candidates) == 1:
        (only,) = candidates
        if "." in only and only.split(".")[0] in head:
            return {only}
    return set()


def classify(case: dict[str, Any], answer: dict[str, Any]) -> str:
    """agree | different | missed_error | refused | crash."""
    kind = answer["kind"]
    if kind == "crash":
        return "crash"
    wants_error = "want_error" in case or "want_error_code" in case
    if kind == "error":
        return "agree" if wants_error else "refused"
    if wants_error:
        return "missed_error"
    got = got_bindings(answer["results"], case)
    return "agree" if got == expected_bindings(case) else "different"


def input_json(case: dict[str, Any]) -> str | None:
    if "input_term" in case:
        return str(case["input_term"])
    if "input" in case:
        return json.dumps(case["input"], ensure_ascii=False)
    return None


def run_raw(case: dict[str, Any], worker: Any) -> dict[str, Any]:
    """One case on bare rego-cpp in the worker process."""
    from policysupply._internal.engines._worker_client import WorkerDiedError

    try:
        if not worker.request({"op": "reset"}, timeout=60)["ok"]:
            return {"kind": "error", "why": "reset"}
        for i, src in enumerate(case.get("modules", [])):
            a = worker.request(
                {"op": "add_module", "name": f"test-{i}.rego", "source": src}, timeout=60
            )
            if not a["ok"]:
                return {"kind": "error", "why": "parse: " + a["error"].get("message", "")}
        if case.get("data") is not None:
            a = worker.request({"op": "add_data", "json": json.dumps(case["data"])}, timeout=60)
            if not a["ok"]:
                return {"kind": "error", "why": "data"}
        a = worker.request(
            {"op": "query", "query": case["query"], "input": input_json(case)}, timeout=60
        )
    except WorkerDiedError as exc:
        return {"kind": "crash", "why": exc.reason}
    if not a["ok"]:
        return {"kind": "error", "why": json.dumps(a["error"])[:300]}
    text = a["text"]
    if text == "undefined":
        return {"kind": "results", "results": []}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"kind": "error", "why": "unreadable output"}
    return {"kind": "results", "results": parsed if isinstance(parsed, list) else [parsed]}


def run_engine(case: dict[str, Any]) -> dict[str, Any]:
    """One case through EmbeddedEngine, as users run it."""
    from policysupply._internal.engines.embedded import EmbeddedEngine
    from policysupply.errors import BundleError

    modules = {f"test-{i}.rego": src for i, src in enumerate(case.get("modules", []))}
    engine = EmbeddedEngine()
    prepared = None
    try:
        prepared = engine.prepare(
            modules, case.get("data") or {}, rego_versions=dict.fromkeys(modules, 1)
        )
        inp: Any = None
        if "input_term" in case:
            inp = _parse_input_term(str(case["input_term"]))
        elif "input" in case:
            inp = case["input"]
        results = prepared.query(case["query"], inp)
        return {"kind": "results", "results": list(results)}
    except BundleError as exc:
        if "crashed" in str(exc):
            return {"kind": "crash", "why": str(exc)[:300]}
        return {"kind": "error", "why": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        if prepared is not None:
            prepared.close()


class _Unreadable(Exception):
    pass


def _parse_input_term(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        # Rego term syntax (sets, ...): not expressible as JSON input.
        from policysupply.errors import BundleError

        raise BundleError("input_term is not JSON") from None


def derive(suites: list[str]) -> None:
    from policysupply._internal.engines._worker_client import WorkerProcess
    from policysupply._internal.engines.rego_source import opa_builtins

    worker = WorkerProcess()
    avail = worker_available_builtins(worker)
    per_builtin: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    construct_bad: list[str] = []
    detail: list[dict[str, Any]] = []
    for suite in suites:
        for fname, case in load_cases(suite):
            ans = run_raw(case, worker)
            verdict = classify(case, ans)
            outcomes[verdict] += 1
            called = builtins_called(case)
            subject = _subject(case["note"], called)
            detail.append(
                {
                    "suite": suite,
                    "note": case["note"],
                    "verdict": verdict,
                    "why": ans.get("why"),
                    "called": sorted(called),
                    "subject": sorted(subject),
                }
            )
            for b in subject or called:
                per_builtin[b][verdict] += 1
            if verdict in ("different", "missed_error", "crash"):
                blamed = subject or {b for b in called if b not in avail}
                if not blamed:
                    construct_bad.append(f"{suite}/{case['note']}")
                for b in blamed:
                    examples[b].append(f"{suite}/{case['note']} ({verdict})")
    worker.close()
    table: dict[str, dict[str, Any]] = {}
    for name in sorted(opa_builtins()):
        if name not in avail:
            table[name] = {"why": "not implemented by rego-cpp"}
        elif name in examples:
            c = per_builtin[name]
            table[name] = {
                "why": (
                    f"answers differently from OPA in {len(examples[name])} of "
                    f"{sum(c.values())} cases about it (OPA's compliance suite and extra_cases)"
                ),
                "examples": sorted(examples[name])[:3],
            }
    # Reported by rego-cpp itself as unsupported at run time.
    out = {
        "generated_by": "scripts/probe_embedded.py --derive",
        "opa_compliance_suite": (
            f"open-policy-agent/opa {OPA_VERSION} v1/test/cases/testdata/"
            f"{{{','.join(s for s in suites if s not in EXTRA)}}}"
        ),
        "extra_cases": [str(EXTRA[s].relative_to(ROOT)) for s in suites if s in EXTRA],
        "regopy": _regopy_version(),
        "outcomes": dict(sorted(outcomes.items())),
        "builtins": table,
    }
    OUT.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    Path("/tmp/embedded-probe-detail.json").write_text(json.dumps(detail, indent=1))
    print(json.dumps(out["outcomes"]), f"{len(table)} builtins refused")
    print("cases wrong without a builtin to blame:", len(construct_bad))
    for n in construct_bad:
        print("  ", n)


def worker_available_builtins(worker: Any) -> set[str]:
    from policysupply._internal.engines.rego_source import opa_builtins

    names = sorted(opa_builtins())
    a = worker.request({"op": "builtins", "names": names}, timeout=60)
    return set(a["available"])


def _regopy_version() -> str:
    from importlib.metadata import version

    return version("regopy")


def verify(suites: list[str], report: Path | None) -> int:
    outcomes: Counter[str] = Counter()
    bad: list[str] = []
    rows = []
    t0 = time.monotonic()
    for suite in suites:
        for _fname, case in load_cases(suite):
            ans = run_engine(case)
            verdict = classify(case, ans)
            outcomes[verdict] += 1
            rows.append(
                {"suite": suite, "note": case["note"], "verdict": verdict, "why": ans.get("why")}
            )
            if verdict in ("different", "missed_error", "crash"):
                bad.append(f"{suite}/{case['note']}: {verdict} {ans.get('why') or ''}")
    agree = outcomes["agree"]
    comparable = sum(outcomes.values())
    summary = {
        "outcomes": dict(sorted(outcomes.items())),
        "agree_rate": round(agree / comparable, 4) if comparable else None,
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(summary))
    for line in bad:
        print("  ", line)
    if report:
        report.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1))
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--derive", action="store_true", help="rewrite embedded_unsupported.json")
    ap.add_argument(
        "--suite", action="append", choices=["v1", "v0", *EXTRA], help="default: v1 and difffuzz"
    )
    ap.add_argument("--json", type=Path, help="write per-case verdicts here")
    args = ap.parse_args()
    suites = args.suite or ["v1", *EXTRA]
    if not CASES.is_dir():
        print(f"no compliance cases at {CASES}: run scripts/install-peers.sh", file=sys.stderr)
        return 2
    if args.derive:
        derive(suites)
        return 0
    return verify(suites, args.json)


if __name__ == "__main__":
    sys.exit(main())
