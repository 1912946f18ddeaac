"""Bundle build + to_bytes versus `opa build`, on the same trees, in one run.

Usage: python benchmarks/bench_build.py [--quick]
Trees (generated deterministically under benchmarks/.work/):
  small: 8 Rego modules + 2 data.json
  large: 2,000 Rego modules + ~50 MB of data in 10 data.json files
Reported: median wall time of each and the ratio ours/opa (< 1 means faster).
Same work on both sides: `opa build` parses and type-checks every module, so
ours checks too. Ours is measured in-process (a fresh
Bundle.from_directory(...), .check(), .to_bytes() each round) and as a fresh
CLI process (`python -m policysupply build`, which checks by default), which
pays interpreter start-up like `opa build` does. The unchecked build
(`--no-check`) is reported beside them.
Target: ours (checked) no slower than `opa build` on the large tree.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

from _common import WORK, machine, median_time, peer, save

from policysupply import Bundle

MODULE = """package bench.m{i:04d}

# Rules of module {i}: an allow-list check and a deny set.
default allow := false

allow if {{
\tsome team in data.bench.teams
\tteam.name == input.team
\tinput.action in team.actions
}}

deny contains msg if {{
\tnot allow
\tmsg := sprintf("module {i}: %s may not %s", [input.team, input.action])
}}
"""


def make_tree(root: Path, modules: int, data_files: int, data_mb: float) -> Path:
    if root.exists():
        return root
    rng = random.Random(42)
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bench").mkdir(parents=True)
    (tmp / ".manifest").write_text(json.dumps({"revision": "bench", "roots": ["bench"]}))
    for i in range(modules):
        d = tmp / "bench" / f"m{i:04d}"
        d.mkdir()
        (d / "policy.rego").write_text(MODULE.format(i=i))
    per_file = int(data_mb * 1_000_000 / data_files)
    for f in range(data_files):
        d = tmp / "bench" / ("teams" if f == 0 else f"inventory{f:02d}")
        d.mkdir(exist_ok=True)
        items, size = [], 0
        while size < per_file:
            item = {"name": f"team-{f}-{len(items)}", "owner": f"user{rng.randrange(10**6)}",
                    "actions": rng.sample(["read", "write", "delete", "admin", "deploy"], 3),
                    "cost_center": rng.randrange(10**9),
                    "description": " ".join(rng.choice(["alpha", "beta", "gamma", "delta",
                                                        "omega", "policy", "bundle"])
                                            for _ in range(12))}
            items.append(item)
            size += len(json.dumps(item))
        (d / "data.json").write_text(json.dumps(items if f == 0 else {"items": items}))
    tmp.rename(root)
    return root


def bench(name: str, tree: Path, rounds: int) -> dict[str, float]:
    opa = peer("opa")
    out = WORK / f"{name}-out"
    out.mkdir(exist_ok=True)

    def ours() -> None:
        bundle = Bundle.from_directory(tree)
        bundle.check()
        bundle.to_bytes()

    def ours_unchecked() -> None:
        Bundle.from_directory(tree).to_bytes()

    def ours_cli() -> None:
        subprocess.run([sys.executable, "-m", "policysupply", "build", str(tree), "-o",
                        str(out / "ours.tar.gz")], check=True, capture_output=True)

    def theirs() -> None:
        subprocess.run([str(opa), "build", "-b", ".", "-o", str(out / "opa.tar.gz")],
                       check=True, capture_output=True, cwd=tree)

    theirs()  # warm the page cache for both sides
    t_opa = median_time(theirs, rounds)
    t_ours = median_time(ours, rounds)
    t_cli = median_time(ours_cli, rounds)
    t_unchecked = median_time(ours_unchecked, rounds)
    return {"opa_build_s": t_opa, "ours_inprocess_s": t_ours, "ours_cli_s": t_cli,
            "ours_unchecked_inprocess_s": t_unchecked, "checked": True,
            "ratio_inprocess": t_ours / t_opa, "ratio_cli": t_cli / t_opa,
            "ratio_unchecked_inprocess": t_unchecked / t_opa, "rounds": rounds}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small tree only")
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    results = {"machine": machine()}
    results["small"] = bench("small", make_tree(WORK / "tree-small", 8, 2, 0.01), 10)
    if not args.quick:
        results["large"] = bench("large", make_tree(WORK / "tree-large", 2000, 10, 50), 3)
    print(f"{'tree':<6} {'opa build':>10} {'ours (in-proc)':>15} {'ours (CLI)':>11} "
          f"{'ratio in-proc':>14} {'ratio CLI':>10} {'unchecked ratio':>16}")
    for name in ("small", "large"):
        if name in results:
            r = results[name]
            print(f"{name:<6} {r['opa_build_s']:>9.3f}s {r['ours_inprocess_s']:>14.3f}s "
                  f"{r['ours_cli_s']:>10.3f}s {r['ratio_inprocess']:>14.2f} "
                  f"{r['ratio_cli']:>10.2f} {r['ratio_unchecked_inprocess']:>16.2f}")
    if "large" in results:
        verdict = "PASS" if results["large"]["ratio_cli"] <= 1 else "FAIL"
        print(f"target (large, CLI vs opa build, ratio <= 1): {verdict}")
    print(f"results: {save('build', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
