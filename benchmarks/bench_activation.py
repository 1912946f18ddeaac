"""Activation latency: tag moved -> OPA answering with the new revision, ours vs OPA's OCI polling.

Usage: python benchmarks/bench_activation.py [--quick]
Started by this script, on loopback ports: Debian's docker-registry
(distribution 2.8) with push notifications to our BundleServer, and two
`opa run --server`:

  ours:  BundleServer(events_token=...) + watch(interval=30): the registry's
         push event wakes the watch, which verifies (signature, digests) and
         publishes; OPA long-polls the server (long_polling_timeout_seconds=30)
         and activates the verified tarball.
  peer:  OPA's own OCI downloader on the same registry, polling every 1-2 s
         (min_delay_seconds=1, max_delay_seconds=2), no verification at all.

Each round pushes a new revision (~1.1 MB bundle, a module that says its
revision) and polls OPA's answer for `data.bench.authz.revision` every 2 ms.
Ours publishes with `publish` (push by digest, sign, then move the tag), so the
tag only ever names signed content. Reported: medians from the tag moving
(for ours, `publish` returned: moving the tag is its last step).
Target: ours <= 300 ms median from the tag moving.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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

from bench_e2e import make_bundle, start_opa  # noqa: E402

from policysupply import Registry, Signer, TrustPolicy, Verifier  # noqa: E402
from policysupply.loaders import BundleServer, publish  # noqa: E402
from tests.interop.conftest import _start_distribution  # noqa: E402


def answering(url: str, revision: str, deadline: float) -> float:
    """Polls OPA every 2 ms until it answers ``revision``; returns when (perf_counter)."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        while time.perf_counter() < deadline:
            conn.request("GET", "/v1/data/bench/authz/revision")
            resp = conn.getresponse()
            body = json.loads(resp.read())
            if body.get("result") == revision:
                return time.perf_counter()
            time.sleep(0.002)
    finally:
        conn.close()
    raise SystemExit(f"OPA at {url} never answered revision {revision}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 12")
    args = parser.parse_args()
    rounds = 5 if args.quick else 12
    WORK.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    procs: list[subprocess.Popen[bytes]] = []
    bundles = [make_bundle(f"R{i}", "blobs") for i in range(rounds + 1)]
    token = os.urandom(16).hex()
    server = BundleServer(tmp / "served", events_token=token).start()
    registry_gen = _start_distribution(
        tmp / "registry", notifications=server.registry_notifications()
    )
    registry_server = next(registry_gen)
    try:
        host = registry_server.host
        registry = Registry.remote(host, insecure=True)
        signer = Signer.generate()
        verifier = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
        ref, oci_ref = "bench/app:prod", "bench/app:oci"
        publish(bundles[0], registry, ref, signer)
        registry.push(bundles[0], oci_ref)
        server.watch(registry, ref, verifier, name="app", interval=30)
        deadline = time.monotonic() + 30
        while server.served("app") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        ours_cfg = tmp / "ours.yaml"
        ours_cfg.write_text(
            server.opa_config_yaml(
                ["app"], min_delay_seconds=1, max_delay_seconds=2, long_polling_timeout_seconds=30
            )
        )
        peer_cfg = tmp / "peer.yaml"
        peer_cfg.write_text(
            json.dumps(
                {
                    "services": {"registry": {"url": f"http://{host}", "type": "oci"}},
                    "bundles": {
                        "app": {
                            "service": "registry",
                            "resource": f"{host}/{oci_ref}",
                            "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2},
                        }
                    },
                    "persistence_directory": str(tmp / "peer-persist"),
                }
            )
        )
        opa_bin = peer("opa")
        ours_proc, ours_url = start_opa(opa_bin, tmp, "--config-file", str(ours_cfg))
        peer_proc, peer_url = start_opa(opa_bin, tmp, "--config-file", str(peer_cfg))
        procs += [ours_proc, peer_proc]
        answering(ours_url, "R0", time.perf_counter() + 30)
        answering(peer_url, "R0", time.perf_counter() + 30)
        from_tag: list[float] = []
        sign_s: list[float] = []
        peer_from_tag: list[float] = []
        for i in range(1, rounds + 1):
            revision = f"R{i}"
            # publish: push by digest, sign, then move the tag (its last step).
            t0 = time.perf_counter()
            publish(bundles[i], registry, ref, signer)
            t_tag = time.perf_counter()
            t_answer = answering(ours_url, revision, t_tag + 30)
            from_tag.append(t_answer - t_tag)
            sign_s.append(t_tag - t0)
            registry.push(bundles[i], oci_ref)
            t_peer_tag = time.perf_counter()
            peer_from_tag.append(answering(peer_url, revision, t_peer_tag + 30) - t_peer_tag)
            print(
                f"round {i}: ours {from_tag[-1] * 1000:.0f} ms from the tag moving (publish: "
                f"push + sign + tag {sign_s[-1] * 1000:.0f} ms), OPA OCI polling "
                f"{peer_from_tag[-1] * 1000:.0f} ms",
                flush=True,
            )
        registry.close()
        result = {
            "rounds": rounds,
            "bundle_bytes": len(bundles[0].to_bytes()),
            "ours_from_tag_median_s": statistics.median(from_tag),
            "ours_publish_median_s": statistics.median(sign_s),
            "peer_oci_polling_from_tag_median_s": statistics.median(peer_from_tag),
            "ours_from_tag_s": from_tag,
            "peer_from_tag_s": peer_from_tag,
        }
        print(
            f"median: ours {result['ours_from_tag_median_s'] * 1000:.0f} ms from the tag moving, "
            f"OPA's OCI polling {result['peer_oci_polling_from_tag_median_s'] * 1000:.0f} ms; "
            "target <= 300 ms: "
            + ("met" if result["ours_from_tag_median_s"] <= 0.3 else "NOT met")
        )
        save(
            "activation",
            {
                "machine": {
                    **machine(),
                    "loadavg_1m_at_end": os.getloadavg()[0],
                    "registry": "docker-registry (Debian, distribution 2.8)",
                },
                "results": result,
            },
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        server.stop()
        registry_gen.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
