#!/usr/bin/env bash
# Sets up everything the stack and the tests need, from the project's own files.
# Idempotent, and quick when everything is already there.
#
#   scripts/setup.sh                 what `npm test` needs (npm's pretest runs it)
#   scripts/setup.sh --stack         only what the dev stack needs (`npm run stack` runs it):
#                                    no Chromium, glance-api/keystone or registry for the tests
#   scripts/setup.sh --production    also the production Temporal server, temporal-sql-tool and
#                                    Web UI server (`npm run setup -- --production`; CI; the stack's
#                                    --production; the tests that run them build them if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '[setup] %s\n' "$*" >&2; }
PRODUCTION=no
FOR_TESTS=yes
for arg in "$@"; do
  case "$arg" in
    --production) PRODUCTION=yes ;;
    --stack) FOR_TESTS=no ;;
    *) say "usage: scripts/setup.sh [--stack] [--production]"; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# 1. npm dependencies (npm ci when the lock file changed since the last install).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund >&2
fi

# 2. The Temporal CLI (dev server + Web UI), built once into a project-local folder from the module
#    in scripts/temporal-cli/ (v1.5.1 with a newer SQLite driver: its go.mod says why), and again
#    when that module changes. A CLI that SNF_VMCATCHER_TEMPORAL_CLI names and that exists is used as
#    it is.
TEMPORAL_CLI=${SNF_VMCATCHER_TEMPORAL_CLI:-$ROOT/.tools/bin/temporal}
TEMPORAL_CLI_STAMP=$TEMPORAL_CLI.go.sum
if [ ! -x "$TEMPORAL_CLI" ] || { [ -z "${SNF_VMCATCHER_TEMPORAL_CLI:-}" ] && ! cmp -s scripts/temporal-cli/go.sum "$TEMPORAL_CLI_STAMP"; }; then
  command -v go >/dev/null || { say "Go is needed to build the Temporal CLI"; exit 1; }
  say "building the Temporal CLI v1.5.1 into $(dirname "$TEMPORAL_CLI") (a few minutes, once)"
  mkdir -p "$(dirname "$TEMPORAL_CLI")"
  CGO_ENABLED=0 go build -C scripts/temporal-cli -o "$TEMPORAL_CLI.new" \
    -ldflags "-X github.com/temporalio/cli/temporalcli.Version=1.5.1" github.com/temporalio/cli/cmd/temporal >&2
  mv "$TEMPORAL_CLI.new" "$TEMPORAL_CLI"
  cp scripts/temporal-cli/go.sum "$TEMPORAL_CLI_STAMP"
fi

# 2b. The production Temporal server, temporal-sql-tool and Web UI server (`npm run stack -- --production`,
#     the production tests, the bridge benchmark), at the versions of docker/temporal/versions: only when
#     asked, since the Go build of the server takes most of a fresh machine's first start.
if [ "$PRODUCTION" = yes ]; then bash scripts/build-temporal-server.sh; fi

# 3. System tools the pipeline runs: qemu-img, and the unpackers; Chromium for the Web UI test
#    (test/e2e/web-ui.test.ts drives it headless through playwright-core).
missing=()
command -v qemu-img >/dev/null || missing+=(qemu-utils)
command -v xz >/dev/null || missing+=(xz-utils)
command -v bzip2 >/dev/null || missing+=(bzip2)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if [ "$FOR_TESTS" = yes ]; then [ -x "${SNF_VMCATCHER_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium); fi
# promtool (from Prometheus) checks the packaged alert rules in test/integration/alert-rules.test.ts.
if [ "$FOR_TESTS" = yes ]; then command -v promtool >/dev/null || missing+=(prometheus); fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || { as_root apt-get update >&2 && as_root apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
fi

if [ "$FOR_TESTS" = yes ]; then
  # 3b. Debian's glance-api and keystone for the Glance tests (installed, never started as services).
  bash scripts/setup-openstack.sh
  # Their migrated databases, key repositories and bootstrap, kept per package version in .tools/.
  node --no-warnings=ExperimentalWarning node_modules/.bin/tsx test/support/prepare-openstack.ts
  # 3c. The OCI registry the registry tests start (installed, its service not started).
  bash scripts/setup-registry.sh
fi

# 4. RabbitMQ on 127.0.0.1:5672.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || {
    say "installing rabbitmq-server from Debian"
    as_root apt-get install -y --no-install-recommends rabbitmq-server >&2 \
      || { as_root apt-get update >&2 && as_root apt-get install -y --no-install-recommends rabbitmq-server >&2; }
  }
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached >&2 || true
  for _ in $(seq 1 90); do port_open 5672 && break; sleep 1; done
  port_open 5672 || { say "RabbitMQ did not come up on 127.0.0.1:5672"; exit 1; }
  # The port opens before the broker accepts logins; wait until it does.
  for _ in $(seq 1 60); do as_root rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
fi

# 5. The compiled CLI (bin/snf-vmcatcher.js runs dist/bundle/, esbuild's bundle of dist/).
if [ -z "$(find dist/bundle -name main.js -newer package.json 2>/dev/null | head -1)" ] \
   || [ -n "$(find core runtime subscriptions image-lists oci cli workflows activities clouds worker bridge scripts/bundle-cli.mjs \( -name '*.ts' -o -name '*.mjs' \) -newer dist/bundle/main.js 2>/dev/null | head -1)" ]; then
  say "building"
  npm run --silent build >&2
fi
if [ "$PRODUCTION" = yes ]; then server="Temporal server: ${SNF_VMCATCHER_TOOLS:-$ROOT/.tools}/bin/temporal-server, "; else server=""; fi
say "ready (Temporal CLI: $TEMPORAL_CLI, ${server}qemu-img: $(command -v qemu-img))"
