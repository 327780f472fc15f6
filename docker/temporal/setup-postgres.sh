#!/bin/sh
# Creates (or upgrades) Temporal's two PostgreSQL databases with temporal-sql-tool, from the schema
# embedded in it (the schema of its server version: docker/temporal/versions). Run by
# temporalio/admin-tools before the server starts on every `docker compose up`, and natively by
# `npm run stack -- --production` (temporal-sql-tool built into
# .tools/bin by scripts/setup.sh). Every step is idempotent: `create` on an existing database and
# `setup-schema -v 0.0` on an initialised one fail harmlessly, and `update-schema` brings the
# schema to the tool's version.
set -eu
: "${POSTGRES_SEEDS:=postgresql}" "${DB_PORT:=5432}" "${POSTGRES_USER:=temporal}" "${DBNAME:=temporal}" "${VISIBILITY_DBNAME:=temporal_visibility}"
export SQL_PASSWORD="${SQL_PASSWORD:-${POSTGRES_PWD:-}}"

echo "waiting for PostgreSQL at ${POSTGRES_SEEDS}:${DB_PORT}"
reachable() {
  if command -v pg_isready >/dev/null 2>&1; then pg_isready -q -h "$POSTGRES_SEEDS" -p "$DB_PORT"; else nc -z -w 5 "$POSTGRES_SEEDS" "$DB_PORT"; fi
}
attempt=0
until reachable; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 90 ]; then echo "PostgreSQL at ${POSTGRES_SEEDS}:${DB_PORT} does not answer"; exit 1; fi
  sleep 2
done

sql() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" "$@"; }
for pair in "$DBNAME:temporal" "$VISIBILITY_DBNAME:visibility"; do
  db=${pair%%:*}
  schema=postgresql/v12/${pair#*:}
  sql --db "$db" create 2>/dev/null || echo "database $db exists"
  sql --db "$db" setup-schema -v 0.0 2>/dev/null || echo "database $db already has a schema"
  sql --db "$db" update-schema --schema-name "$schema"
done
echo "Temporal schema ready"
