"""Embedded engine: warm evaluate latency, and what the worker process costs.

Usage: python benchmarks/bench_embedded.py [--quick]

The policy is policysupply's default gate rules (policysupply/rules) with
`allowed_registries` set; the input is a verified image's gate document. The
query is the gate's (`data.policysupply.gate.decision`).

Reported:
  in-process plan: rego-cpp in this process, the query compiled once into a
      plan and run per input (what the Gate did before the worker)
  worker: EmbeddedPrepared.query, i.e. the same plan in the worker process
      plus the request/answer round trip (JSON over a pipe) and the checks
      of input and query (refusals) in this process
  isolation overhead: worker - in-process plan, per query
  cold: EmbeddedEngine().prepare(...) (a new worker: Python start-up, regopy
      import, module parse) and the first query; and the same from the pool
  opa eval: one `opa eval --bundle` process per query, for scale
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median_time, peer, run, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply._internal.engines import embedded  # noqa: E402
from policysupply._internal.engines.embedded import EmbeddedEngine  # noqa: E402
from policysupply._internal.engines.rego_source import RESULT_VAR  # noqa: E402
from policysupply.bundle import Bundle  # noqa: E402
from policysupply.gate import DEFAULT_QUERY, INPUT_SCHEMA, Gate  # noqa: E402

DOC = {
    "schema": INPUT_SCHEMA,
    "image": {
        "reference": "registry.example/team/app:1.0",
        "registry": "registry.example",
        "repository": "team/app",
        "name": "registry.example/team/app",
        "tag": "1.0",
        "digest": "sha256:" + "ab" * 32,
    },
    "verification": {
        "verified": True,
        "error": None,
        "error_type": None,
        "message": "verified",
        "key_ids": ["k1"],
        "signers": ["key k1"],
        "signatures": [
            {
                "key_id": "k1",
                "scheme": "ecdsa-p256",
                "annotations": {},
                "identity": None,
                "signed_at": None,
                "log_index": None,
            }
        ],
        "attestations": [],
    },
    "context": {"env": "prod"},
}


def rules() -> Bundle:
    gate = Gate.__new__(Gate)
    del gate
    from policysupply.gate import _check_default_settings, _with_settings

    settings = _check_default_settings({"allowed_registries": ["registry.example"]})
    return _with_settings(Gate.default_rules(), settings)


def in_process_plan(bundle: Bundle):
    import regopy
    from regopy.rego_shared import (
        rego_bundle_query,
        rego_free_output,
        rego_output_string,
        rego_set_strict_builtin_errors,
    )

    # rego-cpp in this very process, as the package no longer runs it: the
    # reference the worker's isolation overhead is measured against.
    engine = regopy.Interpreter()
    for name in sorted(bundle.modules):
        engine.add_module(name, bundle.modules[name])
    engine.add_data_json(json.dumps(dict(bundle.data)))
    plan = engine.build(f"{RESULT_VAR} := {DEFAULT_QUERY}")
    runtime = regopy.Interpreter()
    rego_set_strict_builtin_errors(runtime._impl, True)
    term = json.dumps(DOC)

    def once() -> object:
        runtime.set_input_term(term)
        out = rego_bundle_query(runtime._impl, plan._impl)
        try:
            return json.loads(rego_output_string(out))
        finally:
            rego_free_output(out)

    return once, (engine, plan, runtime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 50 if args.quick else 300
    bundle = rules()
    modules, data = dict(bundle.modules), dict(bundle.data)
    versions = dict.fromkeys(modules, 1)

    once, keep = in_process_plan(bundle)
    want = once()["bindings"][RESULT_VAR]
    inproc = median_time(once, rounds)

    eng = EmbeddedEngine()
    prepared = eng.prepare(modules, data, rego_versions=versions)
    got = prepared.query(DEFAULT_QUERY, DOC)[0]["expressions"][0]["value"]
    assert got == want, (got, want)
    worker = median_time(lambda: prepared.query(DEFAULT_QUERY, DOC), rounds)

    # Cold: a brand-new worker process (pool emptied), then one from the pool.
    colds, pooled = [], []
    for _ in range(3 if args.quick else 7):
        with embedded._POOL_LOCK:
            for w in embedded._POOL:
                w.close()
            embedded._POOL.clear()
        t = time.perf_counter()
        p = eng.prepare(modules, data, rego_versions=versions)
        p.query(DEFAULT_QUERY, DOC)
        colds.append(time.perf_counter() - t)
        p.close()  # back into the pool
        t = time.perf_counter()
        p = eng.prepare(modules, data, rego_versions=versions)
        p.query(DEFAULT_QUERY, DOC)
        pooled.append(time.perf_counter() - t)
        p.close()

    opa = peer("opa")
    with tempfile.TemporaryDirectory() as tmp:
        tar = bundle.write(Path(tmp) / "rules.tar.gz")
        doc = json.dumps(DOC)
        cmd = [str(opa), "eval", "--format", "json", "--bundle", str(tar), "--stdin-input",
               DEFAULT_QUERY]
        opa_value = json.loads(run(cmd, {}, stdin=doc))["result"][0]["expressions"][0]["value"]
        assert opa_value == want, (opa_value, want)
        opa_eval = median_time(lambda: run(cmd, {}, stdin=doc), 5 if args.quick else 15)
    prepared.close()
    del keep

    result = {
        "machine": machine(),
        "rounds": rounds,
        "in_process_plan_ms": round(inproc * 1e3, 3),
        "worker_ms": round(worker * 1e3, 3),
        "isolation_overhead_ms": round((worker - inproc) * 1e3, 3),
        "worker_queries_per_s": round(1 / worker, 1),
        "cold_prepare_and_query_ms": round(statistics.median(colds) * 1e3, 1),
        "pooled_prepare_and_query_ms": round(statistics.median(pooled) * 1e3, 1),
        "opa_eval_process_ms": round(opa_eval * 1e3, 1),
    }
    print(json.dumps(result, indent=2))
    save("embedded", result)


if __name__ == "__main__":
    main()
