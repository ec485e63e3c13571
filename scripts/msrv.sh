#!/usr/bin/env bash
# MSRV check: build Roost (library, binaries, tests) with exactly the Rust version Cargo.toml
# declares as `rust-version`, against the committed lock file. Installs that toolchain
# through rustup when missing. A dependency update that needs a newer compiler fails here,
# before it reaches a user on the declared version.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$msrv" ] || { echo "msrv: no rust-version in Cargo.toml" >&2; exit 1; }
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    echo "msrv: installing Rust $msrv"
    rustup toolchain install "$msrv" --profile minimal
fi
echo "msrv: cargo +$msrv check --locked --all-targets"
cargo "+$msrv" check --locked --all-targets --quiet
echo "msrv: ok (Rust $msrv)"
