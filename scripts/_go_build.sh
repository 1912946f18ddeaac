# shellcheck shell=bash
# Shared by scripts/install-peers.sh and scripts/install-sigstore-stack.sh:
# build a pinned Go program from the Go module proxy into BIN_DIR as
# NAME-VERSION, with a NAME symlink. Already-built versions are reused.
# The caller defines BIN_DIR and log().

# build_wrapped NAME VERSION MODULE MAIN_GO
# Builds MAIN_GO against MODULE@VERSION in a tiny local wrapper module. Needed
# where `go install MODULE@VERSION` cannot be used: go.mod files with replace
# directives (OPA's at times), or a command that needs another entry point.
build_wrapped() {
  local name=$1 version=$2 module=$3 main_go=$4
  local target="$BIN_DIR/$name-$version"
  if [[ -x "$target" ]]; then
    log "$name $version already built: $target"
  else
    local work start
    work=$(mktemp -d)
    start=$(date +%s)
    log "building $name $version from the Go module proxy"
    printf 'module policysupply.local/%s-wrapper\n\ngo 1.24\n' "$name" >"$work/go.mod"
    printf '%s\n' "$main_go" >"$work/main.go"
    (
      cd "$work" || exit 1
      GOFLAGS=-mod=mod go get "$module@$version"
      go mod tidy
      CGO_ENABLED=0 go build -trimpath -o "$target.tmp" .
    )
    mv "$target.tmp" "$target"
    rm -rf "$work"
    log "built $name $version in $(($(date +%s) - start))s"
  fi
  ln -sfn "$name-$version" "$BIN_DIR/$name"
}

# go_installed NAME VERSION PACKAGE [BINARY]
# `go install PACKAGE@VERSION` into a private GOBIN, then moved into place.
# BINARY is the name `go install` gives the command when it differs from NAME.
go_installed() {
  local name=$1 version=$2 package=$3 binary=${4:-$1}
  local target="$BIN_DIR/$name-$version"
  if [[ -x "$target" ]]; then
    log "$name $version already built: $target"
  else
    local gobin start
    gobin=$(mktemp -d)
    start=$(date +%s)
    log "building $name $version from the Go module proxy"
    CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath "$package@$version"
    mv "$gobin/$binary" "$target"
    rm -rf "$gobin"
    log "built $name $version in $(($(date +%s) - start))s"
  fi
  ln -sfn "$name-$version" "$BIN_DIR/$name"
}
