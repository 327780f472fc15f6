#!/usr/bin/env bash
# The whole local stack in one command. Logs of every part go to <data>/logs/<part>.log (JSON lines)
# and, prefixed, to this terminal: one readable line per event when it is a terminal, the JSON lines
# when it is a pipe (SNF_VMCATCHER_LOG_FORMAT=json|pretty decides instead). Ctrl-C stops all; state
# survives a restart.
#
#   npm run stack                    Temporal dev server (SQLite file under data/, Web UI on :8233,
#                                    search attributes registered), then `snf-vmcatcher run`
#                                    (worker and AMQP bridge in one process).
#   npm run stack -- --production    the production topology, natively (data under data/production/):
#                                    the Temporal server (built by scripts/setup.sh --production) on PostgreSQL
#                                    (127.0.0.1:5432, its own two databases), set up by the same
#                                    scripts and configuration as docker-compose.yml's
#                                    (docker/temporal/), its Web UI on :8080, two workers acting as
#                                    two hosts (own host task queues and working folders), the bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=dev
for arg in "$@"; do
  case "$arg" in
    --production) MODE=production ;;
    *) echo "usage: scripts/stack.sh [--production]" >&2; exit 2 ;;
  esac
done
# Only what this mode needs: the dev stack never waits for the production server's Go build.
if [ "$MODE" = production ]; then bash scripts/setup.sh --stack --production; else bash scripts/setup.sh --stack; fi

TOOLS=${SNF_VMCATCHER_TOOLS:-$ROOT/.tools}
TEMPORAL_CLI=${SNF_VMCATCHER_TEMPORAL_CLI:-$TOOLS/bin/temporal}
TEMPORAL_PORT=${TEMPORAL_PORT:-7233}
if [ "$MODE" = production ]; then
  DATA=${SNF_VMCATCHER_DATA:-$ROOT/data/production}
  UI_PORT=${TEMPORAL_UI_PORT:-8080}
else
  DATA=${SNF_VMCATCHER_DATA:-$ROOT/data}
  UI_PORT=${TEMPORAL_UI_PORT:-8233}
fi
mkdir -p "$DATA/logs" "$DATA/spool" "$DATA/images"
CONF=${SNF_VMCATCHER_CONF:-$DATA/application.conf}

# A local configuration: the original rabbitmq block, plus local folders and `worker_lines`. The
# Synnefo tools point at the test fakes, since kamaki and snf-mkimage are not installed on a
# development machine: set synnefo.kamaki / synnefo.snfMkimage to the real tools on a real site.
write_conf() { # file, worker block lines
  cat > "$1" <<CONF
rabbitmq {
  servers = ["127.0.0.1:5672"]
  username = "guest"
  password = "guest"
  queue = "vmcatcher"
  exchange = "vmcatcher"
  routingKey = "vmcatcher"
  vhost = "/"
}
temporal { address = "127.0.0.1:$TEMPORAL_PORT", webUiUrl = "http://localhost:$UI_PORT" }
worker { $2 }
bridge { metricsPort = 9465 }
spool { folder = "$DATA/spool" }
security { allowedFileFolders = ["$DATA/images"], signaturePolicy = "warn" }
synnefo {
  kamaki = "$ROOT/test/fakes/kamaki"
  snfMkimage = "$ROOT/test/fakes/snf-mkimage"
  sudo = []
  cloud = "local"
  # Lets a blank demo disk register (with every deployment task excluded); off by default.
  allowUnsupported = true
}
CONF
  echo "[stack] wrote $1 (edit it to point at your broker and tools)"
}
[ -f "$CONF" ] || write_conf "$CONF" "workingFolder = \"$DATA/work\", metricsPort = 9464, productMetricsPort = 9470"
[ -f "$DATA/kamakirc" ] || printf '[global]\ndefault_cloud = local\n\n[cloud "local"]\nurl = http://localhost/fake/identity/v2.0\ntoken = not-a-secret\n' > "$DATA/kamakirc"
export FAKE_KAMAKIRC=${FAKE_KAMAKIRC:-$DATA/kamakirc}
export FAKE_SYNNEFO_STATE=${FAKE_SYNNEFO_STATE:-$DATA/fake-synnefo.json}

# The parts write JSON lines, which their log files keep; what this terminal shows is decided here.
case "${SNF_VMCATCHER_LOG_FORMAT:-}" in
  json) PRETTY=no ;;
  pretty) PRETTY=yes ;;
  *) if [ -t 1 ]; then PRETTY=yes; else PRETTY=no; fi ;;
esac
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then COLOR=true; else COLOR=false; fi
export SNF_VMCATCHER_LOG_FORMAT=json
show_logs() { # JSON lines in, what the terminal shows out (other lines unchanged): core/logging.ts prettifyLines
  if [ "$PRETTY" = yes ]; then
    node --input-type=module -e "import { prettifyLines } from '$ROOT/dist/core/logging.js'; await prettifyLines(process.stdin, process.stdout, { colorize: $COLOR });"
  else
    cat
  fi
}

pids=()
stop() {
  trap - INT TERM EXIT
  echo "[stack] stopping"
  # The services first (they finish or hand back running steps), then the server.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
  echo "[stack] stopped"
}
trap stop INT TERM EXIT

run_part() { # name, command...
  local name=$1; shift
  # Each part runs in its own session, so Ctrl-C reaches only this script, which then stops
  # the parts in order with one SIGTERM each; the log pipeline ignores Ctrl-C, so it still
  # carries each part's shutdown lines.
  setsid "$@" > >(trap '' INT; tee -a "$DATA/logs/$name.log" | show_logs | sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}

wait_for_temporal() {
  for _ in $(seq 1 90); do
    "$TEMPORAL_CLI" operator cluster health --address "127.0.0.1:$TEMPORAL_PORT" >/dev/null 2>&1 && break
    sleep 1
  done
  "$TEMPORAL_CLI" operator cluster health --address "127.0.0.1:$TEMPORAL_PORT" >/dev/null
}

SERVICE=(node "$ROOT/bin/snf-vmcatcher.js")
if [ "$MODE" = dev ]; then
  sa_flags=()
  while read -r name type; do
    case "$name" in ''|'#'*) continue ;; esac
    sa_flags+=(--search-attribute "$name=$type")
  done < "$ROOT/docker/temporal/search-attributes"
  run_part temporal "$TEMPORAL_CLI" server start-dev --ip 127.0.0.1 --port "$TEMPORAL_PORT" --ui-port "$UI_PORT" \
    --db-filename "$DATA/temporal.db" "${sa_flags[@]}" --log-level warn
  wait_for_temporal
  echo "[stack] Temporal Web UI: http://localhost:$UI_PORT"
  run_part service "${SERVICE[@]}" run --conf "$CONF"
else
  # The same set-up as docker-compose.yml's: docker/temporal/setup-postgres.sh (temporal-admin-tools),
  # docker/temporal/start-server.sh with config/ and dynamicconfig/ (temporal),
  # docker/temporal/create-namespace.sh (temporal-create-namespace); the versions of docker/temporal/versions.
  export PATH="$TOOLS/bin:$PATH" TEMPORAL_SERVER="$TOOLS/bin/temporal-server"
  export POSTGRES_SEEDS=${POSTGRES_SEEDS:-127.0.0.1} DB_PORT=${DB_PORT:-5432} POSTGRES_USER=${POSTGRES_USER:-postgres}
  export DBNAME=${DBNAME:-snf_vmcatcher_temporal} VISIBILITY_DBNAME=${VISIBILITY_DBNAME:-snf_vmcatcher_temporal_visibility}
  export FRONTEND_GRPC_PORT=$TEMPORAL_PORT PROMETHEUS_ENDPOINT=${PROMETHEUS_ENDPOINT:-127.0.0.1:8000}
  sh docker/temporal/setup-postgres.sh 2>&1 | tee -a "$DATA/logs/setup-postgres.log" | sed -u 's/^/[setup-postgres] /'
  run_part temporal sh docker/temporal/start-server.sh
  wait_for_temporal
  TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT" sh docker/temporal/create-namespace.sh 2>&1 | sed -u 's/^/[create-namespace] /'
  . docker/temporal/versions
  # The Web UI server the temporalio/ui image runs, with that image's configuration template.
  run_part ui env TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT" TEMPORAL_UI_PORT="$UI_PORT" TEMPORAL_CORS_ORIGINS="http://localhost:$UI_PORT" \
    "$TOOLS/bin/temporal-ui-server" --root "$TOOLS/share/temporal-ui/$TEMPORAL_UI_VERSION" --env docker start
  echo "[stack] Temporal Web UI: http://localhost:$UI_PORT (server metrics: http://$PROMETHEUS_ENDPOINT/metrics)"
  # Two workers as two hosts: each its own host task queue (as compose's worker is
  # snf-vmcatcher-worker-1) and working folder; both poll the shared queue.
  for n in 1 2; do
    host_conf=$DATA/worker-$n.conf
    [ -f "$host_conf" ] || write_conf "$host_conf" \
      "workingFolder = \"$DATA/worker-$n/work\", metricsPort = $((9464 + 2 * (n - 1))), productMetricsPort = $((9470 + n - 1)), hostTaskQueue = \"snf-vmcatcher-worker-$n\""
    run_part "worker-$n" "${SERVICE[@]}" worker --conf "$host_conf"
  done
  run_part bridge "${SERVICE[@]}" dequeue --server --conf "$CONF"
fi
echo "[stack] running; logs in $DATA/logs; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
