#!/bin/sh
# Starts the Temporal server (all four services in one process) on the configuration beside this
# script: config/production.yaml, rendered from the environment, and dynamicconfig/production-sql.yaml.
# The entrypoint of the temporal service in docker-compose.yml, and what `npm run stack -- --production`
# runs natively (TEMPORAL_SERVER = the binary scripts/setup.sh built).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# Listening on every address (containers): the other services of the cluster reach this one at
# the container's own address.
if [ "${BIND_ON_IP:-127.0.0.1}" = 0.0.0.0 ] && [ -z "${TEMPORAL_BROADCAST_ADDRESS:-}" ]; then
  TEMPORAL_BROADCAST_ADDRESS=$(hostname -i | cut -d' ' -f1)
  export TEMPORAL_BROADCAST_ADDRESS
fi
DYNAMIC_CONFIG_FILE_PATH=${DYNAMIC_CONFIG_FILE_PATH:-$here/dynamicconfig/production-sql.yaml}
export DYNAMIC_CONFIG_FILE_PATH
exec "${TEMPORAL_SERVER:-temporal-server}" --root / --config "$here/config" --env production --allow-no-auth start
