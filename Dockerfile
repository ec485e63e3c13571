# Roost container image: build the release binary with cmake available (pingora's zlib-ng),
# then copy it into a small Debian runtime image that runs as a non-root user.
#
#   docker build -t roost .
#   docker compose up -d                                              # see docker-compose.yml
#   docker compose exec proxy roost upgrade -c /etc/roost/roost.yaml  # hot swap, in place
#
# scripts/deploy-check.sh builds and runs this file as it is (doc/deployment.md).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Symbols stripped from the binary (about a third of its size); panics still name their place.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# The dependencies in a layer of their own: a change under src/ does not rebuild pingora.
# Cargo.toml names the `select` bench, so the manifest needs that file to exist; its
# `[patch.crates-io]` builds pingora-core and pingora-proxy from third_party/ (doc/pingora-patches.md).
COPY Cargo.toml Cargo.lock ./
COPY third_party ./third_party
RUN mkdir -p src benches \
    && echo 'fn main() {}' >src/main.rs && : >src/lib.rs && echo 'fn main() {}' >benches/select.rs \
    && cargo build --release --locked --bin roost \
    && rm -rf src benches target/release/roost target/release/deps/roost-* \
        target/release/deps/libroost-* target/release/.fingerprint/roost-*
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin roost

FROM debian:bookworm-slim
# tini is PID 1; curl is the HEALTHCHECK's client. Nothing else: Roost speaks plain HTTP.
RUN apt-get update && apt-get install -y --no-install-recommends tini curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin roost \
    && mkdir -p /etc/roost /run/roost /var/lib/roost \
    && chown roost:roost /run/roost /var/lib/roost
COPY --from=build /src/target/release/roost /usr/local/bin/roost
COPY deploy/docker-entrypoint.sh /usr/local/bin/roost-entrypoint
COPY conf/roost.yaml /etc/roost/roost.yaml
USER roost
# Logs of the daemonized Roost go to the container's stdout (PID 1's).
ENV ROOST_CONFIG=/etc/roost/roost.yaml \
    ROOST_PID_FILE=/run/roost/roost.pid \
    ROOST_UPGRADE_SOCK=/run/roost/upgrade.sock \
    ROOST_STATE_DIR=/var/lib/roost \
    ROOST_ERROR_LOG=/proc/1/fd/1 \
    ROOST_ACCESS_LOG=/proc/1/fd/1 \
    RUST_LOG=info
EXPOSE 8093 8091 8094
# Healthy while the running Roost says it serves (admin /healthz, loopback, in the container):
# a question to the process that serves, not to the file on disk.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${ROOST_ADMIN_PORT:-9900}/healthz"
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/usr/local/bin/roost-entrypoint"]
