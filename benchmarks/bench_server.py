"""BundleServer with 100 long-polling OPA clients, from one process: memory and latency.

Usage: python benchmarks/bench_server.py [--quick] [--clients N]
The server runs in its own process (so its memory is its own), serving a
verified ~1.1 MB bundle. N simulated OPA clients (threads here, one keep-alive
connection each, as OPA's bundle plugin holds one) download it, then long-poll
with `If-None-Match` and `Prefer: wait=120`, exactly as OPA does. A new
revision is then published; each client records when its 200 with the new
tarball has fully arrived. Repeated for a few revisions.

Reported: the server's RSS idle, with all clients waiting, and its peak while
answering (per waiting client: the growth / N); its thread count; and per
client the latency from publish returning to the new tarball received
(median, p90, max). The stdlib `ThreadingHTTPServer` holds one thread per
connection; a waiting long poll costs a thread blocked on a condition.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import WORK, machine, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_e2e import make_bundle  # noqa: E402

from policysupply import Registry, Signer  # noqa: E402
from policysupply.loaders import publish  # noqa: E402

SERVER = r"""
import sys, time
from policysupply import Registry, TrustPolicy, Verifier
from policysupply.loaders import BundleServer, fetch_verified
registry = Registry.local(sys.argv[1])
verifier = Verifier(TrustPolicy(keys=[open(sys.argv[2], "rb").read()]))
server = BundleServer(sys.argv[3]).start()
print(server.port, flush=True)
for line in sys.stdin:
    tag = line.strip()
    verified = fetch_verified(registry, f"bench/server:{tag}", verifier)
    server.publish(verified, "app")
    print(f"{time.monotonic():.6f}", flush=True)
server.stop()
"""


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


class Client(threading.Thread):
    """One simulated OPA: download, then long-poll for each new revision."""

    def __init__(self, port: int, revisions: int, ready: threading.Barrier) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.revisions = revisions
        self.ready = ready
        self.received: list[float] = []
        self.error: BaseException | None = None
        self.waiting = threading.Event()

    def run(self) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            conn.request("GET", "/bundles/app")
            resp = conn.getresponse()
            resp.read()
            etag = resp.headers["ETag"]
            self.ready.wait()
            for _ in range(self.revisions):
                conn.request(
                    "GET", "/bundles/app", headers={"If-None-Match": etag, "Prefer": "wait=120"}
                )
                self.waiting.set()
                resp = conn.getresponse()
                body = resp.read()
                self.received.append(time.monotonic())
                assert resp.status == 200, resp.status
                assert body
                etag = resp.headers["ETag"]
                self.waiting.clear()
            conn.close()
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 revisions instead of 6")
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    revisions = 3 if args.quick else 6
    n = args.clients
    WORK.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    registry = Registry.local(tmp / "oci")
    signer = Signer.generate()
    (tmp / "key.pub").write_bytes(signer.public_key_pem)
    for i in range(revisions + 1):
        publish(make_bundle(f"R{i}", "blobs"), registry, f"bench/server:r{i}", signer)
    size = len(make_bundle("R0", "blobs").to_bytes())
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp / "oci"), str(tmp / "key.pub"), str(tmp / "s")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline())
        proc.stdin.write("r0\n")
        proc.stdin.flush()
        proc.stdout.readline()
        time.sleep(0.5)
        idle = status(proc.pid)
        ready = threading.Barrier(n + 1)
        clients = [Client(port, revisions, ready) for _ in range(n)]
        for c in clients:
            c.start()
        ready.wait(timeout=120)
        latencies: list[float] = []
        waiting = idle
        for i in range(1, revisions + 1):
            deadline = time.monotonic() + 60
            while not all(c.waiting.is_set() for c in clients) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # every request is inside the server, held
            waiting = status(proc.pid)
            proc.stdin.write(f"r{i}\n")
            proc.stdin.flush()
            published = float(proc.stdout.readline())
            deadline = time.monotonic() + 60
            while any(len(c.received) < i for c in clients) and time.monotonic() < deadline:
                if any(c.error for c in clients):
                    break
                time.sleep(0.005)
            errors = [c.error for c in clients if c.error]
            if errors:
                raise SystemExit(f"{len(errors)} client(s) failed: {errors[0]!r}")
            latencies += [c.received[i - 1] - published for c in clients]
            print(f"revision {i}: all {n} clients have it; slowest after "
                  f"{max(c.received[i - 1] - published for c in clients) * 1000:.0f} ms",
                  flush=True)
        peak = status(proc.pid)
        latencies.sort()
        result = {
            "clients": n,
            "revisions": revisions,
            "bundle_bytes": size,
            "rss_idle_kib": idle["VmRSS"],
            "rss_waiting_kib": waiting["VmRSS"],
            "rss_peak_kib": peak["VmHWM"],
            "threads_waiting": waiting["Threads"],
            "rss_per_waiting_client_kib": (waiting["VmRSS"] - idle["VmRSS"]) / n,
            "latency_median_s": statistics.median(latencies),
            "latency_p90_s": latencies[int(0.9 * (len(latencies) - 1))],
            "latency_max_s": latencies[-1],
        }
        print(
            f"{n} long-polling clients, {size / 2**20:.2f} MB bundle: server RSS "
            f"{idle['VmRSS'] / 1024:.1f} MiB idle, {waiting['VmRSS'] / 1024:.1f} MiB with all "
            f"waiting ({result['rss_per_waiting_client_kib']:.0f} KiB per client, "
            f"{waiting['Threads']} threads), peak {peak['VmHWM'] / 1024:.1f} MiB; latency "
            f"publish -> tarball received: median {result['latency_median_s'] * 1000:.0f} ms, "
            f"p90 {result['latency_p90_s'] * 1000:.0f} ms, max "
            f"{result['latency_max_s'] * 1000:.0f} ms"
        )
        save("server", {"machine": {**machine(), "loadavg_1m_at_end": os.getloadavg()[0]},
                        "results": result})
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
