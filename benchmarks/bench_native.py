"""OPA-native signatures: sign and verify a large bundle, ours vs OPA's, in one run.

Usage: python benchmarks/bench_native.py [--quick]
Tree: the large tree of bench_build.py (2,000 Rego modules + ~50 MB data in
10 data.json files), under benchmarks/.work/. Key: RSA 2048, RS256 (OPA's
default).

Sign:
  ours  Bundle.sign on the built bundle (hashes every entry, data in OPA's
        canonical form, makes the token); and from the directory:
        Bundle.from_directory(tree).sign(key).to_bytes()
  OPA   `opa sign tree --bundle` (hashes the directory's files);
        `opa build -b tree --signing-key` (build + sign)
Verify:
  ours  Bundle.from_bytes(signed, native=trust): read, verify, parse: what a
        load needs; and verify_native(signed) alone
  OPA   `opa run --server --bundle signed.tar.gz --verification-key`: start to
        healthy (reads, verifies, parses, compiles); also the same without
        verification, so the difference is OPA's verification cost
Reported: median wall times and ratios ours / OPA (< 1: we are faster).
Target: not slower.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import WORK, machine, median_time, peer, save
from bench_build import make_tree
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from policysupply import Bundle
from policysupply.native import NativeKey, NativeTrust, verify_native


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opa_ready_time(args: list[str]) -> float:
    """Seconds from starting `opa run --server ...` until /health?bundles answers 200."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(peer("opa")), "run", "--server", "--addr", f"127.0.0.1:{port}",
         "--log-level", "error", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"opa exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health?bundles", timeout=1):
                    return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one round each")
    args = ap.parse_args()
    rounds = 1 if args.quick else 3
    WORK.mkdir(exist_ok=True)
    tree = make_tree(WORK / "tree-large", 2000, 10, 50)
    opa = str(peer("opa"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-native-", dir=WORK))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = tmp / "key.pem", tmp / "key.pub"
    enc = serialization.Encoding.PEM
    priv.write_bytes(
        key.private_bytes(enc, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pub.write_bytes(
        key.public_key().public_bytes(enc, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    trust = NativeTrust(keys={"default": NativeKey(key=pub)})

    bundle = Bundle.from_directory(tree)
    bundle.to_bytes()  # serialise once: sign measures hashing and signing
    signed = bundle.sign(key, key_id="default")
    signed_path = tmp / "signed.tar.gz"
    signed.write(signed_path)
    unsigned_path = tmp / "unsigned.tar.gz"
    bundle.write(unsigned_path)
    opa_signed = tmp / "opa-signed.tar.gz"
    subprocess.run([opa, "build", "-b", ".", "-o", str(opa_signed), "--signing-key", str(priv)],
                   check=True, capture_output=True, cwd=tree)  # fmt: skip
    sig_dir = tmp / "sig"
    sig_dir.mkdir()

    r: dict[str, float] = {}
    r["ours_sign_s"] = median_time(lambda: bundle.sign(key, key_id="default"), rounds)
    r["ours_build_sign_s"] = median_time(
        lambda: Bundle.from_directory(tree).sign(key, key_id="default").to_bytes(), rounds
    )
    r["opa_sign_s"] = median_time(
        lambda: subprocess.run([opa, "sign", ".", "--bundle", "--signing-key", str(priv),
                                "-o", str(sig_dir)], check=True, capture_output=True, cwd=tree),
        rounds,
    )  # fmt: skip
    r["opa_build_sign_s"] = median_time(
        lambda: subprocess.run([opa, "build", "-b", ".", "-o", str(tmp / "o.tar.gz"),
                                "--signing-key", str(priv)], check=True, capture_output=True,
                               cwd=tree),
        rounds,
    )  # fmt: skip
    raw = signed_path.read_bytes()
    raw_opa = opa_signed.read_bytes()
    r["ours_read_verify_s"] = median_time(lambda: Bundle.from_bytes(raw, native=trust), rounds)
    r["ours_verify_only_s"] = median_time(lambda: verify_native(raw, trust), rounds)
    r["ours_read_verify_opa_signed_s"] = median_time(
        lambda: Bundle.from_bytes(raw_opa, native=trust), rounds
    )
    r["ours_read_unverified_s"] = median_time(lambda: Bundle.from_bytes(raw), rounds)
    r["opa_run_verified_ready_s"] = median_time(
        lambda: opa_ready_time(["--bundle", str(signed_path), "--verification-key", str(pub)]),
        rounds,
    )
    r["opa_run_unverified_ready_s"] = median_time(
        lambda: opa_ready_time(["--bundle", str(unsigned_path)]), rounds
    )
    r["ratio_sign"] = r["ours_sign_s"] / r["opa_sign_s"]
    r["ratio_build_sign"] = r["ours_build_sign_s"] / r["opa_build_sign_s"]
    r["ratio_verify_vs_opa_ready"] = r["ours_read_verify_s"] / r["opa_run_verified_ready_s"]
    r["ours_verify_cost_s"] = r["ours_read_verify_s"] - r["ours_read_unverified_s"]
    r["opa_verify_cost_s"] = r["opa_run_verified_ready_s"] - r["opa_run_unverified_ready_s"]
    r["rounds"] = rounds
    results = {"machine": machine(), "large": r}
    for k, v in r.items():
        print(f"{k:<34} {v:10.3f}")
    ok = r["ratio_sign"] <= 1 and r["ratio_verify_vs_opa_ready"] <= 1
    print(f"target (sign and verify not slower than OPA): {'PASS' if ok else 'FAIL'}")
    print(f"results: {save('native', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
