"""CLI cold start: `policysupply --help`, `verify` and `gate` as fresh processes vs cosign and oras.

Usage: python benchmarks/bench_cli_start.py [--quick]

Against Debian's docker-registry on loopback, a policy image signed by cosign
2.x (legacy `.sig`, no transparency log), in the same run and interleaved:

  --help:  `policysupply --help`        vs `cosign --help`, `oras --help`
  verify:  `policysupply verify --key`  vs `cosign verify --key --insecure-ignore-tlog`
  gate:    `policysupply gate --key`    vs `cosign verify` (the signature part;
           cosign has no gate) and `oras manifest fetch` (one registry read)
  floor:   `python -c pass`, and `python -c "import click, attrs, httpx,
           cryptography..."`: the interpreter and the libraries a verify needs,
           without any of our code or work

conftest is not built by scripts/install-peers.sh (it is not among the
pinned peers), so it is not measured. Medians of fresh processes; the ratio
is ours / peer (target for verify: <= 2.5x cosign).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import WORK, cosign_env, machine, peer, run, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply import Bundle, Registry, Signer  # noqa: E402
from tests.interop.conftest import _start_distribution  # noqa: E402

# httpx without its own CLI module, as policysupply imports it (lean_imports).
FLOOR_IMPORTS = (
    "from policysupply._internal.lean_imports import httpx_without_cli; httpx_without_cli(); "
    "import click, attrs, cryptography.hazmat.primitives.serialization, "
    "cryptography.hazmat.primitives.asymmetric.ec"
)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one fresh process.

    CPU time is what the process itself costs; wall time also counts waiting
    for a core, which on a shared machine can dwarf it.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} exited {code}: {err[-1500:]!r}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 7 if args.quick else 21
    work = WORK / "cli-start"
    work.mkdir(parents=True, exist_ok=True)
    env = cosign_env(work)
    cosign, oras = str(peer("cosign2")), str(peer("oras"))
    ours = str(Path(sys.executable).parent / "policysupply")
    signer = Signer.generate()
    for name in ("cosign.key", "cosign.pub"):
        (work / name).unlink(missing_ok=True)
    key, pub = signer.write_key_pair(work, password="bench")
    gen = _start_distribution(work / "registry")
    server = next(gen)
    try:
        reg = Registry.remote(server.host, insecure=True)
        pinned = reg.push(
            Bundle.from_directory(ROOT / "policysupply" / "examples" / "kubernetes"),
            "bench/policy:1.0",
        )
        ref = f"{server.host}/bench/policy@{pinned.digest}"
        run([cosign, "sign", "--key", str(key), "--tlog-upload=false",
             "--allow-http-registry", ref], env)  # fmt: skip
        cases = {
            "python_pass": [sys.executable, "-c", "pass"],
            "python_floor_imports": [sys.executable, "-c", FLOOR_IMPORTS],
            "ours_help": [ours, "--help"],
            "cosign_help": [cosign, "--help"],
            "oras_help": [oras, "--help"],
            "ours_verify": [ours, "verify", ref, "--key", str(pub), "-q"],
            "cosign_verify": [cosign, "verify", "--key", str(pub), "--insecure-ignore-tlog=true",
                              "--allow-http-registry", ref],
            "ours_gate": [ours, "gate", ref, "--key", str(pub), "-q"],
            "oras_manifest_fetch": [oras, "manifest", "fetch", "--plain-http", ref],
        }  # fmt: skip
        wall: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        for cmd in cases.values():
            timed(cmd, env)  # warm the page cache
        for _ in range(rounds):  # interleaved, so load changes hit every case alike
            for name, cmd in cases.items():
                w, c = timed(cmd, env)
                wall[name].append(w)
                cpu[name].append(c)
        med = {k: statistics.median(v) * 1000 for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) * 1000 for k, v in cpu.items()}

        def ratios(m: dict[str, float]) -> dict[str, float]:
            return {
                "help_vs_cosign": m["ours_help"] / m["cosign_help"],
                "help_vs_oras": m["ours_help"] / m["oras_help"],
                "verify_vs_cosign": m["ours_verify"] / m["cosign_verify"],
                "gate_vs_cosign_verify": m["ours_gate"] / m["cosign_verify"],
                "floor_vs_cosign_verify": m["python_floor_imports"] / m["cosign_verify"],
            }

        print(f"{'':24s} {'wall ms':>8s} {'cpu ms':>8s}")
        for k in cases:
            print(f"{k:24s} {med[k]:8.1f} {med_cpu[k]:8.1f}")
        rw, rc = ratios(med), ratios(med_cpu)
        for k in rw:
            print(f"{k:24s} wall {rw[k]:5.2f}x  cpu {rc[k]:5.2f}x")
        load = os.getloadavg()
        save("cli_start", {"machine": machine(), "rounds": rounds, "load_avg": load,
                           "median_wall_ms": med, "median_cpu_ms": med_cpu,
                           "ratios_wall": rw, "ratios_cpu": rc,
                           "conftest": "not installed (not a pinned peer)"})  # fmt: skip
    finally:
        gen.close()


if __name__ == "__main__":
    main()
