"""Offline keyless verification: ours versus `cosign verify`, same trusted root, same run.

Usage: python benchmarks/bench_keyless.py [--quick]

Starts the loopback Sigstore stack of the interop tests (Fulcio, CT log,
Rekor v2, TSA; tests/interop/_sigstore_fixtures.py) and Debian's
docker-registry. **cosign 3** signs a policy image keylessly (a Sigstore
bundle referrer: certificate, Rekor v2 entry with inclusion proof, RFC 3161
timestamp) and a blob (`sign-blob --bundle`); then both sides verify the same
bytes offline against the stack's `trusted_root.json` with the same identity
policy. Nothing in the timed part talks to Fulcio, Rekor or the TSA.

Reported (median of rounds; speedup = cosign / ours, above 1 means we are faster):
  image warm: Verifier.verify(registry, ref), trusted root already loaded
  image cold: a new Verifier per call (parses trusted_root.json each time)
  vs          `cosign verify --trusted-root ... --certificate-identity ...
              --certificate-oidc-issuer ... ref` (a fresh process)
  blob warm:  Verifier.verify_blob(file, bundle=...) (no registry)
  vs          `cosign verify-blob --bundle ... --trusted-root ...`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import WORK, machine, median_time, peer, run, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policysupply import Bundle, Registry, TrustPolicy, Verifier  # noqa: E402
from policysupply.identity import Identity  # noqa: E402
from tests.interop._sigstore_fixtures import DEFAULT_EMAIL, start_sigstore_stack  # noqa: E402
from tests.interop.conftest import _start_distribution  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    work = WORK / "keyless"
    work.mkdir(parents=True, exist_ok=True)
    cosign = str(peer("cosign3"))

    # a fresh directory per run: Fulcio refuses to reuse a stale unix socket
    with start_sigstore_stack(Path(tempfile.mkdtemp(dir=work, prefix="sigstore-"))) as stack:
        env = stack.cosign_env(work)
        root = str(stack.trusted_root_path)
        gen = _start_distribution(work / "registry")
        server = next(gen)
        try:
            reg = Registry.remote(server.host, insecure=True)
            bundle = Bundle.from_directory(ROOT / "policysupply" / "examples" / "kubernetes")
            pinned = reg.push(bundle, "bench/policy:1.0")
            ref = f"{server.host}/bench/policy@{pinned.digest}"
            token, identity = stack.github_token()
            sign = ["--signing-config", str(stack.signing_config_path), "--trusted-root", root]
            run([cosign, "sign", "--identity-token", token, *sign, "--allow-http-registry", ref],
                env)
            blob = work / "policy.tar.gz"
            blob.write_bytes(bundle.to_bytes())
            blob_bundle = work / "policy.tar.gz.sigstore.json"
            run([cosign, "sign-blob", "--identity-token", stack.mint_token(), *sign,
                 "--bundle", str(blob_bundle), str(blob)], env)

            gh = TrustPolicy(identities=[Identity(issuer=stack.github_issuer, subject=identity)])
            email = TrustPolicy(identities=[Identity(issuer=stack.oidc_issuer,
                                                     subject=DEFAULT_EMAIL)])
            verifier = Verifier(gh, trusted_root=root)
            verifier.verify(reg, ref)  # warm: connections, imports, trusted root
            warm = median_time(lambda: verifier.verify(reg, ref), rounds * 4)
            cold = median_time(
                lambda: Verifier(gh, trusted_root=root).verify(reg, ref), rounds * 2)
            cosign_verify = [cosign, "verify", "--trusted-root", root, "--certificate-identity",
                             identity, "--certificate-oidc-issuer", stack.github_issuer,
                             "--allow-http-registry", ref]
            run(cosign_verify, env)
            peer_image = median_time(lambda: run(cosign_verify, env), rounds)

            blob_verifier = Verifier(email, trusted_root=root)
            blob_verifier.verify_blob(blob, bundle=blob_bundle)
            blob_warm = median_time(
                lambda: blob_verifier.verify_blob(blob, bundle=blob_bundle), rounds * 4)
            cosign_blob = [cosign, "verify-blob", "--bundle", str(blob_bundle), "--trusted-root",
                           root, "--certificate-identity", DEFAULT_EMAIL,
                           "--certificate-oidc-issuer", stack.oidc_issuer, str(blob)]
            run(cosign_blob, env)
            peer_blob = median_time(lambda: run(cosign_blob, env), rounds)
            reg.close()
        finally:
            gen.close()

    version = run([cosign, "version"], env).split("GitVersion:")[-1].split()[0]
    payload = {
        "machine": machine(),
        "cosign": version,
        "stack": "Fulcio 1.8.8, TesseraCT, Rekor v2 (rekor-tiles), TSA; signed by cosign 3",
        "image": {
            "ours_warm_s": warm,
            "ours_cold_s": cold,
            "cosign_verify_s": peer_image,
            "speedup_warm": peer_image / warm,
            "speedup_cold": peer_image / cold,
        },
        "blob": {
            "ours_warm_s": blob_warm,
            "cosign_verify_blob_s": peer_blob,
            "speedup_warm": peer_blob / blob_warm,
        },
    }
    path = save("keyless", payload)
    i, b = payload["image"], payload["blob"]
    print(f"keyless image: ours {i['ours_warm_s'] * 1000:.1f} ms warm, "
          f"{i['ours_cold_s'] * 1000:.1f} ms cold; cosign verify "
          f"{i['cosign_verify_s'] * 1000:.0f} ms -> {i['speedup_warm']:.1f}x warm, "
          f"{i['speedup_cold']:.1f}x cold")
    print(f"keyless blob: ours {b['ours_warm_s'] * 1000:.1f} ms; cosign verify-blob "
          f"{b['cosign_verify_blob_s'] * 1000:.0f} ms -> {b['speedup_warm']:.1f}x")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
