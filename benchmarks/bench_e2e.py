"""End to end: verify + pull + load a ~1 MB policy bundle into OPA, ours vs the peer chain.

Usage: python benchmarks/bench_e2e.py [--quick] [--rounds N] [--kinds blobs,records]
Started by this script, on loopback ports: Debian's docker-registry
(distribution 2.8) and two `opa run --server` (one per side, so neither
sees the other's modules).

Two signed revisions (A and B, ~1 MB tarballs each, different data and a
module that differs between them) are pushed and signed once; every round
loads the other one, so each load really replaces a module and the JSON data
in OPA, on both sides (same work: one module PUT that recompiles, one data PUT).

  ours:  fetch_verified(registry, tag, verifier) + OPA.load(...), in-process and
         warm (one round before timing): resolve, signature lookup and check,
         digest-checked pull, REST writes with a rollback snapshot.
  peers: `cosign verify --key` (cosign 2, `--insecure-ignore-tlog=true
         --allow-http-registry`), `oras pull`, `tar -xzf`, then one `curl -X PUT`
         per module to /v1/policies and one for data.json to /v1/data.

  floor: bare `http.client` in the same run, one keep-alive connection, in
         sequence: GET the manifest by tag, the `.sig` manifest, the signed
         payload, ECDSA check, GET the layer, sha256, inflate, untar, parse the
         JSON; then one PUT of data.json's bytes to a third OPA (its ingestion).

Reported: median wall time per round of each, per-step medians, the speed-up
peers/ours (target: >= 4x for text data, >= 2.5x for records) and
fetch_verified / floor (target: <= 1.3x).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import WORK, machine, peer, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply import Bundle, Manifest, Registry, Signer, TrustPolicy, Verifier  # noqa: E402
from policysupply.loaders import OPA, fetch_verified, publish  # noqa: E402
from tests.interop.conftest import _start_distribution, free_port  # noqa: E402

MODULES = {
    "bench/authz/authz.rego": """package bench.authz

default allow := false

allow if {
\tsome grant in data.bench.grants[input.team]
\tgrant.action == input.action
}
""",
    "bench/images/images.rego": """package bench.images

deny contains msg if {
\tsome c in input.containers
\tnot data.bench.digests[c.digest]
\tmsg := sprintf("%s: unknown digest", [c.name])
}
""",
}


def modules_of(revision: str) -> dict[str, str]:
    """The two modules; the revision changes one of them (a rule OPA must recompile)."""
    out = dict(MODULES)
    out["bench/authz/authz.rego"] += f'\nrevision := "{revision}"\n'
    return out


def make_bundle(revision: str, kind: str, target: int = 1 << 20) -> Bundle:
    """Two modules and about ``target`` bytes of tarball.

    ``records``: grant and image-digest records (~3 MB of JSON: hex ids
    compress about 3:1), the case where OPA's own parsing of the data
    dominates. ``blobs``: opaque strings (base64 of random bytes, e.g. CA
    certificates), ~1.4 MB of JSON, as in bench_registry.py.
    """
    rng = random.Random(f"{revision}-{kind}")
    grants: dict[str, list[dict[str, str]]] = {}
    digests: dict[str, dict[str, str]] = {}
    blobs: dict[str, str] = {}
    size = 0
    i = 0
    while size < target:
        for _ in range(2000 if kind == "records" else 100):
            if kind == "records":
                team = f"team-{rng.randrange(400):03d}"
                grants.setdefault(team, []).append(
                    {"action": rng.choice(["read", "write", "deploy", "admin"]),
                     "id": rng.randbytes(8).hex()})
                digests["sha256:" + rng.randbytes(32).hex()] = {"name": f"img-{i}", "team": team}
            else:
                blobs[f"cert-{i:05d}"] = base64.b64encode(rng.randbytes(1024)).decode()
            i += 1
        data = {"grants": grants, "digests": digests} if kind == "records" else {
            "grants": {"team-001": [{"action": "read", "id": "0"}]}, "blobs": blobs}
        bundle = Bundle(manifest=Manifest(revision=revision, roots=["bench"]),
                        modules=modules_of(revision), data={"bench": data})
        size = len(bundle.to_bytes())
    return Bundle.from_bytes(bundle.to_bytes())


def start_opa(opa_bin: Path, tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (tmp / f"opa-{port}.log").open("wb")
    proc = subprocess.Popen(
        [str(opa_bin), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error",
         *extra],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not OPA(url).healthy():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("opa did not start")
        time.sleep(0.05)
    return proc, url


ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def floor_round(host: str, repo: str, tag: str, public_key: object, opa_url: str,
                timing: dict[str, list[float]]) -> None:
    """The least work verified activation needs, with nothing but the standard library."""
    import gzip
    import hashlib
    import http.client
    import io
    import tarfile

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, timeout=30)

    def get(path: str) -> bytes:
        conn.request("GET", path, headers={"Accept": ACCEPT})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (path, resp.status)
        return body

    manifest = get(f"/v2/{repo}/manifests/{tag}")
    digest = hashlib.sha256(manifest).hexdigest()
    layer = json.loads(manifest)["layers"][0]
    sig_layer = json.loads(get(f"/v2/{repo}/manifests/sha256-{digest}.sig"))["layers"][0]
    payload = get(f"/v2/{repo}/blobs/{sig_layer['digest']}")
    signature = base64.b64decode(sig_layer["annotations"]["dev.cosignproject.cosign/signature"])
    public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    claims = json.loads(payload)["critical"]
    assert claims["image"]["docker-manifest-digest"] == f"sha256:{digest}"
    blob = get(f"/v2/{repo}/blobs/{layer['digest']}")
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    files = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        for member in tar.getmembers():
            if member.isfile():
                files[member.name.lstrip("/")] = tar.extractfile(member).read()  # type: ignore[union-attr]
    data = json.loads(files["data.json"])
    assert "bench" in data
    conn.close()
    t1 = time.perf_counter()
    # OPA's own ingestion of the same document: one PUT of the file's bytes.
    put = http.client.HTTPConnection(opa_url.removeprefix("http://"), timeout=30)
    put.request("PUT", "/v1/data", body=files["data.json"],
                headers={"Content-Type": "application/json"})
    resp = put.getresponse()
    resp.read()
    assert resp.status == 204, resp.status
    put.close()
    timing["floor_fetch_verify_parse"].append(t1 - t0)
    timing["floor_opa_data_put"].append(time.perf_counter() - t1)


def run_kind(kind: str, rounds: int, registry: Registry, host: str, signer: Signer,
             pub: Path, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> dict[str, object]:
    opa_bin, oras, cosign, curl = peer("opa"), peer("oras"), peer("cosign2"), shutil.which("curl")
    assert curl is not None, "curl not found"
    verifier = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    bundles = {"a": make_bundle("A", kind), "b": make_bundle("B", kind)}
    for tag, bundle in bundles.items():
        publish(bundle, registry, f"bench/{kind}:{tag}", signer)
    size = len(bundles["a"].to_bytes())
    data_size = len(json.dumps(dict(bundles["a"].data)))
    ours_proc, ours_url = start_opa(opa_bin, tmp)
    peer_proc, peer_url = start_opa(opa_bin, tmp)
    floor_proc, floor_url = start_opa(opa_bin, tmp)
    procs += [ours_proc, peer_proc, floor_proc]
    opa = OPA(ours_url)
    turn = {"ours": 0, "peers": 0, "floor": 0}
    steps: dict[str, list[float]] = {k: [] for k in (
        "ours_fetch_verified", "ours_load", "cosign_verify", "oras_pull", "untar", "curl_put",
        "floor_fetch_verify_parse", "floor_opa_data_put")}
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public_key = load_pem_public_key(signer.public_key_pem)

    def next_tag(side: str) -> str:
        turn[side] += 1
        return "ab"[turn[side] % 2]

    def ours() -> None:
        tag = next_tag("ours")
        t0 = time.perf_counter()
        verified = fetch_verified(registry, f"bench/{kind}:{tag}", verifier)
        t1 = time.perf_counter()
        result = opa.load(verified, name="bench")
        steps["ours_fetch_verified"].append(t1 - t0)
        steps["ours_load"].append(time.perf_counter() - t1)
        assert result.changed >= 2  # the data and the changed module, every round
        assert result.revision == tag.upper()

    env = {**os.environ, "HOME": str(tmp), "DOCKER_CONFIG": str(tmp / ".docker")}

    def run(step: str, cmd: list[str]) -> None:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        steps[step].append(time.perf_counter() - t0)

    def peers() -> None:
        ref = f"{host}/bench/{kind}:{next_tag('peers')}"
        run("cosign_verify", [str(cosign), "verify", "--key", str(pub),
                              "--insecure-ignore-tlog=true", "--allow-http-registry", ref])
        out = tmp / "pulled"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        run("oras_pull", [str(oras), "pull", "--plain-http", ref, "-o", str(out)])
        tarball = next(p for p in out.rglob("*") if p.is_file())
        tree = tmp / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        run("untar", ["tar", "-xzf", str(tarball), "-C", str(tree)])
        t0 = time.perf_counter()
        for module in sorted(tree.rglob("*.rego")):
            rel = module.relative_to(tree).as_posix()
            subprocess.run([curl, "-sf", "-X", "PUT", "--data-binary", f"@{module}",
                            f"{peer_url}/v1/policies/{rel}"], check=True, capture_output=True)
        subprocess.run([curl, "-sf", "-X", "PUT", "-H", "Content-Type: application/json",
                        "--data-binary", f"@{tree / 'data.json'}", f"{peer_url}/v1/data"],
                       check=True, capture_output=True)
        steps["curl_put"].append(time.perf_counter() - t0)

    def floor() -> None:
        floor_round(host, f"bench/{kind}", next_tag("floor"), public_key, floor_url, steps)

    ours()  # warm: imports, connections, OPA's first compile
    peers()
    floor()
    for values in steps.values():
        values.clear()
    # Interleaved, so a busy moment of the shared machine hits all three alike,
    # and the order rotates every round, so each side follows each other side
    # equally often (a fixed order always started ours right after the floor's
    # 1.5-3 MB data PUT, while that OPA may still be busy with it).
    samples: dict[str, list[float]] = {"ours": [], "peers": [], "floor": []}
    sides = [("ours", ours), ("peers", peers), ("floor", floor)]
    for i in range(rounds):
        for side, fn in sides[i % 3 :] + sides[: i % 3]:
            t0 = time.perf_counter()
            fn()
            samples[side].append(time.perf_counter() - t0)
    ours_s = statistics.median(samples["ours"])
    peers_s = statistics.median(samples["peers"])
    floor_s = statistics.median(samples["floor"])
    # Both OPAs answer alike with the last revision each loaded.
    probe = {"team": "team-001", "action": "read"}
    assert opa.query("bench/authz/allow", probe) == OPA(peer_url).query("bench/authz/allow", probe)
    opa.close()
    result: dict[str, object] = {
        "bundle_bytes": size,
        "data_json_bytes": data_size,
        "rounds": rounds,
        "ours_s": ours_s,
        "peers_s": peers_s,
        "floor_s": floor_s,
        "speedup": peers_s / ours_s,
        "steps_median_s": {k: statistics.median(v) for k, v in steps.items() if v},
    }
    med = result["steps_median_s"]
    result["fetch_verified_over_floor"] = (
        med["ours_fetch_verified"] / med["floor_fetch_verify_parse"])  # type: ignore[index]
    print(f"{kind}: {size / 2**20:.2f} MB bundle, {data_size / 2**20:.2f} MB JSON data: "
          f"ours {ours_s * 1000:.1f} ms, peer chain {peers_s * 1000:.1f} ms, "
          f"speed-up {peers_s / ours_s:.1f}x; floor {floor_s * 1000:.1f} ms; "
          f"fetch_verified / floor fetch {result['fetch_verified_over_floor']:.2f}x")
    for k, v in result["steps_median_s"].items():  # type: ignore[attr-defined]
        print(f"  {k}: {v * 1000:.1f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    parser.add_argument("--rounds", type=int, help="timed rounds per kind (overrides --quick)")
    parser.add_argument("--kinds", default="blobs,records", help="comma-separated: blobs,records")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    WORK.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    server_gen = _start_distribution(tmp / "registry")
    server = next(server_gen)
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "HOME": str(tmp)}
    try:
        registry = Registry.remote(server.host, insecure=True)
        signer = Signer.generate()
        _, pub = signer.write_key_pair(tmp, password="bench")
        results = {kind: run_kind(kind, rounds, registry, server.host, signer, pub, tmp, procs)
                   for kind in args.kinds.split(",")}
        registry.close()
        cosign_version = subprocess.run([str(peer("cosign2")), "version"], capture_output=True,
                                        text=True, check=False, env=env).stdout
        version = next((line.split(":", 1)[1].strip() for line in cosign_version.splitlines()
                        if line.startswith("GitVersion")), "?")
        oras_version = subprocess.run([str(peer("oras")), "version"], capture_output=True,
                                      text=True, check=False).stdout.splitlines()
        save("e2e", {
            "machine": {**machine(), "cosign": version, "loadavg_1m_at_end": os.getloadavg()[0],
                        "oras": oras_version[0] if oras_version else "?",
                        "registry": "docker-registry (Debian, distribution 2.8)"},
            "order": "ours, peers, floor interleaved; the order rotates every round",
            "results": results,
        })
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        server_gen.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
