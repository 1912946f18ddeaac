"""Push and pull of 1 MB and 100 MB policy images: ours versus the `oras` CLI.

Usage: python benchmarks/bench_registry.py [--quick]
Registry: Debian's docker-registry (distribution 2.8) on a loopback port,
started by this script. Each round pushes to a fresh repository so nothing is
skipped as "already there".

Reported per size (median of rounds, and ratio ours/oras; < 1 = faster):
  push: Registry.push(bundle) in-process (tarball built beforehand)
        vs `oras push repo:tag bundle.tar.gz:<layer type>`
  pull: Registry.download(ref, file, durable=False) in-process (digest-checked,
        streamed; no fsync, like oras) vs `oras pull repo:tag`; also the default
        durable=True (fsync before rename) against the same oras time
  pull+parse: Registry.pull(ref) -> Bundle (informational; oras does not parse)
Peak RSS growth while streaming the 100 MB blob to a file is measured in a
fresh interpreter (resident set sampled every 2 ms during the download, minus
the resident set just before it, after a warm-up download). Targets: not slower than
oras; RSS growth <= 32 MB.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import WORK, machine, median_time, peer, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply import Bundle, Registry  # noqa: E402
from tests.interop.conftest import _start_distribution  # noqa: E402

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def make_bundle(size: int) -> Bundle:
    """A bundle whose tarball is about ``size`` bytes (base64 of random bytes)."""
    rng = __import__("random").Random(size)
    text = base64.b64encode(rng.randbytes(int(size * 0.99))).decode()
    return Bundle.from_bytes(Bundle(modules={}, data={"bench": {"blob": text}}).to_bytes())


RSS_SCRIPT = """
import os, sys, threading, time
from policysupply import Registry
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
reg = Registry.remote(sys.argv[1], insecure=True)
reg.download(sys.argv[2], sys.argv[3] + ".warm")  # imports and connections warmed up
base = rss()
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
t = threading.Thread(target=sample)
t.start()
reg.download(sys.argv[2], sys.argv[3])
done.set()
t.join()
print((peak[0] - base) / 2**20)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 MB only, 3 rounds")
    args = parser.parse_args()
    oras = peer("oras")
    sizes = {"1MB": 1 << 20} if args.quick else {"1MB": 1 << 20, "100MB": 100 << 20}
    WORK.mkdir(exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    server_gen = _start_distribution(tmp / "registry")
    server = next(server_gen)
    try:
        for label, size in sizes.items():
            rounds = 3 if args.quick or size > (10 << 20) else 7
            bundle = make_bundle(size)
            blob = bundle.to_bytes()
            path = tmp / f"{label}.tar.gz"
            path.write_bytes(blob)
            counter = {"n": 0}

            def repo(prefix: str, counter: dict[str, int] = counter, label: str = label) -> str:
                counter["n"] += 1
                return f"bench/{prefix}-{label.lower()}-{counter['n']}"

            reg = Registry.remote(server.host, insecure=True)

            def ours_push(reg: Registry = reg, bundle: Bundle = bundle) -> None:
                reg.push(bundle, f"{repo('ours')}:1")

            def oras_push(path: Path = path) -> None:
                subprocess.run(
                    [str(oras), "push", "--plain-http", f"{server.host}/{repo('oras')}:1",
                     f"{path.name}:{LAYER}"],
                    cwd=path.parent, check=True, capture_output=True)

            target = reg.push(bundle, "bench/pull:1")
            out_dir = tmp / f"pull-{label}"
            out_dir.mkdir()

            def ours_pull(reg: Registry = reg, out_dir: Path = out_dir) -> None:
                # Same durability as oras (no fsync before the rename).
                reg.download("bench/pull:1", out_dir / "ours.tar.gz", durable=False)

            def ours_pull_durable(reg: Registry = reg, out_dir: Path = out_dir) -> None:
                reg.download("bench/pull:1", out_dir / "ours.tar.gz")

            def oras_pull(out_dir: Path = out_dir) -> None:
                subprocess.run([str(oras), "pull", "--plain-http", f"{server.host}/bench/pull:1"],
                               cwd=out_dir, check=True, capture_output=True)

            def ours_pull_parse(reg: Registry = reg) -> None:
                reg.pull("bench/pull:1")

            ours_pull()
            oras_pull()
            assert (out_dir / "ours.tar.gz").read_bytes() == blob
            r = {
                "bytes": len(blob),
                "push_ours_s": median_time(ours_push, rounds),
                "push_oras_s": median_time(oras_push, rounds),
                "pull_ours_s": median_time(ours_pull, rounds),
                "pull_oras_s": median_time(oras_pull, rounds),
                "pull_durable_ours_s": median_time(ours_pull_durable, rounds),
                "pull_parse_ours_s": median_time(ours_pull_parse, rounds),
            }
            r["push_ratio"] = r["push_ours_s"] / r["push_oras_s"]
            r["pull_ratio"] = r["pull_ours_s"] / r["pull_oras_s"]
            r["pull_durable_ratio"] = r["pull_durable_ours_s"] / r["pull_oras_s"]
            if size >= (100 << 20):
                proc = subprocess.run(
                    [sys.executable, "-c", RSS_SCRIPT, server.host, str(target),
                     str(out_dir / "rss.tar.gz")],
                    check=True, capture_output=True, text=True, env={**os.environ,
                                                                     "PYTHONPATH": str(ROOT)})
                r["pull_rss_growth_mb"] = float(proc.stdout.strip())
            results[label] = r
            reg.close()
            print(f"{label}: push ours {r['push_ours_s']:.3f}s oras {r['push_oras_s']:.3f}s "
                  f"(ratio {r['push_ratio']:.2f}); pull ours {r['pull_ours_s']:.3f}s "
                  f"oras {r['pull_oras_s']:.3f}s (ratio {r['pull_ratio']:.2f}; with fsync "
                  f"{r['pull_durable_ours_s']:.3f}s, ratio {r['pull_durable_ratio']:.2f}); "
                  f"pull+parse {r['pull_parse_ours_s']:.3f}s"
                  + (f"; RSS growth {r['pull_rss_growth_mb']:.1f} MB"
                     if "pull_rss_growth_mb" in r else ""))
    finally:
        server_gen.close()
    oras_version = subprocess.run([str(oras), "version"], capture_output=True, text=True,
                                  check=False).stdout.splitlines()
    save("registry", {"machine": {**machine(), "oras": oras_version[0] if oras_version else "?",
                                  "registry": "docker-registry (Debian, distribution 2.8)"},
                      "results": results})


if __name__ == "__main__":
    main()
