#!/usr/bin/env bash
# Installs Debian's glance-api and keystone for the Glance integration tests, without ever
# starting the packages' own services: their postinst would run them on all interfaces
# (uwsgi on :9292 and :5000). The tests start their own copies on 127.0.0.1
# (test/support/openstack.ts). Idempotent, and quick when the packages are there.
set -euo pipefail
say() { printf '[setup-openstack] %s\n' "$*" >&2; }

installed() { [ -x /usr/bin/glance-api ] && [ -x /usr/bin/glance-manage ] && [ -x /usr/bin/keystone-wsgi-public ] \
  && [ -x /usr/bin/keystone-manage ] && command -v uwsgi_python3 >/dev/null; }
if installed; then exit 0; fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# While the packages install, invoke-rc.d must start nothing: a policy-rc.d that answers 101
# ("action forbidden") for every service. One already there is put back afterwards.
POLICY=/usr/sbin/policy-rc.d
SAVED=""
if [ -e "$POLICY" ]; then
  SAVED=$(mktemp)
  as_root cp -p "$POLICY" "$SAVED"
fi
restore_policy() {
  if [ -n "$SAVED" ]; then as_root cp -p "$SAVED" "$POLICY"; rm -f "$SAVED"; else as_root rm -f "$POLICY"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\n# snf-vmcatcher setup-openstack: start no service while packages install.\nexit 101\n' | as_root tee "$POLICY" >/dev/null
as_root chmod 755 "$POLICY"

# Keep postinst from configuring databases, RabbitMQ, keystone_authtoken or endpoints
# (the defaults already say no; saying it makes that independent of them).
as_root debconf-set-selections <<'EOF'
glance-common glance/configure_db boolean false
glance-common glance/configure_rabbit boolean false
glance-common glance/configure_ksat boolean false
glance-api glance/configure_api-endpoint boolean false
keystone keystone/configure_db boolean false
keystone keystone/create-admin-tenant boolean false
keystone keystone/register-endpoint boolean false
EOF

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(glance-api keystone uwsgi-plugin-python3)
say "installing ${PACKAGES[*]} from Debian (about a minute, once; their services are not started)"
start=$(date +%s)
as_root apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2 \
  || { as_root apt-get update >&2 && as_root apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2; }
say "installed in $(( $(date +%s) - start )) s"

# Belt and braces: should an init system have started them anyway, stop them.
for svc in glance-api keystone; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    say "stopping the package's own $svc service"
    as_root systemctl disable --now "$svc" >&2 || true
  fi
done
installed || { say "glance-api or keystone is still missing after the install"; exit 1; }
