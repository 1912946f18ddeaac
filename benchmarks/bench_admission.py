"""The admission service under load: decisions/s and latency, hot and cold, 1 and 2 replicas.

Usage: python benchmarks/bench_admission.py [--quick]

Everything runs on loopback on this machine: Debian's docker-registry
(distribution 2.8), Debian's redis-server, and `policysupply admission
serve` processes (uvicorn, TLS with a self-signed certificate, as the API
server would call them). The load generator is an asyncio httpx client in
this process, one keep-alive connection per concurrent request stream; it
shares the cores with the service, so the numbers are a floor.

A request is an AdmissionReview for a Pod with one container (the API
server's JSON shape); a decision is one image judged.

  hot: the same signed image, already verified (verification cache hit,
      tag resolution cached for tag_ttl) -> rules on the cached result
  cold: a different signed image per request, nothing cached: tag resolve,
      signature lookups, signature payload, rules (registry round trips per
      image counted from the registry's access log)
  two replicas: both behind one Redis; requests alternate between them;
      hot = verified by one, a Redis hit on the other, then local hits
  peers: the same decision made per request by `cosign verify --key` (cosign
      2.x, legacy .sig made by cosign) + `opa eval` of the same rules, as a
      webhook shelling out to the tools would (sequential, and 16 at once)

Bounded: each scenario stops after its request count or 20 s, whichever
comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import WORK, cosign_env, machine, peer, run, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from policysupply import Registry, Signer  # noqa: E402
from tests.interop._admission_fixtures import start_redis, write_certificate  # noqa: E402
from tests.interop._cosign import COSIGN_SIGN_FLAGS  # noqa: E402
from tests.interop._gate_fixtures import push_image  # noqa: E402
from tests.interop.conftest import _stop, _wait_for_registry, free_port  # noqa: E402
from tests.unit.admission._reviews import pod_spec, review, workload  # noqa: E402

SCENARIO_SECONDS = 20.0
CONCURRENCY = (1, 16, 64)


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """distribution with its access log on (to count round trips per image)."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = work / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(peer_registry()), "serve", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    _wait_for_registry(proc, host, log)
    return proc, host, log


def peer_registry() -> str:
    import shutil

    found = shutil.which("docker-registry")
    if not found:
        raise SystemExit("docker-registry not found (apt-get install docker-registry)")
    return found


class Replica:
    def __init__(self, work: Path, config: dict[str, Any]) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.cert = write_certificate(work / "tls")
        self.port = free_port()
        config = {**config, "server": {"host": "127.0.0.1", "port": self.port,
                                       "cert_file": "tls/tls.crt", "key_file": "tls/tls.key"}}
        (work / "admission.yaml").write_text(yaml.safe_dump(config))
        self.log = work / "service.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "policysupply", "admission", "serve", "--config",
                 str(work / "admission.yaml"), "--log-level", "warning"],
                stdout=out, stderr=subprocess.STDOUT, cwd=work,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        self.url = f"https://127.0.0.1:{self.port}"
        self.ssl = ssl.create_default_context(cafile=str(self.cert))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"service exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", verify=self.ssl, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("service did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Connection:
    """A minimal HTTP/1.1 keep-alive client over TLS (httpx costs more CPU than the service)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.replica.port, ssl=self.replica.ssl, server_hostname="127.0.0.1")

    async def post(self, path: str, data: bytes) -> bytes:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"service answered {head[:40]!r}")
        return await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def cpu_seconds(replicas: list[Replica]) -> float:
    """User + system CPU time of the service processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for r in replicas:
        fields = Path(f"/proc/{r.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def load(replicas: list[Replica], bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """Posts ``bodies`` with ``concurrency`` streams; latency per request, decisions/s."""
    conns = [Connection(replicas[w % len(replicas)]) for w in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))  # handshakes are not what is measured
    latencies: list[float] = []
    denied = 0
    next_index = 0
    stop_at = time.perf_counter() + SCENARIO_SECONDS

    async def stream(conn: Connection) -> None:
        nonlocal next_index, denied
        while next_index < len(bodies) and time.perf_counter() < stop_at:
            i = next_index
            next_index += 1
            start = time.perf_counter()
            answer = await conn.post("/validate", bodies[i])
            latencies.append(time.perf_counter() - start)
            if b'"allowed":true' not in answer:
                denied += 1

    cpu = cpu_seconds(replicas)
    start = time.perf_counter()
    await asyncio.gather(*(stream(c) for c in conns))
    wall = time.perf_counter() - start
    cpu = cpu_seconds(replicas) - cpu
    for c in conns:
        await c.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "denied": denied,
        "decisions_per_s": len(latencies) / wall,
        "service_cpu_ms_per_decision": 1000 * cpu / len(latencies),
        "decisions_per_cpu_s": len(latencies) / cpu if cpu else None,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def body(image: str) -> bytes:
    return json.dumps(review(workload("Pod", "web", "bench", pod_spec([image])))).encode()


def registry_requests(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if '"GET /v2/' in line or '"HEAD /v2/' in line)


def peer_decision(cosign: str, opa: str, pub: Path, rules_tar: Path, ref: str,
                  env: dict[str, str]) -> float:
    from policysupply.gate import DEFAULT_QUERY, INPUT_SCHEMA

    start = time.perf_counter()
    out = run([cosign, "verify", "--key", str(pub), "--insecure-ignore-tlog=true",
               "--allow-http-registry", ref], env)
    payloads = json.loads(out)
    digest = payloads[0]["critical"]["image"]["docker-manifest-digest"]
    host, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    document = {
        "schema": INPUT_SCHEMA,
        "image": {"reference": ref, "registry": host, "repository": repo,
                  "name": f"{host}/{repo}", "tag": tag, "digest": digest},
        "verification": {"verified": True, "error": None, "message": "", "key_ids": ["k"],
                         "signers": ["k"],
                         "signatures": [{"key_id": "k", "scheme": "legacy", "annotations": {},
                                         "identity": None} for _ in payloads],
                         "attestations": []},
        "context": {"kubernetes": {"namespace": "bench", "kind": "Pod", "operation": "CREATE"}},
    }
    result = run([opa, "eval", "--format", "json", "--bundle", str(rules_tar), "--stdin-input",
                  DEFAULT_QUERY], env, stdin=json.dumps(document))
    assert json.loads(result)["result"][0]["expressions"][0]["value"]["allow"]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer requests and images")
    args = parser.parse_args()
    hot_n = 1500 if args.quick else 5000
    cold_n = 60 if args.quick else 200
    peer_rounds = 5 if args.quick else 15
    work = WORK / "admission"
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # a fresh registry: one signature per image
    work.mkdir(parents=True, exist_ok=True)
    env = cosign_env(work)
    cosign, opa = str(peer("cosign2")), str(peer("opa"))

    signer = Signer.generate()
    for name in ("cosign.key", "cosign.pub"):
        (work / name).unlink(missing_ok=True)
    key, pub = signer.write_key_pair(work, password="bench")
    (work / "trust-policy.yaml").write_text(f"version: 1\nkeys: [{pub}]\n")
    proc, host, reglog = start_registry(work / "registry")
    redis = start_redis(work / "redis")
    replicas: list[Replica] = []
    results: dict[str, Any] = {}
    try:
        reg = Registry.remote(host, insecure=True)
        web = push_image(reg, f"{host}/bench/web:1", seed="web")
        run([cosign, "sign", "--key", str(key), *COSIGN_SIGN_FLAGS["2"],
             f"{host}/bench/web@{web.digest}"], env)
        cold_images: dict[str, list[str]] = {}
        for label in [f"c{c}" for c in CONCURRENCY] + ["two", "count"]:
            n = 1 if label == "count" else cold_n
            refs = []
            for i in range(n):
                ref = f"{host}/bench/{label}-{i % 10}:{i}"
                push_image(reg, ref, seed=f"{label}-{i}")
                signer.sign(reg, ref)
                refs.append(ref)
            cold_images[label] = refs
        base = {"trust_policy": str(work / "trust-policy.yaml"),
                "registries": {"insecure": [host]},
                "settings": {"allowed_registries": [host]},
                "limits": {"deadline": "8s", "registry_concurrency": 16}}

        one = Replica(work / "one", base)
        replicas.append(one)
        # Round trips for one cold image, from the registry's access log.
        before = registry_requests(reglog)
        asyncio.run(load([one], [body(cold_images["count"][0])], 1))
        round_trips = registry_requests(reglog) - before

        hot_body = body(f"{host}/bench/web:1")
        asyncio.run(load([one], [hot_body] * 20, 1))  # verified once; now cached
        results["one_replica"] = {"hot": {}, "cold": {}}
        for c in CONCURRENCY:
            results["one_replica"]["hot"][str(c)] = asyncio.run(load([one], [hot_body] * hot_n, c))
            bodies = [body(r) for r in cold_images[f"c{c}"]]
            results["one_replica"]["cold"][str(c)] = asyncio.run(load([one], bodies, c))
        one.stop()
        replicas.remove(one)

        key_file = work / "hmac.key"  # the replicas' shared secret (required with Redis)
        key_file.write_text(os.urandom(16).hex())
        shared = {
            **base,
            "cache": {"redis": {"url": redis.url, "hmac_key_file": str(key_file)}},
        }
        a, b = Replica(work / "a", shared), Replica(work / "b", shared)
        replicas += [a, b]
        results["two_replicas"] = {"hot": {}, "cold": {}}
        asyncio.run(load([a], [hot_body] * 5, 1))  # verified by a; b reads it from Redis
        for c in CONCURRENCY:
            results["two_replicas"]["hot"][str(c)] = asyncio.run(
                load([a, b], [hot_body] * hot_n, c))
        results["two_replicas"]["cold"]["16"] = asyncio.run(
            load([a, b], [body(r) for r in cold_images["two"]], 16))
        redis_hits = "policysupply_admission_cache_hits_total{layer=\"redis\"}"
        text = httpx.get(b.url + "/metrics", verify=b.ssl).text
        results["two_replicas"]["replica_b_redis_hits"] = next(
            (float(line.split()[-1]) for line in text.splitlines() if line.startswith(redis_hits)),
            0.0)

        # Peers: cosign verify + opa eval per request.
        from policysupply.gate import Gate

        rules_tar = Gate.default_rules().write(work / "rules.tar.gz")
        ref = f"{host}/bench/web:1"
        seq = [peer_decision(cosign, opa, pub, rules_tar, ref, env) for _ in range(peer_rounds)]
        with ThreadPoolExecutor(16) as pool:
            start = time.perf_counter()
            par = list(pool.map(lambda _: peer_decision(cosign, opa, pub, rules_tar, ref, env),
                                range(32 if not args.quick else 16)))
            par_wall = time.perf_counter() - start
        par.sort()
        results["peers"] = {
            "1": {"requests": len(seq), "decisions_per_s": 1 / statistics.median(seq),
                  "p50_ms": 1000 * statistics.median(seq), "p99_ms": 1000 * max(seq)},
            "16": {"requests": len(par), "decisions_per_s": len(par) / par_wall,
                   "p50_ms": 1000 * statistics.median(par), "p99_ms": 1000 * par[-1]},
        }
        reg.close()
    finally:
        for r in replicas:
            r.stop()
        redis.stop()
        _stop(proc)

    payload = {
        "machine": {**machine(), "registry": "docker-registry (Debian, distribution 2.8)",
                    "redis": subprocess.run(["redis-server", "--version"], capture_output=True,
                                            text=True, check=False).stdout.strip(),
                    "load_generator": "asyncio streams, same machine, TLS keep-alive",
                    "load_average_1m_at_end": os.getloadavg()[0]},
        "cold_registry_round_trips_per_image": round_trips,
        **results,
    }
    path = save("admission", payload)
    for name in ("one_replica", "two_replicas"):
        for temp in ("hot", "cold"):
            for c, r in payload[name][temp].items():
                print(f"{name:12} {temp:4} c={c:>2}: {r['decisions_per_s']:7.0f}/s  p50 "
                      f"{r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  ({r['requests']} req; "
                      f"service CPU {r['service_cpu_ms_per_decision']:.2f} ms/decision)")
    for c, r in payload["peers"].items():
        print(f"peers        c={c:>2}: {r['decisions_per_s']:7.1f}/s  p50 {r['p50_ms']:6.0f} ms  "
              f"p99 {r['p99_ms']:7.0f} ms")
    print(f"cold: {round_trips} registry requests per image; replica b redis hits: "
          f"{payload['two_replicas']['replica_b_redis_hits']:.0f}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
