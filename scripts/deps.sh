#!/usr/bin/env bash
# Install what building and testing Roost needs on Debian/Ubuntu: a C toolchain and cmake
# (pingora's zlib-ng), curl, nginx and haproxy (parity tests and benchmarks), wrk, chromium
# (the status page test), python3 with venv (the WPS e2e suite), and Rust
# through rustup when cargo is missing. Safe to run again: it skips what is already there.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
for pair in cc:build-essential cmake:cmake pkg-config:pkg-config curl:curl \
            nginx:nginx-light haproxy:haproxy wrk:wrk python3:python3 chromium:chromium; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then need+=("$pkg"); fi
done
# The e2e suite makes a venv (Debian splits venv/ensurepip into python3-venv).
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=(python3-venv)
fi
if [ "${#need[@]}" -gt 0 ]; then
    echo "deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates
fi

if ! command -v cargo >/dev/null 2>&1 && ! [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "deps: installing Rust (rustup, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
fi
echo "deps: ok"
