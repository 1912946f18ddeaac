#!/usr/bin/env bash
# Builds the Go peer tools the interop tests run against (OPA, oras, cosign 2.x
# and 3.x, a registry with the OCI referrers API, and kube-apiserver for the
# admission webhook tests) from the Go module proxy
# at pinned versions, into a cache directory. Idempotent: a peer whose binary
# already exists at the pinned version is not rebuilt.
#
# Optional peers are built only when named: conftest (for the CLI start
# benchmark, benchmarks/bench_cli_start.py; no test needs it, so CI's cold
# build does not pay for it).
#
# Usage: scripts/install-peers.sh [peer ...]
#          (default: opa oras registry-referrers cosign kube-apiserver;
#           optional: conftest)
# Env:   POLICYSUPPLY_PEERS_DIR  cache dir (default ~/.cache/policysupply/peers)
set -euo pipefail

OPA_VERSION="v1.22.2"
ORAS_VERSION="v1.3.6"
GGCR_VERSION="v0.22.1"
COSIGN2_VERSION="v2.6.5"
COSIGN3_VERSION="v3.1.3"
CONFTEST_VERSION="v0.71.1" # optional peer: built only when named
KUBE_VERSION="v1.34.4"     # kube-apiserver; its staging modules are k8s.io/* v0.34.4

PEERS_DIR="${POLICYSUPPLY_PEERS_DIR:-$HOME/.cache/policysupply/peers}"
BIN_DIR="$PEERS_DIR/bin"
mkdir -p "$BIN_DIR"

log() { printf 'install-peers: %s\n' "$*" >&2; }
# shellcheck source=scripts/_go_build.sh
source "$(dirname "${BASH_SOURCE[0]}")/_go_build.sh"

install_opa() {
  build_wrapped opa "$OPA_VERSION" github.com/open-policy-agent/opa '
package main

import (
	"errors"
	"os"

	"github.com/open-policy-agent/opa/cmd"
)

func main() {
	if err := cmd.RootCommand.Execute(); err != nil {
		var e *cmd.ExitError
		if errors.As(err, &e) {
			os.Exit(e.Exit)
		}
		os.Exit(1)
	}
}'
}

install_oras() {
  go_installed oras "$ORAS_VERSION" oras.land/oras/cmd/oras
}

# go-containerregistry's in-memory registry, with the OCI 1.1 referrers API
# switched on (its own cmd/registry leaves it off and picks a fixed port).
install_registry_referrers() {
  build_wrapped registry-referrers "$GGCR_VERSION" github.com/google/go-containerregistry '
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	s := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 10 * time.Second,
		Handler:           registry.New(registry.WithReferrersSupport(true)),
	}
	log.Fatal(s.ListenAndServe())
}'
}

install_cosign() {
  go_installed cosign2 "$COSIGN2_VERSION" github.com/sigstore/cosign/v2/cmd/cosign cosign
  go_installed cosign3 "$COSIGN3_VERSION" github.com/sigstore/cosign/v3/cmd/cosign cosign
}

# Optional: benchmarks only (bench_cli_start.py), never in the default list.
install_conftest() {
  go_installed conftest "$CONFTEST_VERSION" github.com/open-policy-agent/conftest
}

# kube-apiserver for the admission webhook tests against a real API server
# (tests/interop/test_admission_kube_apiserver.py). `go install
# k8s.io/kubernetes/cmd/kube-apiserver@VERSION` is refused: kubernetes' go.mod
# replaces its ~30 staging modules (k8s.io/api, k8s.io/apiserver, ...) with
# ./staging/src/k8s.io/* directories that its module zip does not contain. A
# wrapper module that requires k8s.io/kubernetes and replaces each of those
# staging modules with its published twin (v0.X.Y for kubernetes v1.X.Y) builds
# it from the Go module proxy. The replace list is read from kubernetes' own
# go.mod, so it follows the pinned version.
install_kube_apiserver() {
  local target="$BIN_DIR/kube-apiserver-$KUBE_VERSION"
  if [[ -x "$target" ]]; then
    log "kube-apiserver $KUBE_VERSION already built: $target"
  else
    local work start staging gomod minor
    work=$(mktemp -d)
    start=$(date +%s)
    staging="v0.${KUBE_VERSION#v1.}"
    minor=$(cut -d. -f2 <<<"$KUBE_VERSION")
    log "building kube-apiserver $KUBE_VERSION (staging modules $staging) from the Go module proxy"
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
      | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    {
      printf 'module policysupply.local/kube-apiserver-wrapper\n\ngo 1.24.0\n\n'
      printf 'godebug default=go1.24\n\nreplace (\n'
      sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*$|\1|p' "$gomod" \
        | while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
      printf ')\n'
    } >"$work/go.mod"
    (
      cd "$work"
      GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION"
      CGO_ENABLED=0 go build -trimpath -o "$target.tmp" \
        -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
        k8s.io/kubernetes/cmd/kube-apiserver
    )
    mv "$target.tmp" "$target"
    rm -rf "$work"
    log "built kube-apiserver $KUBE_VERSION in $(($(date +%s) - start))s"
  fi
  ln -sfn "kube-apiserver-$KUBE_VERSION" "$BIN_DIR/kube-apiserver"
}

peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=(opa oras registry-referrers cosign kube-apiserver)
for p in "${peers[@]}"; do
  case "$p" in
    opa) install_opa ;;
    oras) install_oras ;;
    registry-referrers) install_registry_referrers ;;
    cosign) install_cosign ;;
    conftest) install_conftest ;;
    kube-apiserver) install_kube_apiserver ;;
    *) log "unknown peer: $p"; exit 2 ;;
  esac
done
log "peers in $BIN_DIR"
