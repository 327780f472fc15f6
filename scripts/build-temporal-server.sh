#!/usr/bin/env bash
# Builds the production Temporal parts into .tools/bin from the Go module proxy, at the versions of
# docker/temporal/versions: temporal-server and temporal-sql-tool (go.temporal.io/server, which
# also carries the PostgreSQL schema, embedded in temporal-sql-tool) and temporal-ui-server (the
# Web UI the temporalio/ui image and the CLI's dev server run), plus the UI's configuration
# template. Idempotent: does nothing when the binaries of these versions are there.
# Called by scripts/setup.sh; SNF_VMCATCHER_TOOLS points at another folder than .tools.
set -euo pipefail
cd "$(dirname "$0")/.."
. docker/temporal/versions
TOOLS=${SNF_VMCATCHER_TOOLS:-$PWD/.tools}
BIN=$TOOLS/bin
say() { printf '[setup] %s\n' "$*" >&2; }

has_version() { # binary, version
  [ -x "$1" ] && "$1" --version 2>/dev/null | grep -qF "$2"
}

# go install names each binary after its package folder (server, sql, server): install into a
# scratch folder, then move them to their real names.
install_as() { # module@version, then package=name pairs
  local module=$1 version=$2; shift 2
  local scratch packages=()
  scratch=$(mktemp -d)
  for pair in "$@"; do packages+=("$module/${pair%%=*}@$version"); done
  # CGO_ENABLED=0 as for the Temporal CLI, so the warm build cache of that build is reused.
  CGO_ENABLED=0 GOBIN=$scratch go install "${packages[@]}" >&2
  for pair in "$@"; do mv "$scratch/$(basename "${pair%%=*}")" "$BIN/${pair#*=}"; done
  rmdir "$scratch"
}

mkdir -p "$BIN"
if ! has_version "$BIN/temporal-server" "$TEMPORAL_SERVER_VERSION" || ! has_version "$BIN/temporal-sql-tool" "$TEMPORAL_SERVER_VERSION"; then
  command -v go >/dev/null || { say "Go is needed to build the Temporal server"; exit 1; }
  say "building the Temporal server and temporal-sql-tool v$TEMPORAL_SERVER_VERSION into $BIN (a few minutes, once)"
  install_as go.temporal.io/server "v$TEMPORAL_SERVER_VERSION" cmd/server=temporal-server cmd/tools/sql=temporal-sql-tool
fi

UI_CONFIG=$TOOLS/share/temporal-ui/$TEMPORAL_UI_VERSION/config
if ! has_version "$BIN/temporal-ui-server" "$TEMPORAL_UI_VERSION" || [ ! -f "$UI_CONFIG/docker.yaml" ]; then
  command -v go >/dev/null || { say "Go is needed to build the Temporal Web UI server"; exit 1; }
  say "building the Temporal Web UI server v$TEMPORAL_UI_VERSION into $BIN"
  install_as github.com/temporalio/ui-server/v2 "v$TEMPORAL_UI_VERSION" cmd/server=temporal-ui-server
  # The configuration template the temporalio/ui image runs with (every setting from the environment).
  module_dir=$(go mod download -json "github.com/temporalio/ui-server/v2@v$TEMPORAL_UI_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$UI_CONFIG"
  install -m 0644 "$module_dir/config/docker.yaml" "$UI_CONFIG/docker.yaml"
fi
# The image's template leaves the bind address empty (all interfaces): a native stack binds the Web
# UI to loopback unless TEMPORAL_UI_IP says otherwise.
if ! grep -q '^host:' "$UI_CONFIG/docker.yaml"; then
  printf '%s\n' 'host: {{ env "TEMPORAL_UI_IP" | default "127.0.0.1" }}' >>"$UI_CONFIG/docker.yaml"
fi
