#!/usr/bin/env bash
# Runs the full test suite the way CI does, on a fresh machine:
#   1. a virtualenv (.venv) with policysupply and its test/lint/docs extras,
#   2. Debian's docker-registry, htpasswd and tmux, and the Go-built peer tools
#      the interop tests use (scripts/install-peers.sh, scripts/install-sigstore-stack.sh),
#   3. every test, with skips counted as failures.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k tarball`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${POLICYSUPPLY_VENV:-.venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# Debian's registry (distribution 2.8), htpasswd for its basic-auth setup, and
# tmux for the CLI-in-a-terminal tests, redis-server for the admission service's shared cache,
# etcd-server (3.4) as the store of the kube-apiserver the admission webhooks are tested under.
if ! command -v docker-registry >/dev/null || ! command -v htpasswd >/dev/null \
    || ! command -v redis-server >/dev/null || ! command -v etcd >/dev/null \
    || ! command -v tmux >/dev/null; then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    docker-registry apache2-utils tmux redis-server etcd-server >/dev/null
fi

bash scripts/install-peers.sh
# Fulcio, a CT log, Rekor v2 and a timestamp authority for the keyless tests.
bash scripts/install-sigstore-stack.sh

export POLICYSUPPLY_NO_SKIP=1
exec "$VENV/bin/python" -m pytest "$@"
