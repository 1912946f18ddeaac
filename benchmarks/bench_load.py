"""OPA.load cost with 500 unrelated modules in OPA, against the same load into an empty OPA.

Usage: python benchmarks/bench_load.py [--quick]
Two `opa run --server` on loopback: one empty, one started with 500 unrelated
modules. Into each, the same two verified revisions (a module and the data
change between them; ~1.1 MB bundle, 1.45 MB JSON data) are loaded in turn,
by one OPA object (it remembers its last load) and by a fresh one each time
(it reads what it replaces from OPA).

Measured per load: the wall time of OPA.load, and within it the time spent in
OPA's own writes (module and data PUTs/DELETEs, timed around each call). Our
work is the difference: reads, planning, encoding. OPA recompiles every module
on a module PUT, so its own writes grow with what it holds; ours should not.
Target: our work with 500 unrelated modules within 10% of the empty case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import WORK, machine, peer, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_e2e import make_bundle, start_opa  # noqa: E402

from policysupply import Registry, Signer, TrustPolicy, Verifier  # noqa: E402
from policysupply.loaders import OPA, fetch_verified, publish  # noqa: E402

WRITES = ("put_policy", "delete_policy", "put_data", "delete_data")


READS = ("get_data", "get_policy", "list_policies")


class Timed:
    """Wraps an OpaApi, adding up the time spent in OPA's writes and in our reads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0.0
        self.reads = 0.0

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.inner, name)
        if name not in WRITES and name not in READS:
            return fn

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                if name in WRITES:
                    self.writes += time.perf_counter() - t0
                else:
                    self.reads += time.perf_counter() - t0

        return timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 11")
    args = parser.parse_args()
    rounds = 5 if args.quick else 11
    WORK.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        registry = Registry.local(tmp / "oci")
        signer = Signer.generate()
        verifier = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
        verified = []
        for revision in ("A", "B"):
            publish(make_bundle(revision, "blobs"), registry, f"bench/load:{revision}", signer)
            verified.append(fetch_verified(registry, f"bench/load:{revision}", verifier))
        unrelated = tmp / "unrelated"
        unrelated.mkdir()
        for i in range(500):
            (unrelated / f"m{i}.rego").write_text(
                f"package unrelated.m{i}\n\nallow if input.n == {i}\n\nlimit := {i} * 2\n"
            )
        opa_bin = peer("opa")
        results: dict[str, Any] = {}
        for label, extra in (("empty", ()), ("500_unrelated", (str(unrelated),))):
            proc, url = start_opa(opa_bin, tmp, *extra)
            procs.append(proc)
            for mode in ("remembered", "fresh"):
                total: list[float] = []
                writes: list[float] = []
                reads: list[float] = []
                keep = OPA(url)
                keep.load(verified[1], name="bench")  # warm
                for i in range(rounds):
                    opa = keep if mode == "remembered" else OPA(url)
                    timed = Timed(opa._api())
                    opa._client = timed
                    t0 = time.perf_counter()
                    result = opa.load(verified[i % 2], name="bench")
                    total.append(time.perf_counter() - t0)
                    writes.append(timed.writes)
                    reads.append(timed.reads)
                    opa._client = timed.inner
                    assert result.changed >= 2, result
                    if opa is not keep:
                        opa.close()
                keep.close()
                ours = [t - w for t, w in zip(total, writes, strict=True)]
                local = [o - r for o, r in zip(ours, reads, strict=True)]
                results[f"{label}/{mode}"] = {
                    "load_median_s": statistics.median(total),
                    "opa_writes_median_s": statistics.median(writes),
                    "ours_median_s": statistics.median(ours),
                    "reads_median_s": statistics.median(reads),
                    "ours_in_process_median_s": statistics.median(local),
                }
                r = results[f"{label}/{mode}"]
                print(
                    f"{label:>14} {mode:>10}: load {r['load_median_s'] * 1000:7.1f} ms, OPA's "
                    f"writes {r['opa_writes_median_s'] * 1000:7.1f} ms, ours "
                    f"{r['ours_median_s'] * 1000:6.1f} ms (reads {r['reads_median_s'] * 1000:6.1f}"
                    f" ms, in-process {r['ours_in_process_median_s'] * 1000:5.1f} ms)",
                    flush=True,
                )
        for mode in ("remembered", "fresh"):
            ratio = (
                results[f"500_unrelated/{mode}"]["ours_median_s"]
                / results[f"empty/{mode}"]["ours_median_s"]
            )
            local = (
                results[f"500_unrelated/{mode}"]["ours_in_process_median_s"]
                / results[f"empty/{mode}"]["ours_in_process_median_s"]
            )
            results[f"ratio_{mode}"] = ratio
            results[f"ratio_in_process_{mode}"] = local
            print(f"{mode}: our work with 500 unrelated modules / empty OPA: {ratio:.2f}x "
                  f"(target <= 1.10); in-process alone {local:.2f}x")
        save("load", {"machine": {**machine(), "loadavg_1m_at_end": os.getloadavg()[0]},
                      "rounds": rounds, "results": results})
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
