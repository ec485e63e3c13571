#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 20: CI's smoke mode; use e.g. 600 for
# a real session). Installs the nightly toolchain and cargo-fuzz when missing. Crashes are
# saved under fuzz/artifacts/TARGET and fail the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${1:-20}"
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
for target in config key head framing state_file; do
    mkdir -p "corpus/$target"  # grows with what libFuzzer finds; seeds/ stays as committed
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -print_final_stats=0
done
echo "fuzz: ok"
