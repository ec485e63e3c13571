# Roost container image: build the release binary with cmake available (pingora's zlib-ng),
# then copy it into a small Debian runtime image that runs as a non-root user.
#
#   docker build -t roost .
#   docker run -p 8093:8093 -v $PWD/conf/roost.yaml:/etc/roost/roost.yaml:ro roost
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin roost \
    && mkdir -p /etc/roost /run/roost && chown roost:roost /run/roost
COPY --from=build /src/target/release/roost /usr/local/bin/roost
COPY conf/roost.yaml /etc/roost/roost.yaml
USER roost
ENV ROOST_PID_FILE=/run/roost/roost.pid ROOST_UPGRADE_SOCK=/run/roost/upgrade.sock
EXPOSE 8093 8091 8094
# Refuse to start on a broken config with every error printed, before binding anything.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/usr/local/bin/roost", "-c", "/etc/roost/roost.yaml"]
