#!/usr/bin/env python3
"""Writes policysupply/_internal/engines/opa_builtin_types.json from the pinned OPA.

For each builtin, the JSON kinds each argument accepts (``null`` where any
kind is accepted), from ``opa capabilities --current``. The embedded
engine's check() uses it to report OPA's type errors for literal arguments
(``count(42)``: ``count: invalid argument(s)``)::

    python scripts/gen_builtin_types.py ~/.cache/policysupply/peers/bin/opa
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "policysupply/_internal/engines/opa_builtin_types.json"
KINDS = ("string", "number", "boolean", "null", "array", "object", "set")


def kinds(t: dict[str, Any]) -> set[str] | None:
    if t.get("type") == "any":
        if "of" not in t:
            return None
        out: set[str] = set()
        for sub in t["of"]:
            k = kinds(sub)
            if k is None:
                return None
            out |= k
        return out
    return {t["type"]} if t.get("type") in KINDS else None


def main() -> None:
    opa = sys.argv[1] if len(sys.argv) > 1 else "opa"
    caps = json.loads(
        subprocess.run([opa, "capabilities", "--current"], check=True, capture_output=True).stdout
    )
    version = subprocess.run([opa, "version"], check=True, capture_output=True, text=True)
    table: dict[str, list[list[str] | None]] = {}
    for b in caps["builtins"]:
        args = b.get("decl", {}).get("args")
        if not args or b.get("decl", {}).get("variadic"):
            continue
        row = [sorted(k) if (k := kinds(a)) is not None else None for a in args]
        if any(r is not None for r in row):
            table[b["name"]] = row
    OUT.write_text(
        json.dumps(
            {
                "source": f"opa capabilities --current ({version.stdout.splitlines()[0]}): "
                "builtin -> JSON kinds accepted per argument (null: any)",
                "builtins": dict(sorted(table.items())),
            },
            indent=0,
        )
        + "\n"
    )
    print(f"{len(table)} builtins -> {OUT}")


if __name__ == "__main__":
    main()
