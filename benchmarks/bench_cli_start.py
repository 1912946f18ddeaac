"""CLI cold start: `policysupply --help`, `verify`, `eval` and `gate` as fresh processes vs peers.

Usage: python benchmarks/bench_cli_start.py [--quick] [--no-conftest]

Against Debian's docker-registry on loopback, a policy image signed by cosign
2.x (legacy `.sig`, no transparency log), in the same run and interleaved:

  --help:  `policysupply --help`        vs `cosign --help`, `oras --help`, `conftest --help`
  verify:  `policysupply verify --key`  vs `cosign verify --key --insecure-ignore-tlog`
  eval:    `policysupply eval DIR data.main.deny -i pod.json` (embedded engine, and the
           OPA engine on the pinned `opa`) vs `conftest test -p DIR pod.json` and
           `opa eval -d DIR -i pod.json data.main.deny`: the same one-rule deny
           policy on local disk, the same input, no registry
  gate:    `policysupply gate --key`    vs `cosign verify` (the signature part;
           cosign has no gate), `oras manifest fetch` (one registry read), and
           the sum `cosign verify` + `conftest test` (a peer pipeline: check the
           signature, then the rules)
  floor:   `python -c pass`, and `python -c "import click, attrs, httpx,
           cryptography..."`: the interpreter and the libraries a verify needs,
           without any of our code or work

conftest is an optional peer: when it is missing this script builds it with
`scripts/install-peers.sh conftest` (pinned there; not part of the default
peers, so CI never builds it); --no-conftest leaves its rows out. Medians of
fresh processes; the ratio is ours / peer (target for verify: <= 2.5x cosign).
CPU time is the process's user + system time including the children it
reaped (the embedded engine's worker, the OPA engine's `opa`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import WORK, compile_package, cosign_env, machine, peer, run, save

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


# One rule, conftest's default namespace (`main`) and rule name (`deny`).
DENY_POLICY = """package main

deny contains msg if {
	some c in input.request.object.spec.containers
	c.securityContext.privileged
	msg := sprintf("container %s is privileged", [c.name])
}
"""


def conftest_peer() -> tuple[Path | None, str]:
    """The pinned conftest, built with scripts/install-peers.sh when missing.

    Returns the binary (None when it could not be built) and its version or
    why it is missing.
    """
    try:
        return peer("conftest"), _conftest_version()
    except SystemExit:
        pass
    script = ROOT / "scripts" / "install-peers.sh"
    print("conftest missing: building it with scripts/install-peers.sh conftest", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([str(script), "conftest"], check=False)
    if proc.returncode != 0:
        return None, f"not measured: scripts/install-peers.sh conftest exited {proc.returncode}"
    print(f"built conftest in {time.perf_counter() - start:.0f} s", flush=True)
    return peer("conftest"), _conftest_version()


def _conftest_version() -> str:
    # `go install` leaves conftest's own version unset ("dev"): the pinned
    # version is in the binary's name; the OPA it embeds is in its output.
    path = peer("conftest")
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    opa = next((line for line in out.splitlines() if line.startswith("OPA")), "OPA: ?")
    return f"{path.resolve().name} ({opa})"


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
    ap.add_argument("--no-conftest", action="store_true", help="leave conftest out")
    args = ap.parse_args()
    rounds = 7 if args.quick else 21
    work = WORK / "cli-start"
    work.mkdir(parents=True, exist_ok=True)
    compile_package()  # as a wheel install leaves it (PYTHONDONTWRITEBYTECODE may be set)
    env = cosign_env(work)
    cosign, oras, opa = str(peer("cosign2")), str(peer("oras")), str(peer("opa"))
    ours = str(Path(sys.executable).parent / "policysupply")
    conftest, conftest_note = (None, "left out (--no-conftest)")
    if not args.no_conftest:
        conftest, conftest_note = conftest_peer()
    policy = work / "deny-policy"
    policy.mkdir(exist_ok=True)
    (policy / "deny.rego").write_text(DENY_POLICY)
    pod = str(ROOT / "policysupply" / "examples" / "pod.json")
    # The OPA engine finds the pinned opa through POLICYSUPPLY_OPA for its own
    # case only: the other cases keep their default engine (auto: OPA when on PATH).
    env_opa = {**env, "POLICYSUPPLY_OPA": opa}
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
            "ours_eval_embedded": [ours, "eval", str(policy), "data.main.deny", "-i", pod,
                                   "--engine", "embedded"],
            "ours_eval_opa": [ours, "eval", str(policy), "data.main.deny", "-i", pod,
                              "--engine", "opa"],
            "opa_eval": [opa, "eval", "-d", str(policy), "-i", pod, "data.main.deny"],
        }  # fmt: skip
        if conftest is not None:
            cases["conftest_help"] = [str(conftest), "--help"]
            cases["conftest_test"] = [str(conftest), "test", "--no-color", "-p", str(policy), pod]
        case_env = {name: env_opa if name == "ours_eval_opa" else env for name in cases}
        wall: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        for name, cmd in cases.items():
            timed(cmd, case_env[name])  # warm the page cache
        for _ in range(rounds):  # interleaved, so load changes hit every case alike
            for name, cmd in cases.items():
                w, c = timed(cmd, case_env[name])
                wall[name].append(w)
                cpu[name].append(c)
        med = {k: statistics.median(v) * 1000 for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) * 1000 for k, v in cpu.items()}

        def ratios(m: dict[str, float]) -> dict[str, float]:
            r = {
                "help_vs_cosign": m["ours_help"] / m["cosign_help"],
                "help_vs_oras": m["ours_help"] / m["oras_help"],
                "verify_vs_cosign": m["ours_verify"] / m["cosign_verify"],
                "gate_vs_cosign_verify": m["ours_gate"] / m["cosign_verify"],
                "floor_vs_cosign_verify": m["python_floor_imports"] / m["cosign_verify"],
                "eval_embedded_vs_opa_eval": m["ours_eval_embedded"] / m["opa_eval"],
                "eval_opa_vs_opa_eval": m["ours_eval_opa"] / m["opa_eval"],
            }
            if "conftest_test" in m:
                r["help_vs_conftest"] = m["ours_help"] / m["conftest_help"]
                r["eval_embedded_vs_conftest_test"] = m["ours_eval_embedded"] / m["conftest_test"]
                r["eval_opa_vs_conftest_test"] = m["ours_eval_opa"] / m["conftest_test"]
                r["gate_vs_cosign_verify_plus_conftest_test"] = m["ours_gate"] / (
                    m["cosign_verify"] + m["conftest_test"]
                )
            return r

        print(f"{'':24s} {'wall ms':>8s} {'cpu ms':>8s}")
        for k in cases:
            print(f"{k:24s} {med[k]:8.1f} {med_cpu[k]:8.1f}")
        rw, rc = ratios(med), ratios(med_cpu)
        for k in rw:
            print(f"{k:40s} wall {rw[k]:5.2f}x  cpu {rc[k]:5.2f}x")
        load = os.getloadavg()
        save("cli_start", {"machine": machine(), "rounds": rounds, "load_avg": load,
                           "median_wall_ms": med, "median_cpu_ms": med_cpu,
                           "ratios_wall": rw, "ratios_cpu": rc,
                           "conftest": conftest_note})  # fmt: skip
    finally:
        gen.close()


if __name__ == "__main__":
    main()
