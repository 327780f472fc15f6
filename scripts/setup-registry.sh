#!/usr/bin/env bash
# The OCI registry the tests push to and read from (test/support/registry.ts): Debian's
# docker-registry package (the CNCF distribution server) and htpasswd (apache2-utils) for its
# basic-auth file. Installed only: its system service must not run, since the tests start their
# own server on 127.0.0.1 with a temporary configuration, and a service on :5000 would listen
# on every interface. Idempotent, and quick when both are there.
set -euo pipefail
say() { printf '[setup] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} from Debian (the registry's service is not started)"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d exit 101: maintainer scripts may not start services. Put one in place only for
  # this install when the system has none, and take it away again.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    own_policy=1
  fi
  trap '[ -z "$own_policy" ] || as_root rm -f /usr/sbin/policy-rc.d' EXIT
  as_root apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || { as_root apt-get update >&2 && as_root apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
  # Keep it from starting at the next boot too.
  if command -v systemctl >/dev/null; then
    # Works on the unit files without a running systemd (containers) too.
    as_root systemctl disable docker-registry.service >&2 2>/dev/null || true
    [ ! -d /run/systemd/system ] || as_root systemctl stop docker-registry.service >&2 2>/dev/null || true
  fi
  if [ -x /usr/sbin/update-rc.d ] && [ -e /etc/init.d/docker-registry ]; then
    as_root update-rc.d docker-registry disable >&2 2>/dev/null || true
  fi
fi

# Whatever happened before this script (an install without policy-rc.d), no registry may listen
# on all interfaces: say so and stop rather than test next to one.
if command -v ss >/dev/null && ss -ltnp 2>/dev/null | grep -E '(0\.0\.0\.0|\*|\[::\]):[0-9]+ .*docker-registry' >&2; then
  say "a docker-registry process listens on all interfaces (above): stop its service (service docker-registry stop) and disable it"
  exit 1
fi
