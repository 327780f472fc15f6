#!/bin/sh
# Creates the namespace snf-vmcatcher uses and registers its search attributes (the columns and
# filters of the Web UI), as listed in search-attributes beside this script.
# Idempotent: run by temporalio/admin-tools on every `docker compose up`.
set -eu
NAMESPACE=${TEMPORAL_NAMESPACE:-default}
ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
RETENTION=${TEMPORAL_RETENTION:-30d}

attempt=0
until temporal operator cluster health --address "$ADDRESS"; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then echo "Temporal at $ADDRESS is not healthy after $attempt attempts"; exit 1; fi
  sleep 2
done

temporal operator namespace describe --address "$ADDRESS" -n "$NAMESPACE" >/dev/null 2>&1 \
  || temporal operator namespace create --address "$ADDRESS" -n "$NAMESPACE" --retention "$RETENTION"

# A new namespace takes a few seconds to reach every service of the server.
attempt=0
until existing=$(temporal operator search-attribute list --address "$ADDRESS" -n "$NAMESPACE" 2>/dev/null); do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then echo "namespace $NAMESPACE is not usable after $attempt attempts"; exit 1; fi
  sleep 1
done
ATTRIBUTES=${SEARCH_ATTRIBUTES_FILE:-$(dirname "$0")/search-attributes}
grep -v '^#' "$ATTRIBUTES" | while read -r name type; do
  [ -n "$name" ] || continue
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --address "$ADDRESS" -n "$NAMESPACE" --name "$name" --type "$type"
  fi
done
echo "namespace $NAMESPACE ready"
