#!/bin/bash
# Stand-ins for the two Docker Hub images the Dockerfile starts from (Docker Hub is not
# reachable from CI), loaded into the check's dockerd, and the debian base also into podman
# (for the systemd container):
#   debian:bookworm-slim  debootstrap --variant=minbase bookworm, trimmed like the official
#                         slim image (no docs, man pages, locales, apt lists or caches)
#   rust:1-bookworm       that base + gcc/libc-dev/make/git/pkg-config + Debian's rustc-web and
#                         cargo-web (bookworm-security; bookworm's plain rustc is too old), and
#                         the CI machine's CA bundle: crates.io is reached through an
#                         intercepting TLS proxy (the official image has no use for this)
# Kept between runs (`--force` rebuilds them).
set -euo pipefail
source "$(dirname "$0")/env.sh"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOT="$WORK/rootfs-bookworm"
TAR="$WORK/bookworm-slim.tar"
[ "${1:-}" = --force ] && rm -f "$TAR" && docker rmi -f debian:bookworm-slim rust:1-bookworm >/dev/null 2>&1 || true

if [ ! -s "$TAR" ]; then
    info "debootstrap --variant=minbase bookworm ($MIRROR)"
    rm -rf "$ROOT"
    debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1
    rm -f "$ROOT/etc/apt/sources.list"
    cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat >"$ROOT/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
    cat >"$ROOT/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$ROOT/etc/apt/apt.conf.d/docker-autoremove-suggests"
    echo 'Acquire::GzipIndexes "true";' >"$ROOT/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Acquire::Languages "none";' >"$ROOT/etc/apt/apt.conf.d/docker-no-languages"
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"; chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
    find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    rm -rf "$ROOT"/usr/share/{man,info,groff,lintian,linda}/* "$ROOT"/var/cache/apt/*.bin \
        "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log
    find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    : >"$ROOT/etc/hostname"; rm -f "$ROOT/etc/resolv.conf"
    tar --numeric-owner -C "$ROOT" -cf "$TAR.part" . && mv "$TAR.part" "$TAR"
    rm -rf "$ROOT"
fi
docker image inspect debian:bookworm-slim >/dev/null 2>&1 ||
    docker import --change 'CMD ["bash"]' "$TAR" debian:bookworm-slim >/dev/null
podman image exists docker.io/library/debian:bookworm-slim ||
    podman import --change 'CMD ["bash"]' "$TAR" docker.io/library/debian:bookworm-slim >/dev/null

if ! docker image inspect rust:1-bookworm >/dev/null 2>&1; then
    info "rust:1-bookworm stand-in: debian:bookworm-slim + Debian's rustc-web/cargo-web"
    ctx="$WORK/ctx-rust"; rm -rf "$ctx"; mkdir -p "$ctx"
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt"
    cat >"$ctx/Dockerfile" <<'DF'
FROM debian:bookworm-slim
COPY host-ca.crt /usr/local/share/host-ca.crt
ENV CARGO_HTTP_CAINFO=/usr/local/share/host-ca.crt
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl git gcc \
        libc6-dev make pkg-config rustc-web cargo-web \
    && rm -rf /var/lib/apt/lists/* && cargo --version && rustc --version
DF
    docker build --network host -t rust:1-bookworm "$ctx" >"$WORK/rust-image.log" 2>&1 ||
        { tail -20 "$WORK/rust-image.log"; exit 1; }
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|rust:1-bookworm) '
