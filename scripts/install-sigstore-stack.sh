#!/usr/bin/env bash
# Builds the Sigstore services the keyless tests run on loopback (Fulcio,
# TesseraCT as its certificate transparency log, Rekor v2 on its POSIX tile
# backend, and a timestamp authority) from the Go module proxy
# at pinned versions, into the same cache directory as scripts/install-peers.sh.
# Idempotent: a service whose binary already exists at the pinned version is
# not rebuilt. See docs/adr/0007-sigstore-test-stack.md.
#
# Usage: scripts/install-sigstore-stack.sh [service ...]   (default: all)
#        services: fulcio tesseract rekor tsa
# Env:   POLICYSUPPLY_PEERS_DIR  cache dir (default ~/.cache/policysupply/peers)
set -euo pipefail

# Newest releases whose go.mod the Go toolchain here (1.26) accepts; later
# rekor-tiles and timestamp-authority releases ask for Go 1.27.
FULCIO_VERSION="v1.8.8"
TESSERACT_VERSION="v0.1.1"
REKOR_TILES_VERSION="v2.3.0"
TSA_VERSION="v2.1.3"

PEERS_DIR="${POLICYSUPPLY_PEERS_DIR:-$HOME/.cache/policysupply/peers}"
BIN_DIR="$PEERS_DIR/bin"
mkdir -p "$BIN_DIR"

log() { printf 'install-sigstore-stack: %s\n' "$*" >&2; }
# shellcheck source=scripts/_go_build.sh
source "$(dirname "${BASH_SOURCE[0]}")/_go_build.sh"

install_fulcio() {
  go_installed fulcio "$FULCIO_VERSION" github.com/sigstore/fulcio
}

install_tesseract() {
  go_installed tesseract "$TESSERACT_VERSION" \
    github.com/transparency-dev/tesseract/cmd/tesseract/posix posix
}

install_rekor() {
  go_installed rekor-tiles "$REKOR_TILES_VERSION" \
    github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix posix
}

# The timestamp authority through a small wrapper: its own command always
# serves Prometheus metrics on the fixed port :2112 and exits when that port is
# taken, which breaks parallel runs; the wrapper serves only the REST API, on
# the address given, with an in-memory signer and certificate chain.
install_tsa() {
  build_wrapped tsa "$TSA_VERSION" github.com/sigstore/timestamp-authority/v2 '
package main

import (
	"flag"
	"log"
	"time"

	"github.com/sigstore/timestamp-authority/v2/pkg/server"
	"github.com/spf13/viper"
)

func main() {
	host := flag.String("host", "127.0.0.1", "listen host")
	port := flag.Int("port", 0, "listen port")
	flag.Parse()
	// The settings timestamp-server reads from its flags; defaults as there.
	viper.Set("timestamp-signer", "memory")
	viper.Set("timestamp-signer-hash", "sha256")
	viper.Set("default-policy-oid", "1.3.6.1.4.1.57264.2")
	viper.Set("accepted-policy-oids", []string{"1.3.6.1.4.1.57264.2"})
	viper.Set("max-request-body-size", uint64(1<<20))
	s := server.NewRestAPIServer(*host, *port, []string{"http"}, false, 10*time.Second, 10*time.Second)
	defer func() { _ = s.Shutdown() }()
	if err := s.Serve(); err != nil {
		log.Fatal(err)
	}
}'
}

services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(fulcio tesseract rekor tsa)
for s in "${services[@]}"; do
  case "$s" in
    fulcio) install_fulcio ;;
    tesseract) install_tesseract ;;
    rekor) install_rekor ;;
    tsa) install_tsa ;;
    *) log "unknown service: $s"; exit 2 ;;
  esac
done
log "sigstore stack in $BIN_DIR"
