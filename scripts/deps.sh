#!/usr/bin/env bash
# Install what building and testing Roost needs on Debian/Ubuntu: a C toolchain and cmake
# (pingora's zlib-ng), curl, nginx and haproxy (parity tests and benchmarks), wrk and valgrind
# (the benchmark's instructions-per-request column: callgrind and callgrind_control), chromium
# and Node.js with npm (the status page test, which drives chromium with Playwright:
# playwright-core goes into tests/status_page/node_modules, from its package-lock.json),
# python3 with venv (the WPS e2e suite), dnsmasq (the DNS server of the DNS-backend tests),
# redis-server with redis-cli (the shared-state tests, the e2e scenario and the benchmark: Roost
# instances sharing their sticky tables), iproute2 (`ip`: the benchmark's transfers at a
# 1,500-byte MTU, in a network namespace), and
# Rust through rustup when cargo is missing.
# Safe to run again: it skips what is already there.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
for pair in cc:build-essential cmake:cmake pkg-config:pkg-config curl:curl \
            nginx:nginx-light haproxy:haproxy wrk:wrk valgrind:valgrind python3:python3 chromium:chromium \
            node:nodejs npm:npm dnsmasq:dnsmasq-base redis-server:redis-server \
            redis-cli:redis-tools ip:iproute2; do
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

# The status page test's browser driver (never a browser download: it drives the chromium
# installed above). Skipped when the locked version is already there.
driver=tests/status_page
locked=$(sed -n 's/.*"playwright-core": "\(.*\)".*/\1/p' "$driver/package.json")
installed=$(sed -n 's/^  "version": "\(.*\)".*/\1/p' "$driver/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [ "$installed" != "$locked" ]; then
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$node_major" -lt 20 ]; then
        echo "deps: playwright-core $locked needs Node.js 20 or newer; node is $(node --version)" >&2
        exit 1
    fi
    echo "deps: installing playwright-core $locked into $driver/node_modules"
    (cd "$driver" && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! command -v cargo >/dev/null 2>&1 && ! [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "deps: installing Rust (rustup, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
fi
echo "deps: ok"
