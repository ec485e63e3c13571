#!/usr/bin/env bash
# Run Roost on conf/example-local.yaml in the foreground, with three demo backends
# (127.0.0.1:18001-18003) that answer with their name. Ctrl-C stops everything.
#
#   curl -H 'machineid: abc' localhost:8093/
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
    "$BIN/roost-demo-backend" --name "backend-$i" --listen "127.0.0.1:1800$i" &
    pids+=($!)
done
echo "run: try  curl -H 'machineid: abc' localhost:8093/   (Ctrl-C stops)"
RUST_LOG="${RUST_LOG:-info}" "$BIN/roost" -c conf/example-local.yaml &
pids+=($!)
wait "${pids[-1]}"
