"""Gate decisions per second: Gate.decide in-process versus `cosign verify` + `opa eval`.

Usage: python benchmarks/bench_gate.py [--quick]
Registry: Debian's docker-registry (distribution 2.8) on a loopback port,
started by this script. Images are small OCI container images (config + one
layer). The gate runs the default rules with `allowed_registries` set, so a
decision verifies the signature and evaluates every default rule.

Reported (ratio = peers / ours, above 1 means we are faster):
  one decision: Gate.decide(registry, "host/repo:tag") on a warm gate (rules
      compiled, connections open, signature payloads cached by digest; the
      tag, the .sig tag and the referrers are read from the registry every
      time) vs the same decision by the peers, as a CI job would chain them:
      `cosign verify --key cosign.pub` (cosign 2.x, legacy .sig signed by
      cosign) then `opa eval --bundle rules.tar.gz --stdin-input` of the same
      rules on the same input document
  throughput: decisions/s over many distinct signed images, sequential and
      with 8 threads sharing one Gate and one Registry; "first pass" is each
      image's first decision (nothing cached), "warm" the following passes
  rules only: one evaluation of the default rules for a fixed input: the
      gate's compiled plan, Bundle.evaluate (re-compiles per query), opa eval
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import WORK, cosign_env, machine, median_time, peer, run, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply import Registry, Signer, TrustPolicy, Verifier  # noqa: E402
from policysupply.gate import DEFAULT_QUERY, INPUT_SCHEMA, Gate  # noqa: E402
from tests.interop._cosign import COSIGN_SIGN_FLAGS, COSIGN_VERIFY_FLAGS  # noqa: E402
from tests.interop._gate_fixtures import push_image  # noqa: E402
from tests.interop.conftest import _start_distribution  # noqa: E402


def peer_decision(
    cosign: str, opa: str, pub: Path, rules_tar: Path, host: str, repo: str, tag: str,
    key_id: str, env: dict[str, str],
) -> bool:
    """The gate's decision made by the peer tools (what a CI script would do)."""
    ref = f"{host}/{repo}:{tag}"
    out = run([cosign, "verify", "--key", str(pub), *COSIGN_VERIFY_FLAGS, ref], env)
    payloads = json.loads(out)
    digest = payloads[0]["critical"]["image"]["docker-manifest-digest"]
    document = {
        "schema": INPUT_SCHEMA,
        "image": {"reference": ref, "registry": host, "repository": repo, "name": f"{host}/{repo}",
                  "tag": tag, "digest": digest},
        "verification": {
            "verified": True, "error": None, "message": "", "key_ids": [key_id],
            "signatures": [{"key_id": key_id, "scheme": "legacy",
                            "annotations": p.get("optional") or {}, "identity": None}
                           for p in payloads],
            "attestations": [],
        },
        "context": {"env": "prod"},
    }
    result = run([opa, "eval", "--format", "json", "--bundle", str(rules_tar), "--stdin-input",
                  DEFAULT_QUERY], env, stdin=json.dumps(document))
    value = json.loads(result)["result"][0]["expressions"][0]["value"]
    return bool(value["allow"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds and 100 images")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    n_images = 100 if args.quick else 500
    work = WORK / "gate"
    work.mkdir(parents=True, exist_ok=True)
    env = cosign_env(work)
    cosign, opa = str(peer("cosign2")), str(peer("opa"))

    signer = Signer.generate()
    for name in ("cosign.key", "cosign.pub"):
        (work / name).unlink(missing_ok=True)
    key, pub = signer.write_key_pair(work, password="bench")
    gen = _start_distribution(work / "registry")
    server = next(gen)
    host = server.host
    try:
        reg = Registry.remote(host, insecure=True)
        gate = Gate(Verifier(TrustPolicy(keys=[pub])), settings={"allowed_registries": [host]})
        rules_tar = gate.rules.write(work / "rules.tar.gz")

        # One image signed by cosign itself, decided by both sides.
        web = push_image(reg, "bench/web:1.0", seed="web")
        run([cosign, "sign", "--key", str(key), *COSIGN_SIGN_FLAGS["2"],
             f"{host}/bench/web@{web.digest}"], env)
        start = time.perf_counter()
        first = gate.decide(reg, f"{host}/bench/web:1.0", context={"env": "prod"})
        cold_s = time.perf_counter() - start  # first in the process: imports, compile
        assert first.allowed, first.reasons

        def ours() -> None:
            assert gate.decide(reg, f"{host}/bench/web:1.0", context={"env": "prod"}).allowed

        def peers() -> None:
            assert peer_decision(cosign, opa, pub, rules_tar, host, "bench/web", "1.0",
                                 signer.key_id, env)

        peers()
        ours_s = median_time(ours, rounds * 20)
        peers_s = median_time(peers, rounds)

        # Rules alone, same input.
        document = dict(first.evidence["input"])
        rules_compiled_s = median_time(lambda: gate.evaluate(document), rounds * 20)
        rules_bundle_s = median_time(lambda: gate.rules.evaluate(DEFAULT_QUERY, document),
                                     rounds * 4)
        rules_opa_s = median_time(
            lambda: run([opa, "eval", "--format", "json", "--bundle", str(rules_tar),
                         "--stdin-input", DEFAULT_QUERY], env, stdin=json.dumps(document)),
            rounds)

        # Throughput over many distinct images (signed by us: setup speed only).
        refs = []
        for i in range(n_images):
            pinned = push_image(reg, f"bench/fleet-{i % 10}:{i}", seed=f"img{i}")
            signer.sign(reg, pinned)
            refs.append(f"{host}/bench/fleet-{i % 10}:{i}")
        fresh = Gate(Verifier(TrustPolicy(keys=[pub])), settings={"allowed_registries": [host]})
        start = time.perf_counter()
        fresh.evaluate(document)  # a new gate compiles its rules once, outside the timing
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        assert all(fresh.decide(reg, r).allowed for r in refs)
        first_pass = time.perf_counter() - start
        warm_runs = []
        for _ in range(2):
            start = time.perf_counter()
            assert all(fresh.decide(reg, r).allowed for r in refs)
            warm_runs.append(time.perf_counter() - start)
        warm = statistics.median(warm_runs)
        with ThreadPoolExecutor(8) as pool:
            start = time.perf_counter()
            assert all(pool.map(lambda r: fresh.decide(reg, r).allowed, refs))
            threads = time.perf_counter() - start
        reg.close()
    finally:
        gen.close()

    cosign_version = run([cosign, "version"], env).split("GitVersion:")[-1].split()[0]
    payload: dict[str, Any] = {
        "machine": {**machine(), "cosign": cosign_version,
                    "registry": "docker-registry (Debian, distribution 2.8)"},
        "one_decision": {
            "ours_s": ours_s,
            "ours_first_decision_s": cold_s,
            "ours_rules_compile_s": compile_s,
            "peers_s": peers_s,
            "ours_per_s": 1 / ours_s,
            "peers_per_s": 1 / peers_s,
            "speedup": peers_s / ours_s,
        },
        "throughput": {
            "images": n_images,
            "first_pass_per_s": n_images / first_pass,
            "warm_per_s": n_images / warm,
            "warm_threads8_per_s": n_images / threads,
        },
        "rules_only": {
            "compiled_s": rules_compiled_s,
            "bundle_evaluate_s": rules_bundle_s,
            "opa_eval_s": rules_opa_s,
        },
    }
    path = save("gate", payload)
    o, t, r = payload["one_decision"], payload["throughput"], payload["rules_only"]
    print(f"one decision: ours {o['ours_s'] * 1000:.1f} ms ({o['ours_per_s']:.0f}/s; first "
          f"{o['ours_first_decision_s'] * 1000:.0f} ms, rules compile "
          f"{o['ours_rules_compile_s'] * 1000:.0f} ms), cosign verify + opa eval "
          f"{o['peers_s'] * 1000:.0f} ms ({o['peers_per_s']:.1f}/s) -> {o['speedup']:.0f}x")
    print(f"{n_images} images: first pass {t['first_pass_per_s']:.0f}/s, warm "
          f"{t['warm_per_s']:.0f}/s, warm with 8 threads {t['warm_threads8_per_s']:.0f}/s")
    print(f"rules only: compiled {r['compiled_s'] * 1000:.2f} ms, Bundle.evaluate "
          f"{r['bundle_evaluate_s'] * 1000:.2f} ms, opa eval {r['opa_eval_s'] * 1000:.0f} ms")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
