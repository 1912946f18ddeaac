"""Rego engines side by side: warm evaluate, gate-style throughput, isolation, check.

Usage: python benchmarks/bench_engines.py [--quick]

Policy and input: policysupply's default gate rules with `allowed_registries`
set, and a verified image's gate document (as bench_embedded.py); the query
is the gate's (`data.policysupply.gate.decision`).

Reported, same machine, same run:
  warm evaluate latency (median of one query on a prepared bundle):
    opa server:     OpaPrepared.query, i.e. POST /v1/data over the Unix socket
    opa eval:       OpaPrepared's `opa eval` path (one process per query,
                    bundle directory already written), and a bare `opa eval`
                    process for reference
    embedded:       EmbeddedPrepared.query (worker process)
    embedded plan:  rego-cpp in this process (no isolation): the isolation
                    overhead is embedded - embedded plan
  gate-style queries/s: N queries over N distinct image documents, 1 thread
    and 4 threads, per engine
  cold: prepare + first query (OPA: `opa check` compile + server start)
  check of a 10-file tree (8 modules + 2 data files, bench_build.py's small
    tree): `opa check --strict` process vs OpaEngine.check vs
    EmbeddedEngine.check (in-process calls on a warm engine); and as fresh
    processes: `policysupply check`/`build --engine opa|embedded` vs
    `opa check`/`opa build` (Python start-up and imports included)
Ratios are engine / reference (below 1 means faster).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import WORK, machine, median_time, peer, save
from bench_build import make_tree
from bench_embedded import DOC, in_process_plan, rules

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply._internal.engines.base import CheckRequest  # noqa: E402
from policysupply._internal.engines.embedded import EmbeddedEngine  # noqa: E402
from policysupply._internal.engines.opa import OpaEngine  # noqa: E402
from policysupply.bundle import Bundle  # noqa: E402
from policysupply.gate import DEFAULT_QUERY  # noqa: E402


def docs(n: int) -> list[dict]:
    out = []
    for i in range(n):
        d = copy.deepcopy(DOC)
        d["image"]["tag"] = f"1.{i}"
        d["image"]["reference"] = f"registry.example/team/app:1.{i}"
        d["image"]["digest"] = "sha256:" + f"{i:064x}"
        out.append(d)
    return out


def interleaved(fns: list, rounds: int) -> list[float]:
    """Median seconds of each function, the functions taking turns each round."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t)
    return [statistics.median(s) for s in samples]


def throughput(prepared, inputs: list[dict], threads: int) -> float:
    t = time.perf_counter()
    if threads == 1:
        for d in inputs:
            prepared.query(DEFAULT_QUERY, d)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda d: prepared.query(DEFAULT_QUERY, d), inputs))
    return len(inputs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 50 if args.quick else 300
    n_gate = 200 if args.quick else 1000
    opa_bin = peer("opa")
    bundle = rules()
    modules, data = dict(bundle.modules), dict(bundle.data)
    versions = dict.fromkeys(modules, 1)
    inputs = docs(n_gate)

    once, keep = in_process_plan(bundle)
    want = once()["bindings"]["__policysupply_result__"]
    plan = median_time(once, rounds)

    opa = OpaEngine(opa=opa_bin)
    emb = EmbeddedEngine()

    # Cold: prepare + first query.
    cold_opa, cold_emb = [], []
    for _ in range(3 if args.quick else 7):
        t = time.perf_counter()
        p = opa.prepare(modules, data, rego_versions=versions)
        p.query(DEFAULT_QUERY, DOC)
        cold_opa.append(time.perf_counter() - t)
        p.close()
        t = time.perf_counter()
        q = emb.prepare(modules, data, rego_versions=versions)
        q.query(DEFAULT_QUERY, DOC)
        cold_emb.append(time.perf_counter() - t)
        q.close()

    po = opa.prepare(modules, data, rego_versions=versions)
    pe = emb.prepare(modules, data, rego_versions=versions)
    assert po.query(DEFAULT_QUERY, DOC)[0]["expressions"][0]["value"] == want
    assert pe.query(DEFAULT_QUERY, DOC)[0]["expressions"][0]["value"] == want
    doc_json = json.dumps(DOC).encode()

    warm_opa = median_time(lambda: po.query(DEFAULT_QUERY, DOC), rounds)
    warm_emb = median_time(lambda: pe.query(DEFAULT_QUERY, DOC), rounds)
    eval_rounds = 7 if args.quick else 21
    with tempfile.TemporaryDirectory() as tmp:
        tar = bundle.write(Path(tmp) / "rules.tar.gz")
        cmd = [
            str(opa_bin),
            "eval",
            "--format",
            "json",
            "--bundle",
            str(tar),
            "--stdin-input",
            DEFAULT_QUERY,
        ]
        warm_opa_eval, bare_eval = interleaved(
            [
                lambda: po._via_eval(DEFAULT_QUERY, doc_json),
                lambda: subprocess.run(cmd, input=doc_json, capture_output=True, check=True),
            ],
            eval_rounds,
        )

    qps = {
        "opa_server_1_thread": throughput(po, inputs, 1),
        "opa_server_4_threads": throughput(po, inputs, 4),
        "embedded_1_thread": throughput(pe, inputs, 1),
        "embedded_4_threads": throughput(pe, inputs, 4),
        "opa_eval_process_1_thread": 1 / warm_opa_eval,
    }
    po.close()
    pe.close()
    del keep

    # check of a 10-file tree.
    tree = make_tree(WORK / "tree-small", 8, 2, 0.01)
    b = Bundle.from_directory(tree)
    tmods, tdata = dict(b.modules), dict(b.data)
    tver = {m: b.rego_version_of(m) for m in tmods}
    opa_req = CheckRequest(modules=tmods, data=tdata, rego_versions=tver, strict=True, refuse=False)
    emb_req = CheckRequest(modules=tmods, data=tdata, rego_versions=tver, strict=False, refuse=True)
    assert opa.check(opa_req) == []
    assert emb.check(emb_req) == []
    check_rounds = 7 if args.quick else 21
    # Interleaved rounds: the machine is shared, load drifts.
    opa_check, eng_check_opa, eng_check_emb = interleaved(
        [
            lambda: subprocess.run(
                [str(opa_bin), "check", "--strict", "--bundle", str(tree)],
                capture_output=True,
                check=True,
            ),
            lambda: opa.check(opa_req),
            lambda: emb.check(emb_req),
        ],
        check_rounds,
    )

    # The same as fresh processes: the CLI (Python start-up, imports, the
    # engine) vs OPA's own commands.
    out = WORK / "engines-bundle.tar.gz"
    env = {**os.environ, "POLICYSUPPLY_OPA": str(opa_bin)}
    cli = [sys.executable, "-m", "policysupply"]
    fresh = interleaved(
        [
            lambda: subprocess.run(
                [str(opa_bin), "check", "--bundle", str(tree)], capture_output=True, check=True
            ),
            lambda: subprocess.run(
                [*cli, "check", str(tree), "--engine", "opa"],
                capture_output=True,
                check=True,
                env=env,
            ),
            lambda: subprocess.run(
                [*cli, "check", str(tree), "--engine", "embedded"],
                capture_output=True,
                check=True,
                env=env,
            ),
            lambda: subprocess.run(
                [str(opa_bin), "build", "--bundle", str(tree), "-o", str(out)],
                capture_output=True,
                check=True,
            ),
            lambda: subprocess.run(
                [*cli, "build", str(tree), "-o", str(out), "--engine", "opa"],
                capture_output=True,
                check=True,
                env=env,
            ),
            lambda: subprocess.run(
                [*cli, "build", str(tree), "-o", str(out), "--engine", "embedded"],
                capture_output=True,
                check=True,
                env=env,
            ),
        ],
        check_rounds,
    )
    fresh_names = [
        "opa_check",
        "policysupply_check_opa",
        "policysupply_check_embedded",
        "opa_build",
        "policysupply_build_opa",
        "policysupply_build_embedded",
    ]

    ms = lambda s: round(s * 1e3, 3)  # noqa: E731
    result = {
        "machine": machine(),
        "rounds": rounds,
        "warm_evaluate_ms": {
            "opa_server": ms(warm_opa),
            "opa_eval_path": ms(warm_opa_eval),
            "opa_eval_bare_process": ms(bare_eval),
            "embedded_worker": ms(warm_emb),
            "embedded_in_process_plan": ms(plan),
        },
        "embedded_isolation_overhead_ms": ms(warm_emb - plan),
        "ratios": {
            "opa_server_vs_opa_eval_process": round(warm_opa / bare_eval, 4),
            "opa_server_vs_embedded_worker": round(warm_opa / warm_emb, 3),
            "embedded_worker_vs_in_process_plan": round(warm_emb / plan, 3),
            "engine_check_opa_vs_opa_check": round(eng_check_opa / opa_check, 3),
            "engine_check_embedded_vs_opa_check": round(eng_check_emb / opa_check, 3),
        },
        "gate_queries_per_s": {k: round(v, 1) for k, v in qps.items()},
        "gate_inputs": n_gate,
        "cold_prepare_and_first_query_ms": {
            "opa": round(statistics.median(cold_opa) * 1e3, 1),
            "embedded": round(statistics.median(cold_emb) * 1e3, 1),
        },
        "check_10_files_ms": {
            "opa_check_strict_process": ms(opa_check),
            "OpaEngine.check": ms(eng_check_opa),
            "EmbeddedEngine.check": ms(eng_check_emb),
        },
        "fresh_process_10_files_ms": {n: ms(t) for n, t in zip(fresh_names, fresh, strict=True)},
    }
    result["ratios"]["cli_check_opa_vs_opa_check"] = round(fresh[1] / fresh[0], 3)
    result["ratios"]["cli_check_embedded_vs_opa_check"] = round(fresh[2] / fresh[0], 3)
    result["ratios"]["cli_build_opa_vs_opa_build"] = round(fresh[4] / fresh[3], 3)
    result["ratios"]["cli_build_embedded_vs_opa_build"] = round(fresh[5] / fresh[3], 3)
    print(json.dumps(result, indent=2))
    save("engines", result)


if __name__ == "__main__":
    main()
