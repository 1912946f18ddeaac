"""Bundle build + to_bytes versus `opa build`, on the same trees, in one run.

Usage: python benchmarks/bench_build.py [--quick]
Trees (generated deterministically under benchmarks/.work/):
  small: 8 Rego modules + 2 data.json
  large: 2,000 Rego modules + ~50 MB of data in 10 data.json files
Reported: median wall time of each and the ratio ours/opa (< 1 means faster).
Same work on both sides: `opa build` parses and type-checks every module, so
ours checks too, with the OPA engine (the same binary's checker; the CLI's
default when `opa` is found). Ours is measured in-process (a fresh
Bundle.from_directory(...), .check(engine="opa"), .to_bytes() each round) and
as a fresh CLI process (the `policysupply build --engine opa` console script),
which pays interpreter start-up like `opa build` does. The unchecked build
and, with --embedded, the embedded engine's check are reported beside them.
Rounds are interleaved (every side once per round), medians reported.
Target: ours (checked) no slower than `opa build` on the large tree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import WORK, compile_package, machine, peer, save

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


def bench(name: str, tree: Path, rounds: int, embedded: bool) -> dict[str, Any]:
    opa = peer("opa")
    out = WORK / f"{name}-out"
    out.mkdir(exist_ok=True)
    # The OPA engine is the binary `opa build` is; the CLI finds it as users do.
    env = dict(os.environ, POLICYSUPPLY_OPA=str(opa))
    os.environ["POLICYSUPPLY_OPA"] = str(opa)
    cli = str(Path(sys.executable).parent / "policysupply")

    def ours() -> None:
        bundle = Bundle.from_directory(tree)
        bundle.check(engine="opa")
        bundle.to_bytes()

    def ours_embedded() -> None:
        bundle = Bundle.from_directory(tree)
        bundle.check(engine="embedded")
        bundle.to_bytes()

    def ours_unchecked() -> None:
        Bundle.from_directory(tree).to_bytes()

    def ours_cli() -> None:
        subprocess.run([cli, "build", str(tree), "-o", str(out / "ours.tar.gz"), "--engine",
                        "opa"], check=True, capture_output=True, env=env)

    def theirs() -> None:
        subprocess.run([str(opa), "build", "-b", ".", "-o", str(out / "opa.tar.gz")],
                       check=True, capture_output=True, cwd=tree)

    sides = {"opa_build_s": theirs, "ours_inprocess_s": ours, "ours_cli_s": ours_cli,
             "ours_unchecked_inprocess_s": ours_unchecked}
    if embedded:
        sides["ours_embedded_inprocess_s"] = ours_embedded
    theirs()  # warm the page cache for both sides
    samples: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):  # interleaved: a shared machine's load hits every side alike
        for key, fn in sides.items():
            start = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - start)
    t = {k: statistics.median(v) for k, v in samples.items()}
    res: dict[str, Any] = {**t, "checked": True, "engine": "opa", "rounds": rounds,
                           "ratio_inprocess": t["ours_inprocess_s"] / t["opa_build_s"],
                           "ratio_cli": t["ours_cli_s"] / t["opa_build_s"],
                           "ratio_unchecked_inprocess":
                               t["ours_unchecked_inprocess_s"] / t["opa_build_s"]}
    if embedded:
        res["ratio_embedded_inprocess"] = t["ours_embedded_inprocess_s"] / t["opa_build_s"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small tree only")
    ap.add_argument("--embedded", action="store_true",
                    help="also the embedded engine's check in-process (~1 min a round, large)")
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    compile_package()
    results: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
    results["small"] = bench("small", make_tree(WORK / "tree-small", 8, 2, 0.01), 10,
                             args.embedded)
    if not args.quick:
        results["large"] = bench("large", make_tree(WORK / "tree-large", 2000, 10, 50), 3,
                                 args.embedded)
    results["load_after"] = os.getloadavg()
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
