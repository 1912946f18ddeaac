"""Install footprint of `pip install .` in fresh virtual environments.

Usage: python benchmarks/bench_install.py [--extras "" keyless opa all] [--no-cache]

For each variant (the base install, then each extra) a new venv is created,
`pip install .[extra]` is timed, and the installed distributions and the
size of site-packages are reported. pip's download cache is used as a user
has it (warm after the first run) unless --no-cache is given; the wheel
builds and unpacking are always redone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import save

ROOT = Path(__file__).resolve().parent.parent
SEED = {"pip", "setuptools", "wheel"}


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def measure(extra: str, no_cache: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ps-install-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        site = Path(
            subprocess.run(
                [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )
        before = _size_mb(site)
        target = f"{ROOT}[{extra}]" if extra else str(ROOT)
        cmd = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", target]
        if no_cache:
            cmd.insert(4, "--no-cache-dir")
        start = time.monotonic()
        subprocess.run(cmd, check=True)
        seconds = time.monotonic() - start
        listed = json.loads(
            subprocess.run(
                [str(py), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                capture_output=True, text=True, check=True,
            ).stdout
        )
        names = sorted(d["name"] for d in listed if d["name"].lower() not in SEED)
        return {
            "extra": extra or "(base)",
            "packages": len(names),
            "mb": round(_size_mb(site) - before, 1),
            "seconds": round(seconds, 1),
            "distributions": names,
        }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--extras", nargs="*", default=["", "keyless", "opa", "all"])
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()
    rows = [measure(e, args.no_cache) for e in args.extras]
    for r in rows:
        print(f"pip install .{'[' + str(r['extra']) + ']' if r['extra'] != '(base)' else ''}: "
              f"{r['packages']} packages, {r['mb']} MB, {r['seconds']} s")
    save("install", {"variants": rows, "cache": not args.no_cache})
    return 0


if __name__ == "__main__":
    sys.exit(main())
