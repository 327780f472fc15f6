#!/bin/sh
# Creates (or upgrades) Temporal's two PostgreSQL databases: run by temporalio/admin-tools before
# the server starts, on every `docker compose up`. Every step is idempotent: `create` on an
# existing database and `setup-schema -v 0.0` on an initialised one fail harmlessly, and
# `update-schema` brings the schema to the version of this admin-tools image.
set -eu
: "${POSTGRES_SEEDS:=postgresql}" "${DB_PORT:=5432}" "${POSTGRES_USER:=temporal}"
export SQL_PASSWORD="${SQL_PASSWORD:-${POSTGRES_PWD:-}}"
SCHEMA=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at ${POSTGRES_SEEDS}:${DB_PORT}"
until nc -z -w 5 "$POSTGRES_SEEDS" "$DB_PORT"; do sleep 2; done

sql() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" "$@"; }
for db in temporal temporal_visibility; do
  dir=temporal
  [ "$db" = temporal_visibility ] && dir=visibility
  sql --db "$db" create || echo "database $db exists"
  sql --db "$db" setup-schema -v 0.0 || echo "database $db already has a schema"
  sql --db "$db" update-schema -d "$SCHEMA/$dir/versioned"
done
echo "Temporal schema ready"
