"""Helpers shared by the benchmarks: peers, timing, machine facts, results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
RESULTS = HERE / "results"


def peer(name: str) -> Path:
    base = os.environ.get("POLICYSUPPLY_PEERS_DIR") or str(
        Path.home() / ".cache" / "policysupply" / "peers")
    path = Path(base) / "bin" / name
    if not path.exists():
        raise SystemExit(f"{name} not found at {path}; run scripts/install-peers.sh {name}")
    return path


def compile_package() -> None:
    """Byte-compiles policysupply, as installing a wheel does.

    An editable install run with PYTHONDONTWRITEBYTECODE (as some CI and
    sandboxes set) would otherwise compile every module from source in every
    fresh process, which is not what users' processes pay.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "policysupply")],
                   check=True, capture_output=True)


def median_time(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def machine() -> dict[str, Any]:
    opa = subprocess.run([str(peer("opa")), "version"], capture_output=True, text=True,
                         check=False).stdout.splitlines()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "opa": opa[0] if opa else "?"}


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def run(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    """Runs a peer tool; stops the benchmark with its stderr if it fails."""
    proc = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def cosign_env(home: Path, password: str = "bench") -> dict[str, str]:
    """cosign's environment for a benchmark: its own HOME and docker config, no prompts."""
    return {**os.environ, "COSIGN_PASSWORD": password, "COSIGN_YES": "true",
            "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")}
