"""Runs sigstore-conformance's offline ``bundle-verify`` cases through ``Verifier.verify_blob``.

The suite's assets (github.com/sigstore/sigstore-conformance, ``test/assets``)
are not vendored here and no package registry serves them, so this runner
reads them from a checkout named by ``SIGSTORE_CONFORMANCE_ASSETS`` (the
``test/assets`` directory), kept outside the repository::

    git clone https://github.com/sigstore/sigstore-conformance /work/sigstore-conformance
    git -C /work/sigstore-conformance checkout a73de4970176d258e0154c530b89d20b89444e4d
    SIGSTORE_CONFORMANCE_ASSETS=/work/sigstore-conformance/test/assets nox -s conformance

Each case directory is verified as the suite's README describes: the artifact
(``artifact``, else ``bundle-verify/a.txt``), the identity and issuer
(``identity``/``issuer`` files, else the suite's beacon workflow on GitHub
Actions), ``key.pub`` for a key-signed bundle (then the policy also requires
a transparency log entry: the whole bundle is verified), and
``trusted_root.json`` (else Sigstore's production root, the copy in
tests/fixtures/sigstore). A case whose name ends in ``_fail`` must be refused
with a :class:`~policysupply.errors.PolicySupplyError`; any other exception is
a crash. CI runs our own generated equivalent of every case
(tests/unit/test_conformance_cases.py); this runner checks the public data.

Exit status: 0 when every case agrees, 1 otherwise, 2 when the assets are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from policysupply import TrustPolicy, Verifier
from policysupply.errors import PolicySupplyError
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity

# 2026-08-19, "Test trust-root validity interval semantics (#406)"
PINNED_COMMIT = "a73de4970176d258e0154c530b89d20b89444e4d"
DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
PRODUCTION_ROOT = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "sigstore"
    / "production-trusted_root.json"
)


def _text(path: Path, default: str) -> str:
    return path.read_text().strip() if path.exists() else default


def run_case(case: Path, shared: Path) -> dict[str, Any]:
    """Verifies one case; returns its record (name, expected, outcome, agree, detail)."""
    expect_fail = case.name.endswith("_fail")
    artifact = case / "artifact" if (case / "artifact").exists() else shared / "a.txt"
    root = case / "trusted_root.json"
    start = time.perf_counter()
    try:
        if (case / "key.pub").exists():
            policy = TrustPolicy(keys=[(case / "key.pub").read_bytes()], require_tlog=True)
        else:
            identity = Identity(
                issuer=_text(case / "issuer", GITHUB_ACTIONS_ISSUER),
                subject=_text(case / "identity", DEFAULT_IDENTITY),
            )
            policy = TrustPolicy(identities=[identity])
        verifier = Verifier(policy, trusted_root=root if root.exists() else PRODUCTION_ROOT)
        verifier.verify_blob(artifact.read_bytes(), bundle=case / "bundle.sigstore.json")
        outcome, detail = "verified", ""
    except PolicySupplyError as exc:
        outcome, detail = "refused", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a crash is never an agreement
        outcome, detail = "crashed", f"{type(exc).__name__}: {exc}"
    agree = outcome == ("refused" if expect_fail else "verified")
    return {
        "case": case.name,
        "expected": "refuse" if expect_fail else "verify",
        "outcome": outcome,
        "agree": agree,
        "detail": detail[:400],
        "ms": round((time.perf_counter() - start) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs every case; prints one line per case and the agree figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--assets",
        default=os.environ.get("SIGSTORE_CONFORMANCE_ASSETS"),
        help="sigstore-conformance's test/assets directory (or $SIGSTORE_CONFORMANCE_ASSETS)",
    )
    parser.add_argument("--json", type=Path, help="also write the records to this file")
    args = parser.parse_args(argv)
    if not args.assets:
        print(
            "set SIGSTORE_CONFORMANCE_ASSETS to sigstore-conformance's test/assets", file=sys.stderr
        )
        return 2
    shared = Path(args.assets) / "bundle-verify"
    if not shared.is_dir():
        print(f"{shared}: not a directory", file=sys.stderr)
        return 2
    from tests.unit.test_conformance_cases import CASES

    cases = sorted(p for p in shared.iterdir() if p.is_dir())
    records = [run_case(case, shared) for case in cases]
    for r in records:
        mark = "agree   " if r["agree"] else "DISAGREE"
        line = f"{mark} {r['case']:<58} expected {r['expected']:<7} {r['outcome']:<8}"
        print(f"{line} {r['detail'][:160]}")
    agreed = sum(r["agree"] for r in records)
    names = {c.name for c in cases}
    missing = sorted(names - set(CASES))
    extra = sorted(set(CASES) - names)
    print(
        f"\n{agreed}/{len(records)} bundle-verify cases agree (pinned commit {PINNED_COMMIT[:12]})"
    )
    if missing:
        print(f"cases without a CI equivalent in tests/unit/test_conformance_cases.py: {missing}")
    if extra:
        print(f"CI equivalents of cases not in these assets: {extra}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "commit": PINNED_COMMIT,
                    "agree": agreed,
                    "cases": len(records),
                    "records": records,
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if agreed == len(records) and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
