"""Runs the fuzz targets: a short budget each in CI (pytest), a long campaign (``nox -s fuzz``).

    python -m tests.fuzz.campaign --seconds 300 [--jobs 1] [TARGET ...]

Each target runs in its own process (libFuzzer runs once per process) with
its committed seeds (``tests/fuzz/corpus/<target>``, read only) and a working
corpus that keeps what the fuzzer found (``.fuzz/corpus/<target>`` for a
campaign, so campaigns build on each other; a temporary directory in CI).
A finding is written as ``.fuzz/findings/<target>/crash-*`` (or ``timeout-*``,
``oom-*``): replay it with ``python -m tests.fuzz.<module> FILE``, fix the
parser, and add the file to the target's seeds as ``regress-<what>``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
DICTS = HERE / "dicts"
# Per input: a hang is any input slower than this (generous: CI machines are shared).
TIMEOUT = int(os.environ.get("POLICYSUPPLY_FUZZ_TIMEOUT", "25"))
RSS_LIMIT_MB = 2048


def targets() -> dict[str, str]:
    """Target name (``_internal.oci``) -> module (``tests.fuzz._internal.fuzz_oci``)."""
    out = {}
    for path in sorted(HERE.rglob("fuzz_*.py")):
        rel = path.relative_to(HERE).with_suffix("")
        parts = [*rel.parts[:-1], rel.parts[-1].removeprefix("fuzz_")]
        out[".".join(parts)] = "tests.fuzz." + ".".join(rel.parts)
    return out


@dataclass
class Result:
    target: str
    seconds: float
    executions: int
    coverage: int
    features: int
    corpus_size: int
    returncode: int
    findings: list[Path]
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.findings


def _stat(output: str, name: str) -> int:
    m = re.search(rf"stat::{name}:\s*(\d+)", output)
    return int(m.group(1)) if m else 0


def run_target(name: str, seconds: int, work: Path, findings: Path) -> Result:
    """Runs one target for ``seconds``; the working corpus lives in ``work``."""
    module = targets()[name]
    work.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / name
    cmd = [
        sys.executable,
        "-m",
        module,
        f"-max_total_time={seconds}",
        f"-timeout={TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={findings}/",
        "-print_final_stats=1",
        "-print_pcs=0",
        str(work),
    ]
    if seeds.is_dir():
        cmd.append(str(seeds))
    dictionary = DICTS / f"{name.rsplit('.', 1)[-1]}.dict"
    if dictionary.is_file():
        cmd.insert(3, f"-dict={dictionary}")
    start = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=seconds + TIMEOUT + 300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)/", output)
    last = cov[-1] if cov else ("0", "0", "0")
    return Result(
        target=name,
        seconds=round(time.monotonic() - start, 1),
        executions=_stat(output, "number_of_executed_units"),
        coverage=int(last[0]),
        features=int(last[1]),
        corpus_size=int(last[2]),
        returncode=proc.returncode,
        # slow-unit-* files only note an input over 10 s (libFuzzer exits 0):
        # on a shared machine that is load, not a hang (-timeout catches those).
        findings=sorted(
            p for p in findings.iterdir() if p.is_file() and not p.name.startswith("slow-unit-")
        ),
        output=output,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| target | seconds | executions | exec/s | coverage (edges) | corpus | findings |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rate = r.executions / r.seconds if r.seconds else 0
        lines.append(
            f"| `{r.target}` | {r.seconds:.0f} | {r.executions} | {rate:.0f} | {r.coverage} "
            f"| {r.corpus_size} | {len(r.findings)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="budget per target")
    parser.add_argument("targets", nargs="*", help="targets (default: all)")
    args = parser.parse_args()
    names = args.targets or list(targets())
    base = ROOT / ".fuzz"
    results = []
    for name in names:
        r = run_target(name, args.seconds, base / "corpus" / name, base / "findings" / name)
        results.append(r)
        status = "ok" if r.ok else f"FINDING (exit {r.returncode}): {r.findings}"
        print(f"{name}: {r.executions} executions in {r.seconds}s, {status}", flush=True)
        if not r.ok:
            print(r.output[-4000:], flush=True)
    print(table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
