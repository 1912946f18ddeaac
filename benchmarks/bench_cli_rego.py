"""`policysupply check` / `build` of a 10-file tree as fresh processes vs `opa check` / `opa build`.

Usage: python benchmarks/bench_cli_rego.py [--quick]

The tree: the shipped Kubernetes example policies, copied twice under two
package prefixes (10 Rego files) plus their data files. In the same run,
interleaved, fresh processes each time:

  check:  `policysupply check DIR --engine opa|embedded`  vs `opa check DIR`
  build:  `policysupply build DIR --engine opa|embedded`  vs `opa build -b DIR`
          (both type-check the tree before writing it)
  floor:  `python -c pass` and `policysupply --help` (start-up alone)

Medians of wall and CPU time; the ratio is ours / OPA's (target <= 1.5x).
The package is byte-compiled first (as a wheel install leaves it), and `check`
/ `build` here take the lean dispatch (no click; see policysupply/cli/_lean.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

from _common import WORK, compile_package, machine, peer, save
from bench_cli_start import timed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "policysupply" / "examples" / "kubernetes"


def make_tree(root: Path) -> Path:
    """Ten Rego files: the example policies under two package prefixes."""
    if root.exists():
        shutil.rmtree(root)
    for prefix in ("team_a", "team_b"):
        for src in EXAMPLE.rglob("*"):
            if src.is_dir() or src.name == ".manifest":
                continue
            rel = src.relative_to(EXAMPLE)
            dst = root / prefix / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = src.read_text()
            if src.suffix == ".rego":
                text = text.replace("package k8s", f"package {prefix}.k8s").replace(
                    "data.k8s.", f"data.{prefix}.k8s."
                )
            dst.write_text(text)
    modules = list(root.rglob("*.rego"))
    assert len(modules) == 10, modules
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 7 if args.quick else 21
    work = WORK / "cli-rego"
    work.mkdir(parents=True, exist_ok=True)
    tree = make_tree(work / "tree")
    compile_package()
    load_before = os.getloadavg()
    opa = str(peer("opa"))
    ours = str(Path(sys.executable).parent / "policysupply")
    env = dict(os.environ, POLICYSUPPLY_OPA=opa)
    cmds: dict[str, list[str]] = {
        "python_pass": [sys.executable, "-c", "pass"],
        "policysupply_help": [ours, "--help"],
        "opa_check": [opa, "check", str(tree)],
        "ours_check_opa": [ours, "check", str(tree), "--engine", "opa", "-q"],
        "ours_check_embedded": [ours, "check", str(tree), "--engine", "embedded", "-q"],
        "opa_build": [opa, "build", "-b", str(tree), "-o", str(work / "opa.tar.gz")],
        "ours_build_opa": [
            ours, "build", str(tree), "-o", str(work / "ours.tar.gz"), "--engine", "opa", "-q",
        ],
        "ours_build_embedded": [
            ours, "build", str(tree), "-o", str(work / "ours-e.tar.gz"), "--engine", "embedded",
            "-q",
        ],
    }  # fmt: skip
    walls: dict[str, list[float]] = {k: [] for k in cmds}
    cpus: dict[str, list[float]] = {k: [] for k in cmds}
    for cmd in cmds.values():  # warm the page cache once
        timed(cmd, env)
    for _ in range(rounds):
        for name, cmd in cmds.items():
            wall, cpu = timed(cmd, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    wall_ms = {k: round(statistics.median(v) * 1000, 1) for k, v in walls.items()}
    cpu_ms = {k: round(statistics.median(v) * 1000, 1) for k, v in cpus.items()}

    def ratio(a: str, b: str) -> float:
        return round(wall_ms[a] / wall_ms[b], 2)

    payload = {
        "machine": machine(),
        "rounds": rounds,
        "tree": "10 Rego files (examples x2) + data",
        "wall_ms": wall_ms,
        "cpu_ms": cpu_ms,
        "ratios_wall": {
            "check_opa_engine_vs_opa_check": ratio("ours_check_opa", "opa_check"),
            "check_embedded_vs_opa_check": ratio("ours_check_embedded", "opa_check"),
            "build_opa_engine_vs_opa_build": ratio("ours_build_opa", "opa_build"),
            "build_embedded_vs_opa_build": ratio("ours_build_embedded", "opa_build"),
            "startup_floor_vs_opa_check": ratio("policysupply_help", "opa_check"),
        },
        "target": "<= 1.5x",
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    print(save("cli_rego", payload))
    for k, v in payload["ratios_wall"].items():
        print(f"{k}: {v}x")
    for k in cmds:
        print(f"{k}: {wall_ms[k]} ms wall, {cpu_ms[k]} ms cpu")


if __name__ == "__main__":
    main()
