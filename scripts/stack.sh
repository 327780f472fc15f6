#!/usr/bin/env bash
# The whole local stack in one command: Temporal dev server (SQLite file under data/, Web UI on
# :8233, search attributes registered), then the worker and the AMQP bridge in one process.
# Logs of every part go to data/logs/<part>.log and, prefixed, to this terminal. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh

DATA=${SNF_VMCATCHER_DATA:-$ROOT/data}
TEMPORAL_CLI=${SNF_VMCATCHER_TEMPORAL_CLI:-$ROOT/.tools/bin/temporal}
TEMPORAL_PORT=${TEMPORAL_PORT:-7233}
UI_PORT=${TEMPORAL_UI_PORT:-8233}
mkdir -p "$DATA/logs" "$DATA/work" "$DATA/spool" "$DATA/images"
CONF=${SNF_VMCATCHER_CONF:-$DATA/application.conf}

if [ ! -f "$CONF" ]; then
  # A local configuration: the original rabbitmq block, plus local folders. The Synnefo tools
  # point at the test fakes, since kamaki and snf-mkimage are not installed on a development
  # machine: set synnefo.kamaki / synnefo.snfMkimage to the real tools on a real site.
  cat > "$CONF" <<CONF
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
worker { workingFolder = "$DATA/work", metricsPort = 9464 }
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
  printf '[global]\ndefault_cloud = local\n\n[cloud "local"]\nurl = http://localhost/fake/identity/v2.0\ntoken = not-a-secret\n' > "$DATA/kamakirc"
  echo "[stack] wrote $CONF (edit it to point at your broker and tools)"
fi
export FAKE_KAMAKIRC=${FAKE_KAMAKIRC:-$DATA/kamakirc}
export FAKE_SYNNEFO_STATE=${FAKE_SYNNEFO_STATE:-$DATA/fake-synnefo.json}

pids=()
stop() {
  trap - INT TERM EXIT
  echo "[stack] stopping"
  # The service first (it finishes or hands back running steps), then the server.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
  echo "[stack] stopped"
}
trap stop INT TERM EXIT

run_part() { # name, command...
  local name=$1; shift
  # Each part runs in its own session, so Ctrl-C reaches only this script, which then stops
  # the parts in order with one SIGTERM each; the log pipeline ignores Ctrl-C, so it still
  # carries each part's shutdown lines.
  setsid "$@" > >(trap '' INT; tee -a "$DATA/logs/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}

sa_flags=()
while read -r name type; do
  case "$name" in ''|'#'*) continue ;; esac
  sa_flags+=(--search-attribute "$name=$type")
done < "$ROOT/docker/temporal/search-attributes"
run_part temporal "$TEMPORAL_CLI" server start-dev --ip 127.0.0.1 --port "$TEMPORAL_PORT" --ui-port "$UI_PORT" \
  --db-filename "$DATA/temporal.db" "${sa_flags[@]}" --log-level warn

for _ in $(seq 1 60); do
  "$TEMPORAL_CLI" operator cluster health --address "127.0.0.1:$TEMPORAL_PORT" >/dev/null 2>&1 && break
  sleep 1
done
"$TEMPORAL_CLI" operator cluster health --address "127.0.0.1:$TEMPORAL_PORT" >/dev/null
echo "[stack] Temporal Web UI: http://localhost:$UI_PORT"

SERVICE=(node "$ROOT/bin/snf-vmcatcher.js")
if "${SERVICE[@]}" run --help >/dev/null 2>&1; then
  run_part service "${SERVICE[@]}" run --conf "$CONF"
else
  run_part worker "${SERVICE[@]}" worker --conf "$CONF"
fi
echo "[stack] running; logs in $DATA/logs; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
