# Roost container image: build the release binary with cmake available (pingora's zlib-ng),
# then copy it into a small Debian runtime image that runs as a non-root user.
#
#   docker build -t roost .
#   docker compose up -d                                              # see docker-compose.yml
#   docker compose exec proxy roost upgrade -c /etc/roost/roost.yaml  # hot swap, in place
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin roost

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin roost \
    && mkdir -p /etc/roost /run/roost && chown roost:roost /run/roost
COPY --from=build /src/target/release/roost /usr/local/bin/roost
COPY deploy/docker-entrypoint.sh /usr/local/bin/roost-entrypoint
COPY conf/roost.yaml /etc/roost/roost.yaml
USER roost
# Logs of the daemonized Roost go to the container's stdout (PID 1's).
ENV ROOST_CONFIG=/etc/roost/roost.yaml \
    ROOST_PID_FILE=/run/roost/roost.pid \
    ROOST_UPGRADE_SOCK=/run/roost/upgrade.sock \
    ROOST_ERROR_LOG=/proc/1/fd/1 \
    ROOST_ACCESS_LOG=/proc/1/fd/1
EXPOSE 8093 8091 8094
# Healthy while a Roost process runs and its config still validates.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD kill -0 "$(cat /run/roost/roost.pid)" && roost -c "$ROOST_CONFIG" -t >/dev/null
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/usr/local/bin/roost-entrypoint"]
