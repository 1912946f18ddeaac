"""`import policysupply` time, measured in fresh interpreters.

Usage: python benchmarks/bench_import.py [--rounds N] [--strict]
Target: <= 100 ms cumulative import time (python -X importtime).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from _common import save

TARGET_MS = 100.0


def importtime_us() -> int:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import policysupply"],
                          capture_output=True, text=True, check=True)
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "policysupply":
            return int(parts[1])
    raise RuntimeError("policysupply not in -X importtime output")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--strict", action="store_true", help="exit 1 when over target")
    args = ap.parse_args()
    samples = [importtime_us() / 1000 for _ in range(args.rounds)]
    med = statistics.median(samples)
    ok = med <= TARGET_MS
    print(f"import policysupply: median {med:.1f} ms over {args.rounds} fresh interpreters "
          f"(min {min(samples):.1f}, max {max(samples):.1f}); target <= {TARGET_MS:.0f} ms: "
          f"{'PASS' if ok else 'FAIL'}")
    save("import", {"median_ms": med, "samples_ms": samples, "target_ms": TARGET_MS})
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
