# syntax=docker/dockerfile:1
#
# sasl-gate container image.
#
#   docker build -t sasl-gate .
#   docker run -d --name sasl-gate \
#     -p 993:993 -p 465:465 \
#     -v "$PWD/sasl-gate.yaml:/etc/sasl-gate/config.yaml:ro" \
#     -v "$PWD/tls:/etc/sasl-gate/tls:ro" \
#     -v "$PWD/secrets/master_password:/run/secrets/master_password:ro" \
#     sasl-gate
#
# Mount points (read-only; nothing is declared as VOLUME, because these are inputs, and an
# anonymous volume in their place would only hide a missing mount):
#   /etc/sasl-gate/config.yaml   the configuration (the CMD below reads it; SASL_GATE_* variables
#                                override any key, e.g. SASL_GATE_OAUTH__CLIENT_SECRET)
#   /etc/sasl-gate/tls/          certificate and key named by tls.cert / tls.key. Mount the
#                                directory, not single files: a renewal that replaces the files
#                                is then seen and loaded without a restart. The key must be
#                                readable by uid 10001 (e.g. chgrp 10001 key.pem; chmod 640 key.pem).
#   /run/secrets/master_password the Dovecot master password, for master.passwordFile
#                                (a compose secret lands exactly there)
#   /app/certs                   only without tls.cert/tls.key: the development CA and
#                                certificate are generated here (writable by the sasl-gate user)
#
# Privileged ports as a non-root user: sasl-gate runs as uid 10001 and binds 993 and 465 itself.
# Linux lets an unprivileged process bind a port below 1024 when the network namespace allows it
# (net.ipv4.ip_unprivileged_port_start) or the process holds CAP_NET_BIND_SERVICE. This image
# relies on the first: Docker Engine 20.10 and later already set
# net.ipv4.ip_unprivileged_port_start=0 in every container's own network namespace, and
# examples/docker-mailserver/compose.yaml sets it explicitly (`sysctls:`) for other runtimes
# (Podman, Kubernetes via securityContext.sysctls). It is a per-container setting, it does not
# touch the host. No file capability is put on the node binary: that would grant the capability
# to every node process in the image and break under `cap_drop: [ALL]`. Where the sysctl cannot
# be set (host networking), bind high ports instead and map them, e.g.
#   SASL_GATE_LISTENERS__0__BIND=0.0.0.0:10993 with -p 993:10993.

ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: compile the product (src/) to dist/ -----------------------------------------------
# Only src/ is copied: the dev stack (tools/: development OpenID provider, Dovecot and Postfix
# launchers, the demo), bench/ and test/ never enter the image.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: no install script is needed to compile (the test runner's esbuild binary is
# not used here).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, bin/ and dist/ only -----------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: no TypeScript, no test, bench or dev-stack library (oidc-provider and the like)
# in the image; the development certificate (tls.development) needs only production ones.
# --ignore-scripts: no production dependency has an install script.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
COPY bin ./bin
COPY --from=build /src/dist ./dist

# A fixed numeric uid/gid, so mounted keys and secrets can be made readable to it, and so
# Kubernetes' runAsNonRoot can verify the user without looking it up.
RUN groupadd --system --gid 10001 sasl-gate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sasl-gate \
 && mkdir -p /etc/sasl-gate/tls /app/certs \
 && chown 10001:10001 /app/certs
USER 10001:10001

# IMAPS and SMTPS (submissions): implicit TLS.
EXPOSE 993 465
# Optional STARTTLS listeners (listeners[].tls: starttls), when configured:
# EXPOSE 143 587
# The admin listener (admin.bind, /healthz /readyz /metrics) is for the container network or
# the host's loopback only; it is not exposed here on purpose.

# /healthz on the admin listener, so the configuration needs admin.bind (e.g. "0.0.0.0:9090" or
# "127.0.0.1:9090"). Node has fetch built in; slim images have no curl. For another port set
# HEALTHCHECK_URL (deliberately not a SASL_GATE_* name: those are configuration keys).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.HEALTHCHECK_URL||'http://127.0.0.1:9090/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# SIGTERM (docker stop) drains: no new connections, open sessions get
# limits.shutdownGraceSeconds (default 8 s; keep the runtime's stop timeout above it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/bin/sasl-gate.js"]
CMD ["serve", "--config", "/etc/sasl-gate/config.yaml"]
