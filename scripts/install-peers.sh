#!/usr/bin/env bash
# Builds the Go peer tools the interop tests run against (OPA, oras, cosign 2.x
# and 3.x, and a registry with the OCI referrers API) from the Go module proxy
# at pinned versions, into a cache directory. Idempotent: a peer whose binary
# already exists at the pinned version is not rebuilt.
#
# Usage: scripts/install-peers.sh [peer ...]     (default: all)
# Env:   POLICYSUPPLY_PEERS_DIR  cache dir (default ~/.cache/policysupply/peers)
set -euo pipefail

OPA_VERSION="v1.22.2"
ORAS_VERSION="v1.3.6"
GGCR_VERSION="v0.22.1"
COSIGN2_VERSION="v2.6.5"
COSIGN3_VERSION="v3.1.3"

PEERS_DIR="${POLICYSUPPLY_PEERS_DIR:-$HOME/.cache/policysupply/peers}"
BIN_DIR="$PEERS_DIR/bin"
mkdir -p "$BIN_DIR"

log() { printf 'install-peers: %s\n' "$*" >&2; }

# build_wrapped NAME VERSION MODULE IMPORT_PKG MAIN_GO
# Builds MODULE@VERSION through a tiny local wrapper module. A wrapper (rather
# than `go install MODULE@VERSION`) is needed because `go install` refuses
# modules whose go.mod carries replace directives, as OPA's has at times.
build_wrapped() {
  local name=$1 version=$2 module=$3 main_go=$4
  local target="$BIN_DIR/$name-$version"
  if [[ -x "$target" ]]; then
    log "$name $version already built: $target"
  else
    local work
    work=$(mktemp -d)
    log "building $name $version from the Go module proxy (a few minutes)"
    printf 'module policysupply.local/%s-wrapper\n\ngo 1.24\n' "$name" >"$work/go.mod"
    printf '%s\n' "$main_go" >"$work/main.go"
    (
      cd "$work"
      GOFLAGS=-mod=mod go get "$module@$version"
      go mod tidy
      CGO_ENABLED=0 go build -trimpath -o "$target.tmp" .
    )
    mv "$target.tmp" "$target"
    rm -rf "$work"
  fi
  ln -sfn "$name-$version" "$BIN_DIR/$name"
}

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

# go_installed NAME VERSION PACKAGE [BINARY]
# Peers whose command is a main package (and whose go.mod has no replace
# directives) install with plain `go install` into a private GOBIN. BINARY is
# the name `go install` gives the command when it differs from NAME.
go_installed() {
  local name=$1 version=$2 package=$3 binary=${4:-$1}
  local target="$BIN_DIR/$name-$version"
  if [[ -x "$target" ]]; then
    log "$name $version already built: $target"
  else
    local gobin
    gobin=$(mktemp -d)
    log "building $name $version from the Go module proxy"
    CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath "$package@$version"
    mv "$gobin/$binary" "$target"
    rm -rf "$gobin"
  fi
  ln -sfn "$name-$version" "$BIN_DIR/$name"
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

peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=(opa oras registry-referrers cosign)
for p in "${peers[@]}"; do
  case "$p" in
    opa) install_opa ;;
    oras) install_oras ;;
    registry-referrers) install_registry_referrers ;;
    cosign) install_cosign ;;
    *) log "unknown peer: $p"; exit 2 ;;
  esac
done
log "peers in $BIN_DIR"
