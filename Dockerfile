# syntax=docker/dockerfile:1
# snf-vmcatcher: one image for the worker (`snf-vmcatcher worker`) and the AMQP bridge
# (`snf-vmcatcher dequeue --server`). Debian, not Alpine: the Temporal SDK's native bridge
# ships for glibc Linux only.
#
# kamaki and snf-mkimage are NOT in this image (neither is on npm or in Debian's archive):
# a site that registers images extends it, see docs/operations.md
# ("kamaki and snf-mkimage in containers").

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: dev dependencies, TypeScript compile, pre-bundled workflow code -------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY core ./core
COPY runtime ./runtime
COPY subscriptions ./subscriptions
COPY image-lists ./image-lists
COPY oci ./oci
COPY cli ./cli
COPY workflows ./workflows
COPY activities ./activities
COPY clouds ./clouds
COPY worker ./worker
COPY bridge ./bridge
# npm run build ends by bundling the CLI (dist/bundle/) with this script.
COPY scripts/bundle-cli.mjs ./scripts/
RUN npm run build

# --- runtime: production dependencies, dist/, and the programs the pipeline runs --------------
FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends qemu-utils xz-utils bzip2 openssl sudo ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/snf-vmcatcher
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /build/dist ./dist
COPY bin ./bin
RUN ln -s /opt/snf-vmcatcher/bin/snf-vmcatcher.js /usr/local/bin/snf-vmcatcher

# An unprivileged user; snf-mkimage alone runs as root, through sudo -n (synnefo.sudo).
RUN useradd --system --create-home --home-dir /home/snf-vmcatcher --shell /usr/sbin/nologin snf-vmcatcher \
 && mkdir -p /etc/snf-vmcatcher /var/tmp/snf-vmcatcher /var/spool/snf-vmcatcher \
 && chown snf-vmcatcher:snf-vmcatcher /var/tmp/snf-vmcatcher /var/spool/snf-vmcatcher \
 && printf 'snf-vmcatcher ALL=(root) NOPASSWD: /usr/bin/snf-mkimage, /usr/local/bin/snf-mkimage\n' > /etc/sudoers.d/snf-vmcatcher \
 && chmod 0440 /etc/sudoers.d/snf-vmcatcher

USER snf-vmcatcher
ENV SNF_VMCATCHER_CONF=/etc/snf-vmcatcher/application.conf
VOLUME ["/var/tmp/snf-vmcatcher", "/var/spool/snf-vmcatcher"]
# tini forwards SIGTERM, so `docker stop` lets running steps finish (worker.shutdownGraceMs).
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/opt/snf-vmcatcher/bin/snf-vmcatcher.js"]
CMD ["worker"]
