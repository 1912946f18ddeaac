"""Key-based verification: ours versus `cosign verify --key`, and 1,000-ref throughput.

Usage: python benchmarks/bench_verify.py [--quick]
Registry: Debian's docker-registry (distribution 2.8) on a loopback port,
started by this script. The policy image is signed by **cosign 2.x**
(`cosign sign --key`, legacy `.sig` scheme, no transparency log), so both
sides verify the same bytes.

Reported (median of rounds; ratio = cosign / ours, above 1 means we are faster):
  in-process: Verifier.verify(registry, ref) with a warm Registry client
              vs `cosign verify --key cosign.pub --insecure-ignore-tlog=true`
              (target: at least 3x faster)
  CLI:        `policysupply verify --key cosign.pub ref` as a fresh process
              vs the same cosign command (target: not slower)
  throughput: 1,000 distinct policy images (signed by us), verified in one
              process, sequentially and with 8 threads sharing one Registry
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import WORK, cosign_env, machine, median_time, peer, run, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply import Bundle, Registry, Signer, TrustPolicy, Verifier  # noqa: E402
from tests.interop.conftest import _start_distribution  # noqa: E402

VERIFY_FLAGS = ["--insecure-ignore-tlog=true", "--allow-http-registry"]



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds and 200 refs")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    n_refs = 200 if args.quick else 1000
    work = WORK / "verify"
    work.mkdir(parents=True, exist_ok=True)
    env = cosign_env(work)
    cosign = str(peer("cosign2"))
    cli = str(Path(sys.executable).parent / "policysupply")

    signer = Signer.generate()
    for name in ("cosign.key", "cosign.pub"):
        (work / name).unlink(missing_ok=True)
    key, pub = signer.write_key_pair(work, password="bench")
    gen = _start_distribution(work / "registry")
    server = next(gen)
    try:
        reg = Registry.remote(server.host, insecure=True)
        bundle = Bundle.from_directory(ROOT / "policysupply" / "examples" / "kubernetes")
        pinned = reg.push(bundle, "bench/policy:1.0")
        ref = f"{server.host}/bench/policy@{pinned.digest}"
        run([cosign, "sign", "--key", str(key), "--tlog-upload=false",
             "--allow-http-registry", ref], env)

        verifier = Verifier(TrustPolicy(keys=[pub]))
        verifier.verify(reg, ref)  # warm: connections, imports
        ours = median_time(lambda: verifier.verify(reg, ref), rounds * 4)
        cosign_cmd = [cosign, "verify", "--key", str(pub), *VERIFY_FLAGS, ref]
        run(cosign_cmd, env)
        peer_time = median_time(lambda: run(cosign_cmd, env), rounds)
        cli_cmd = [cli, "verify", "--key", str(pub), ref]
        run(cli_cmd, env)
        cli_time = median_time(lambda: run(cli_cmd, env), rounds)

        # Throughput: many distinct signed images in one process.
        refs = []
        for i in range(n_refs):
            b = Bundle(modules=bundle.modules, data={"bench": {"i": i}})
            r = reg.push(b, f"bench/many:{i}")
            signer.sign(reg, r)
            refs.append(r)
        start = time.perf_counter()
        for r in refs:
            verifier.verify(reg, r)
        seq = time.perf_counter() - start
        with ThreadPoolExecutor(8) as pool:
            start = time.perf_counter()
            list(pool.map(lambda r: verifier.verify(reg, r), refs))
            par = time.perf_counter() - start
        reg.close()
    finally:
        gen.close()

    payload = {
        "machine": machine(),
        "cosign": subprocess.run([cosign, "version"], capture_output=True, text=True,
                                 check=False).stdout.split("GitVersion:")[-1].split()[0],
        "single": {
            "ours_in_process_s": ours,
            "ours_cli_s": cli_time,
            "cosign_verify_s": peer_time,
            "speedup_in_process": peer_time / ours,
            "speedup_cli": peer_time / cli_time,
        },
        "throughput": {
            "refs": n_refs,
            "sequential_s": seq,
            "sequential_refs_per_s": n_refs / seq,
            "threads8_s": par,
            "threads8_refs_per_s": n_refs / par,
        },
    }
    path = save("verify", payload)
    s, t = payload["single"], payload["throughput"]
    print(f"verify one ref: ours {s['ours_in_process_s'] * 1000:.1f} ms in-process, "
          f"{s['ours_cli_s'] * 1000:.0f} ms CLI; cosign {s['cosign_verify_s'] * 1000:.0f} ms "
          f"-> {s['speedup_in_process']:.1f}x in-process, {s['speedup_cli']:.2f}x CLI")
    print(f"{n_refs} refs: {t['sequential_refs_per_s']:.0f}/s sequential, "
          f"{t['threads8_refs_per_s']:.0f}/s with 8 threads")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
